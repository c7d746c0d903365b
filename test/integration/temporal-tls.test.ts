import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { Connection } from '@temporalio/client';
import { NativeConnection, Worker } from '@temporalio/worker';
import { loadConfig } from '../../src/config';
import { connectTemporal, temporalConnectionSettings, type TemporalHandle } from '../../src/temporal';
import { closeGracefully, createApp } from '../../src/api/app';
import { listen } from '../../src/api/server';
import { createActivities } from '../../src/activities';
import { createRecordingNotifier } from '../../src/notifications/notifier';
import { installQuietRuntime, quietLogger, testDb, testTemporalAddress, unique, workflowBundle } from '../support/stack';

/**
 * Temporal over mTLS, configured the way an operator does it (TEMPORAL_TLS_CERT, _KEY, _CA).
 * The CLI's dev server has no TLS option, so a TLS-terminating proxy stands in front of it: it
 * presents a server certificate from a CA made for this test and requires a client certificate
 * from that CA. Through it, a worker (NativeConnection) and the API's client (Connection) bill a
 * tenant; a client without a certificate, with one from another CA, or in plaintext is refused.
 */

let dir: string;
let proxy: { server: tls.Server; address: string; forwarded: number; refused: number };

function openssl(...args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
}

/** A P-256 key and a certificate signed by `ca` (or self-signed CA when `ca` is undefined). */
function issue(name: string, subject: string, ca: string | undefined, extensions: string): void {
  fs.writeFileSync(path.join(dir, `${name}.ext`), extensions);
  if (!ca) {
    openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.pem`, '-days', '2', '-subj', subject, '-extensions', 'v3', '-config', `${name}.ext`);
    return;
  }
  openssl('req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', subject);
  openssl('x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.pem`, '-CAkey', `${ca}.key`, '-CAcreateserial', '-out', `${name}.pem`, '-days', '2', '-extfile', `${name}.ext`, '-extensions', 'v3');
}

const CA_EXT = '[req]\ndistinguished_name=dn\n[dn]\n[v3]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\n';
const file = (name: string) => path.join(dir, name);

beforeAll(async () => {
  installQuietRuntime();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tally-tls-'));
  issue('ca', '/CN=tally test CA', undefined, CA_EXT);
  issue('server', '/CN=localhost', 'ca', '[v3]\nsubjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n');
  issue('client', '/CN=tally worker', 'ca', '[v3]\nextendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n');
  issue('rogue-ca', '/CN=someone else', undefined, CA_EXT);
  issue('rogue', '/CN=tally worker', 'rogue-ca', '[v3]\nextendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n');

  const [upstreamHost, upstreamPort] = testTemporalAddress().split(':') as [string, string];
  const state = { forwarded: 0, refused: 0 };
  const server = tls.createServer(
    {
      key: fs.readFileSync(file('server.key')),
      cert: fs.readFileSync(file('server.pem')),
      ca: fs.readFileSync(file('ca.pem')),
      requestCert: true,
      rejectUnauthorized: true,
      ALPNProtocols: ['h2'],
    },
    (socket) => {
      state.forwarded += 1;
      const upstream = net.connect(Number(upstreamPort), upstreamHost);
      socket.pipe(upstream).pipe(socket);
      const close = () => {
        socket.destroy();
        upstream.destroy();
      };
      socket.on('error', close).on('close', close);
      upstream.on('error', close).on('close', close);
    },
  );
  server.on('tlsClientError', () => (state.refused += 1));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = `localhost:${(server.address() as net.AddressInfo).port}`;
  proxy = {
    server,
    address,
    get forwarded() {
      return state.forwarded;
    },
    get refused() {
      return state.refused;
    },
  };
});

afterAll(async () => {
  await new Promise<void>((resolve) => proxy?.server.close(() => resolve()));
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

test('a worker and the API client configured with TEMPORAL_TLS_* bill a tenant through an mTLS-only endpoint', async () => {
  // Paths for the certificate and key, PEM text for the CA: both forms the variables take.
  const config = loadConfig({
    TEMPORAL_ADDRESS: proxy.address,
    TEMPORAL_TLS_CERT: file('client.pem'),
    TEMPORAL_TLS_KEY: file('client.key'),
    TEMPORAL_TLS_CA: fs.readFileSync(file('ca.pem'), 'utf8'),
  });
  const settings = temporalConnectionSettings(config, config.TEMPORAL_ADDRESS!);
  expect(settings.tls?.clientCertPair).toBeDefined();

  const db = testDb();
  const native = await NativeConnection.connect(settings);
  const temporal: TemporalHandle = await connectTemporal(settings, 'default');
  const taskQueue = unique('tls');
  const worker = await Worker.create({
    connection: native,
    taskQueue,
    workflowBundle: await workflowBundle(),
    activities: createActivities({ db, logger: quietLogger, notifier: createRecordingNotifier(quietLogger), temporal: temporal.client }),
  });
  const running = worker.run();
  const app = createApp({ db, temporal: temporal.client, taskQueue, namespace: 'default', adminKey: 'tls-admin-key-0123456789', logger: quietLogger });
  const server = await listen(app, 0, '127.0.0.1');
  const call = async (method: string, route: string, key: string, body?: unknown) => {
    const res = await fetch(`http://127.0.0.1:${server.port}${route}`, { method, headers: { 'x-api-key': key, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
    return { status: res.status, body: (await res.json()) as any };
  };
  try {
    const planId = unique('tlsplan');
    const plan = await call('POST', '/v1/plans', 'tls-admin-key-0123456789', {
      id: planId,
      name: 'TLS',
      currency: 'USD',
      interval: 'month',
      base_fee: '0.00',
      meters: [{ metric: 'calls', aggregation: 'sum', pricing: { model: 'per_unit', unit_price: '0.01' } }],
    });
    expect(plan.status).toBe(201);
    const tenantId = unique('tls');
    const tenant = await call('POST', '/v1/tenants', 'tls-admin-key-0123456789', { id: tenantId, name: 'Over TLS', plan_id: planId });
    expect(tenant.status).toBe(201);
    const key = tenant.body.api_key as string;
    expect((await call('POST', '/v1/events', key, { events: [{ id: 'a', metric: 'calls', quantity: 3 }, { id: 'b', metric: 'calls', quantity: 4 }] })).status).toBe(202);
    // `consistent=true` asks the workflow to count first: the worker answered through the proxy.
    const usage = await call('GET', `/v1/tenants/${tenantId}/usage?consistent=true`, key);
    expect(usage.status).toBe(200);
    expect(usage.body.metrics.calls).toMatchObject({ used: 7, amount: '0.07' });
    expect(proxy.forwarded).toBeGreaterThanOrEqual(2); // the worker's and the client's connections
  } finally {
    await closeGracefully(app, server);
    worker.shutdown();
    await running;
    await temporal.connection.close();
    await native.close();
    await db.destroy();
  }
});

test('without a client certificate, with one from another CA, or in plaintext, the connection is refused', async () => {
  // grpc-js reports a refused handshake only when its connect timeout ends: the attempts run at once.
  const attempt = async (env: Record<string, string>) => {
    const config = loadConfig({ TEMPORAL_ADDRESS: proxy.address, ...env });
    const settings = temporalConnectionSettings(config, config.TEMPORAL_ADDRESS!);
    const outcome = async (connect: () => Promise<{ close(): Promise<void> }>) => {
      try {
        await (await connect()).close();
        return 'connected';
      } catch {
        return 'refused';
      }
    };
    return Promise.all([outcome(() => Connection.connect({ ...settings, connectTimeout: 2_000 })), outcome(() => NativeConnection.connect(settings))]);
  };
  const refusedBefore = proxy.refused;
  const ca = file('ca.pem');
  const client = { TEMPORAL_TLS_CERT: file('client.pem'), TEMPORAL_TLS_KEY: file('client.key') };
  const [noCert, otherCa, plaintext, untrustedServer, right] = await Promise.all([
    attempt({ TEMPORAL_TLS_CA: ca }),
    attempt({ TEMPORAL_TLS_CA: ca, TEMPORAL_TLS_CERT: file('rogue.pem'), TEMPORAL_TLS_KEY: file('rogue.key') }),
    attempt({}),
    // The server's certificate is checked too: a client that does not trust its CA refuses it.
    attempt({ TEMPORAL_TLS_CA: file('rogue-ca.pem'), ...client }),
    attempt({ TEMPORAL_TLS_CA: ca, ...client }), // the control
  ]);
  expect({ noCert, otherCa, plaintext, untrustedServer }).toEqual({
    noCert: ['refused', 'refused'],
    otherCa: ['refused', 'refused'],
    plaintext: ['refused', 'refused'],
    untrustedServer: ['refused', 'refused'],
  });
  expect(right).toEqual(['connected', 'connected']);
  expect(proxy.refused).toBeGreaterThan(refusedBefore);
});
