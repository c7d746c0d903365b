import { Worker } from '@temporalio/worker';
import { Context } from '@temporalio/activity';
import type { Client } from '@temporalio/client';
import type { NativeConnection } from '@temporalio/worker';
import { createActivities, type BillingActivities } from '../../src/activities';
import { createRecordingNotifier } from '../../src/activities/notifier';
import { aggregateStoredUsage } from '../../src/db/usage';
import type { Db } from '../../src/db/knex';
import type { PlanVersion } from '../../src/domain/plan';
import { recordUsageSignal, settledUsageUpdate, stateQuery, tenantWorkflowId, type UsageEventInput } from '../../src/workflows/messages';
import { connectToTestTemporal, quietLogger, testDb, unique, workflowBundle } from '../support/stack';
import { createTenantFixture } from '../support/tenant-fixture';
import { eventually } from '../support/api-harness';

/**
 * Exactly-once counting under failure, on the real dev server and PostgreSQL: an activity that
 * fails after it wrote, a worker replaced mid-batch, duplicate signals, and continue-as-new under
 * load. After each, the workflow's counters equal the aggregation of the stored events.
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

/** Runs a worker whose activities can be wrapped with an injected fault. */
async function startWorker(taskQueue: string, wrap?: (acts: BillingActivities) => BillingActivities) {
  const real = createActivities({ db, logger: quietLogger, notifier: createRecordingNotifier(quietLogger), temporal: temporal.client });
  const worker = await Worker.create({
    connection: temporal.nativeConnection,
    taskQueue,
    workflowBundle: await workflowBundle(),
    activities: wrap ? wrap(real) : real,
    shutdownGraceTime: '1 second',
  });
  const running = worker.run();
  return { worker, stop: async () => (worker.shutdown(), await running) };
}

async function startTenant(taskQueue: string, limits?: Parameters<typeof createTenantFixture>[1]['limits']) {
  const tenantId = unique('x');
  const now = new Date(Math.floor(Date.now() / 1000) * 1000).toISOString();
  const fixture = await createTenantFixture(db, { tenantId, plan: plan(unique('calls')), anchor: now, limits });
  const handle = await temporal.client.workflow.start('tenantBilling', {
    taskQueue,
    workflowId: tenantWorkflowId(tenantId),
    args: [fixture.input],
  });
  return { ...fixture, handle };
}

function events(prefix: string, n: number, minutes = 1.5): UsageEventInput[] {
  const timestamp = new Date().toISOString();
  return Array.from({ length: n }, (_, i) => ({ id: `${prefix}-${i}`, metric: i % 2 ? 'calls' : 'minutes', quantity: minutes, timestamp }));
}

/** Invariant 1 (and 3): the counters equal the aggregation of the distinct stored events. */
async function expectCountersMatchStore(tenant: Awaited<ReturnType<typeof startTenant>>) {
  const usage = await tenant.handle.executeUpdate(settledUsageUpdate);
  const stored = await aggregateStoredUsage(db, tenant.tenantId, tenant.period.start, tenant.plan.meters);
  expect(usage.metrics.minutes!.used).toBe(Number(stored.minutes));
  expect(usage.metrics.calls!.used).toBe(Number(stored.calls));
  return usage;
}

test('an activity that fails after writing is retried and counts each event once', async () => {
  const taskQueue = unique('faulty');
  let failuresLeft = 2;
  const { stop } = await startWorker(taskQueue, (acts) => ({
    ...acts,
    async recordUsage(input) {
      const result = await acts.recordUsage(input); // committed...
      if (failuresLeft-- > 0) throw new Error('injected fault after the write'); // ...but the answer is lost
      return result;
    },
  }));
  try {
    const tenant = await startTenant(taskQueue);
    await tenant.handle.signal(recordUsageSignal, { batchId: 'b1', receivedAt: new Date().toISOString(), events: events('e', 40) });
    const usage = await expectCountersMatchStore(tenant);
    expect(usage.metrics.minutes!.used).toBe(30); // 20 minute events x 1.5
    expect(usage.metrics.calls!.used).toBe(20);
    expect(failuresLeft).toBeLessThan(0);
  } finally {
    await stop();
  }
});

test('a worker replaced mid-batch loses and doubles nothing', async () => {
  const taskQueue = unique('restart');
  let release: () => void = () => undefined;
  const stalled = new Promise<void>((r) => (release = r));
  let firstAttempt = true;
  const first = await startWorker(taskQueue, (acts) => ({
    ...acts,
    async recordUsage(input) {
      const result = await acts.recordUsage(input);
      if (firstAttempt) {
        firstAttempt = false;
        release();
        await Context.current().sleep(60_000); // the worker goes away before answering (cancelled on shutdown)
      }
      return result;
    },
  }));
  const tenant = await startTenant(taskQueue);
  await tenant.handle.signal(recordUsageSignal, { batchId: 'b1', receivedAt: new Date().toISOString(), events: events('w', 50) });
  await stalled;
  await first.stop(); // in-flight activity is cancelled after the grace time: its answer never arrives
  const second = await startWorker(taskQueue);
  try {
    await tenant.handle.signal(recordUsageSignal, { batchId: 'b2', receivedAt: new Date().toISOString(), events: events('w', 60) });
    const usage = await expectCountersMatchStore(tenant);
    expect(usage.metrics.minutes!.used).toBe(45); // 30 distinct minute events x 1.5
    expect(usage.metrics.calls!.used).toBe(30);
  } finally {
    await second.stop();
  }
});

test('duplicate and overlapping signals count each event id once', async () => {
  const taskQueue = unique('dups');
  const { stop } = await startWorker(taskQueue);
  try {
    const tenant = await startTenant(taskQueue);
    const batch = events('d', 30, 2);
    const receivedAt = new Date().toISOString();
    await Promise.all([
      tenant.handle.signal(recordUsageSignal, { batchId: 'b1', receivedAt, events: batch }),
      tenant.handle.signal(recordUsageSignal, { batchId: 'b1', receivedAt, events: batch }),
      tenant.handle.signal(recordUsageSignal, { batchId: 'b2', receivedAt, events: [...batch.slice(10), ...batch.slice(10)] }),
    ]);
    const usage = await expectCountersMatchStore(tenant);
    expect(usage.metrics.minutes!.used).toBe(30);
    expect(usage.metrics.calls!.used).toBe(15);
    const stored = await db('usage_events').where({ tenant_id: tenant.tenantId }).count({ n: '*' });
    expect(Number(stored[0]!.n)).toBe(30);
  } finally {
    await stop();
  }
});

test('continue-as-new under load: over 10,000 events in many signals keep exact counters across several runs', async () => {
  const taskQueue = unique('load');
  const { stop } = await startWorker(taskQueue);
  try {
    const tenant = await startTenant(taskQueue, { maxSignalsPerRun: 40, maxEventsPerRun: 3_000, maxEventsPerChunk: 1_000, maxCarriedEvents: 2_000 });
    const firstRunId = tenant.handle.firstExecutionRunId;
    const signals = 120;
    const perSignal = 100;
    const receivedAt = new Date().toISOString();
    for (let s = 0; s < signals; s += 10) {
      await Promise.all(
        Array.from({ length: 10 }, (_, j) => {
          const n = s + j;
          // every tenth signal repeats the previous signal's ids: those must not count again
          const prefix = n % 10 === 9 ? `L${n - 1}` : `L${n}`;
          return tenant.handle.signal(recordUsageSignal, { batchId: `b${n}`, receivedAt, events: events(prefix, perSignal, 0.25) });
        }),
      );
      // Keep the load steady rather than one burst: the latest run's queue stays near one wave.
      const latest = temporal.client.workflow.getHandle(tenantWorkflowId(tenant.tenantId));
      await eventually(async () => ((await latest.query(stateQuery)).pending_events <= 1_000 ? true : undefined), 30_000, 'queue drained');
    }
    const distinctSignals = signals - signals / 10;
    const usage = await eventually(async () => {
      const u = await tenant.handle.executeUpdate(settledUsageUpdate);
      return u.metrics.calls!.used === (distinctSignals * perSignal) / 2 ? u : undefined;
    }, 60_000, 'all events counted');
    expect(usage.metrics.minutes!.used).toBe((distinctSignals * perSignal * 0.25) / 2);
    await expectCountersMatchStore(tenant);
    const runs = await db('usage_events')
      .where({ tenant_id: tenant.tenantId })
      .select(db.raw(`count(distinct split_part(batch_id, '-', 1) || split_part(batch_id, '-', 2) || split_part(batch_id, '-', 3) || split_part(batch_id, '-', 4) || split_part(batch_id, '-', 5)) as runs`));
    expect(Number(runs[0].runs)).toBeGreaterThanOrEqual(3); // several continue-as-new boundaries
    const state = await temporal.client.workflow.getHandle(tenantWorkflowId(tenant.tenantId)).query(stateQuery);
    expect(state.events_counted).toBe(distinctSignals * perSignal);
    expect((await temporal.client.workflow.getHandle(tenantWorkflowId(tenant.tenantId)).describe()).runId).not.toBe(firstRunId);
  } finally {
    await stop();
  }
});
