/**
 * Operations of the HTTP API against the real stack (Temporal dev server, PostgreSQL, a real
 * worker): bulk counting, rate limits, body limit, request ids, security headers, /metrics,
 * /openapi.json and /docs, readiness failures, and graceful shutdown of `npm run api` and
 * `npm start` (spawned as processes, with a request in flight when SIGTERM arrives).
 */
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { Client, Connection } from '@temporalio/client';
import { startApiHarness, eventually, type ApiHarness } from '../support/api-harness';
import { startWrappedWorker } from '../support/billing-worker';
import { connectToTestTemporal, quietLogger, testDatabaseUrl, testTemporalAddress, unique, unreachableDb } from '../support/stack';
import { createApp } from '../../src/api/app';
import { RUN_ANSWER_DEADLINE_MS } from '../../src/api/billing-gateway';
import { lockTenantLedger } from '../../src/db/ingest';
import { listen, type RunningServer } from '../../src/api/server';
import { stateQuery, tenantWorkflowId } from '../../src/workflows/messages';
import { freePort, freePorts } from '../../src/platform/free-port';

const ROOT = path.resolve(__dirname, '../..');

let h: ApiHarness;
let tenantId: string;
let tenantKey: string;
const extraServers: RunningServer[] = [];
const extraCleanups: Array<() => Promise<unknown>> = [];

beforeAll(async () => {
  h = await startApiHarness();
  const planId = unique('ops_plan');
  const plan = await h.call('POST', '/v1/plans', {
    body: {
      id: planId,
      name: 'Ops',
      currency: 'USD',
      interval: 'month',
      base_fee: '0.00',
      meters: [{ metric: 'calls', aggregation: 'sum', pricing: { model: 'per_unit', unit_price: '0.01' } }],
    },
  });
  expect(plan.status).toBe(201);
  tenantId = unique('ops');
  const tenant = await h.call('POST', '/v1/tenants', { body: { id: tenantId, name: 'Ops tenant', plan_id: planId } });
  expect(tenant.status).toBe(201);
  tenantKey = tenant.body.api_key;
});

afterAll(async () => {
  for (const s of extraServers) await s.close();
  for (const c of extraCleanups) await c();
  await h?.stop();
});


async function usedCalls(key: string, tenant: string): Promise<number> {
  const usage = await h.call('GET', `/v1/tenants/${tenant}/usage?consistent=true`, { key });
  expect(usage.status).toBe(200);
  return usage.body.metrics.calls.used;
}

describe('bulk counting', () => {
  test('50 concurrent requests for a tenant below every threshold are counted without ringing its run', async () => {
    const handle = h.client.workflow.getHandle(tenantWorkflowId(tenantId));
    // The run's first claim publishes its decision points (a meter without a limit: none to reach).
    await eventually(async () => (await h.db('tenant_event_totals').where({ tenant_id: tenantId }).first('decision_points'))?.decision_points ?? undefined, 20_000, 'the decision points');
    const before = (await handle.query(stateQuery)).run;
    const requests = 50;
    const responses = await Promise.all(
      Array.from({ length: requests }, (_, i) =>
        h.call('POST', '/v1/events', {
          key: tenantKey,
          body: { events: [{ id: `co-${i}-a`, metric: 'calls', quantity: 1 }, { id: `co-${i}-b`, metric: 'calls', quantity: 2 }] },
        }),
      ),
    );
    expect(responses.map((r) => r.status)).toEqual(Array(requests).fill(202));
    expect(responses.every((r) => r.body.received === 2)).toBe(true);

    // Counted by the worker's counter: the read model holds every event, and none waits.
    const usage = await eventually(async () => {
      const res = await h.call('GET', `/v1/tenants/${tenantId}/usage`, { key: tenantKey });
      return res.body.pending_events === 0 && res.body.metrics.calls.used === requests * 3 ? res.body : undefined;
    }, 10_000, 'every event counted');
    expect(usage.metrics.calls.used).toBe(requests * 3);
    const after = (await handle.query(stateQuery)).run;
    expect({ signals: after.signals - before.signals, claims: after.claims - before.claims }).toEqual({ signals: 0, claims: 0 });
    // A consistent read goes through the run, which claims (nothing waits) and reads the whole period.
    expect(await usedCalls(tenantKey, tenantId)).toBe(requests * 3);

    const metrics = await fetch(`${h.baseUrl}/metrics`).then((r) => r.text());
    expect(metrics).toMatch(/^tally_ingest_events_total \d+/m);
    expect(Number(/^tally_ingest_requests_total (\d+)/m.exec(metrics)?.[1])).toBeGreaterThanOrEqual(requests);
  });
});

describe('protection', () => {
  test('per-key rate limits: 429 rate_limited with Retry-After; ingest and reads have separate budgets', async () => {
    const app = createApp({
      db: h.db,
      temporal: h.client,
      taskQueue: h.taskQueue,
      namespace: 'default',
      adminKey: h.adminKey,
      logger: quietLogger,
      rateLimits: { ingestPerSecond: 1, readsPerSecond: 1 },
    });
    const server = await listen(app, 0, '127.0.0.1');
    extraServers.push(server);
    const base = `http://127.0.0.1:${server.port}`;
    const get = () => fetch(`${base}/v1/tenants/${tenantId}`, { headers: { 'x-api-key': tenantKey } });
    const statuses = [];
    for (let i = 0; i < 3; i++) statuses.push((await get()).status);
    expect(statuses).toEqual([200, 200, 429]); // burst of 2x the rate, then refused
    const refused = await get();
    expect(refused.status).toBe(429);
    expect(refused.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect(await refused.json()).toMatchObject({ status: 429, code: 'rate_limited' });

    // Ingest has its own budget; the admin key has its own bucket.
    const ingest = await fetch(`${base}/v1/events`, {
      method: 'POST',
      headers: { 'x-api-key': tenantKey, 'content-type': 'application/json' },
      body: JSON.stringify({ events: [{ id: 'rl-1', metric: 'calls' }] }),
    });
    expect(ingest.status).toBe(202);
    expect((await fetch(`${base}/v1/tenants/${tenantId}`, { headers: { 'x-api-key': h.adminKey } })).status).toBe(200);
    // Unauthenticated probes are public and never limited.
    for (let i = 0; i < 5; i++) expect((await fetch(`${base}/healthz`)).status).toBe(200);
    const metrics = await fetch(`${base}/metrics`).then((r) => r.text());
    expect(metrics).toContain('tally_rate_limited_total{budget="reads"} 2');
  });

  test('a body over 1 MiB is refused with 413 payload_too_large', async () => {
    const events = Array.from({ length: 900 }, (_, i) => ({ id: `big-${i}`, metric: 'calls', properties: { pad: 'x'.repeat(1_200) } }));
    const raw = JSON.stringify({ events });
    expect(Buffer.byteLength(raw)).toBeGreaterThan(1024 * 1024);
    const res = await h.call('POST', '/v1/events', { key: tenantKey, raw });
    expect(res.status).toBe(413);
    expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(res.body).toMatchObject({ status: 413, code: 'payload_too_large' });
  });

  test('X-Request-Id is echoed (header and error body) when sane, and replaced otherwise', async () => {
    const given = 'req-ops-test-0001';
    const res = await fetch(`${h.baseUrl}/v1/tenants/does_not_exist`, { headers: { 'x-api-key': h.adminKey, 'x-request-id': given } });
    expect(res.status).toBe(404);
    expect(res.headers.get('x-request-id')).toBe(given);
    expect(await res.json()).toMatchObject({ code: 'not_found', request_id: given });

    const generated = await fetch(`${h.baseUrl}/healthz`);
    expect(generated.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
    const hostile = await fetch(`${h.baseUrl}/healthz`, { headers: { 'x-request-id': `a b ${'x'.repeat(300)}` } });
    expect(hostile.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
  });

  test('security headers: helmet on every answer, a strict CSP on /docs only', async () => {
    const json = await fetch(`${h.baseUrl}/v1/plans`, { headers: { 'x-api-key': h.adminKey } });
    expect(json.headers.get('x-content-type-options')).toBe('nosniff');
    expect(json.headers.get('x-frame-options')).toBe('SAMEORIGIN');
    expect(json.headers.get('strict-transport-security')).toMatch(/max-age=/);
    expect(json.headers.get('x-powered-by')).toBeNull();
    expect(json.headers.get('content-security-policy')).toBeNull();
    const docs = await fetch(`${h.baseUrl}/docs`);
    expect(docs.headers.get('content-security-policy')).toMatch(/default-src 'none'/);
    expect(docs.headers.get('content-security-policy')).toMatch(/script-src 'self'/);
    expect(docs.headers.get('content-security-policy')).not.toMatch(/unsafe-inline/);
  });
});

test.each(['/v1/tenants/%00', '/v1/tenants/a%00b/usage', '/v1/invoices/%00/pdf', '/v1/tenants/%E0%A4%A/usage', '/v1/tenants/x%1f/alert-rules'])(
  'a path with control characters or broken encoding is a 404, never a 5xx: %s',
  async (path) => {
    const res = await h.call('GET', path);
    expect(res.status).toBe(404);
    expect(res.headers.get('content-type')).toMatch(/application\/problem\+json/);
    expect(res.body.code).toBe('not_found');
  },
);

describe('operations endpoints', () => {
  test('/metrics: Prometheus text with HTTP metrics labelled by route pattern', async () => {
    await h.call('GET', `/v1/tenants/${tenantId}/usage`, { key: tenantKey });
    const res = await fetch(`${h.baseUrl}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain/);
    const text = await res.text();
    expect(text).toMatch(/^tally_http_requests_total\{method="POST",route="\/v1\/events",status="202"\} \d+/m);
    expect(text).toMatch(/^tally_http_requests_total\{method="GET",route="\/v1\/tenants\/:id\/usage",status="200"\} \d+/m);
    expect(text).toMatch(/^tally_http_request_duration_seconds_bucket\{/m);
    expect(text).toMatch(/^process_cpu_seconds_total/m);
    expect(text).not.toContain(tenantId); // no raw URLs in labels
  });

  test('/openapi.json: every operation it documents is served by the real stack; /docs is Swagger UI from this server', async () => {
    const res = await fetch(`${h.baseUrl}/openapi.json`);
    expect(res.status).toBe(200);
    const doc = (await res.json()) as { openapi: string; paths: Record<string, Record<string, { operationId: string }>> };
    expect(doc.openapi).toMatch(/^3\.\d+\.\d+$/);

    const operations = Object.entries(doc.paths).flatMap(([p, ops]) => Object.keys(ops).map((m) => ({ method: m.toUpperCase(), path: p })));
    expect(operations.length).toBeGreaterThanOrEqual(30);
    const answers: string[] = [];
    for (const { method, path: p } of operations) {
      // Probe with ids that do not exist and an empty body: harmless, and only an unknown route
      // answers "no route".
      const url = p.replace(/\{[^}]+\}/g, 'zz_missing');
      const withBody = method === 'POST' || method === 'PATCH';
      const probe = await fetch(`${h.baseUrl}${url}`, {
        method,
        headers: { 'x-api-key': h.adminKey, ...(withBody ? { 'content-type': 'application/json' } : {}) },
        body: withBody ? '{}' : undefined,
      });
      const text = await probe.text();
      answers.push(`${method} ${p}: ${probe.status === 404 && text.includes('no route') ? 'no route' : 'served'}`);
    }
    expect(answers).toEqual(operations.map(({ method, path: p }) => `${method} ${p}: served`));

    const docs = await fetch(`${h.baseUrl}/docs`);
    expect(docs.status).toBe(200);
    expect(docs.headers.get('content-type')).toMatch(/^text\/html/);
    const html = await docs.text();
    expect(html).toMatch(/^<!doctype html>/i);
    for (const asset of ['/docs/assets/swagger-ui-bundle.js', '/docs/assets/swagger-ui.css', '/docs/initializer.js']) {
      expect(html).toContain(`"${asset}"`);
      const answer = await fetch(`${h.baseUrl}${asset}`);
      await answer.arrayBuffer();
      expect({ asset, status: answer.status }).toEqual({ asset, status: 200 });
    }
  });

  test('/readyz answers 200 when both dependencies answer, 503 when PostgreSQL or Temporal does not', async () => {
    const ok = await fetch(`${h.baseUrl}/readyz`);
    expect(ok.status).toBe(200);
    expect(await ok.json()).toEqual({ status: 'ready', postgres: true, temporal: true });

    const deadDb = await unreachableDb();
    extraCleanups.push(() => deadDb.destroy());
    const noDb = await listen(createApp({ db: deadDb, temporal: h.client, taskQueue: h.taskQueue, namespace: 'default', adminKey: h.adminKey, logger: quietLogger }), 0, '127.0.0.1');
    extraServers.push(noDb);
    const r1 = await fetch(`http://127.0.0.1:${noDb.port}/readyz`);
    expect(r1.status).toBe(503);
    expect(await r1.json()).toMatchObject({ status: 'unavailable', postgres: false, temporal: true });

    const deadConnection = Connection.lazy({ address: `127.0.0.1:${await freePort()}` });
    extraCleanups.push(() => deadConnection.close());
    const noTemporal = await listen(
      createApp({ db: h.db, temporal: new Client({ connection: deadConnection }), taskQueue: h.taskQueue, namespace: 'default', adminKey: h.adminKey, logger: quietLogger }),
      0,
      '127.0.0.1',
    );
    extraServers.push(noTemporal);
    const started = Date.now();
    const r2 = await fetch(`http://127.0.0.1:${noTemporal.port}/readyz`);
    expect(r2.status).toBe(503);
    expect(await r2.json()).toMatchObject({ status: 'unavailable', postgres: true, temporal: false });
    expect(Date.now() - started).toBeLessThan(5_000);

    // API calls during either outage: 503 unavailable with Retry-After, never a 500.
    const adminGet = (port: number, route: string) => fetch(`http://127.0.0.1:${port}${route}`, { headers: { 'x-api-key': h.adminKey } });
    // Plain reads come from PostgreSQL; a read-your-writes read needs the tenant's workflow.
    for (const res of [await adminGet(noDb.port, '/v1/tenants'), await adminGet(noTemporal.port, `/v1/tenants/${tenantId}/usage?consistent=true`)]) {
      expect(res.status).toBe(503);
      expect(res.headers.get('retry-after')).toBe('1');
      expect(res.headers.get('content-type')).toContain('application/problem+json');
      expect(await res.json()).toMatchObject({ status: 503, code: 'unavailable' });
    }
  });
});

describe('a run that does not answer', () => {
  // A worker of its own, whose activities can be held after they have done their work: the run
  // has taken a change from PostgreSQL (or stored what it decided), then stays busy past the API's
  // deadline.
  const holds = { entitlementsRead: false, drawsRecorded: false };
  const held = () => new Promise((resolve) => setTimeout(resolve, RUN_ANSWER_DEADLINE_MS + 1_000));
  let call: (method: string, route: string, body?: unknown) => Promise<Response>;
  let planId: string;

  beforeAll(async () => {
    const taskQueue = unique('unanswering');
    const temporal = await connectToTestTemporal();
    const worker = await startWrappedWorker({
      db: h.db,
      temporal,
      taskQueue,
      wrap: (real) => ({
        async readEntitlements(input) {
          const stored = await real.readEntitlements(input);
          if (holds.entitlementsRead) {
            holds.entitlementsRead = false;
            await held();
          }
          return stored;
        },
        async recordPackDraws(input) {
          await real.recordPackDraws(input);
          if (holds.drawsRecorded) {
            holds.drawsRecorded = false;
            await held();
          }
        },
      }),
    });
    extraCleanups.push(async () => {
      await worker.stop();
      await temporal.nativeConnection.close();
      await temporal.connection.close();
    });
    const server = await listen(createApp({ db: h.db, temporal: h.client, taskQueue, namespace: 'default', adminKey: h.adminKey, logger: quietLogger }), 0, '127.0.0.1');
    extraServers.push(server);
    call = (method, route, body) =>
      fetch(`http://127.0.0.1:${server.port}${route}`, { method, headers: { 'x-api-key': h.adminKey, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
    planId = unique('limited');
    const plan = { id: planId, name: 'Limited', currency: 'USD', interval: 'month', base_fee: '0.00', meters: [{ metric: 'calls', aggregation: 'sum', limit: 100, pricing: { model: 'per_unit', unit_price: '0.01' } }] };
    expect((await call('POST', '/v1/plans', plan)).status).toBe(201);
  });

  async function startedTenant(): Promise<{ id: string; key: string }> {
    const id = unique('unanswered');
    const created = await call('POST', '/v1/tenants', { id, name: 'Unanswered', plan_id: planId });
    expect(created.status).toBe(201);
    expect((await call('GET', `/v1/tenants/${id}/usage?consistent=true`)).status).toBe(200);
    return { id, key: ((await created.json()) as { api_key: string }).api_key };
  }

  async function settled(tenant: string, check: (usage: any) => boolean, what: string): Promise<any> {
    return eventually(async () => {
      const usage: any = await (await call('GET', `/v1/tenants/${tenant}/usage?consistent=true`)).json();
      return check(usage) ? usage : undefined;
    }, 15_000, what);
  }

  test('an update waits at most 10 s, then answers 503 and is undone; the run, answering later, holds only what is stored', async () => {
    const { id: tenant } = await startedTenant();
    // The run reads the new limit, then is held: the change and an authorization behind it wait.
    holds.entitlementsRead = true;
    const started = Date.now();
    const timed = async (answer: Promise<Response>) => ({ res: await answer, ms: Date.now() - started });
    const [limits, authorize] = await Promise.all([
      timed(call('PATCH', `/v1/tenants/${tenant}`, { limits: { calls: 300 } })),
      timed(new Promise((resolve) => setTimeout(resolve, 200)).then(() => call('POST', `/v1/tenants/${tenant}/authorize`, { id: 'late-1', metric: 'calls', quantity: 1 }))),
    ]);
    for (const { res, ms } of [limits, authorize]) {
      expect({ status: res.status, retryAfter: res.headers.get('retry-after') }).toEqual({ status: 503, retryAfter: '1' });
      expect(await res.json()).toMatchObject({ status: 503, code: 'unavailable' });
      expect(ms).toBeGreaterThanOrEqual(RUN_ANSWER_DEADLINE_MS - 500);
      expect(ms).toBeLessThan(RUN_ANSWER_DEADLINE_MS + 3_000);
    }
    // The refused change is undone in PostgreSQL...
    expect(await (await call('GET', `/v1/tenants/${tenant}`)).json()).toMatchObject({ limits: {} });
    // ...and the run, which had read it, reads again once free: it ends with the plan's limit.
    // The authorization was applied late; its retry is answered with that outcome, counted once.
    const retried = await call('POST', `/v1/tenants/${tenant}/authorize`, { id: 'late-1', metric: 'calls', quantity: 1 });
    expect(retried.status).toBe(200);
    expect(await retried.json()).toMatchObject({ allowed: true });
    const usage = await settled(tenant, (u) => u.metrics?.calls?.limit === 100, 'the run to hold the stored limit');
    expect(usage.metrics.calls).toMatchObject({ used: 1, limit: 100 });
  });

  test('a close without a key that the run does not answer in time: the 503 names a key, and a retry with it answers that close instead of closing again', async () => {
    const { id: tenant } = await startedTenant();
    // The tenant's ledger lock, held here, keeps the close's rollover waiting past the deadline.
    const ledgerLock = await h.db.transaction();
    let key: string | null;
    try {
      await lockTenantLedger(ledgerLock, tenant, 'exclusive');
      const unanswered = await call('POST', `/v1/tenants/${tenant}/close-period`);
      expect({ status: unanswered.status, retryAfter: unanswered.headers.get('retry-after') }).toEqual({ status: 503, retryAfter: '1' });
      key = unanswered.headers.get('idempotency-key');
      expect(key).toMatch(/^generated-[0-9a-f-]{36}$/);
      expect(((await unanswered.json()) as { detail: string }).detail).toContain(`Idempotency-Key: ${key}`);
    } finally {
      await ledgerLock.commit();
    }
    // The close goes on once the lock is free; the retry joins it, or reads it back.
    const answered = await eventually(async () => {
      const res = await fetch(`${h.baseUrl}/v1/tenants/${tenant}/close-period`, { method: 'POST', headers: { 'x-api-key': h.adminKey, 'idempotency-key': key! } });
      return res.status === 200 ? ((await res.json()) as { closed_period: { start: string } }) : undefined;
    }, 15_000, 'the retry with the named key to be answered');
    const periods = await h.db('periods').where({ tenant_id: tenant }).orderBy('start').select('start', 'status');
    expect(periods.map((p: { status: string }) => p.status)).toEqual(['closed', 'open']);
    expect(answered.closed_period.start).toBe(periods[0]!.start.toISOString());
  });

  test('a pack the run has drawn from before the deadline passed stands: the purchase answers 201, not an undo', async () => {
    const tenant = await startedTenant();
    const sent = await h.call('POST', '/v1/events', { key: tenant.key, body: { events: [{ id: 'over', metric: 'calls', quantity: 150 }] } });
    expect(sent.status).toBe(202);
    await settled(tenant.id, (u) => u.metrics?.calls?.used === 150, 'the usage counted');
    // The run reads the pack, draws the 50 units above the limit from it and stores the draw,
    // then is held past the deadline.
    holds.drawsRecorded = true;
    const started = Date.now();
    const bought = await call('POST', `/v1/tenants/${tenant.id}/packs`, { id: 'pk-late', metric: 'calls', units: 100 });
    expect(Date.now() - started).toBeGreaterThanOrEqual(RUN_ANSWER_DEADLINE_MS - 500);
    expect(bought.status).toBe(201);
    expect(await bought.json()).toMatchObject({ id: 'pk-late', units: 100 });
    const packs: any = await (await call('GET', `/v1/tenants/${tenant.id}/packs`)).json();
    expect(packs.data.map((p: any) => p.id)).toEqual(['pk-late']);
    expect(await h.db('pack_draws').where({ tenant_id: tenant.id }).select('pack_id', 'units')).toEqual([{ pack_id: 'pk-late', units: '50' }]);
  });
});

// ---- graceful shutdown of the real entry points ----------------------------------------------

interface Spawned {
  child: ChildProcess;
  port: number;
  output: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function spawnEntry(entry: string, env: Record<string, string>): Spawned & { ready: Promise<void> } {
  const port = Number(env.PORT);
  const child = spawn(path.join(ROOT, 'node_modules/.bin/tsx'), [entry], {
    cwd: ROOT,
    env: { ...process.env, LOG_LEVEL: 'warn', HOST: '127.0.0.1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  child.stdout!.on('data', (d: Buffer) => (log += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  extraCleanups.push(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
  });
  const ready = eventually(
    async () => {
      if (child.exitCode !== null) throw new Error(`exited early:\n${log}`);
      const res = await fetch(`http://127.0.0.1:${port}/healthz`);
      return res.ok ? true : undefined;
    },
    120_000,
    `${entry} to answer /healthz`,
  ).then(() => undefined);
  return { child, port, output: () => log, exited, ready };
}

/** Starts a POST /v1/events whose body arrives in two halves; resolves with its answer. */
function slowIngest(port: number, key: string, ids: string[]): { sentHead: Promise<void>; finish: () => void; answer: Promise<{ status: number; connection: string | undefined; body: string }> } {
  const body = Buffer.from(JSON.stringify({ events: ids.map((id) => ({ id, metric: 'calls', quantity: 1 })) }));
  const half = Math.floor(body.length / 2);
  let finish = () => {};
  let sentHead: () => void = () => {};
  const head = new Promise<void>((r) => (sentHead = r));
  const answer = new Promise<{ status: number; connection: string | undefined; body: string }>((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port, method: 'POST', path: '/v1/events', headers: { 'x-api-key': key, 'content-type': 'application/json', 'content-length': body.length } },
      (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, connection: res.headers.connection, body: text }));
      },
    );
    req.on('error', reject);
    req.write(body.subarray(0, half), () => sentHead());
    finish = () => req.end(body.subarray(half));
  });
  return { sentHead: head, finish: () => finish(), answer };
}

async function connectionRefused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('error', () => resolve(true));
  });
}

/** SIGTERM with a request in flight: no new connections, the request completes (202), clean exit. */
async function checkGracefulStop(p: Spawned, idPrefix: string): Promise<void> {
  // An idle keep-alive connection must not hold the shutdown either.
  const agent = new http.Agent({ keepAlive: true });
  await new Promise<void>((resolve, reject) => http.get({ host: '127.0.0.1', port: p.port, path: '/healthz', agent }, (res) => res.resume().on('end', resolve)).on('error', reject));

  const ids = [`${idPrefix}-1`, `${idPrefix}-2`, `${idPrefix}-3`];
  const before = await usedCalls(tenantKey, tenantId);
  const inflight = slowIngest(p.port, tenantKey, ids);
  await inflight.sentHead;
  // The server has read the request's headers (a connection it has read nothing from yet is idle,
  // and a stop closes it): in flight beside the /metrics request reading the gauge.
  await eventually(async () => {
    const text = await fetch(`http://127.0.0.1:${p.port}/metrics`).then((r) => r.text());
    return Number(/^tally_http_requests_in_flight (\d+)$/m.exec(text)?.[1] ?? 0) >= 2 ? true : undefined;
  }, 10_000, 'the slow request in flight');
  const sigtermAt = Date.now();
  p.child.kill('SIGTERM');
  await eventually(async () => ((await connectionRefused(p.port)) ? true : undefined), 10_000, 'the listener to close');
  inflight.finish();
  const answer = await inflight.answer;
  expect(answer).toMatchObject({ status: 202, connection: 'close' });
  expect(JSON.parse(answer.body)).toEqual({ received: 3 });
  let timer: NodeJS.Timeout | undefined;
  const exit = await Promise.race([p.exited, new Promise((r) => (timer = setTimeout(() => r('timeout'), 30_000)))]);
  clearTimeout(timer);
  expect({ exit, log: p.output().slice(-2_000) }).toMatchObject({ exit: { code: 0, signal: null } });
  expect(Date.now() - sigtermAt).toBeLessThan(30_000);
  agent.destroy();
  // The 202 was durable: the events are counted (by the harness's worker).
  expect(await usedCalls(tenantKey, tenantId)).toBe(before + ids.length);
}

describe('graceful shutdown', () => {
  test('`npm run api` (src/api/main.ts) finishes the request in flight, then exits 0', async () => {
    const port = await freePort();
    const p = spawnEntry('src/api/main.ts', {
      PORT: String(port),
      TEMPORAL_ADDRESS: testTemporalAddress(),
      DATABASE_URL: testDatabaseUrl(),
      BILLING_ADMIN_KEY: h.adminKey,
      TEMPORAL_TASK_QUEUE: h.taskQueue,
    });
    await p.ready;
    await checkGracefulStop(p, 'gs-api');
  });

  test("`npm start` (src/main.ts) serves the worker's Temporal metrics on /metrics and stops gracefully", async () => {
    const [port, metricsPort] = await freePorts(2);
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tally-ops-'));
    extraCleanups.push(async () => fs.rmSync(dataDir, { recursive: true, force: true }));
    const p = spawnEntry('src/main.ts', {
      PORT: String(port),
      TEMPORAL_ADDRESS: testTemporalAddress(),
      DATABASE_URL: testDatabaseUrl(),
      BILLING_ADMIN_KEY: h.adminKey,
      // Its own queue: its worker must not take the harness's tasks.
      TEMPORAL_TASK_QUEUE: unique('ops_start'),
      // Its counter shares the database with every other test file: one late round at most.
      COUNTING_INTERVAL_MS: '5000',
      TEMPORAL_METRICS_PORT: String(metricsPort),
      DATA_DIR: dataDir,
    });
    await p.ready;
    const metrics = await eventually(
      async () => {
        const text = await fetch(`http://127.0.0.1:${port}/metrics`).then((r) => r.text());
        return /^temporal_\w+/m.test(text) ? text : undefined;
      },
      30_000,
      'temporal_ metrics on /metrics',
    );
    expect(metrics).toContain('tally_worker_metrics_up 1');
    expect(metrics).toMatch(/^tally_http_requests_total/m);
    // The exporter is on loopback only, at the configured port.
    expect((await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).status).toBe(200);
    await checkGracefulStop(p, 'gs-start');
  });
});
