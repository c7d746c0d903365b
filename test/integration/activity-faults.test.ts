import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Worker } from '@temporalio/worker';
import type { Client, WorkflowHandle } from '@temporalio/client';
import type { NativeConnection } from '@temporalio/worker';
import { createActivities, type BillingActivities } from '../../src/activities';
import { createNotifier, createRecordingNotifier, type Notifier } from '../../src/activities/notifier';
import { createDb, type Db } from '../../src/db/knex';
import { aggregateStoredUsage } from '../../src/db/usage';
import { ratePeriod } from '../../src/domain/rating';
import type { PlanVersion } from '../../src/domain/plan';
import { freePort } from '../../src/platform/free-port';
import { generateWebhookSecret } from '../../src/notifications/secrets';
import { verifyBillingSignature } from '../../src/notifications/verify-signature';
import type { periodInvoice } from '../../src/workflows/period-invoice';
import {
  alertId,
  closePeriodUpdate,
  finalizeInvoiceSignal,
  recordUsageSignal,
  settledUsageUpdate,
  tenantWorkflowId,
  type UsageEventInput,
} from '../../src/workflows/messages';
import { connectToTestTemporal, quietLogger, testDb, unique, workflowBundle } from '../support/stack';
import { createTenantFixture } from '../support/tenant-fixture';
import { eventually } from '../support/api-harness';
import { startSmtpInbox } from '../support/smtp-inbox';

/**
 * Fault injection around the activities, on the real dev server and PostgreSQL, with a worker
 * whose activities are wrapped (as in exactly-once.test.ts):
 *
 * - PostgreSQL unreachable during a close and the invoice's generation (the first attempts run
 *   on a second pool pointed at a closed port): retried, then exactly one finalized invoice;
 * - PostgreSQL unreachable while alerts are recorded and delivered: retried, one alert row and
 *   one delivery per key;
 * - a webhook receiver that hangs: each attempt times out, is retried, and the event is
 *   delivered exactly once when the receiver answers; a redirecting receiver is never followed;
 * - poison events signalled straight to the workflow (bypassing the API): they must not block
 *   the tenant's other events nor fail workflow tasks in a loop.
 */

let db: Db;
/** A pool on a loopback port nothing listens on: every query fails with ECONNREFUSED. */
let deadDb: Db;
let temporal: { client: Client; nativeConnection: NativeConnection; connection: { close(): Promise<void> } };
/** Workers still running, stopped in afterAll whatever happened. */
const workers = new Set<() => Promise<void>>();

beforeAll(async () => {
  db = testDb();
  deadDb = createDb(`postgres://tally:tally@127.0.0.1:${await freePort()}/tally`, { max: 2 });
  temporal = await connectToTestTemporal();
});
afterAll(async () => {
  // A test that failed on a deadline may have left its worker running: stop it before the connection.
  await Promise.all([...workers].map((stop) => stop()));
  await temporal?.connection.close();
  await temporal?.nativeConnection.close();
  await deadDb?.destroy();
  await db?.destroy();
});

const plan = (id: string, extra: Partial<Omit<PlanVersion, 'version'>> = {}): Omit<PlanVersion, 'version'> => ({
  id,
  name: 'Faults',
  currency: 'USD',
  interval: 'month',
  base_fee: '2.00',
  alert_thresholds: [80, 90, 100],
  grace_period_seconds: 3600,
  meters: [
    { metric: 'minutes', aggregation: 'sum', limit: 100, pricing: { model: 'graduated', tiers: [{ up_to: 50, unit_price: '0.10' }, { up_to: null, unit_price: '0.05' }] } },
    { metric: 'calls', aggregation: 'count', pricing: { model: 'per_unit', unit_price: '0.01' } },
  ],
  ...extra,
});

/** Runs a worker on `taskQueue` whose activities `wrap` may replace with faulty ones. */
async function startWorker(taskQueue: string, options: { wrap?: (real: BillingActivities) => BillingActivities; notifier?: Notifier } = {}) {
  const real = createActivities({ db, logger: quietLogger, notifier: options.notifier ?? createRecordingNotifier(quietLogger), temporal: temporal.client });
  const worker = await Worker.create({
    connection: temporal.nativeConnection,
    taskQueue,
    workflowBundle: await workflowBundle(),
    activities: options.wrap ? options.wrap(real) : real,
    shutdownGraceTime: '1 second',
  });
  const running = worker.run();
  const stop = async () => {
    if (!workers.delete(stop)) return;
    worker.shutdown();
    await running;
  };
  workers.add(stop);
  return { stop };
}

/**
 * Runs a Temporal client call with a deadline: a blocked workflow must fail the test, not hang
 * it, and the call is cancelled (not left retrying after the connection closes).
 */
async function within<T>(ms: number, what: string, call: () => Promise<T>): Promise<T> {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(new Error(`${what}: no answer in ${ms} ms`)), ms);
  try {
    return await temporal.client.withAbortSignal(abort.signal, call);
  } catch (err) {
    if (abort.signal.aborted) throw abort.signal.reason;
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

/** The same activities on the unreachable pool: what an attempt runs while PostgreSQL is down. */
function deadActivities(): BillingActivities {
  return createActivities({ db: deadDb, logger: quietLogger, notifier: createRecordingNotifier(quietLogger), temporal: temporal.client });
}

/**
 * Routes the first `down` calls of an activity to the dead pool (connection refused), and can
 * lose the answer of the next call after it wrote (`thenLoseAnswer`). Records every error.
 */
interface OutageState {
  calls: number;
  errors: string[];
}

function outage<A extends unknown[], R>(real: (...args: A) => Promise<R>, dead: (...args: A) => Promise<R>, down: number, thenLoseAnswer = false) {
  const state: OutageState = { calls: 0, errors: [] };
  const fn = async (...args: A): Promise<R> => {
    state.calls += 1;
    try {
      if (state.calls <= down) return await dead(...args);
      const result = await real(...args);
      if (thenLoseAnswer && state.calls === down + 1) throw new Error('connection reset after commit (injected): the answer is lost');
      return result;
    } catch (err) {
      state.errors.push(String((err as Error).message));
      throw err;
    }
  };
  return { fn, state };
}

async function startTenant(taskQueue: string, planExtra: Partial<Omit<PlanVersion, 'version'>> = {}, tenantExtra: Record<string, unknown> = {}) {
  const tenantId = unique('af');
  const now = new Date(Math.floor(Date.now() / 1000) * 1000).toISOString();
  const fixture = await createTenantFixture(db, { tenantId, plan: plan(unique('faults'), planExtra), anchor: now });
  if (Object.keys(tenantExtra).length > 0) await db('tenants').where({ id: tenantId }).update(tenantExtra);
  const handle = await temporal.client.workflow.start('tenantBilling', { taskQueue, workflowId: tenantWorkflowId(tenantId), args: [fixture.input] });
  return { ...fixture, handle };
}

const at = () => new Date().toISOString();
const minutes = (prefix: string, n: number, quantity: number): UsageEventInput[] =>
  Array.from({ length: n }, (_, i) => ({ id: `${prefix}-${i}`, metric: 'minutes', quantity, timestamp: at() }));

async function signal(handle: WorkflowHandle, events: UsageEventInput[]): Promise<void> {
  await handle.signal(recordUsageSignal, { batchId: unique('b'), receivedAt: at(), events });
}

/** No failed workflow task anywhere in the run's history, and no activity stuck retrying. */
async function expectHealthy(handle: WorkflowHandle): Promise<void> {
  const description = await handle.describe();
  expect(description.status.name).toBe('RUNNING');
  const history = await handle.fetchHistory();
  expect((history.events ?? []).filter((e) => e.workflowTaskFailedEventAttributes).length).toBe(0);
  const stuck = (description.raw.pendingActivities ?? []).filter((a) => Number(a.attempt ?? 0) > 1);
  expect(stuck.map((a) => ({ activity: a.activityType?.name, attempt: a.attempt, failure: a.lastFailure?.message }))).toEqual([]);
}

// ---- PostgreSQL unreachable -------------------------------------------------------------------

test('PostgreSQL unreachable during the close and the invoice: retried, then exactly one finalized invoice', async () => {
  const taskQueue = unique('pgdown-invoice');
  const dead = deadActivities();
  const faults: Record<string, OutageState> = {};
  const worker = await startWorker(taskQueue, {
    wrap: (real) => {
      const recordPeriodClosed = outage(real.recordPeriodClosed, dead.recordPeriodClosed, 2);
      const draftInvoice = outage(real.draftInvoice, dead.draftInvoice, 2);
      const finalizeInvoice = outage(real.finalizeInvoice, dead.finalizeInvoice, 3, true);
      Object.assign(faults, { recordPeriodClosed: recordPeriodClosed.state, draftInvoice: draftInvoice.state, finalizeInvoice: finalizeInvoice.state });
      return { ...real, recordPeriodClosed: recordPeriodClosed.fn, draftInvoice: draftInvoice.fn, finalizeInvoice: finalizeInvoice.fn };
    },
  });
  try {
    const tenant = await startTenant(taskQueue);
    await signal(tenant.handle, [...minutes('m', 6, 12.5), { id: 'c1', metric: 'calls', quantity: 1, timestamp: at() }]);
    await tenant.handle.executeUpdate(settledUsageUpdate);

    // A close without finalize: the invoice is drafted during the grace, then finalized on signal.
    const closed = await tenant.handle.executeUpdate(closePeriodUpdate, { args: [{ finalize: false }] });
    const invoiceHandle = temporal.client.workflow.getHandle<typeof periodInvoice>(closed.invoice_workflow_id);
    await eventually(async () => ((await db('invoices').where({ id: closed.invoice_id }).first())?.status === 'draft' ? true : undefined), 20_000, 'the draft');
    await invoiceHandle.signal(finalizeInvoiceSignal);
    const summary = await invoiceHandle.result();
    expect(summary).toMatchObject({ invoice_id: closed.invoice_id, status: 'finalized', number: 1 });

    // Every injected outage was a refused connection, and each activity was retried past it.
    for (const [name, fault] of Object.entries(faults)) {
      const down = name === 'finalizeInvoice' ? 3 : 2;
      expect({ name, refused: fault.errors.slice(0, down).every((e) => /ECONNREFUSED/.test(e)) }).toEqual({ name, refused: true });
      expect(fault.calls).toBeGreaterThan(down);
    }
    expect(faults.finalizeInvoice!.errors[3]).toMatch(/answer is lost/); // written, answer lost, retried

    // Exactly one invoice for the period, finalized once, its lines written once, rated from the events.
    const invoices = await db('invoices').where({ tenant_id: tenant.tenantId });
    expect(invoices.map((i) => [i.id, i.status, i.number, i.version])).toEqual([[closed.invoice_id, 'finalized', 1, 1]]);
    const lines = await db('invoice_lines').where({ invoice_id: closed.invoice_id }).orderBy('position');
    expect(lines).toHaveLength(summary.lines);
    const stored = await aggregateStoredUsage(db, tenant.tenantId, tenant.period.start, tenant.plan.meters);
    const expected = ratePeriod(tenant.plan, stored);
    expect(Number(invoices[0].total)).toBeCloseTo(Number(expected.total), 10);
    expect(expected.total).toBe('8.26'); // 2.00 base + (50 x 0.10 + 25 x 0.05) minutes + 1 call x 0.01
    const period = await db('periods').where({ tenant_id: tenant.tenantId, start: tenant.period.start }).first();
    expect(period.status).toBe('invoiced');
    await expectHealthy(tenant.handle);
  } finally {
    await worker.stop();
  }
});

test('PostgreSQL unreachable while alerts are recorded and delivered: retried, one alert row and one delivery per key', async () => {
  const taskQueue = unique('pgdown-alerts');
  const dead = deadActivities();
  const faults: Record<string, OutageState> = {};
  const worker = await startWorker(taskQueue, {
    wrap: (real) => {
      const recordAlerts = outage(real.recordAlerts, dead.recordAlerts, 3, true);
      const deliverAlert = outage(real.deliverAlert, dead.deliverAlert, 2);
      Object.assign(faults, { recordAlerts: recordAlerts.state, deliverAlert: deliverAlert.state });
      return { ...real, recordAlerts: recordAlerts.fn, deliverAlert: deliverAlert.fn };
    },
  });
  try {
    const tenant = await startTenant(taskQueue);
    // One crossing per batch (each counted before the next is sent): 85 %, 95 %, 125 %.
    for (const [prefix, quantity] of [['a', 85], ['b', 10], ['c', 30]] as const) {
      await signal(tenant.handle, minutes(prefix, 1, quantity));
      await eventually(async () => ((await tenant.handle.executeUpdate(settledUsageUpdate)).pending_events === 0 ? true : undefined), 20_000, `batch ${prefix}`);
    }
    const usage = await tenant.handle.executeUpdate(settledUsageUpdate);
    expect(usage.metrics.minutes!.used).toBe(125);

    const ids = [80, 90, 100].map((t) => alertId(tenant.tenantId, tenant.period.start, 'minutes', t));
    const rows = await eventually(async () => {
      const found = await db('alerts').where({ tenant_id: tenant.tenantId }).orderBy('threshold');
      return found.length === 3 ? found : undefined;
    }, 20_000, 'three alert rows');
    expect(rows.map((r) => [r.id, Number(r.threshold), r.status])).toEqual([
      [ids[0], 80, 'notified'],
      [ids[1], 90, 'notified'],
      [ids[2], 100, 'notified'],
    ]);
    // Delivered (recorded: the tenant has no channel) once per alert, after the outage.
    const deliveries = await eventually(async () => {
      const found = await db('notification_deliveries').where({ tenant_id: tenant.tenantId }).orderBy('event_id');
      return found.length === 3 && found.every((d) => d.status === 'recorded') ? found : undefined;
    }, 30_000, 'three deliveries');
    expect(deliveries.map((d) => [d.event_id, d.channel])).toEqual([...ids].sort().map((id) => [id, 'log']));
    expect(faults.recordAlerts!.errors.slice(0, 3).every((e) => /ECONNREFUSED/.test(e))).toBe(true);
    expect(faults.recordAlerts!.errors[3]).toMatch(/answer is lost/);
    expect(faults.deliverAlert!.errors.slice(0, 2).every((e) => /ECONNREFUSED/.test(e))).toBe(true);

    // The workflow decided each threshold once, whatever the retries.
    const view = await tenant.handle.executeUpdate(settledUsageUpdate);
    expect(view.alerts.map((a) => a.threshold)).toEqual([80, 90, 100]);
    await expectHealthy(tenant.handle);
  } finally {
    await worker.stop();
  }
});

// ---- webhook receivers that misbehave ---------------------------------------------------------

interface Hit {
  path: string;
  raw: string;
  signature: string | undefined;
  answered: number | 'never';
}

/**
 * `/hang-*`: the first `hangs` requests per path are never answered, later ones get 200.
 * `/redirect-*`: 302 to `redirectTo`. Anything else: 200.
 */
function startReceiver(hangs: number, redirectTo = 'http://127.0.0.1:9/'): Promise<{ url: string; hits: Hit[]; close(): Promise<void> }> {
  const hits: Hit[] = [];
  const hanging = new Set<http.ServerResponse>();
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const path = req.url ?? '/';
      const hit: Hit = { path, raw: Buffer.concat(chunks).toString('utf8'), signature: req.headers['x-billing-signature'] as string | undefined, answered: 'never' };
      const earlier = hits.filter((h) => h.path === path).length;
      hits.push(hit);
      if (path.startsWith('/hang-') && earlier < hangs) {
        hanging.add(res); // never answered: the sender's timeout must end the attempt
        res.on('close', () => hanging.delete(res));
        return;
      }
      if (path.startsWith('/redirect-')) {
        hit.answered = 302;
        res.writeHead(302, { location: redirectTo }).end();
        return;
      }
      hit.answered = 200;
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok');
    });
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      resolve({
        url: `http://127.0.0.1:${port}`,
        hits,
        close: () =>
          new Promise<void>((done) => {
            for (const res of hanging) res.destroy();
            server.close(() => done());
            server.closeAllConnections();
          }),
      });
    });
  });
}

test('a webhook receiver that hangs: attempts time out, are retried, and the event is delivered exactly once when it answers', async () => {
  const receiver = await startReceiver(2);
  const taskQueue = unique('hang');
  // One attempt waits at most 1 s for the receiver (10 s in production).
  const worker = await startWorker(taskQueue, { notifier: createNotifier({ logger: quietLogger, webhookTimeoutMs: 1_000 }) });
  try {
    const path = `/hang-${unique('w')}`;
    const secret = generateWebhookSecret();
    const tenant = await startTenant(taskQueue, {}, { webhook_url: `${receiver.url}${path}`, webhook_secret: secret });
    await signal(tenant.handle, minutes('h', 1, 85)); // 80 %
    const eventId = alertId(tenant.tenantId, tenant.period.start, 'minutes', 80);

    // Watch the delivery row while it is retried: the timeouts show up as its last error.
    const errorsSeen = new Set<string>();
    const delivered = await eventually(async () => {
      const row = await db('notification_deliveries').where({ event_id: eventId, channel: 'webhook' }).first();
      if (row?.last_error) errorsSeen.add(row.last_error);
      return row?.status === 'delivered' ? row : undefined;
    }, 30_000, 'the webhook delivered');
    expect([...errorsSeen]).toEqual(['timed out']);
    expect(delivered).toMatchObject({ status: 'delivered', attempts: 3, last_error: null, target: `${receiver.url}${path}` });
    expect(delivered.delivered_at).toBeInstanceOf(Date);

    // Two attempts hung (never answered), the third got 200: the same signed body every time.
    const hits = receiver.hits.filter((h) => h.path === path);
    expect(hits.map((h) => h.answered)).toEqual(['never', 'never', 200]);
    expect(new Set(hits.map((h) => h.raw)).size).toBe(1);
    expect(JSON.parse(hits[0]!.raw)).toMatchObject({ id: eventId, type: 'alert.triggered' });
    for (const h of hits) expect(verifyBillingSignature(h.raw, h.signature, secret).ok).toBe(true);

    // Later usage and any stray retry: still exactly one successful delivery of the event.
    await signal(tenant.handle, minutes('h2', 1, 1));
    await tenant.handle.executeUpdate(settledUsageUpdate);
    await new Promise((r) => setTimeout(r, 2_500));
    const after = receiver.hits.filter((h) => h.path === path && JSON.parse(h.raw).id === eventId);
    expect(after.filter((h) => h.answered === 200)).toHaveLength(1);
    expect(after).toHaveLength(3);
    const rows = await db('notification_deliveries').where({ event_id: eventId });
    expect(rows).toHaveLength(1);
    await expectHealthy(tenant.handle);
  } finally {
    await worker.stop();
    await receiver.close();
  }
});

test('a receiver that redirects is never followed: the signed body does not reach the redirect target', async () => {
  const target = await startReceiver(0);
  const receiver = await startReceiver(0, `${target.url}/stolen`);
  const taskQueue = unique('redirect');
  const worker = await startWorker(taskQueue, { notifier: createNotifier({ logger: quietLogger, webhookTimeoutMs: 1_000, maxAttempts: 2 }) });
  try {
    const path = `/redirect-${unique('w')}`;
    const tenant = await startTenant(taskQueue, {}, { webhook_url: `${receiver.url}${path}`, webhook_secret: generateWebhookSecret() });
    await signal(tenant.handle, minutes('r', 1, 90));
    const eventId = alertId(tenant.tenantId, tenant.period.start, 'minutes', 90);
    const failed = await eventually(async () => {
      const row = await db('notification_deliveries').where({ event_id: eventId, channel: 'webhook' }).first();
      return row?.status === 'failed' ? row : undefined;
    }, 20_000, 'the delivery given up');
    expect(failed).toMatchObject({ attempts: 2, last_error: 'receiver answered HTTP 302', delivered_at: null });
    expect(receiver.hits.filter((h) => h.path === path).map((h) => h.answered)).toEqual([302, 302]);
    expect(target.hits).toEqual([]);
    expect((await db('alerts').where({ id: eventId }).first()).status).toBe('failed');
  } finally {
    await worker.stop();
    await receiver.close();
    await target.close();
  }
});

test('a tenant name with CR/LF cannot inject email headers or recipients into its alert email', async () => {
  const smtp = await startSmtpInbox();
  const taskQueue = unique('smtp');
  const worker = await startWorker(taskQueue, { notifier: createNotifier({ logger: quietLogger, smtpUrl: `smtp://127.0.0.1:${smtp.port}` }) });
  try {
    // A tenant may rename itself (PATCH name): the API takes any text without NUL, CR/LF included.
    const name = 'Evil\r\nBcc: victim@example.com\r\nX-Injected: yes\r\n\r\nforged body';
    const tenant = await startTenant(taskQueue, {}, { name, email: 'owner@example.com' });
    await signal(tenant.handle, minutes('e', 1, 85));
    const mail = await eventually(async () => smtp.mails[0], 20_000, 'the alert email');
    expect(mail.to).toEqual(['owner@example.com']);
    const head = mail.raw.slice(0, mail.raw.indexOf('\r\n\r\n'));
    const headerNames = head.split('\r\n').filter((l) => !/^[ \t]/.test(l)).map((l) => l.slice(0, l.indexOf(':')).toLowerCase());
    expect(headerNames).not.toContain('bcc');
    expect(headerNames).not.toContain('x-injected');
    expect(headerNames.filter((h) => h === 'subject')).toHaveLength(1);
    await new Promise((r) => setTimeout(r, 500));
    expect(smtp.mails).toHaveLength(1);
  } finally {
    await worker.stop();
    await smtp.close();
  }
});

// ---- poison events ----------------------------------------------------------------------------

/**
 * Signals `poison` between good events, straight through the Temporal client (the API would have
 * refused it), then more good events. The good ones must all count, the poison must not, and the
 * workflow must stay healthy; a storable poison is kept in `rejected_events`.
 */
async function expectPoisonContained(makePoison: () => UsageEventInput, options: { storable?: boolean } = {}) {
  const taskQueue = unique('poison');
  const worker = await startWorker(taskQueue);
  try {
    const tenant = await startTenant(taskQueue, { meters: [{ metric: 'minutes', aggregation: 'sum', pricing: { model: 'per_unit', unit_price: '0.01' } }] });
    const poison = makePoison(); // timestamped now, inside the tenant's period
    await signal(tenant.handle, [...minutes('good-a', 3, 2), poison, ...minutes('good-b', 2, 2)]);
    await signal(tenant.handle, minutes('good-c', 5, 2));
    // A workflow whose tasks fail cannot answer an update: bound each ask, and the whole wait.
    const usage = await eventually(async () => {
      const u = await within(3_000, 'settledUsage', () => tenant.handle.executeUpdate(settledUsageUpdate));
      return u.pending_events === 0 ? u : undefined;
    }, 15_000, 'the good events counted');
    expect(usage.metrics.minutes!.used).toBe(20);
    const stored: string[] = await db('usage_events').where({ tenant_id: tenant.tenantId }).pluck('event_id');
    expect(stored.sort()).toEqual([...minutes('good-a', 3, 2), ...minutes('good-b', 2, 2), ...minutes('good-c', 5, 2)].map((e) => e.id).sort());
    if (options.storable !== false) {
      const rejected = await db('rejected_events').where({ tenant_id: tenant.tenantId });
      expect(rejected.map((r) => r.event_id)).toEqual([poison.id]);
    }
    await expectHealthy(tenant.handle);
  } finally {
    await worker.stop();
  }
}

test('a poison event with an unknown metric is kept in rejected_events; the tenant counts its other events', async () => {
  await expectPoisonContained(() => ({ id: 'poison-metric', metric: 'no_such_metric', quantity: 1, timestamp: at() }));
});

test('a poison event with a metric every object has (constructor) is refused like an unknown metric', async () => {
  await expectPoisonContained(() => ({ id: 'poison-ctor', metric: 'constructor', quantity: 1, timestamp: at() }));
});

test('a poison event with an unparseable timestamp is kept in rejected_events; the tenant counts its other events', async () => {
  await expectPoisonContained(() => ({ id: 'poison-time', metric: 'minutes', quantity: 1, timestamp: 'not a date' }));
});

test('a poison event with a non-numeric quantity does not block the tenant', async () => {
  await expectPoisonContained(() => ({ id: 'poison-qty', metric: 'minutes', quantity: 'abc', timestamp: at() }));
});

test('a poison event with a negative quantity does not block the tenant', async () => {
  await expectPoisonContained(() => ({ id: 'poison-negative', metric: 'minutes', quantity: -5, timestamp: at() }));
});

test('a poison event whose id PostgreSQL cannot store (NUL) does not block the tenant', async () => {
  await expectPoisonContained(() => ({ id: 'poison\u0000nul', metric: 'minutes', quantity: 1, timestamp: at() }), { storable: false });
});
