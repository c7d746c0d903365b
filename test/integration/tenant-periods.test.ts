import type { Duration } from '@temporalio/common';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { startTimeSkippingServer } from '../../src/platform/temporal-server';
import { storeUsage, type IncomingEvent, type StoreOutcome } from '../../src/db/ingest';
import { countUnclaimedEvents, readPeriodCounters } from '../../src/db/ledger';
import { aggregateStoredUsage } from '../../src/db/usage';
import { periodStartsFrom } from '../../src/domain/periods';
import { ratePeriod } from '../../src/domain/rating';
import type { PlanVersion } from '../../src/domain/plan';
import type { Db } from '../../src/db/knex';
import { BillingGateway } from '../../src/api/billing-gateway';
import {
  PERIOD_ROLLING_OVER,
  closePeriodUpdate,
  invoiceWorkflowId,
  recordUsageSignal,
  stateQuery,
  tenantWorkflowId,
  usageQuery,
  type ClosePeriodResult,
} from '../../src/workflows/messages';
import { installQuietRuntime, testDb, unique } from '../support/stack';
import { createTenantFixture, type TenantFixture } from '../support/tenant-fixture';
import { eventually } from '../support/api-harness';
import {
  ActivityGate,
  localActivityTypes,
  childInputs,
  eventsOf,
  runHistories,
  runIsQuiet,
  sleepUntil,
  startPeriodsWorker,
  unreplayableRuns,
  updateAccepted,
} from '../support/periods-harness';

/**
 * Months of billing in seconds on the time-skipping test server, with real activities on real
 * PostgreSQL: anniversaries on the workflow's own timers, counters equal to the stored events,
 * one finalized invoice per period, alerts that re-arm, late events within grace, and closes
 * that meet authorizations.
 *
 * Each test gets its own test server: its clock starts at the real now and only moves forward,
 * and `storeUsage` judges events by the `receivedAt` it is given, so usage is stored "received"
 * at the server's current time. Between sleeps that clock runs at the real pace, which keeps the
 * workflow's clock and the activities' wall clock together in the tests that never skip time.
 */
let db: Db;
let env: TestWorkflowEnvironment;
const stops: Array<() => Promise<void>> = [];
/** The tenant workflows a test started: each of their runs must replay (`unreplayableRuns`). */
const started: Array<{ workflowId: string; firstRunId: string }> = [];

beforeAll(() => {
  installQuietRuntime();
  db = testDb();
});
afterAll(async () => {
  await db?.destroy();
});
beforeEach(async () => {
  env = await startTimeSkippingServer();
});
afterEach(async () => {
  for (const stop of stops.splice(0).reverse()) await stop();
  const workflows = started.splice(0);
  const unreplayable = env ? await unreplayableRuns(env.client, workflows) : [];
  await env?.teardown();
  expect(unreplayable).toEqual([]);
});

async function startWorker(taskQueue: string, options: Parameters<typeof startPeriodsWorker>[3] = {}) {
  const worker = await startPeriodsWorker(env, db, taskQueue, options);
  stops.push(worker.stop);
  return worker;
}

function tokensPlan(interval: PlanVersion['interval'], options: { hardLimit?: boolean } = {}): Omit<PlanVersion, 'version'> {
  return {
    id: unique('p'),
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
        ...(options.hardLimit ? { hard_limit: true } : {}),
        pricing: { model: 'graduated', tiers: [{ up_to: 500, unit_price: '0.01' }, { up_to: null, unit_price: '0.005' }] },
      },
    ],
  };
}

const HOUR = 3_600_000;
const DAY = 86_400_000;

/**
 * A workflow task held open by a local activity (a claim a test holds at a gate) heartbeats at
 * 80 % of this timeout, and an update that arrives meanwhile is admitted only by the next task:
 * with the default 10 s, each held claim cost a test about 8 s of waiting for nothing.
 */
const WORKFLOW_TASK_TIMEOUT = '3 seconds';

/**
 * For the tests that skip time past a grace end and hold no claim: a workflow task that
 * heartbeats can leave the test server skipping no more time. With claims slowed to 2.3–2.5 s
 * (so that a run's first task heartbeated at 80 % of 3 s), the sleep to the grace end of the
 * worker-down test never returned in 5 runs of 31. The default timeout heartbeats only after 8 s.
 */
const SKIPPING_WORKFLOW_TASK_TIMEOUT = '10 seconds';

/** A tenant in PostgreSQL and its workflow, started as the API starts it (no ledger: the run restores it). */
async function startTenant(taskQueue: string, plan: Omit<PlanVersion, 'version'>, anchor: string, workflowTaskTimeout: Duration = WORKFLOW_TASK_TIMEOUT) {
  const tenantId = unique('t');
  const fixture = await createTenantFixture(db, { tenantId, plan, anchor });
  const handle = await env.client.workflow.start('tenantBilling', { taskQueue, workflowId: tenantWorkflowId(tenantId), args: [fixture.input], workflowTaskTimeout });
  started.push({ workflowId: handle.workflowId, firstRunId: handle.firstExecutionRunId });
  return { ...fixture, firstRunId: handle.firstExecutionRunId };
}

function tokens(id: string, quantity: number, timestampMs: number): IncomingEvent {
  return { id, metric: 'tokens', quantity: String(quantity), timestamp: new Date(timestampMs).toISOString() };
}

/** Stores a batch as the API does, received at the test server's current time. */
async function store(tenantId: string, events: IncomingEvent[]): Promise<StoreOutcome> {
  return storeUsage(db, tenantId, events, new Date(await env.currentTimeMs()), unique('req'));
}

/** Rings the tenant's current run, as the API does after a stored batch. */
async function ring(tenantId: string, outcome: StoreOutcome): Promise<void> {
  const doorbell = outcome.kind === 'stored' ? { events: outcome.stored, highest_seq: outcome.highest_seq } : { events: 0, highest_seq: null };
  await env.client.workflow.getHandle(tenantWorkflowId(tenantId)).signal(recordUsageSignal, doorbell);
}

/** Stores a batch that must be acknowledged, and rings. */
async function send(tenantId: string, events: IncomingEvent[]): Promise<Extract<StoreOutcome, { kind: 'stored' }>> {
  const outcome = await store(tenantId, events);
  if (outcome.kind !== 'stored') throw new Error(`batch refused: ${JSON.stringify(outcome)}`);
  await ring(tenantId, outcome);
  return outcome;
}

const tenantHandle = (tenantId: string) => env.client.workflow.getHandle(tenantWorkflowId(tenantId));

const usageOf = (tenantId: string) => tenantHandle(tenantId).query(usageQuery);

/** The current run's usage view once `ok` holds (queries fail while a run restores its ledger: asked again). */
async function usageWhen(tenantId: string, ok: (u: Awaited<ReturnType<typeof usageOf>>) => boolean, what: string) {
  return eventually(async () => {
    const usage = await usageOf(tenantId);
    return ok(usage) ? usage : undefined;
  }, 30_000, what);
}

/** Invariant 1 for one period: the read model equals the aggregation of the stored events; answers the total. */
async function expectReadModelMatchesStore(tenant: TenantFixture, periodStart: string): Promise<number> {
  const stored = await aggregateStoredUsage(db, tenant.tenantId, periodStart, tenant.plan.meters);
  const [counter] = await readPeriodCounters(db, tenant.tenantId, [periodStart]);
  expect(counter?.total ?? '0').toBe(stored.tokens);
  return Number(stored.tokens);
}

/** The read model of a period once it holds `total` tokens (claims run beside the test). */
async function readModelReaches(tenantId: string, periodStart: string, total: number): Promise<void> {
  await eventually(async () => {
    const [counter] = await readPeriodCounters(db, tenantId, [periodStart]);
    return Number(counter?.total ?? 0) === total || undefined;
  }, 30_000, `${total} tokens counted in ${periodStart}`);
}

async function invoicesOf(tenantId: string) {
  return db('invoices').where({ tenant_id: tenantId }).orderBy('period_start');
}

async function finalizedInvoices(tenantId: string, count: number) {
  return eventually(async () => {
    const rows = await invoicesOf(tenantId);
    return rows.length === count && rows.every((r) => r.status === 'finalized') ? rows : undefined;
  }, 30_000, `${count} finalized invoices`);
}

function alertsOf(tenantId: string, periodStart: string) {
  return db('alerts').where({ tenant_id: tenantId, period_start: periodStart }).orderBy('threshold').select('id', 'threshold', 'status', 'used');
}

/**
 * Waits until nothing is in flight in the workflow's current run. A claim still queued would take
 * events stored after it; and the test server does not skip time while a workflow task waits.
 */
async function quiet(workflowId: string): Promise<void> {
  await eventually(async () => runIsQuiet((await env.client.workflow.getHandle(workflowId).fetchHistory()).events ?? []) || undefined, 30_000, `${workflowId} quiet`);
}

/** No run of the workflow had a failed workflow task, and the latest one is in this state. */
async function expectHealthy(workflowId: string, firstRunId: string, status: 'RUNNING' | 'COMPLETED') {
  expect((await env.client.workflow.getHandle(workflowId).describe()).status.name).toBe(status);
  const events = eventsOf(await runHistories(env.client, workflowId, firstRunId));
  expect(events.filter((e) => e.workflowTaskFailedEventAttributes || e.workflowExecutionFailedEventAttributes)).toEqual([]);
}

/** Drives one tenant through `periods` consecutive periods and checks each one's invoice. */
async function runPeriods(options: { interval: PlanVersion['interval']; anchor: string; periods: number }) {
  const taskQueue = unique('periods');
  await startWorker(taskQueue);
  const tenant = await startTenant(taskQueue, tokensPlan(options.interval), options.anchor);
  const { tenantId } = tenant;
  const starts = Array.from({ length: options.periods + 1 }, (_, k) => periodStartsFrom(options.anchor, options.interval, 'UTC', k));

  for (let k = 0; k < options.periods; k++) {
    const [start, end] = [starts[k]!, starts[k + 1]!];
    await sleepUntil(env, Date.parse(start) + 2000);
    // Each period: 850 tokens and 100 more in one batch (95%: 80% superseded, 90% notified), and
    // the very first event id again, which must never count twice.
    const at = Date.parse(start) + 1000;
    const stored = await send(tenantId, [tokens(`p${k}-a`, 850, at), tokens(`p${k}-b`, 100, at), tokens('p0-a', 850, at)]);
    expect(stored).toMatchObject({ received: 3, stored: 2 });
    const usage = await usageWhen(tenantId, (u) => u.period.start === start && u.metrics.tokens!.used === 950 && u.pending_events === 0, `usage of period ${k}`);
    expect(usage.period).toMatchObject({ start, end });
    // Invariant 1: the run's counter, the read model and the stored events agree.
    expect(await expectReadModelMatchesStore(tenant, start)).toBe(950);
    // Alerts re-arm every period: decided again from nothing, in this period only.
    expect(usage.alerts.map((a) => [a.threshold, a.status, a.period_start])).toEqual([
      [80, 'superseded', start],
      [90, 'notified', start],
    ]);
    // The anniversary passes: the run's own timer rolls the period over.
    await sleepUntil(env, Date.parse(end) + 1000);
    await usageWhen(tenantId, (u) => u.period.start === end && u.metrics.tokens!.used === 0 && u.alerts.length === 0, `rollover ${k}`);
  }
  // Past the last period's grace, its invoice finalizes and the run forgets the settled period.
  await sleepUntil(env, Date.parse(starts[options.periods]!) + HOUR + 1000);
  const invoices = await finalizedInvoices(tenantId, options.periods);
  await eventually(async () => ((await tenantHandle(tenantId).query(stateQuery)).closing_periods.length === 0 ? true : undefined), 30_000, 'settled periods forgotten');

  for (let k = 0; k < options.periods; k++) {
    // Invariant 5: one finalized invoice per period, its total recomputed from the stored events.
    expect(invoices[k].period_start.toISOString()).toBe(starts[k]);
    expect(invoices[k].period_end.toISOString()).toBe(starts[k + 1]);
    const total = await expectReadModelMatchesStore(tenant, starts[k]!);
    expect(Number(invoices[k].total)).toBe(Number(ratePeriod(tenant.plan, { tokens: String(total) }).total));
    expect(Number(invoices[k].total)).toBe(Number(ratePeriod(tenant.plan, { tokens: '950' }).total));
  }
  expect(invoices.map((i) => i.number)).toEqual(Array.from({ length: options.periods }, (_, i) => i + 1));
  const periods = await db('periods').where({ tenant_id: tenantId }).orderBy('start').select('start', 'status');
  expect(periods.map((p) => [p.start.toISOString(), p.status])).toEqual(starts.map((s, k) => [s, k < options.periods ? 'invoiced' : 'open']));
  // Invariant 3: the repeated id p0-a is stored once, in period 0; nothing waits unclaimed.
  const p0a = await db('usage_events').where({ tenant_id: tenantId, event_id: 'p0-a' }).select('period_start');
  expect(p0a.map((r) => r.period_start.toISOString())).toEqual([starts[0]]);
  expect(await countUnclaimedEvents(db, tenantId)).toBe(0);
  await expectHealthy(tenantWorkflowId(tenantId), tenant.firstRunId, 'RUNNING');
  return invoices;
}

test('13 monthly periods from a Jan 31 anchor: clamped anniversaries, exact counters, one invoice each, alerts re-arm', async () => {
  const year = new Date(await env.currentTimeMs()).getUTCFullYear() + 1;
  const invoices = await runPeriods({ interval: 'month', anchor: `${year}-01-31T00:00:00.000Z`, periods: 13 });
  const leap = (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0;
  const expected = ['01-31', leap ? '02-29' : '02-28', '03-31', '04-30', '05-31', '06-30', '07-31', '08-31', '09-30', '10-31', '11-30', '12-31']
    .map((d) => `${year}-${d}`)
    .concat(`${year + 1}-01-31`);
  expect(invoices.map((i) => i.period_start.toISOString().slice(0, 10))).toEqual(expected);
});

test('3 daily periods', async () => {
  const day = Math.floor((await env.currentTimeMs()) / DAY) + 2;
  await runPeriods({ interval: 'day', anchor: new Date(day * DAY + 15 * HOUR).toISOString(), periods: 3 });
});

/** A daily tenant (grace one hour) two days ahead, with 850 tokens counted in its first period, rolled over. */
async function tenantPastItsFirstPeriod(taskQueue: string) {
  const anchor = (Math.floor((await env.currentTimeMs()) / DAY) + 2) * DAY;
  const tenant = await startTenant(taskQueue, tokensPlan('day'), new Date(anchor).toISOString(), SKIPPING_WORKFLOW_TASK_TIMEOUT);
  const { start, end } = tenant.period;
  const inPeriod = Date.parse(start) + 1000;
  await sleepUntil(env, Date.parse(start) + 2000);
  await send(tenant.tenantId, [tokens('e1', 850, inPeriod)]);
  await usageWhen(tenant.tenantId, (u) => u.metrics.tokens!.used === 850, '850 counted');
  await sleepUntil(env, Date.parse(end) + 1000);
  await usageWhen(tenant.tenantId, (u) => u.period.start === end, 'rollover');
  const graceEndsAt = Date.parse(end) + HOUR;
  return { ...tenant, start, end, inPeriod, graceEndsAt };
}

test('late events within grace count in their closed period, and fire its thresholds once, in that period', async () => {
  const taskQueue = unique('late');
  await startWorker(taskQueue);
  const tenant = await tenantPastItsFirstPeriod(taskQueue);
  const { tenantId, start, end, inPeriod } = tenant;

  // Within the grace, late events take the closed period to 95%, then to 100%; one is sent twice.
  const first = await send(tenantId, [tokens('e2', 100, inPeriod)]);
  expect(first).toMatchObject({ stored: 1 });
  await eventually(async () => ((await alertsOf(tenantId, start)).length === 2 ? true : undefined), 30_000, 'the 90% alert');
  expect(await send(tenantId, [tokens('e2', 100, inPeriod), tokens('e3', 50, inPeriod)])).toMatchObject({ stored: 1 });
  expect(await send(tenantId, [tokens('e3', 50, inPeriod)])).toMatchObject({ stored: 0 });
  const closedAlerts = await eventually(async () => {
    const rows = await alertsOf(tenantId, start);
    return rows.length === 3 ? rows : undefined;
  }, 30_000, 'alerts of the closed period');
  expect(closedAlerts.map((a) => [Number(a.threshold), a.status, Number(a.used)])).toEqual([
    [80, 'notified', 850],
    [90, 'notified', 950],
    [100, 'notified', 1000],
  ]);
  await readModelReaches(tenantId, start, 1000);
  expect(await expectReadModelMatchesStore(tenant, start)).toBe(1000);

  // The ledger decided them in the closed period's book; the current period's book is untouched.
  const state = await tenantHandle(tenantId).query(stateQuery);
  expect(state.closing_periods).toEqual([{ start, end, grace_ends_at: new Date(tenant.graceEndsAt).toISOString() }]);
  const [current, closing] = state.books;
  expect(current!.period.start).toBe(end);
  expect(current!.decided).toEqual([]);
  expect(closing!.period.start).toBe(start);
  expect(closing!.counters.map((c) => [c.metric, c.total])).toEqual([['tokens', '1000']]);
  expect(closing!.decided).toEqual([['tokens', [80, 90, 100]]]);
  const usage = await usageOf(tenantId);
  expect(usage.metrics.tokens!.used).toBe(0);
  expect(usage.alerts).toEqual([]);
  expect(await alertsOf(tenantId, end)).toEqual([]);

  // Past the grace: the invoice bills all three distinct events, and a late event is refused.
  await sleepUntil(env, tenant.graceEndsAt + 1000);
  const [invoice] = await finalizedInvoices(tenantId, 1);
  expect(Number(invoice.total)).toBe(Number(ratePeriod(tenant.plan, { tokens: '1000' }).total));
  expect(await store(tenantId, [tokens('e4', 1, inPeriod)])).toMatchObject({ kind: 'refused', refusals: [{ code: 'late_event' }] });
  await eventually(async () => ((await tenantHandle(tenantId).query(stateQuery)).closing_periods.length === 0 ? true : undefined), 30_000, 'the settled period forgotten');

  // Each threshold of the closed period was recorded (in its period, above) and delivered once,
  // whichever run decided it: by the run's inline attempt, which needs no delivery workflow.
  const events = eventsOf(await runHistories(env.client, tenantWorkflowId(tenantId), tenant.firstRunId));
  const ids = closedAlerts.map((a) => a.id).sort();
  expect(localActivityTypes(events).filter((t) => t === 'deliverAlertInline')).toHaveLength(ids.length);
  // Each decision's alerts were stored by its first attempt, with no local activity of their own.
  expect(localActivityTypes(events).filter((t) => t === 'recordAlerts')).toEqual([]);
  expect(childInputs(events, 'alertDelivery')).toEqual([]);
  const deliveries = await db('notification_deliveries').whereIn('event_id', ids).orderBy('event_id');
  expect(deliveries.map((d) => [d.event_id, d.status, d.attempts])).toEqual(ids.map((id) => [id, 'recorded', 1]));
  expect(await alertsOf(tenantId, start)).toHaveLength(3);
});

test('an invoice whose grace ends while the worker is down for longer than the grace: nothing fails, nothing acknowledged is refused, one finalized invoice', async () => {
  const taskQueue = unique('down');
  const worker = await startWorker(taskQueue, { sticky: false });
  const tenant = await tenantPastItsFirstPeriod(taskQueue);
  const { tenantId, start, inPeriod, graceEndsAt } = tenant;
  const invoiceWorkflow = invoiceWorkflowId(tenantId, start, 1);
  await quiet(tenantWorkflowId(tenantId));
  await quiet(invoiceWorkflow);
  await worker.stop();

  // No worker from just after the period ended: late events within the grace are still
  // acknowledged, up to its last minute.
  const early = await store(tenantId, [tokens('late-1', 100, inPeriod)]);
  expect(early).toMatchObject({ kind: 'stored', stored: 1 });
  await sleepUntil(env, graceEndsAt - 60_000);
  const last = await store(tenantId, [tokens('late-2', 30, inPeriod), tokens('late-3', 20, inPeriod)]);
  expect(last).toMatchObject({ kind: 'stored', stored: 2 });

  // The grace ends with the worker still down (down longer than the whole grace). The test server
  // stops skipping once a timer fires with no worker to run its workflow task, so its clock
  // stays just past the grace end from here on. A late event is refused from then on, although
  // the invoice is not finalized yet: lateness is judged by time, not by the invoice's state.
  await sleepUntil(env, graceEndsAt + 1000);
  expect(await store(tenantId, [tokens('late-4', 5, inPeriod)])).toMatchObject({ kind: 'refused', refusals: [{ code: 'late_event' }] });
  // A client resending an acknowledged batch it got no answer for is not refused: a resend, not a new event.
  expect(await store(tenantId, [tokens('late-2', 30, inPeriod), tokens('late-3', 20, inPeriod)])).toMatchObject({ kind: 'stored', stored: 0 });
  expect(await db('periods').where({ tenant_id: tenantId, start }).first()).toMatchObject({ status: 'closed' });
  expect((await invoicesOf(tenantId)).map((i) => i.status)).toEqual(['draft']);
  // The API's doorbells for the acknowledged batches wait in the run's history like its timers
  // (rung only now: a pending workflow task would have held the clock before the grace end).
  await ring(tenantId, early);
  await ring(tenantId, last);

  await startWorker(taskQueue);
  const [invoice] = await finalizedInvoices(tenantId, 1);
  expect(invoice.number).toBe(1);
  expect(Number(invoice.total)).toBe(Number(ratePeriod(tenant.plan, { tokens: '1000' }).total));
  const lines = await db('invoice_lines').where({ invoice_id: invoice.id, metric: 'tokens' }).select('quantity');
  expect(lines.map((l) => Number(l.quantity))).toEqual([1000]);
  const stored = await db('usage_events').where({ tenant_id: tenantId }).orderBy('event_id').select('event_id', 'period_start');
  expect(stored.map((r) => [r.event_id, r.period_start.toISOString()])).toEqual(['e1', 'late-1', 'late-2', 'late-3'].map((id) => [id, start]));
  // The run counts the acknowledged late events in their period, then forgets the settled period.
  await readModelReaches(tenantId, start, 1000);
  expect(await expectReadModelMatchesStore(tenant, start)).toBe(1000);
  await eventually(async () => ((await env.client.workflow.getHandle(invoiceWorkflow).describe()).status.name === 'COMPLETED' ? true : undefined), 30_000, 'invoice workflow completed');
  await eventually(async () => ((await tenantHandle(tenantId).query(stateQuery)).closing_periods.length === 0 ? true : undefined), 30_000, 'the settled period forgotten');
  expect(await countUnclaimedEvents(db, tenantId)).toBe(0);
  await expectHealthy(tenantWorkflowId(tenantId), tenant.firstRunId, 'RUNNING');
  await expectHealthy(invoiceWorkflow, (await env.client.workflow.getHandle(invoiceWorkflow).describe()).runId, 'COMPLETED');
  expect(await invoicesOf(tenantId)).toHaveLength(1);
});

/**
 * A monthly tenant with a hard limit whose period started a minute ago (these tests never skip
 * time, so the workflow clock and the activities' wall clock agree), 850 tokens counted, and
 * nothing in flight: the next claim is the one the test's next request makes.
 */
async function tenantWithUsage(taskQueue: string) {
  const now = await env.currentTimeMs();
  const tenant = await startTenant(taskQueue, tokensPlan('month', { hardLimit: true }), new Date(Math.floor(now / 1000) * 1000 - 60_000).toISOString());
  await send(tenant.tenantId, [tokens('u1', 850, now - 1000)]);
  await usageWhen(tenant.tenantId, (u) => u.metrics.tokens!.used === 850, '850 counted');
  await quiet(tenantWorkflowId(tenant.tenantId));
  return tenant;
}

/** After a close that met an authorization: each period's figures agree everywhere, and the closed one is invoiced from its stored events. */
async function expectPeriodsSettled(tenant: TenantFixture, closed: ClosePeriodResult) {
  const next = closed.current_period!;
  const storedTokens = async (periodStart: string) => Number((await aggregateStoredUsage(db, tenant.tenantId, periodStart, tenant.plan.meters)).tokens);
  const [closedTotal, nextTotal] = [await storedTokens(closed.closed_period.start), await storedTokens(next.start)];
  await readModelReaches(tenant.tenantId, closed.closed_period.start, closedTotal);
  await readModelReaches(tenant.tenantId, next.start, nextTotal);
  const usage = await usageWhen(tenant.tenantId, (u) => u.period.start === next.start && u.metrics.tokens!.used === nextTotal, 'the next period counted');
  expect(usage.period).toMatchObject(next);
  const [invoice] = await finalizedInvoices(tenant.tenantId, 1);
  expect(invoice.period_end.toISOString()).toBe(closed.closed_period.end);
  expect(Number(invoice.total)).toBe(Number(ratePeriod(tenant.plan, { tokens: String(closedTotal) }).total));
  expect(await countUnclaimedEvents(db, tenant.tenantId)).toBe(0);
  return { closedTotal, nextTotal };
}

/**
 * The run where the requests met admitted each of them once and answered each once, and no run
 * refused one as rolling over: nothing was retried in a loop, and the histories stay small.
 */
async function expectAnsweredOnce(tenant: { tenantId: string; firstRunId: string }, updateIds: string[]) {
  const runs = await runHistories(env.client, tenantWorkflowId(tenant.tenantId), tenant.firstRunId);
  const first = runs[0]!.history.events ?? [];
  const accepted = first.map((e) => e.workflowExecutionUpdateAcceptedEventAttributes?.acceptedRequest?.meta?.updateId).filter((id) => id);
  expect(accepted.sort()).toEqual([...updateIds].sort());
  const completed = first.map((e) => e.workflowExecutionUpdateCompletedEventAttributes).filter((c) => c);
  expect(completed.map((c) => [c!.meta?.updateId, c!.outcome?.failure ? 'failed' : 'answered']).sort()).toEqual(updateIds.map((id) => [id, 'answered']).sort());
  const refusals = eventsOf(runs).filter((e) => e.workflowExecutionUpdateCompletedEventAttributes?.outcome?.failure?.applicationFailureInfo?.type === PERIOD_ROLLING_OVER);
  expect(refusals).toEqual([]);
  for (const run of runs) expect(run.history.events!.length).toBeLessThan(100);
}

/**
 * An authorization whose first step (counting what waits before the limit is checked) is held
 * while finance closes the period: the close is admitted behind it, then the step goes on.
 */
async function authorizeWhileClosing(taskQueue: string) {
  const claims = new ActivityGate();
  await startWorker(taskQueue, {
    wrap: (acts) => ({
      ...acts,
      async claimUsage(input) {
        await claims.pass();
        return acts.claimUsage(input);
      },
    }),
  });
  const tenant = await tenantWithUsage(taskQueue);
  const gateway = new BillingGateway(env.client, taskQueue, { searchAttributes: false });
  const held = claims.arm();
  const authorized = gateway.authorize(tenant.tenantId, { id: 'auth-1', metric: 'tokens', quantity: 100 });
  await held;
  await admitted(tenant.tenantId, 'authorize-auth-1');
  const closing = gateway.closePeriod(tenant.tenantId, true, 'fin-1');
  await admitted(tenant.tenantId, 'close-fin-1');
  claims.release();
  const [answer, closed] = await Promise.all([authorized, closing]);
  return { tenant, gateway, answer, closed };
}

/** Waits until the tenant's current run has admitted this update. */
async function admitted(tenantId: string, updateId: string): Promise<void> {
  await eventually(async () => updateAccepted((await tenantHandle(tenantId).fetchHistory()).events ?? [], updateId) || undefined, 30_000, `${updateId} admitted`);
}

test('an authorization in flight when finance closes the period: both answer, the consumed event lands in one period', async () => {
  const { tenant, gateway, answer, closed } = await authorizeWhileClosing(unique('auth-close'));
  expect(answer).toMatchObject({ allowed: true });
  expect(closed.closed_period.start).toBe(tenant.period.start);
  // Asked again (a client retry, answered by the next run), the same id is not consumed twice.
  expect(await gateway.authorize(tenant.tenantId, { id: 'auth-1', metric: 'tokens', quantity: 100 })).toEqual(answer);
  const consumed = await db('usage_events').where({ tenant_id: tenant.tenantId, event_id: 'auth-1' }).select('period_start', 'timestamp', 'quantity');
  expect(consumed).toHaveLength(1);
  expect(Number(consumed[0].quantity)).toBe(100);
  // Its period is the one its timestamp falls in, on either side of the close instant.
  const home = consumed[0].timestamp.getTime() < Date.parse(closed.closed_period.end) ? closed.closed_period.start : closed.current_period!.start;
  expect(consumed[0].period_start.toISOString()).toBe(home);
  const { closedTotal, nextTotal } = await expectPeriodsSettled(tenant, closed);
  expect(closedTotal + nextTotal).toBe(950);
  await expectAnsweredOnce(tenant, ['authorize-auth-1', 'close-fin-1']);
});

test('an authorization in flight when finance closes the period is answered and alerted in the period it lands in', async () => {
  // The close instant is read when the rollover's turn comes, after the steps queued before it:
  // the authorization decided earlier is stamped before the close and stays in the closing period.
  const { tenant, answer, closed } = await authorizeWhileClosing(unique('auth-close-alerts'));
  const { closedTotal } = await expectPeriodsSettled(tenant, closed);
  const [consumed] = await db('usage_events').where({ tenant_id: tenant.tenantId, event_id: 'auth-1' }).select('period_start');
  const answeredIn = answer.remaining === 1000 - 950 ? closed.closed_period.start : closed.current_period!.start;
  expect(consumed.period_start.toISOString()).toBe(answeredIn);
  const alerts = await alertsOf(tenant.tenantId, closed.closed_period.start);
  expect(alerts.filter((a) => Number(a.used) > closedTotal)).toEqual([]);
});

test('a close in flight when an authorization arrives: both answer, the authorization is served by the next period, once', async () => {
  const taskQueue = unique('close-auth');
  const rollovers = new ActivityGate();
  await startWorker(taskQueue, {
    wrap: (acts) => ({
      ...acts,
      async rollOverPeriod(input) {
        await rollovers.pass();
        return acts.rollOverPeriod(input);
      },
    }),
  });
  const tenant = await tenantWithUsage(taskQueue);
  const gateway = new BillingGateway(env.client, taskQueue, { searchAttributes: false });

  const held = rollovers.arm();
  const closing = gateway.closePeriod(tenant.tenantId, true, 'fin-2');
  await held;
  const authorized = gateway.authorize(tenant.tenantId, { id: 'auth-2', metric: 'tokens', quantity: 100 });
  await admitted(tenant.tenantId, 'authorize-auth-2');
  rollovers.release();

  const [closed, answer] = await Promise.all([closing, authorized]);
  // Served after the rollover, against the next period: 100 of its 1000 used.
  expect(answer).toEqual({ allowed: true, remaining: 900 });
  expect(await gateway.authorize(tenant.tenantId, { id: 'auth-2', metric: 'tokens', quantity: 100 })).toEqual(answer);
  const consumed = await db('usage_events').where({ tenant_id: tenant.tenantId, event_id: 'auth-2' }).select('period_start');
  expect(consumed.map((r) => r.period_start.toISOString())).toEqual([closed.current_period!.start]);
  expect(await expectPeriodsSettled(tenant, closed)).toEqual({ closedTotal: 850, nextTotal: 100 });
  expect(await alertsOf(tenant.tenantId, closed.current_period!.start)).toEqual([]);
  await expectAnsweredOnce(tenant, ['close-fin-2', 'authorize-auth-2']);
});

/** A monthly tenant (grace one hour) whose period began a minute ago, on a worker of its own; `now` is the test server's time. */
async function monthlyTenantOfAMinute(name: string) {
  const taskQueue = unique(name);
  await startWorker(taskQueue);
  const now = await env.currentTimeMs();
  const tenant = await startTenant(taskQueue, tokensPlan('month'), new Date(Math.floor(now / 1000) * 1000 - 60_000).toISOString());
  return { tenant, tenantId: tenant.tenantId, now };
}

test('a close with finalize: the next run settles its grace of 0 with its first claim, and claims no more', async () => {
  const { tenant, tenantId, now } = await monthlyTenantOfAMinute('finalize');
  await send(tenantId, [tokens('counted', 300, now - 1000)]);
  await usageWhen(tenantId, (u) => u.metrics.tokens!.used === 300, '300 counted');
  await quiet(tenantWorkflowId(tenantId));
  // Stored but not counted when the close comes: the next run's first claim counts it.
  expect(await store(tenantId, [tokens('waiting', 100, now - 500)])).toMatchObject({ kind: 'stored', stored: 1 });

  const closed = await tenantHandle(tenantId).executeUpdate(closePeriodUpdate, { args: [{ finalize: true }] });
  expect(closed.closed_period.start).toBe(tenant.period.start);
  const [invoice] = await finalizedInvoices(tenantId, 1);
  expect(Number(invoice.total)).toBe(Number(ratePeriod(tenant.plan, { tokens: '400' }).total));
  await readModelReaches(tenantId, tenant.period.start, 400);
  expect(await expectReadModelMatchesStore(tenant, tenant.period.start)).toBe(400);
  await eventually(async () => ((await tenantHandle(tenantId).query(stateQuery)).closing_periods.length === 0 ? true : undefined), 30_000, 'the settled period forgotten');
  await quiet(tenantWorkflowId(tenantId));

  // That claim began after the grace end (the close itself): it settled the closed period alone.
  const runs = await runHistories(env.client, tenantWorkflowId(tenantId), tenant.firstRunId);
  expect(runs).toHaveLength(2);
  expect(localActivityTypes(runs[1]!.history.events ?? [])).toEqual(['claimUsage']);
  expect(await store(tenantId, [tokens('late', 1, now - 400)])).toMatchObject({ kind: 'refused', refusals: [{ code: 'late_event' }] });
  await expectHealthy(tenantWorkflowId(tenantId), tenant.firstRunId, 'RUNNING');
});

test('an early close: events stamped after it move to the next period, counted or not; its invoice waits for its grace; the next period ends at the anniversary', async () => {
  const { tenant, tenantId, now } = await monthlyTenantOfAMinute('early');
  // Counted before the close: 300 stamped before it, 200 stamped two minutes ahead (within the
  // future tolerance, so in the open period when stored, but after the close to come).
  await send(tenantId, [tokens('before', 300, now - 1000), tokens('ahead', 200, now + 120_000)]);
  await usageWhen(tenantId, (u) => u.metrics.tokens!.used === 500, '500 counted');
  await quiet(tenantWorkflowId(tenantId));
  // Stored but not counted when the close comes: 100 before it, 50 after it.
  expect(await store(tenantId, [tokens('waiting', 100, now - 500), tokens('waiting-ahead', 50, now + 120_000)])).toMatchObject({ kind: 'stored', stored: 2 });

  const closed = await tenantHandle(tenantId).executeUpdate(closePeriodUpdate, { args: [{ finalize: false }] });
  const closeAt = Date.parse(closed.closed_period.end);
  expect(closeAt).toBeLessThan(now + 120_000);
  const next = closed.current_period!;
  expect(next.start).toBe(closed.closed_period.end);
  expect(next.end).toBe(tenant.period.end);
  const periodsOf = await db('usage_events').where({ tenant_id: tenantId }).orderBy('event_id').select('event_id', 'period_start');
  expect(periodsOf.map((r) => [r.event_id, r.period_start.toISOString()])).toEqual([
    ['ahead', next.start],
    ['before', tenant.period.start],
    ['waiting', tenant.period.start],
    ['waiting-ahead', next.start],
  ]);
  // The rollover recounted the counted event it moved, in both periods' read model.
  expect((await readPeriodCounters(db, tenantId, [tenant.period.start, next.start])).map((c) => [c.period_start, c.total])).toEqual([
    [tenant.period.start, '300'],
    [next.start, '200'],
  ]);
  // Rung, the run counts the waiting ones where they now are.
  await ring(tenantId, { kind: 'stored', received: 2, stored: 2, highest_seq: null });
  await readModelReaches(tenantId, tenant.period.start, 400);
  await readModelReaches(tenantId, next.start, 250);
  expect(await expectReadModelMatchesStore(tenant, tenant.period.start)).toBe(400);
  expect(await expectReadModelMatchesStore(tenant, next.start)).toBe(250);
  await usageWhen(tenantId, (u) => u.period.start === next.start && u.metrics.tokens!.used === 250, 'the next period counted');
  const state = await tenantHandle(tenantId).query(stateQuery);
  expect(state.books.map((b) => [b.period.start, b.counters.find((c) => c.metric === 'tokens')?.total])).toEqual([
    [next.start, '250'],
    [tenant.period.start, '400'],
  ]);

  // The closed period's invoice follows its grace; the next period rolls over at the anniversary.
  expect((await invoicesOf(tenantId)).map((i) => i.status)).toEqual(['draft']);
  await sleepUntil(env, closeAt + HOUR + 1000);
  const [first] = await finalizedInvoices(tenantId, 1);
  expect(Number(first.total)).toBe(Number(ratePeriod(tenant.plan, { tokens: '400' }).total));
  await sleepUntil(env, Date.parse(next.end) + 1000);
  await usageWhen(tenantId, (u) => u.period.start === next.end, 'the anniversary rollover');
  await sleepUntil(env, Date.parse(next.end) + HOUR + 1000);
  const invoices = await finalizedInvoices(tenantId, 2);
  expect(invoices.map((i) => [i.number, i.period_start.toISOString(), i.period_end.toISOString(), Number(i.total)])).toEqual([
    [1, tenant.period.start, closed.closed_period.end, Number(ratePeriod(tenant.plan, { tokens: '400' }).total)],
    [2, next.start, next.end, Number(ratePeriod(tenant.plan, { tokens: '250' }).total)],
  ]);
  await expectHealthy(tenantWorkflowId(tenantId), tenant.firstRunId, 'RUNNING');
});
