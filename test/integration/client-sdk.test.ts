/**
 * The TypeScript client (`clients/typescript/`, imported as source) against the real API, worker,
 * Temporal and PostgreSQL: an API process killed with SIGKILL after it committed a batch but
 * before its answer reached the client, then started again (nothing lost, nothing counted twice,
 * the buffer bounded meanwhile); real 429s with `Retry-After`; flushes on size and on interval;
 * a batch with one refused event; and the `usage`, `authorize` and `estimate` helpers. The
 * client's exhaustive cases run in its own suite (`npm test` in clients/typescript).
 */
import net from 'node:net';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { startApiHarness, eventually, type ApiHarness } from '../support/api-harness';
import { testDatabaseUrl, testTemporalAddress, unique } from '../support/stack';
import { freePort } from '../../src/platform/free-port';
import { BufferFullError, TallyApiError, TallyClient, type UsageDeliveryError } from '../../clients/typescript/src';

const ROOT = path.resolve(__dirname, '../..');
/** Retries quick enough for a test, with a budget long enough to outlive an API restart. */
const RETRY = { baseDelayMs: 50, maxDelayMs: 500, maxAttempts: 1_000, maxElapsedMs: 60_000 };

let h: ApiHarness;
let planId: string;
const cleanups: Array<() => Promise<unknown>> = [];

beforeAll(async () => {
  h = await startApiHarness();
  planId = unique('sdk_plan');
  const plan = await h.call('POST', '/v1/plans', {
    body: {
      id: planId,
      name: 'SDK',
      currency: 'USD',
      interval: 'month',
      base_fee: '0.00',
      meters: [
        { metric: 'api_calls', aggregation: 'sum', pricing: { model: 'per_unit', unit_price: '0.01' } },
        { metric: 'gpu_seconds', aggregation: 'sum', limit: 100, hard_limit: true, pricing: { model: 'graduated', tiers: [{ up_to: 50, unit_price: '0.10' }, { up_to: null, unit_price: '0.05' }] } },
      ],
    },
  });
  expect(plan.status).toBe(201);
});

afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
  await h?.stop();
});

async function createTenant(prefix: string): Promise<{ id: string; key: string }> {
  const id = unique(prefix);
  const res = await h.call('POST', '/v1/tenants', { body: { id, name: id, plan_id: planId } });
  expect(res.status).toBe(201);
  return { id, key: res.body.api_key };
}

async function storedEvents(tenantId: string): Promise<number> {
  const [row] = await h.db('usage_events').where({ tenant_id: tenantId }).count<{ count: string }[]>({ count: '*' });
  return Number(row!.count);
}

/** `npm run api` as its own process on `port`, against the test stack and the harness's worker. */
async function startApiProcess(port: number, env: Record<string, string> = {}): Promise<ChildProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/api/main.ts'], {
    cwd: ROOT,
    env: { ...process.env, LOG_LEVEL: 'warn', HOST: '127.0.0.1', PORT: String(port), TEMPORAL_ADDRESS: testTemporalAddress(), DATABASE_URL: testDatabaseUrl(), BILLING_ADMIN_KEY: h.adminKey, TEMPORAL_TASK_QUEUE: h.taskQueue, ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  child.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  cleanups.push(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  });
  await eventually(
    async () => {
      if (child.exitCode !== null) throw new Error(`the API exited early:\n${log}`);
      return (await fetch(`http://127.0.0.1:${port}/healthz`)).ok ? true : undefined;
    },
    60_000,
    'the API process to answer /healthz',
  );
  return child;
}

/**
 * A TCP proxy in front of the API that records each request line and answer status. When armed,
 * the first answer to a `POST /v1/events` (so the batch is committed: the API answers only after
 * its transaction) is not passed on: `onAnswerDropped` runs and the client's connection is reset,
 * exactly what a client sees when the API dies between its commit and its answer.
 */
async function answerDroppingProxy(upstreamPort: number) {
  const log: Array<{ at: number; request?: string; status?: number; retryAfter?: number }> = [];
  const state: { onAnswerDropped?: () => void } = {};
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(upstreamPort, '127.0.0.1');
    sockets.add(client).add(upstream);
    let lastRequest = '';
    client.on('data', (chunk: Buffer) => {
      const line = /^(GET|POST) (\S+) HTTP\/1\.1/.exec(chunk.toString('latin1', 0, 200));
      if (line) {
        lastRequest = `${line[1]} ${line[2]}`;
        log.push({ at: Date.now(), request: lastRequest });
      }
      upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => {
      const head = /^HTTP\/1\.1 (\d{3})/.exec(chunk.toString('latin1', 0, 20));
      if (head && lastRequest === 'POST /v1/events' && state.onAnswerDropped) {
        const dropped = state.onAnswerDropped;
        state.onAnswerDropped = undefined;
        log.push({ at: Date.now(), status: Number(head[1]), request: 'answer dropped' });
        client.destroy();
        upstream.destroy();
        dropped();
        return;
      }
      if (head) {
        const retryAfter = /\r\nretry-after: (\d+)\r\n/i.exec(chunk.toString('latin1'));
        log.push({ at: Date.now(), status: Number(head[1]), ...(retryAfter ? { retryAfter: Number(retryAfter[1]) } : {}) });
      }
      client.write(chunk);
    });
    const close = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', close).on('close', close);
    upstream.on('error', close).on('close', close);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  cleanups.push(
    () =>
      new Promise((resolve) => {
        // Idle keep-alive connections would hold close() for the API's keep-alive timeout.
        server.close(resolve);
        for (const socket of sockets) socket.destroy();
      }),
  );
  return { url: `http://127.0.0.1:${port}`, log, state };
}

test('an API killed after committing a batch, before its answer: the client retries the same ids, nothing is lost or counted twice, and the buffer stays bounded while the API is down', async () => {
  const tenant = await createTenant('sdk_restart');
  const apiPort = await freePort();
  let api = await startApiProcess(apiPort);
  const proxy = await answerDroppingProxy(apiPort);
  const errors: UsageDeliveryError[] = [];
  const client = new TallyClient({ baseUrl: proxy.url, apiKey: tenant.key, tenantId: tenant.id, maxBufferedEvents: 3_000, flushIntervalMs: 60_000, retry: RETRY, onError: (e) => errors.push(e) });
  cleanups.push(() => client.close({ timeoutMs: 1_000 }));

  let killed!: () => void;
  const apiDied = new Promise<void>((resolve) => (killed = resolve));
  proxy.state.onAnswerDropped = () => {
    api.kill('SIGKILL');
    api.once('exit', () => killed());
  };
  let expected = 0;
  const track = (i: number) => {
    expected += 1 + (i % 5);
    return client.track({ metric: 'api_calls', quantity: 1 + (i % 5) });
  };
  // The first 1,000 fill a batch, which goes out at once: committed, then its answer is lost.
  for (let i = 0; i < 1_000; i += 1) track(i);
  await apiDied;
  expect(await storedEvents(tenant.id)).toBe(1_000);

  // While the API is down the buffer fills to its bound (1,000 in flight + 2,000 queued), then refuses.
  for (let i = 1_000; i < 3_000; i += 1) track(i);
  expect(() => client.track({ metric: 'api_calls', quantity: 1 })).toThrow(BufferFullError);
  const waiting = Array.from({ length: 500 }, (_, k) => {
    expected += 1;
    return client.trackAsync({ metric: 'api_calls', quantity: 1, id: `waited-${k}` });
  });
  expect(client.stats()).toMatchObject({ inFlight: 1_000, queued: 2_000, waiting: 500 });

  api = await startApiProcess(apiPort);
  await Promise.all(waiting);
  await client.flush();

  expect(errors).toEqual([]);
  expect(client.stats()).toMatchObject({ delivered: 3_500, queued: 0, inFlight: 0 });
  expect(client.stats().retries).toBeGreaterThan(0);
  // The lost batch went out again with the same ids: 3,500 stored, 3,500 counted.
  expect(await storedEvents(tenant.id)).toBe(3_500);
  const usage = await h.call('GET', `/v1/tenants/${tenant.id}/usage?consistent=true`, { key: tenant.key });
  expect(usage.status).toBe(200);
  expect(usage.body.metrics.api_calls.used_decimal).toBe(String(expected));
  expect(proxy.log.filter((l) => l.request === 'POST /v1/events').length).toBeGreaterThanOrEqual(5);
  await client.close();
});

test("the API's own 429s: the client waits out each Retry-After, and every event is counted once", async () => {
  const tenant = await createTenant('sdk_429');
  const apiPort = await freePort();
  // One request every 2 seconds and a bucket of one: each request after the first is refused
  // with Retry-After: 2 unless it comes that much later, however slow the machine is.
  await startApiProcess(apiPort, { RATE_LIMIT_INGEST_PER_SECOND: '0.5' });
  const proxy = await answerDroppingProxy(apiPort);
  const errors: UsageDeliveryError[] = [];
  const client = new TallyClient({ baseUrl: proxy.url, apiKey: tenant.key, tenantId: tenant.id, maxBatchEvents: 10, flushIntervalMs: 60_000, retry: RETRY, onError: (e) => errors.push(e) });
  for (let i = 0; i < 20; i += 1) client.track({ metric: 'api_calls', quantity: 1 });
  await client.close();

  expect(errors).toEqual([]);
  const refusals = proxy.log.filter((l) => l.status === 429);
  expect(refusals.length).toBeGreaterThan(0);
  for (const refusal of refusals) {
    expect(refusal.retryAfter).toBe(2);
    const next = proxy.log.find((l) => l.at >= refusal.at && l.request === 'POST /v1/events');
    expect(next!.at - refusal.at).toBeGreaterThanOrEqual(refusal.retryAfter! * 1000 - 5);
  }
  const usage = await h.call('GET', `/v1/tenants/${tenant.id}/usage?consistent=true`, { key: tenant.key });
  expect(usage.body.metrics.api_calls.used).toBe(20);
});

test('batches go out on size and on interval without flush(); a refused event goes to onError, the rest of its batch is counted', async () => {
  const tenant = await createTenant('sdk_flush');
  const errors: UsageDeliveryError[] = [];
  const sized = new TallyClient({ baseUrl: h.baseUrl, apiKey: tenant.key, flushIntervalMs: 60_000, retry: RETRY, onError: (e) => errors.push(e) });
  for (let i = 0; i < 1_000; i += 1) sized.track({ metric: 'api_calls', quantity: 1 });
  await eventually(async () => ((await storedEvents(tenant.id)) === 1_000 ? true : undefined), 10_000, 'the full batch stored');

  const timed = new TallyClient({ baseUrl: h.baseUrl, apiKey: tenant.key, flushIntervalMs: 200, retry: RETRY, onError: (e) => errors.push(e) });
  timed.track({ metric: 'api_calls', quantity: 1 });
  const bogus = timed.track({ metric: 'not_metered', quantity: 1 });
  timed.track({ metric: 'api_calls', quantity: 1 });
  await eventually(async () => ((await storedEvents(tenant.id)) === 1_002 ? true : undefined), 10_000, 'the interval batch stored');
  await eventually(async () => (errors.length === 1 ? true : undefined), 10_000, 'the refused event reported');

  expect(errors[0]!.reason).toBe('rejected');
  expect(errors[0]!.events.map((e) => e.id)).toEqual([bogus]);
  expect(errors[0]!.fieldErrors).toEqual([expect.objectContaining({ eventId: bogus, path: 'metric' })]);
  expect(errors[0]!.cause).toMatchObject({ status: 422, code: 'unknown_metric' });
  await Promise.all([sized.close(), timed.close()]);
});

test('usage, authorize and estimate against the API; problem+json answers become TallyApiError', async () => {
  const tenant = await createTenant('sdk_helpers');
  const client = new TallyClient({ baseUrl: h.baseUrl, apiKey: tenant.key, tenantId: tenant.id, retry: RETRY });
  client.track({ metric: 'gpu_seconds', quantity: 40 });
  await client.flush();

  const usage = await client.usage({ consistent: true });
  expect(usage.metrics.gpu_seconds).toMatchObject({ used: 40, used_decimal: '40', amount: '4.00' });
  expect(await client.estimate({ metric: 'gpu_seconds', quantity: 20 })).toEqual({ amount: '1.50', currency: 'USD' });

  const granted = await client.authorize({ metric: 'gpu_seconds', quantity: 50 });
  expect(granted).toMatchObject({ allowed: true, remaining: 10 });
  const again = await client.authorize({ metric: 'gpu_seconds', quantity: 50, id: granted.id });
  expect(again).toMatchObject({ allowed: true, remaining: 10, id: granted.id });
  expect(await client.authorize({ metric: 'gpu_seconds', quantity: 20 })).toMatchObject({ allowed: false, reason: 'hard_limit', remaining: 10 });

  const refused = await client.estimate({ metric: 'not_metered', quantity: 1 }).catch((err: unknown) => err);
  expect(refused).toBeInstanceOf(TallyApiError);
  expect(refused).toMatchObject({ status: 422, code: 'unknown_metric' });
  const foreign = await client.usage({ tenantId: 'someone_else' }).catch((err: unknown) => err);
  expect(foreign).toMatchObject({ status: 404, code: 'not_found' });
  await client.close();
});
