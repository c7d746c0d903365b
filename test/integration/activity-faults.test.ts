import { Worker } from '@temporalio/worker';
import type { Client, WorkflowHandleWithFirstExecutionRunId } from '@temporalio/client';
import type { NativeConnection } from '@temporalio/worker';
import { defineSignal } from '@temporalio/workflow';
import { temporal as proto } from '@temporalio/proto';
import { createActivities } from '../../src/activities';
import type { RollOverOutput } from '../../src/activities/ledger';
import { createNotifier, createRecordingNotifier, type Notifier } from '../../src/notifications/notifier';
import { BillingGateway } from '../../src/api/billing-gateway';
import type { Db } from '../../src/db/knex';
import { storeUsage, type IncomingEvent } from '../../src/db/ingest';
import { countUnclaimedEvents, readPeriodCounters, type ClaimResult } from '../../src/db/ledger';
import { aggregateStoredUsage } from '../../src/db/usage';
import { currentUsage } from '../../src/db/usage-read-model';
import { counterFromAggregates } from '../../src/domain/aggregation';
import { ratePeriod } from '../../src/domain/rating';
import type { PlanVersion } from '../../src/domain/plan';
import { generateWebhookSecret } from '../../src/notifications/secrets';
import { verifyBillingSignature } from '../../src/notifications/verify-signature';
import type { periodInvoice } from '../../src/workflows/period-invoice';
import { alertDeliveryWorkflowId, alertId, finalizeInvoiceSignal, stateQuery, tenantWorkflowId, type UsageDoorbell } from '../../src/workflows/messages';
import { LOCAL_WEBHOOK_TARGETS, connectToTestTemporal, quietLogger, testDb, unique, unreachableDb, workflowBundle } from '../support/stack';
import { createTenantFixture, type TenantFixture } from '../support/tenant-fixture';
import { eventually } from '../support/api-harness';
import { startSmtpInbox } from '../support/smtp-inbox';
import { LOST_ANSWER, PostgresFaults } from '../support/faults-postgres';
import { startFaultyReceiver } from '../support/faults-receiver';

/**
 * Faults around the activities, on the real dev server and PostgreSQL. Usage is stored as the
 * API stores it and the tenant's run is rung (and asked) through the API's own gateway; the
 * worker's activities can be cut off from PostgreSQL (a second pool on a closed port) or lose
 * their answer after they committed (test/support/faults-postgres.ts).
 *
 * - PostgreSQL unreachable while a run restores its ledger, claims and consumes an authorization;
 *   during a rollover and the finalization; while alerts are recorded and delivered: each is
 *   retried, nothing is counted twice or lost, and one invoice is finalized per period;
 * - a rollover that committed and lost its answer answers the same on its retry;
 * - webhook receivers that hang or redirect, and a tenant name that tries to inject email headers;
 * - malformed doorbells and a storm of doorbells across continue-as-new.
 *
 * Dropped, because core v2 made them impossible (a doorbell carries no event, and the API judges
 * every event, in POST /v1/events, before it stores one):
 * - a poison event with an unknown metric signalled to the workflow: the API refuses it (422 `unknown_metric`);
 * - a poison event whose metric is `constructor`: refused the same way (and the ledger keys counters by `Map`);
 * - a poison event with an unparseable timestamp: the API's schema refuses it (422 `validation_failed`);
 * - a poison event with a non-numeric quantity: the API's schema refuses it (422 `validation_failed`);
 * - a poison event with a negative quantity: the API's schema refuses it (422 `validation_failed`);
 * - a poison event whose id holds NUL: the API refuses it (422), see hostile-input.test.ts.
 */

let db: Db;
/** A pool on a loopback port nothing listens on: every query fails with ECONNREFUSED. */
let deadDb: Db;
let temporal: { client: Client; nativeConnection: NativeConnection; connection: { close(): Promise<void> } };
/** Workers still running, stopped in afterAll whatever happened. */
const running = new Set<() => Promise<void>>();

beforeAll(async () => {
  db = testDb();
  deadDb = await unreachableDb();
  temporal = await connectToTestTemporal();
});
afterAll(async () => {
  // A test that failed on a deadline may have left its worker running: stop it before the connection.
  await Promise.all([...running].map((stop) => stop()));
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

interface TestWorker {
  taskQueue: string;
  faults: PostgresFaults;
  /** The API's door into Temporal: rings, read-your-writes usage, authorize and close as the API sends them. */
  gateway: BillingGateway;
  stop(): Promise<void>;
}

/** Runs a worker on its own task queue; its activities go through a {@link PostgresFaults}. */
async function startWorker(name: string, options: { notifier?: Notifier } = {}): Promise<TestWorker> {
  const taskQueue = unique(name);
  const notifier = options.notifier ?? createRecordingNotifier(quietLogger);
  const real = createActivities({ db, logger: quietLogger, notifier, temporal: temporal.client });
  const dead = createActivities({ db: deadDb, logger: quietLogger, notifier, temporal: temporal.client });
  const faults = new PostgresFaults(real, dead);
  const worker = await Worker.create({
    connection: temporal.nativeConnection,
    taskQueue,
    workflowBundle: await workflowBundle(),
    activities: faults.activities(),
    shutdownGraceTime: '1 second',
  });
  const run = worker.run();
  const stop = async () => {
    if (!running.delete(stop)) return;
    worker.shutdown();
    await run;
  };
  running.add(stop);
  const gateway = new BillingGateway(temporal.client, taskQueue, { searchAttributes: false });
  return { taskQueue, faults, gateway, stop };
}

type Tenant = TenantFixture & { handle: WorkflowHandleWithFirstExecutionRunId; worker: TestWorker };

async function startTenant(
  worker: TestWorker,
  options: { plan?: Partial<Omit<PlanVersion, 'version'>>; tenant?: Record<string, unknown>; limits?: TenantFixture['input']['limits'] } = {},
): Promise<Tenant> {
  const tenantId = unique('af');
  const anchor = new Date(Math.floor(Date.now() / 1000) * 1000).toISOString();
  const fixture = await createTenantFixture(db, { tenantId, plan: plan(unique('faults'), options.plan), anchor, limits: options.limits });
  if (options.tenant) await db('tenants').where({ id: tenantId }).update(options.tenant);
  const handle = await temporal.client.workflow.start('tenantBilling', { taskQueue: worker.taskQueue, workflowId: tenantWorkflowId(tenantId), args: [fixture.input] });
  return { ...fixture, handle, worker };
}

/** Events stamped when they are stored (as most clients send them). */
function events(prefix: string, n: number, metric: 'minutes' | 'calls', quantity = 1): IncomingEvent[] {
  return Array.from({ length: n }, (_, i) => ({ id: `${prefix}-${i}`, metric, quantity: String(quantity), timestamp: null }));
}

/** Stores a batch as the API does (202 once committed) and answers the doorbell it would ring. */
async function storeOnly(tenant: Tenant, batch: IncomingEvent[]): Promise<UsageDoorbell> {
  const stored = await storeUsage(db, tenant.tenantId, batch, new Date(), unique('req'));
  if (stored.kind !== 'stored') throw new Error(`batch refused: ${JSON.stringify(stored)}`);
  return { events: stored.stored, highest_seq: stored.highest_seq };
}

/** Stores a batch and rings the tenant's run, as the API does. */
async function send(tenant: Tenant, batch: IncomingEvent[]): Promise<void> {
  await tenant.worker.gateway.ring(tenant.tenantId, await storeOnly(tenant, batch));
}

/**
 * Invariants 1 and 3 for one period: the read model's counters equal the aggregation of the
 * distinct events stored for it. Answers that aggregation.
 */
async function expectCountedOnce(tenant: Tenant, periodStart: string): Promise<Record<string, string>> {
  const stored = await aggregateStoredUsage(db, tenant.tenantId, periodStart, tenant.plan.meters);
  const counters = await readPeriodCounters(db, tenant.tenantId, [periodStart]);
  const counted = Object.fromEntries(tenant.plan.meters.map((m) => [m.metric, counterFromAggregates(counters.find((c) => c.metric === m.metric), m.aggregation)]));
  expect({ periodStart, counted }).toEqual({ periodStart, counted: stored });
  return stored;
}

/** Read-your-writes through the API's gateway, then the workflow's view against the read model and the stored events. */
async function expectSettled(tenant: Tenant) {
  const usage = await tenant.worker.gateway.settledUsage(tenant.tenantId);
  const stored = await expectCountedOnce(tenant, usage.period.start);
  expect(Object.fromEntries(Object.entries(usage.metrics).map(([metric, m]) => [metric, m.used]))).toEqual(
    Object.fromEntries(Object.entries(stored).map(([metric, value]) => [metric, Number(value)])),
  );
  const model = await currentUsage(db, tenant.tenantId);
  expect(model!.metrics).toEqual(usage.metrics);
  expect(model!.pending_events).toBe(0);
  return usage;
}

/**
 * Every run of a workflow, first to latest, with the workflow tasks that failed in it. A task the
 * server refused because new signals arrived as the run tried to close (`UNHANDLED_COMMAND`) is
 * not a failure of the workflow code: the server hands the run those signals in a new task.
 */
async function runsOf(workflowId: string, firstRunId: string) {
  const runs: Array<{ runId: string; failedTasks: Array<{ cause: string; message: string | null | undefined }> }> = [];
  for (let runId: string | undefined = firstRunId; runId; ) {
    const history = await temporal.client.workflow.getHandle(workflowId, runId).fetchHistory();
    const failedTasks = (history.events ?? [])
      .map((e) => e.workflowTaskFailedEventAttributes)
      .filter((a): a is NonNullable<typeof a> => Boolean(a))
      .filter((a) => a.cause !== proto.api.enums.v1.WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_UNHANDLED_COMMAND)
      .map((a) => ({ cause: proto.api.enums.v1.WorkflowTaskFailedCause[a.cause ?? 0] ?? String(a.cause), message: a.failure?.message }));
    runs.push({ runId, failedTasks });
    runId = history.events?.at(-1)?.workflowExecutionContinuedAsNewEventAttributes?.newExecutionRunId ?? undefined;
  }
  return runs;
}

/** No workflow task failed in any run, the latest run is running, and no activity of it is stuck retrying. */
async function expectHealthy(tenant: Tenant): Promise<void> {
  const runs = await runsOf(tenant.handle.workflowId, tenant.handle.firstExecutionRunId);
  expect(runs.flatMap((r) => r.failedTasks)).toEqual([]);
  const latest = await temporal.client.workflow.getHandle(tenant.handle.workflowId).describe();
  expect(latest.status.name).toBe('RUNNING');
  const stuck = (latest.raw.pendingActivities ?? []).filter((a) => Number(a.attempt ?? 0) > 1);
  expect(stuck.map((a) => ({ activity: a.activityType?.name, attempt: a.attempt, failure: a.lastFailure?.message }))).toEqual([]);
}

/** One run of the workflow id, whatever retries started it. */
async function expectOneRun(workflowId: string): Promise<void> {
  const runs = await eventually(async () => {
    const found: string[] = [];
    for await (const run of temporal.client.workflow.list({ query: `WorkflowId = '${workflowId}'` })) found.push(run.runId);
    return found.length > 0 ? found : undefined;
  }, 10_000, `the runs of ${workflowId}`);
  expect(runs).toHaveLength(1);
}

// ---- PostgreSQL unreachable -------------------------------------------------------------------

test('PostgreSQL unreachable while a run restores its ledger, claims and consumes an authorization: retried, every stored event counted once', async () => {
  const worker = await startWorker('pgdown-claim');
  const { faults, gateway } = worker;
  try {
    faults.down('restoreLedger', 'claimUsage', 'consumeAuthorized');
    // A first run reads its ledger from PostgreSQL: that read is refused first.
    const tenant = await startTenant(worker);
    await send(tenant, [...events('a', 10, 'minutes', 2), ...events('a-call', 10, 'calls')]);
    await faults.untilRefused('restoreLedger', 3);
    faults.up('restoreLedger');

    // Claims are refused while usage keeps being stored (the API's pool still reaches PostgreSQL).
    await faults.untilRefused('claimUsage', 2);
    await send(tenant, [...events('b', 10, 'minutes', 2), ...events('b-call', 10, 'calls')]);
    // An authorize counts every stored event first, so it waits for the claims too.
    let answered = false;
    const authorized = gateway.authorize(tenant.tenantId, { id: 'auth-1', metric: 'minutes', quantity: 5 }).finally(() => (answered = true));
    await faults.untilRefused('claimUsage', 4);
    expect(answered).toBe(false);
    faults.loseNextAnswers('claimUsage'); // the first claim to reach PostgreSQL commits, and its answer is lost
    faults.up('claimUsage');

    await faults.untilRefused('consumeAuthorized', 2);
    faults.loseNextAnswers('consumeAuthorized');
    faults.up('consumeAuthorized');
    expect(await authorized).toEqual({ allowed: true, remaining: 55 }); // 100 - (20 + 20 + 5)

    const usage = await expectSettled(tenant);
    expect(usage.metrics.minutes!.used).toBe(45);
    expect(usage.metrics.calls!.used).toBe(20);
    const counters = await readPeriodCounters(db, tenant.tenantId, [tenant.period.start]);
    expect(counters.map((c) => [c.metric, c.events])).toEqual([
      ['calls', 20],
      ['minutes', 21],
    ]);
    expect(await db('usage_events').where({ tenant_id: tenant.tenantId, event_id: 'auth-1' }).count({ n: '*' })).toEqual([{ n: '1' }]);

    // Every refusal was the connection, and each answer lost after its commit was given again by the retry.
    for (const name of ['restoreLedger', 'claimUsage', 'consumeAuthorized'] as const) expect({ name, refused: faults.refusalsAreConnectionErrors(name) }).toEqual({ name, refused: true });
    for (const name of ['claimUsage', 'consumeAuthorized'] as const) {
      const pairs = faults.lostAndRetried(name);
      expect(pairs).toHaveLength(1);
      expect(pairs[0]![1]).toEqual(pairs[0]![0]);
    }
    // The same authorize id answers the same, and consumes nothing more.
    expect(await gateway.authorize(tenant.tenantId, { id: 'auth-1', metric: 'minutes', quantity: 5 })).toEqual({ allowed: true, remaining: 55 });
    expect((await expectSettled(tenant)).metrics.minutes!.used).toBe(45);
    await expectHealthy(tenant);
  } finally {
    await worker.stop();
  }
});

test('PostgreSQL unreachable during a rollover and the finalization: retried, usage sent meanwhile lands in the next period, one finalized invoice', async () => {
  const worker = await startWorker('pgdown-invoice');
  const { faults, gateway } = worker;
  try {
    const tenant = await startTenant(worker);
    await send(tenant, [...events('m', 6, 'minutes', 12.5), ...events('c', 1, 'calls')]);
    await expectSettled(tenant);

    faults.down('rollOverPeriod', 'finalizeInvoice');
    const closing = gateway.closePeriod(tenant.tenantId, false);
    await faults.untilRefused('rollOverPeriod', 3);
    // Stamped after the close instant: they belong to the next period, however the rollover fares.
    await send(tenant, [...events('next', 2, 'minutes', 3), ...events('next-call', 1, 'calls')]);
    faults.up('rollOverPeriod');
    const closed = await closing;
    expect(closed.closed_period.start).toBe(tenant.period.start);
    expect(closed.current_period!.start).toBe(closed.closed_period.end);

    // The rollover wrote the draft; the invoice waits out its grace, and finance finalizes it now.
    expect(await db('invoices').where({ id: closed.invoice_id }).first()).toMatchObject({ status: 'draft', number: null });
    const invoice = temporal.client.workflow.getHandle<typeof periodInvoice>(closed.invoice_workflow_id);
    await invoice.signal(finalizeInvoiceSignal);
    await faults.untilRefused('finalizeInvoice', 3);
    faults.loseNextAnswers('finalizeInvoice');
    faults.up('finalizeInvoice');
    const summary = await invoice.result();
    expect(summary).toMatchObject({ invoice_id: closed.invoice_id, status: 'finalized', number: 1 });

    for (const name of ['rollOverPeriod', 'finalizeInvoice'] as const) expect({ name, refused: faults.refusalsAreConnectionErrors(name) }).toEqual({ name, refused: true });
    const [finalized] = faults.lostAndRetried('finalizeInvoice');
    expect(finalized![1]).toEqual(finalized![0]); // written, answer lost, retried: the same invoice

    // Exactly one invoice for the period, finalized once, rated from the stored events.
    const invoices = await db('invoices').where({ tenant_id: tenant.tenantId });
    expect(invoices.map((i) => [i.id, i.status, i.number, i.version])).toEqual([[closed.invoice_id, 'finalized', 1, 1]]);
    expect(await db('invoice_lines').where({ invoice_id: closed.invoice_id })).toHaveLength(summary.lines);
    const stored = await expectCountedOnce(tenant, tenant.period.start);
    expect(stored).toEqual({ minutes: '75', calls: '1' }); // the next period's events moved out of it
    const expected = ratePeriod(tenant.plan, stored);
    expect(expected.total).toBe('8.26'); // 2.00 base + (50 x 0.10 + 25 x 0.05) minutes + 1 call x 0.01
    expect(Number(invoices[0].total)).toBeCloseTo(Number(expected.total), 10);
    const periods = await db('periods').where({ tenant_id: tenant.tenantId }).orderBy('start');
    expect(periods.map((p) => [p.start.toISOString(), p.status])).toEqual([
      [tenant.period.start, 'invoiced'],
      [closed.current_period!.start, 'open'],
    ]);

    // The next period counts the usage sent while the rollover was retried.
    const usage = await expectSettled(tenant);
    expect(usage.period.start).toBe(closed.current_period!.start);
    expect([usage.metrics.minutes!.used, usage.metrics.calls!.used]).toEqual([6, 1]);
    await expectHealthy(tenant);
  } finally {
    await worker.stop();
  }
});

// A doorbell that rings while a run's last step runs (the rollover, or the claim after which its
// history is full) reaches a run that is about to continue as new: every run claims at once when
// it starts, so the events it rang for never wait for another ring (no sweeper runs here).
test.each([
  { step: 'rollOverPeriod' as const, when: 'the period rolls over' },
  { step: 'claimUsage' as const, when: 'the claim that fills the history runs' },
])('a doorbell rung while $when is answered by the next run', async ({ step }) => {
  const worker = await startWorker('ring-lost');
  const { faults, gateway } = worker;
  try {
    // For the claim: two doorbells fill a run's history, and the second rings during the claim the first started.
    const tenant = await startTenant(worker, step === 'claimUsage' ? { limits: { maxSignalsPerRun: 2 } } : {});
    await expectSettled(tenant);
    let rungDuring = false;
    // The API stores a batch and rings after the step committed, before the run hears its answer.
    // (For the claim: the one that counts the first batch, not a claim that found nothing.)
    faults.onceAfterCommit(
      step,
      async () => {
        await send(tenant, events('during', 3, 'calls'));
        rungDuring = true;
      },
      (answer) => step === 'rollOverPeriod' || (answer as ClaimResult).claimed > 0,
    );
    if (step === 'rollOverPeriod') await gateway.closePeriod(tenant.tenantId, false);
    else await send(tenant, events('first', 2, 'minutes'));
    await eventually(async () => (rungDuring ? true : undefined), 10_000, 'the ring during the step');
    await eventually(async () => ((await temporal.client.workflow.getHandle(tenant.handle.workflowId).describe()).runId !== tenant.handle.firstExecutionRunId ? true : undefined), 10_000, 'the next run');
    // No further ring: the doorbell already rang for these events.
    const unclaimed = await eventually(async () => {
      const n = await countUnclaimedEvents(db, tenant.tenantId);
      return n === 0 ? n : undefined;
    }, 5_000, 'the rung events claimed').catch(async () => countUnclaimedEvents(db, tenant.tenantId));
    expect(unclaimed).toBe(0);
  } finally {
    await worker.stop();
  }
});

test.each([
  { finalize: false, meets: 'its invoice workflow still waiting out the grace' },
  { finalize: true, meets: 'its invoice workflow already finished' },
])('a rollover that committed and lost its answer is retried and answers the same (finalize: $finalize, the retry meets $meets)', async ({ finalize }) => {
  const worker = await startWorker('rollover-lost');
  const { faults, gateway } = worker;
  try {
    const tenant = await startTenant(worker);
    await send(tenant, [...events('m', 4, 'minutes', 10), ...events('c', 2, 'calls')]);
    await expectSettled(tenant);
    faults.loseNextAnswers('rollOverPeriod', 1, async (answer) => {
      // With finalize the invoice workflow finalizes at once: let it finish before the retry starts it again.
      if (finalize) await temporal.client.workflow.getHandle((answer as RollOverOutput).invoice_workflow_id).result();
    });
    const closed = await gateway.closePeriod(tenant.tenantId, finalize);

    const pairs = faults.lostAndRetried('rollOverPeriod');
    expect(pairs).toHaveLength(1);
    const [lost, retried] = pairs[0] as [RollOverOutput, RollOverOutput];
    expect(retried).toEqual(lost);
    expect(faults.attempts.get('rollOverPeriod')!.map((a) => a.error ?? 'answered')).toEqual([LOST_ANSWER, 'answered']);
    expect(closed).toEqual({
      closed_period: { start: lost.closed.start, end: lost.closed.end },
      invoice_id: lost.invoice_id,
      invoice_workflow_id: lost.invoice_workflow_id,
      current_period: lost.next!.period,
    });

    // One next period, one invoice, one invoice workflow.
    const periods = await db('periods').where({ tenant_id: tenant.tenantId }).orderBy('start');
    expect(periods.map((p) => [p.start.toISOString(), p.end.toISOString()])).toEqual([
      [lost.closed.start, lost.closed.end],
      [lost.next!.period.start, lost.next!.period.end],
    ]);
    expect(periods[1].status).toBe('open');
    await expectOneRun(closed.invoice_workflow_id);
    const invoice = temporal.client.workflow.getHandle<typeof periodInvoice>(closed.invoice_workflow_id);
    if (!finalize) await invoice.signal(finalizeInvoiceSignal);
    const summary = await invoice.result();
    expect(summary).toMatchObject({ invoice_id: closed.invoice_id, status: 'finalized', number: 1 });
    expect(Number(summary.total)).toBe(6.02); // 2.00 base + 40 minutes x 0.10 + 2 calls x 0.01
    expect((await db('invoices').where({ tenant_id: tenant.tenantId })).map((i) => [i.id, i.status])).toEqual([[closed.invoice_id, 'finalized']]);

    // The tenant's next run bills the next period.
    await send(tenant, events('next', 1, 'calls'));
    const usage = await expectSettled(tenant);
    expect(usage.period).toMatchObject(lost.next!.period);
    expect(usage.metrics.calls!.used).toBe(1);
    await expectHealthy(tenant);
  } finally {
    await worker.stop();
  }
});

test('PostgreSQL unreachable while alerts are recorded and delivered: retried, one alert row and one delivery per threshold', async () => {
  const worker = await startWorker('pgdown-alerts');
  const { faults } = worker;
  try {
    const tenant = await startTenant(worker);
    faults.down('recordAlerts', 'deliverAlertInline', 'deliverAlert');
    await send(tenant, events('a', 1, 'minutes', 85)); // 85 %: crosses 80
    await faults.untilRefused('recordAlerts', 3);
    faults.loseNextAnswers('recordAlerts');
    faults.up('recordAlerts');
    // The run's inline attempt, which records the alerts too, fails once, so the alerts are
    // recorded on their own (retried above); the delivery workflow retries from there.
    await faults.untilRefused('deliverAlertInline', 1);
    faults.up('deliverAlertInline');
    await faults.untilRefused('deliverAlert', 2);
    faults.up('deliverAlert');
    // One crossing per batch, each counted before the next is sent: 95 %, then 125 %.
    await expectSettled(tenant);
    await send(tenant, events('b', 1, 'minutes', 10));
    await expectSettled(tenant);
    await send(tenant, events('c', 1, 'minutes', 30));
    const usage = await expectSettled(tenant);
    expect(usage.metrics.minutes!.used).toBe(125);

    const ids = [80, 90, 100].map((t) => alertId(tenant.tenantId, tenant.period.start, 'minutes', t));
    const rows = await db('alerts').where({ tenant_id: tenant.tenantId }).orderBy('threshold');
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
    expect(deliveries.map((d) => [d.event_id, d.channel, d.attempts])).toEqual([...ids].sort().map((id) => [id, 'log', 1]));
    expect(faults.refusalsAreConnectionErrors('recordAlerts')).toBe(true);
    expect(faults.refusalsAreConnectionErrors('deliverAlertInline')).toBe(true);
    expect(faults.refusalsAreConnectionErrors('deliverAlert')).toBe(true);
    // The 80 % alert went through its delivery workflow; the 90 and 100 %, sent once PostgreSQL
    // was back, were delivered by their inline attempts alone.
    const hasDeliveryWorkflow = (id: string) =>
      temporal.client.workflow
        .getHandle(alertDeliveryWorkflowId(id))
        .describe()
        .then(
          () => true,
          () => false,
        );
    expect(await Promise.all(ids.map(hasDeliveryWorkflow))).toEqual([true, false, false]);
    expect(faults.lostAndRetried('recordAlerts')).toHaveLength(1);

    // The workflow decided each threshold once, whatever the retries.
    expect(usage.alerts.map((a) => a.threshold)).toEqual([80, 90, 100]);
    await expectHealthy(tenant);
  } finally {
    await worker.stop();
  }
});

// ---- webhook receivers that misbehave ---------------------------------------------------------

test('a webhook receiver that never answers: usage keeps being counted while deliveries hang, and each ends failed after its attempts, sent no more', async () => {
  const receiver = await startFaultyReceiver({ hangs: Infinity });
  // Each attempt waits 5 s for the receiver (10 s in production); two attempts, then `failed`.
  const worker = await startWorker('hang-failed', { notifier: createNotifier({ logger: quietLogger, webhookTargets: LOCAL_WEBHOOK_TARGETS, webhookTimeoutMs: 5_000, maxAttempts: 2 }) });
  try {
    const path = `/hang-${unique('w')}`;
    const tenant = await startTenant(worker, { tenant: { webhook_url: `${receiver.url}${path}`, webhook_secret: generateWebhookSecret() } });
    const ids = [80, 90, 100].map((t) => alertId(tenant.tenantId, tenant.period.start, 'minutes', t));
    const hitsOf = (id: string) => receiver.hits.filter((h) => h.path === path && JSON.parse(h.raw).id === id);

    await send(tenant, events('a', 1, 'minutes', 85));
    await eventually(async () => (hitsOf(ids[0]!).some((h) => h.open) ? true : undefined), 10_000, 'the 80 % delivery held open');
    // While that delivery hangs, two more batches are counted and fire their own alerts.
    await send(tenant, events('b', 1, 'minutes', 10));
    await expectSettled(tenant);
    await send(tenant, events('c', 1, 'minutes', 30));
    const usage = await expectSettled(tenant);
    expect(usage.metrics.minutes!.used).toBe(125);
    expect(usage.alerts.map((a) => a.threshold)).toEqual([80, 90, 100]);
    // Counted before the 80 % delivery gave up (its attempts take about 11 s): claims did not wait for it.
    expect((await db('notification_deliveries').where({ event_id: ids[0], channel: 'webhook' }).first()).status).toBe('pending');

    const failed = await eventually(async () => {
      const rows = await db('notification_deliveries').where({ tenant_id: tenant.tenantId, channel: 'webhook' }).orderBy('event_id');
      return rows.length === 3 && rows.every((r) => r.status === 'failed') ? rows : undefined;
    }, 40_000, 'three deliveries given up');
    expect(failed.map((r) => [r.event_id, r.attempts, r.last_error, r.delivered_at])).toEqual([...ids].sort().map((id) => [id, 2, 'timed out', null]));
    // The alert shows it once its delivery attempt has written every channel's outcome, a moment after the last row.
    const alertStatuses = async () => (await db('alerts').where({ tenant_id: tenant.tenantId }).orderBy('threshold')).map((a) => a.status);
    await eventually(async () => ((await alertStatuses()).every((s) => s === 'failed') ? true : undefined), 10_000, 'three alerts failed');
    expect(await alertStatuses()).toEqual(['failed', 'failed', 'failed']);

    // Given up means no further attempt: two requests per alert, none answered, and no more come.
    await new Promise((r) => setTimeout(r, 2_500));
    for (const id of ids) expect(hitsOf(id).map((h) => h.answered)).toEqual(['never', 'never']);
    expect(receiver.hits).toHaveLength(6);
    await expectHealthy(tenant);
  } finally {
    await receiver.close();
    await worker.stop();
  }
});

test('a webhook receiver that hangs twice: attempts time out, are retried, and the event is delivered exactly once when it answers', async () => {
  const receiver = await startFaultyReceiver({ hangs: 2 });
  // One attempt waits at most 1 s for the receiver.
  const worker = await startWorker('hang-delivered', { notifier: createNotifier({ logger: quietLogger, webhookTargets: LOCAL_WEBHOOK_TARGETS, webhookTimeoutMs: 1_000 }) });
  try {
    const path = `/hang-${unique('w')}`;
    const secret = generateWebhookSecret();
    const tenant = await startTenant(worker, { tenant: { webhook_url: `${receiver.url}${path}`, webhook_secret: secret } });
    await send(tenant, events('h', 1, 'minutes', 85)); // 80 %
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
    await send(tenant, events('h2', 1, 'minutes', 1));
    await expectSettled(tenant);
    await new Promise((r) => setTimeout(r, 2_500));
    const after = receiver.hits.filter((h) => h.path === path && JSON.parse(h.raw).id === eventId);
    expect(after.map((h) => h.answered)).toEqual(['never', 'never', 200]);
    expect(await db('notification_deliveries').where({ event_id: eventId })).toHaveLength(1);
    await expectHealthy(tenant);
  } finally {
    await receiver.close();
    await worker.stop();
  }
});

// Each notified alert is delivered by its own workflow (`alert-<id>`), which the run starts and
// does not wait for: a hanging receiver retries there for all the delivery's attempts, while the
// run rolls over and the next one counts and answers at once.
test('a webhook receiver that hangs across a rollover does not hold up the next period (deliveries are their own workflows)', async () => {
  const receiver = await startFaultyReceiver({ hangs: Infinity });
  // A delivery lasts about 18 s here: 3 attempts of 5 s, and the back-off between them.
  const worker = await startWorker('hang-rollover', { notifier: createNotifier({ logger: quietLogger, webhookTargets: LOCAL_WEBHOOK_TARGETS, webhookTimeoutMs: 5_000, maxAttempts: 3 }) });
  const { gateway } = worker;
  try {
    const path = `/hang-${unique('w')}`;
    const tenant = await startTenant(worker, { tenant: { webhook_url: `${receiver.url}${path}`, webhook_secret: generateWebhookSecret() } });
    await send(tenant, events('a', 1, 'minutes', 85));
    await expectSettled(tenant);
    await eventually(async () => (receiver.hanging() > 0 ? true : undefined), 10_000, 'the 80 % delivery held open');

    const closed = await gateway.closePeriod(tenant.tenantId, false);
    await send(tenant, events('next', 3, 'calls'));
    const asked = Date.now();
    // The API answers 503 when the run cannot count within 10 s: that answer is the failure here.
    let refused: unknown;
    const usage = await gateway.settledUsage(tenant.tenantId).catch((err: unknown) => {
      refused = err;
      return undefined;
    });
    expect(refused).toBeUndefined();
    expect(Date.now() - asked).toBeLessThan(4_000);
    expect(usage!.period.start).toBe(closed.current_period!.start);
    expect(usage!.metrics.calls!.used).toBe(3);
    expect(receiver.hanging()).toBeGreaterThan(0); // counted while the old period's delivery still hangs
  } finally {
    await receiver.close();
    await worker.stop();
  }
});

test('a receiver that redirects is never followed: the signed body does not reach the redirect target', async () => {
  const target = await startFaultyReceiver();
  const receiver = await startFaultyReceiver({ redirectTo: `${target.url}/stolen` });
  const worker = await startWorker('redirect', { notifier: createNotifier({ logger: quietLogger, webhookTargets: LOCAL_WEBHOOK_TARGETS, webhookTimeoutMs: 1_000, maxAttempts: 2 }) });
  try {
    const path = `/redirect-${unique('w')}`;
    const tenant = await startTenant(worker, { tenant: { webhook_url: `${receiver.url}${path}`, webhook_secret: generateWebhookSecret() } });
    await send(tenant, events('r', 1, 'minutes', 90));
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
    await receiver.close();
    await target.close();
    await worker.stop();
  }
});

test('a tenant name with CR/LF cannot inject email headers or recipients into its alert email', async () => {
  const smtp = await startSmtpInbox();
  const worker = await startWorker('smtp', { notifier: createNotifier({ logger: quietLogger, smtpUrl: `smtp://127.0.0.1:${smtp.port}` }) });
  try {
    // A tenant may rename itself (PATCH name): the API takes any text without NUL, CR/LF included.
    const name = 'Evil\r\nBcc: victim@example.com\r\nX-Injected: yes\r\n\r\nforged body';
    const tenant = await startTenant(worker, { tenant: { name, email: 'owner@example.com' } });
    await send(tenant, events('e', 1, 'minutes', 85));
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
    await smtp.close();
    await worker.stop();
  }
});

// ---- doorbells --------------------------------------------------------------------------------

/** The doorbell's name with any payload at all, as a client that bypasses the API can send it. */
const anyDoorbell = defineSignal<[unknown]>('recordUsage');
const bareDoorbell = defineSignal<[]>('recordUsage');

test('malformed doorbells never fail a workflow task, and each still rings: the run claims what is stored', async () => {
  const worker = await startWorker('doorbell-malformed');
  try {
    const tenant = await startTenant(worker);
    await send(tenant, events('first', 2, 'calls'));
    await expectSettled(tenant);

    const malformed: unknown[] = [
      { batchId: 'x' },
      // The payload of the signal before core v2: events in the signal, a thousand of them.
      { batchId: 'v1', receivedAt: new Date().toISOString(), events: Array.from({ length: 1_000 }, (_, i) => ({ id: `v1-${i}`, metric: 'minutes', quantity: 1 })) },
      null,
      'ring',
      42,
      [],
      { events: -1, highest_seq: null },
      { events: 1.5, highest_seq: null },
      { events: 3, highest_seq: 7 },
    ];
    for (const [i, payload] of malformed.entries()) {
      await storeOnly(tenant, events(`m${i}`, 1, 'minutes', 2));
      await tenant.handle.signal(anyDoorbell, payload);
      await eventually(async () => ((await countUnclaimedEvents(db, tenant.tenantId)) === 0 ? true : undefined), 10_000, `the batch rung by ${JSON.stringify(payload)?.slice(0, 40)}`);
    }
    await storeOnly(tenant, events('bare', 1, 'minutes', 2));
    await tenant.handle.signal(bareDoorbell);
    await eventually(async () => ((await countUnclaimedEvents(db, tenant.tenantId)) === 0 ? true : undefined), 10_000, 'the batch rung with no argument');

    const usage = await expectSettled(tenant);
    expect(usage.metrics.minutes!.used).toBe(2 * (malformed.length + 1));
    expect(await db('usage_events').where({ tenant_id: tenant.tenantId }).where('event_id', 'like', 'v1-%')).toEqual([]);
    const state = await tenant.handle.query(stateQuery);
    expect(state.run.signals).toBe(malformed.length + 2); // the first ring and every malformed one
    expect(state.run.rung).toBe(2); // only the well-formed ring says how many events it stands for
    await expectHealthy(tenant);
  } finally {
    await worker.stop();
  }
});

test('a storm of doorbells across continue-as-new never fails a workflow task; every stored event is counted once', async () => {
  const worker = await startWorker('doorbell-storm');
  try {
    const tenant = await startTenant(worker, { limits: { maxSignalsPerRun: 25 } });
    const batches = 40;
    const ringsPerBatch = 5;
    for (let b = 0; b < batches; b += 10) {
      await Promise.all(
        Array.from({ length: 10 }, async (_, j) => {
          const doorbell = await storeOnly(tenant, [...events(`s${b + j}`, 5, 'minutes', 0.5), ...events(`s${b + j}-call`, 5, 'calls')]);
          await Promise.all(Array.from({ length: ringsPerBatch }, () => tenant.worker.gateway.ring(tenant.tenantId, doorbell)));
        }),
      );
    }
    // 200 rings against 25 per run: the run continues as new (a run takes the rings that arrive while it claims).
    await eventually(async () => ((await temporal.client.workflow.getHandle(tenant.handle.workflowId).describe()).runId !== tenant.handle.firstExecutionRunId ? true : undefined), 20_000, 'a continue-as-new');
    // Read-your-writes, as the API's `?consistent=true` asks: rings lost at a continue-as-new are the failing test above.
    const usage = await expectSettled(tenant);
    expect(usage.metrics.minutes!.used).toBe(batches * 5 * 0.5);
    expect(usage.metrics.calls!.used).toBe(batches * 5);
    expect(await db('usage_events').where({ tenant_id: tenant.tenantId }).count({ n: '*' })).toEqual([{ n: String(batches * 10) }]);
    await expectHealthy(tenant);
  } finally {
    await worker.stop();
  }
});
