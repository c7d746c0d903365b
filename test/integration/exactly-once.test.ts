import type { Client } from '@temporalio/client';
import type { NativeConnection } from '@temporalio/worker';
import type { BillingActivities } from '../../src/activities';
import { createRecordingNotifier } from '../../src/notifications/notifier';
import { aggregateStoredUsage } from '../../src/db/usage';
import { currentUsage } from '../../src/db/usage-read-model';
import { ringTenantWorkflow } from '../../src/temporal';
import { BillingGateway } from '../../src/api/billing-gateway';
import { createBillingWorker } from '../../src/workers/worker';
import { startBulkCounter } from '../../src/workers/bulk-counter';
import { latestPeriod } from '../../src/db/periods';
import type { Db } from '../../src/db/knex';
import type { PlanVersion } from '../../src/domain/plan';
import { recordUsageSignal, settledUsageUpdate, stateQuery, tenantWorkflowId } from '../../src/workflows/messages';
import { storeUsage, type IncomingEvent } from '../../src/db/ingest';
import { DefaultLogger, bundleWorkflowCode } from '@temporalio/worker';
import path from 'node:path';
import { ActivityGate } from '../support/periods-harness';
import { connectToTestTemporal, quietLogger, testDb, unique, workflowBundle } from '../support/stack';
import { createTenantFixture } from '../support/tenant-fixture';
import { eventually } from '../support/api-harness';
import { startWrappedWorker } from '../support/billing-worker';

/**
 * Exactly-once counting under failure, on the real dev server and PostgreSQL: usage is stored as
 * the API stores it, and the tenant's run is rung as the API rings it. A claim that fails after
 * it committed, a worker replaced mid-claim, duplicate rings and resent events, continue-as-new
 * under sustained load, and a run terminated by hand: after each, the workflow's counters and the
 * read model equal the aggregation of the stored events.
 */
let db: Db;
let temporal: { client: Client; nativeConnection: NativeConnection; connection: { close(): Promise<void> } };

beforeAll(async () => {
  db = testDb();
  temporal = await connectToTestTemporal();
});
afterAll(async () => {
  await temporal?.connection.close();
  await temporal?.nativeConnection.close();
  await db?.destroy();
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const plan = (id: string): Omit<PlanVersion, 'version'> => ({
  id,
  name: 'Calls',
  currency: 'USD',
  interval: 'month',
  base_fee: '0.00',
  alert_thresholds: [80, 90, 100],
  grace_period_seconds: 0,
  meters: [
    { metric: 'minutes', aggregation: 'sum', limit: 1_000_000, pricing: { model: 'per_unit', unit_price: '0.01' } },
    { metric: 'calls', aggregation: 'count', pricing: { model: 'per_unit', unit_price: '0.001' } },
  ],
});

/** The deliberately incompatible workflow code of test/fixtures/incompatible-workflows, bundled once. */
let incompatible: Promise<{ code: string }> | undefined;
function incompatibleBundle(): Promise<{ code: string }> {
  incompatible ??= bundleWorkflowCode({ workflowsPath: path.resolve(__dirname, '../fixtures/incompatible-workflows'), logger: new DefaultLogger('WARN') });
  return incompatible;
}

/** Runs a worker whose activities can be wrapped with an injected fault. */
function startWorker(taskQueue: string, wrap?: (acts: BillingActivities) => Partial<BillingActivities>) {
  return startWrappedWorker({ db, temporal, taskQueue, wrap });
}

async function startTenant(taskQueue: string, limits?: Parameters<typeof createTenantFixture>[1]['limits']) {
  const tenantId = unique('x');
  const now = new Date(Math.floor(Date.now() / 1000) * 1000 - 60_000).toISOString();
  const fixture = await createTenantFixture(db, { tenantId, plan: plan(unique('calls')), anchor: now, limits });
  const handle = await temporal.client.workflow.start('tenantBilling', {
    taskQueue,
    workflowId: tenantWorkflowId(tenantId),
    args: [fixture.input],
  });
  return { ...fixture, handle, taskQueue };
}

function events(prefix: string, n: number, minutes = 1.5): IncomingEvent[] {
  return Array.from({ length: n }, (_, i) => ({ id: `${prefix}-${i}`, metric: i % 2 ? 'calls' : 'minutes', quantity: String(minutes), timestamp: null }));
}

/** Stores a batch as the API does (202 once committed), then rings the run as the API does. */
async function send(tenant: Awaited<ReturnType<typeof startTenant>>, batch: IncomingEvent[]): Promise<void> {
  const stored = await storeUsage(db, tenant.tenantId, batch, new Date(), unique('req'));
  expect(stored.kind).toBe('stored');
  const count = stored.kind === 'stored' ? stored.stored : 0;
  await temporal.client.workflow.getHandle(tenantWorkflowId(tenant.tenantId)).signal(recordUsageSignal, { events: count, highest_seq: null });
}

/** Invariants 1 and 3: the run's counters and the read model equal the aggregation of the distinct stored events. */
async function expectCountersMatchStore(tenant: Awaited<ReturnType<typeof startTenant>>) {
  const usage = await temporal.client.workflow.getHandle(tenantWorkflowId(tenant.tenantId)).executeUpdate(settledUsageUpdate);
  const stored = await aggregateStoredUsage(db, tenant.tenantId, tenant.period.start, tenant.plan.meters);
  expect(usage.metrics.minutes!.used).toBe(Number(stored.minutes));
  expect(usage.metrics.calls!.used).toBe(Number(stored.calls));
  const model = await currentUsage(db, tenant.tenantId);
  expect(model!.metrics).toEqual(usage.metrics);
  expect(model!.pending_events).toBe(0);
  return usage;
}

test('a claim that fails after it committed is retried and counts each event once', async () => {
  const taskQueue = unique('faulty');
  let failuresLeft = 2;
  const { stop } = await startWorker(taskQueue, (acts) => ({
    ...acts,
    async claimUsage(input) {
      const result = await acts.claimUsage(input); // committed...
      if (result.claimed > 0 && failuresLeft-- > 0) throw new Error('injected fault after the claim'); // ...but the answer is lost
      return result;
    },
  }));
  try {
    const tenant = await startTenant(taskQueue);
    await send(tenant, events('e', 40));
    const usage = await expectCountersMatchStore(tenant);
    expect(usage.metrics.minutes!.used).toBe(30); // 20 minute events x 1.5
    expect(usage.metrics.calls!.used).toBe(20);
    expect(failuresLeft).toBeLessThan(0);
  } finally {
    await stop();
  }
});

test('a worker replaced mid-claim loses and doubles nothing', async () => {
  const taskQueue = unique('restart');
  let release: () => void = () => undefined;
  const stalled = new Promise<void>((r) => (release = r));
  let stop: () => void = () => undefined;
  const stopping = new Promise<void>((r) => (stop = r));
  let firstAttempt = true;
  const first = await startWorker(taskQueue, (acts) => ({
    ...acts,
    async claimUsage(input) {
      const result = await acts.claimUsage(input);
      if (firstAttempt && result.claimed > 0) {
        firstAttempt = false;
        release();
        // The worker goes away before answering. (A stopping worker waits for its local
        // activities, here for 30 s, so the claim fails as it stops instead.)
        await stopping;
        throw new Error('the worker stopped before answering');
      }
      return result;
    },
  }));
  const tenant = await startTenant(taskQueue);
  await send(tenant, events('w', 50));
  await stalled;
  stop();
  await first.stop();
  const second = await startWorker(taskQueue);
  try {
    await send(tenant, events('w', 60));
    const usage = await expectCountersMatchStore(tenant);
    expect(usage.metrics.minutes!.used).toBe(45); // 30 distinct minute events x 1.5
    expect(usage.metrics.calls!.used).toBe(30);
  } finally {
    await second.stop();
  }
});

test('duplicate rings and resent event ids count each event once', async () => {
  const taskQueue = unique('dups');
  const { stop } = await startWorker(taskQueue);
  try {
    const tenant = await startTenant(taskQueue);
    const batch = events('d', 30, 2);
    await Promise.all([send(tenant, batch), send(tenant, batch), send(tenant, [...batch.slice(10), ...batch.slice(10)])]);
    const handle = temporal.client.workflow.getHandle(tenantWorkflowId(tenant.tenantId));
    await Promise.all(Array.from({ length: 5 }, () => handle.signal(recordUsageSignal, { events: 30, highest_seq: null })));
    const usage = await expectCountersMatchStore(tenant);
    expect(usage.metrics.minutes!.used).toBe(30);
    expect(usage.metrics.calls!.used).toBe(15);
    const stored = await db('usage_events').where({ tenant_id: tenant.tenantId }).count({ n: '*' });
    expect(Number(stored[0]!.n)).toBe(30);
  } finally {
    await stop();
  }
});

test('continue-as-new under sustained load: 12,000 events in 120 rings keep exact counters across several runs, with bounded histories', async () => {
  const taskQueue = unique('load');
  const { stop } = await startWorker(taskQueue);
  try {
    const tenant = await startTenant(taskQueue, { maxSignalsPerRun: 20 });
    const firstRunId = tenant.handle.firstExecutionRunId;
    const rings = 120;
    const perRing = 100;
    for (let n = 0; n < rings; n += 10) {
      // every tenth batch repeats the previous batch's ids: those must not count again
      await Promise.all(Array.from({ length: 10 }, (_, j) => send(tenant, events((n + j) % 10 === 9 ? `L${n + j - 1}` : `L${n + j}`, perRing, 0.25))));
    }
    const distinct = rings - rings / 10;
    const usage = await eventually(async () => {
      const u = await temporal.client.workflow.getHandle(tenantWorkflowId(tenant.tenantId)).executeUpdate(settledUsageUpdate);
      return u.metrics.calls!.used === (distinct * perRing) / 2 ? u : undefined;
    }, 60_000, 'all events counted');
    expect(usage.metrics.minutes!.used).toBe((distinct * perRing * 0.25) / 2);
    await expectCountersMatchStore(tenant);
    // Several continue-as-new boundaries; closed runs reach the visibility store a moment later.
    const runs = await eventually(async () => {
      const lengths: number[] = [];
      for await (const run of temporal.client.workflow.list({ query: `WorkflowId = '${tenantWorkflowId(tenant.tenantId)}'` })) lengths.push(run.historyLength);
      return lengths.length >= 3 ? lengths : undefined;
    }, 10_000, 'several runs listed');
    expect(Math.max(...runs)).toBeLessThan(1_000); // a run's history is bounded by its rings and claims, not by its events
    expect((await temporal.client.workflow.getHandle(tenantWorkflowId(tenant.tenantId)).describe()).runId).not.toBe(firstRunId);
  } finally {
    await stop();
  }
});

test('a run terminated by hand mid-load is started again by the next ring, rebuilds its ledger and counts everything once', async () => {
  const taskQueue = unique('terminated');
  const { stop } = await startWorker(taskQueue);
  try {
    const tenant = await startTenant(taskQueue);
    await send(tenant, events('t', 40));
    await expectCountersMatchStore(tenant);
    await temporal.client.workflow.getHandle(tenantWorkflowId(tenant.tenantId)).terminate('ops terminated it by hand');
    // Stored while no run is there, then rung as the API (or the sweeper) rings: with start.
    const stored = await storeUsage(db, tenant.tenantId, events('u', 40), new Date(), unique('req'));
    expect(stored).toMatchObject({ kind: 'stored', stored: 40 });
    await ringTenantWorkflow(temporal.client, { taskQueue, tenantId: tenant.tenantId, doorbell: { events: 40, highest_seq: null }, searchAttributes: false });
    const usage = await expectCountersMatchStore(tenant);
    expect(usage.metrics.calls!.used).toBe(40);
    expect(usage.metrics.minutes!.used).toBe(60);
    const state = await temporal.client.workflow.getHandle(tenantWorkflowId(tenant.tenantId)).query(stateQuery);
    expect(state.period).toEqual(tenant.period);
  } finally {
    await stop();
  }
});

test('a run that its history cannot replay fails, and the next ring starts one that counts everything once', async () => {
  const taskQueue = unique('nondeterministic');
  const deps = { db, logger: quietLogger, notifier: createRecordingNotifier(quietLogger), temporal: temporal.client };
  const billingWorker = async (bundle: { code: string }) => {
    // As production runs it (its failure policy too), without a cache: each task replays the history.
    const worker = await createBillingWorker({ connection: temporal.nativeConnection, namespace: 'default', taskQueue, workflowBundle: bundle, tuning: { maxCachedWorkflows: 0 }, ...deps });
    const running = worker.run();
    return async () => (worker.shutdown(), await running);
  };
  let stop = await billingWorker(await workflowBundle());
  try {
    const tenant = await startTenant(taskQueue);
    await send(tenant, events('n', 40));
    await expectCountersMatchStore(tenant);
    const handle = temporal.client.workflow.getHandle(tenantWorkflowId(tenant.tenantId));
    const firstRunId = (await handle.describe()).runId;
    await stop();
    // Code that changes the run's first commands without a patch: replaying the run fails.
    stop = await billingWorker(await incompatibleBundle());
    await send(tenant, events('o', 20));
    await eventually(async () => ((await handle.describe()).status.name === 'FAILED' ? true : undefined), 30_000, 'the run failed');
    const failure = (await handle.fetchHistory()).events!.at(-1)!.workflowExecutionFailedEventAttributes?.failure;
    expect(failure?.message).toMatch(/[Nn]ondetermin/);
    await stop();
    stop = await billingWorker(await workflowBundle());
    // The counter rings a tenant whose events wait, with start.
    await ringTenantWorkflow(temporal.client, { taskQueue, tenantId: tenant.tenantId, doorbell: { events: 20, highest_seq: null }, searchAttributes: false });
    const usage = await expectCountersMatchStore(tenant);
    expect(usage.metrics.calls!.used).toBe(30);
    expect((await handle.describe()).runId).not.toBe(firstRunId);
  } finally {
    await stop();
  }
});

test('a quiet tenant whose run ended is started again once its period is past its end, and the period rolls over', async () => {
  const taskQueue = unique('overdue');
  const { stop } = await startWorker(taskQueue);
  const tenantId = unique('q');
  // A monthly period that ends in three seconds.
  const end = new Date(Math.floor(Date.now() / 1000) * 1000 + 3_000);
  const anchor = new Date(end);
  anchor.setUTCMonth(anchor.getUTCMonth() - 1);
  const fixture = await createTenantFixture(db, { tenantId, plan: plan(unique('calls')), anchor: anchor.toISOString() });
  expect(fixture.period.end).toBe(end.toISOString());
  let stopCounter: (() => Promise<void>) | undefined;
  try {
    const handle = await temporal.client.workflow.start('tenantBilling', { taskQueue, workflowId: tenantWorkflowId(tenantId), args: [fixture.input] });
    await send({ ...fixture, handle, taskQueue }, events('q', 10));
    expect((await handle.executeUpdate(settledUsageUpdate)).metrics.calls!.used).toBe(5);
    await handle.terminate('ops ended it; no event waits, so no ring comes');
    await sleep(Date.parse(fixture.period.end) - Date.now() + 500);
    expect((await latestPeriod(db, tenantId))!.status).toBe('open'); // no run rolled it over
    stopCounter = startBulkCounter({ db, temporal: temporal.client, taskQueue, logger: quietLogger, searchAttributes: false, scope: (id) => id === tenantId, overdueIntervalMs: 200, overdueAfterMs: 0 });
    const next = await eventually(async () => (await latestPeriod(db, tenantId))?.status === 'open' && (await latestPeriod(db, tenantId))!.start.getTime() === Date.parse(fixture.period.end) ? true : undefined, 30_000, 'the next period open');
    expect(next).toBe(true);
    const closed = await db('periods').where({ tenant_id: tenantId, start: new Date(fixture.period.start) }).first();
    expect(closed.status).not.toBe('open');
    expect(await db('invoices').where({ tenant_id: tenantId }).count<{ count: string }[]>('* as count')).toEqual([{ count: '1' }]);
  } finally {
    await stopCounter?.();
    await stop();
  }
});

test('an update under way when its run ends is answered by the next run', async () => {
  const taskQueue = unique('ended-mid-update');
  const claims = new ActivityGate();
  const { stop } = await startWorker(taskQueue, (acts) => ({
    ...acts,
    async claimUsage(input) {
      await claims.pass();
      return acts.claimUsage(input);
    },
  }));
  try {
    const tenant = await startTenant(taskQueue);
    await send(tenant, events('e', 20));
    await expectCountersMatchStore(tenant);
    expect((await storeUsage(db, tenant.tenantId, events('f', 20), new Date(), unique('req'))).kind).toBe('stored');
    const held = claims.arm();
    const settled = new BillingGateway(temporal.client, taskQueue, { searchAttributes: false }).settledUsage(tenant.tenantId);
    settled.catch(() => undefined);
    await held;
    await temporal.client.workflow.getHandle(tenantWorkflowId(tenant.tenantId)).terminate('ops ended it mid-update');
    claims.release();
    expect((await settled).metrics.calls!.used).toBe(20);
  } finally {
    await stop();
  }
});

test('a run continues as new once its history reaches its bound, whatever else is counted', async () => {
  const taskQueue = unique('bound');
  const { stop } = await startWorker(taskQueue);
  try {
    const tenant = await startTenant(taskQueue, { maxHistoryEvents: 60 });
    for (let n = 0; n < 12; n += 1) {
      await send(tenant, events(`H${n}`, 10));
      await temporal.client.workflow.getHandle(tenantWorkflowId(tenant.tenantId)).executeUpdate(settledUsageUpdate);
    }
    await expectCountersMatchStore(tenant);
    const runs: number[] = [];
    for await (const run of temporal.client.workflow.list({ query: `WorkflowId = '${tenantWorkflowId(tenant.tenantId)}'` })) runs.push(run.historyLength);
    expect(runs.length).toBeGreaterThanOrEqual(2);
    // The bound is checked between steps: a run ends within one step's events of it.
    expect(Math.max(...runs)).toBeLessThan(60 + 40);
  } finally {
    await stop();
  }
});
