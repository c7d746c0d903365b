import { Worker } from '@temporalio/worker';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { createActivities } from '../../src/activities';
import { createRecordingNotifier } from '../../src/activities/notifier';
import { startTimeSkippingServer } from '../../src/platform/temporal-server';
import { aggregateStoredUsage } from '../../src/db/usage';
import { periodStartsFrom } from '../../src/domain/periods';
import { ratePeriod } from '../../src/domain/rating';
import type { PlanVersion } from '../../src/domain/plan';
import type { Db } from '../../src/db/knex';
import { PERIOD_ROLLING_OVER, closePeriodUpdate, recordUsageSignal, stateQuery, usageQuery, tenantWorkflowId, type UsageEventInput } from '../../src/workflows/messages';
import { installQuietRuntime, quietLogger, testDb, unique, workflowBundle } from '../support/stack';
import { createTenantFixture } from '../support/tenant-fixture';
import { eventually } from '../support/api-harness';
import { BillingGateway } from '../../src/api/billing-gateway';

/**
 * Months of billing in seconds on the time-skipping test server, with real activities on real
 * PostgreSQL: anniversaries, counter resets, one finalized invoice per period, alerts that re-arm.
 */
let env: TestWorkflowEnvironment;
let db: Db;
let worker: Worker;
let workerRun: Promise<void>;
const taskQueue = unique('periods');

beforeAll(async () => {
  installQuietRuntime();
  env = await startTimeSkippingServer();
  db = testDb();
  worker = await Worker.create({
    connection: env.nativeConnection,
    taskQueue,
    workflowBundle: await workflowBundle(),
    activities: createActivities({ db, logger: quietLogger, notifier: createRecordingNotifier(quietLogger), temporal: env.client }),
  });
  workerRun = worker.run();
});

afterAll(async () => {
  worker?.shutdown();
  await workerRun;
  await env?.teardown();
  await db?.destroy();
});

function tokensPlan(id: string, interval: PlanVersion['interval']): Omit<PlanVersion, 'version'> {
  return {
    id,
    name: 'Tokens',
    currency: 'USD',
    interval,
    base_fee: '10.00',
    alert_thresholds: [80, 90, 100],
    grace_period_seconds: 3600,
    meters: [
      {
        metric: 'tokens',
        aggregation: 'sum',
        limit: 1000,
        pricing: { model: 'graduated', tiers: [{ up_to: 500, unit_price: '0.01' }, { up_to: null, unit_price: '0.005' }] },
      },
    ],
  };
}

/** Moves the test server's clock to an absolute instant (it starts at the real now). */
async function sleepUntil(instantMs: number): Promise<void> {
  const now = await env.currentTimeMs();
  if (instantMs > now) await env.sleep(instantMs - now);
}

async function finalizedInvoices(tenantId: string) {
  return db('invoices').where({ tenant_id: tenantId, status: 'finalized' }).orderBy('period_start');
}

/** Drives one tenant through `periods` consecutive periods and checks each one's invoice. */
async function runPeriods(options: { interval: PlanVersion['interval']; anchor: string; periods: number }) {
  const tenantId = unique('t');
  const fixture = await createTenantFixture(db, { tenantId, plan: tokensPlan(unique('p'), options.interval), anchor: options.anchor });
  const handle = await env.client.workflow.start('tenantBilling', { taskQueue, workflowId: tenantWorkflowId(tenantId), args: [fixture.input] });

  const expectedTotals: string[] = [];
  for (let k = 0; k < options.periods; k++) {
    const start = periodStartsFrom(options.anchor, options.interval, 'UTC', k);
    const end = periodStartsFrom(options.anchor, options.interval, 'UTC', k + 1);
    // Each period: 850 tokens (crosses 80%), then 100 more (crosses 90%), and the very first
    // event id again, which must never count twice.
    const at = new Date(Date.parse(start) + 1000).toISOString();
    const events: UsageEventInput[] = [
      { id: `p${k}-a`, metric: 'tokens', quantity: 850, timestamp: at },
      { id: `p${k}-b`, metric: 'tokens', quantity: 100, timestamp: at },
      { id: 'p0-a', metric: 'tokens', quantity: 850, timestamp: at },
    ];
    await handle.signal(recordUsageSignal, { batchId: `b${k}`, receivedAt: at, events });
    const usage = await eventually(async () => {
      const u = await handle.query(usageQuery);
      return u.period.start === start && u.metrics.tokens!.used === 950 && u.pending_events === 0 ? u : undefined;
    }, 20_000, `usage of period ${k}`);
    expect(usage.period).toMatchObject({ start, end });
    // Alerts re-arm every period: 80% superseded, 90% notified, in this period only.
    expect(usage.alerts.map((a) => [a.threshold, a.status])).toEqual([
      [80, 'superseded'],
      [90, 'notified'],
    ]);
    expectedTotals.push(ratePeriod(fixture.plan, { tokens: '950' }).total);
    // Jump past the period's end, its grace and settle time: the next period opens, the invoice finalizes.
    await sleepUntil(Date.parse(end) + 1000);
    await eventually(async () => ((await handle.query(usageQuery)).period.start === end ? true : undefined), 20_000, `rollover ${k}`);
  }
  await sleepUntil((await env.currentTimeMs()) + 3600_000 + 20_000);
  const invoices = await eventually(async () => {
    const rows = await finalizedInvoices(tenantId);
    return rows.length === options.periods ? rows : undefined;
  }, 30_000, `${options.periods} finalized invoices`);

  for (let k = 0; k < options.periods; k++) {
    const start = periodStartsFrom(options.anchor, options.interval, 'UTC', k);
    expect(invoices[k].period_start.toISOString()).toBe(start);
    // Invariant 5: the total equals an independent recomputation from the stored events.
    const counters = await aggregateStoredUsage(db, tenantId, start, fixture.plan.meters);
    expect(Number(invoices[k].total)).toBe(Number(ratePeriod(fixture.plan, counters).total));
    expect(Number(invoices[k].total)).toBe(Number(expectedTotals[k]));
  }
  // Invariant 3: the repeated id p0-a is stored once, in period 0.
  const p0a = await db('usage_events').where({ tenant_id: tenantId, event_id: 'p0-a' });
  expect(p0a).toHaveLength(1);
  const numbers = invoices.map((i) => i.number);
  expect(numbers).toEqual(Array.from({ length: options.periods }, (_, i) => i + 1));
  const state = await handle.query(stateQuery);
  expect(state.events_counted).toBe(0);
  return { tenantId, invoices };
}

// The test server's clock starts at the real now and only moves forward: anchors are placed ahead of it.
test('13 monthly periods from a Jan 31 anchor: clamped anniversaries, one invoice each, alerts re-arm', async () => {
  const year = new Date(await env.currentTimeMs()).getUTCFullYear() + 1;
  const { invoices } = await runPeriods({ interval: 'month', anchor: `${year}-01-31T00:00:00.000Z`, periods: 13 });
  const leap = (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0;
  const expected = ['01-31', leap ? '02-29' : '02-28', '03-31', '04-30', '05-31', '06-30', '07-31', '08-31', '09-30', '10-31', '11-30', '12-31']
    .map((d) => `${year}-${d}`)
    .concat(`${year + 1}-01-31`);
  expect(invoices.map((i) => i.period_start.toISOString().slice(0, 10))).toEqual(expected);
});

test('3 daily periods', async () => {
  const day = Math.floor((await env.currentTimeMs()) / 86_400_000) + 2;
  await runPeriods({ interval: 'day', anchor: new Date(day * 86_400_000 + 15 * 3_600_000).toISOString(), periods: 3 });
});

test('late events that cross a threshold of a closed period fire it once, in that period', async () => {
  const tenantId = unique('t');
  const day = Math.floor((await env.currentTimeMs()) / 86_400_000) + 2;
  const anchor = new Date(day * 86_400_000).toISOString();
  const fixture = await createTenantFixture(db, { tenantId, plan: tokensPlan(unique('p'), 'day'), anchor });
  const handle = await env.client.workflow.start('tenantBilling', { taskQueue, workflowId: tenantWorkflowId(tenantId), args: [fixture.input] });
  const { start, end } = fixture.period;
  const inPeriod = new Date(Date.parse(start) + 1000).toISOString();

  await sleepUntil(Date.parse(start) + 2000);
  await handle.signal(recordUsageSignal, { batchId: 'b0', receivedAt: inPeriod, events: [{ id: 'e1', metric: 'tokens', quantity: 850, timestamp: inPeriod }] });
  await eventually(async () => ((await handle.query(usageQuery)).metrics.tokens!.used === 850 ? true : undefined), 20_000, '850 counted');

  // The period ends; within its grace, late events take it to 95% then 100%, one of them twice.
  await sleepUntil(Date.parse(end) + 1000);
  await eventually(async () => ((await handle.query(usageQuery)).period.start === end ? true : undefined), 20_000, 'rollover');
  const lateAt = new Date(Date.parse(end) + 2000).toISOString();
  const late = (id: string, quantity: number): UsageEventInput => ({ id, metric: 'tokens', quantity, timestamp: inPeriod });
  const alertsOf = (periodStart: string) =>
    db('alerts').where({ tenant_id: tenantId, period_start: periodStart }).orderBy('threshold').select('threshold', 'status', 'used');
  await handle.signal(recordUsageSignal, { batchId: 'b1', receivedAt: lateAt, events: [late('e2', 100)] });
  await eventually(async () => ((await alertsOf(start)).length === 2 ? true : undefined), 20_000, 'the 90% alert');
  await handle.signal(recordUsageSignal, { batchId: 'b2', receivedAt: lateAt, events: [late('e2', 100), late('e3', 50)] });
  await handle.signal(recordUsageSignal, { batchId: 'b3', receivedAt: lateAt, events: [late('e3', 50)] });
  const closedAlerts = await eventually(async () => {
    const rows = await alertsOf(start);
    return rows.length === 3 ? rows : undefined;
  }, 20_000, 'alerts of the closed period');
  expect(closedAlerts.map((a) => [Number(a.threshold), a.status, Number(a.used)])).toEqual([
    [80, 'notified', 850],
    [90, 'notified', 950],
    [100, 'notified', 1000],
  ]);
  // The current period's view and alerts are untouched by the closed period's late events.
  const usage = await handle.query(usageQuery);
  expect(usage.metrics.tokens!.used).toBe(0);
  expect(usage.alerts).toEqual([]);
  expect(await alertsOf(end)).toEqual([]);

  // The invoice, sealed after the grace, bills all three distinct events.
  await sleepUntil(Date.parse(end) + 3600_000 + 20_000);
  const [invoice] = await eventually(async () => {
    const rows = await finalizedInvoices(tenantId);
    return rows.length === 1 ? rows : undefined;
  }, 30_000, 'finalized invoice');
  expect(Number(invoice.total)).toBe(Number(ratePeriod(fixture.plan, { tokens: '1000' }).total));
  expect(await alertsOf(start)).toHaveLength(3);
});

/**
 * A tenant (no grace) whose workflow counts in chunks of 20 events, and `batches` batches of 100
 * events signalled at once: a long queue that takes many counting activities to drain.
 */
async function tenantWithLongQueue(batches: number) {
  const tenantId = unique('t');
  const anchor = new Date((await env.currentTimeMs()) - 60_000).toISOString();
  const plan = { ...tokensPlan(unique('p'), 'month'), grace_period_seconds: 0 };
  const fixture = await createTenantFixture(db, { tenantId, plan, anchor, limits: { maxEventsPerChunk: 20 } });
  const handle = await env.client.workflow.start('tenantBilling', { taskQueue, workflowId: tenantWorkflowId(tenantId), args: [fixture.input] });
  const sent: UsageEventInput[] = [];
  for (let b = 0; b < batches; b++) {
    const at = new Date(await env.currentTimeMs()).toISOString();
    const events = Array.from({ length: 100 }, (_, i): UsageEventInput => ({ id: `e${b}-${i}`, metric: 'tokens', quantity: 1, timestamp: at }));
    sent.push(...events);
    await handle.signal(recordUsageSignal, { batchId: `b${b}`, receivedAt: at, events });
  }
  return { tenantId, fixture, handle, sent };
}

test('a close under sustained ingest does not wait for the queue to drain, and its invoice waits for every event', async () => {
  // 4,000 queued events take 200 counting activities to drain.
  const { tenantId, fixture, handle, sent } = await tenantWithLongQueue(40);
  const closed = await handle.executeUpdate(closePeriodUpdate, { args: [{ finalize: true }] });
  // The next run took over the queue: the close did not wait for 4,000 events to be counted.
  const state = await handle.query(stateQuery);
  expect(state.period.start).toBe(closed.current_period!.start);
  expect(state.pending_events).toBeGreaterThan(0);

  // Every event is stored once, in the period its timestamp falls in (the close ends the period at
  // a whole second, so the last events sent may open the next one); the invoice of the closed
  // period finalizes only after its last event was counted.
  const [invoice] = await eventually(async () => {
    const rows = await finalizedInvoices(tenantId);
    return rows.length === 1 ? rows : undefined;
  }, 60_000, 'finalized invoice');
  const stored = await eventually(async () => {
    const rows = await db('usage_events').where({ tenant_id: tenantId }).select('event_id', 'period_start', 'timestamp');
    return rows.length === sent.length ? rows : undefined;
  }, 60_000, 'every event stored');
  const closedEnd = Date.parse(closed.closed_period.end);
  for (const row of stored) {
    const expected = row.timestamp.getTime() < closedEnd ? closed.closed_period.start : closed.current_period!.start;
    expect([row.event_id, row.period_start.toISOString()]).toEqual([row.event_id, expected]);
  }
  expect(await db('rejected_events').where({ tenant_id: tenantId })).toEqual([]);
  const inClosed = stored.filter((r) => r.timestamp.getTime() < closedEnd).length;
  expect(inClosed).toBeGreaterThan(0);
  expect(Number(invoice.total)).toBe(Number(ratePeriod(fixture.plan, { tokens: String(inClosed) }).total));
});

test('an authorize request that meets a rollover is answered by the next period, once', async () => {
  // A long queue: the authorize request waits for it to drain, and the close does not.
  const { tenantId, handle } = await tenantWithLongQueue(20);
  const gateway = new BillingGateway(env.client, taskQueue, { searchAttributes: false, coalescing: false });
  const firstRunId = (await handle.describe()).runId;
  const authorized = gateway.authorize(tenantId, { id: 'auth-1', metric: 'tokens', quantity: 5 });
  await new Promise((resolve) => setTimeout(resolve, 500)); // the authorize update is admitted first
  const closed = await handle.executeUpdate(closePeriodUpdate, { args: [{ finalize: true }] });

  expect(await authorized).toMatchObject({ allowed: true });
  // Asked again (a client retry), the same id is not consumed twice.
  expect(await gateway.authorize(tenantId, { id: 'auth-1', metric: 'tokens', quantity: 5 })).toMatchObject({ allowed: true });
  const consumed = await eventually(async () => {
    const rows = await db('usage_events').where({ tenant_id: tenantId, event_id: 'auth-1' }).select('period_start', 'quantity');
    return rows.length > 0 ? rows : undefined;
  }, 30_000, 'the authorized event stored');
  expect(consumed).toHaveLength(1);
  expect(Number(consumed[0].quantity)).toBe(5);
  // Consumed in the period that was current when it was answered: the next one.
  expect(consumed[0].period_start.toISOString()).toBe(closed.current_period!.start);
  // The first run refused it while rolling over (so it could end with every handler finished).
  const history = await env.client.workflow.getHandle(tenantWorkflowId(tenantId), firstRunId).fetchHistory();
  const refusals = (history.events ?? []).filter(
    (e) => e.workflowExecutionUpdateCompletedEventAttributes?.outcome?.failure?.applicationFailureInfo?.type === PERIOD_ROLLING_OVER,
  );
  expect(refusals).toHaveLength(1);
});
