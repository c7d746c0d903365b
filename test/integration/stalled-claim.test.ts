import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { Worker } from '@temporalio/worker';
import type { Client, WorkflowHandle } from '@temporalio/client';
import type { NativeConnection } from '@temporalio/worker';
import type { temporal as temporalProto } from '@temporalio/proto';
import type { Db } from '../../src/db/knex';
import type { PlanVersion } from '../../src/domain/plan';
import { storeUsage, type IncomingEvent } from '../../src/db/ingest';
import { alertRulesChangedSignal, recordUsageSignal, settledUsageUpdate, tenantWorkflowId, usageQuery } from '../../src/workflows/messages';
import { TENANT_BILLING_PATCHES } from '../../src/workflows/patches';
import { ActivityGate } from '../support/periods-harness';
import { connectToTestTemporal, testDb, unique, workflowBundle } from '../support/stack';
import { createTenantFixture } from '../support/tenant-fixture';
import { eventually } from '../support/api-harness';
import { startWrappedWorker } from '../support/billing-worker';

/**
 * A tenant run whose claim, a local activity, is stalled past its workflow task's deadlines.
 *
 * While a task is under way the server delivers no signal. A local activity that outlasts 80 % of
 * the task's 10 s timeout makes the worker heartbeat the task (end it and start the next), and
 * the next task brings the signals that arrived meanwhile, during the activity; replay brings them
 * at the same point. A worker that stalls past the timeout itself loses the task, and replay then
 * brings the signals that the next task delivered before the step began (RELIABILITY.md). Patch
 * `signals-during-local-activities-v1` makes both orders decide alike: a ring during a local
 * activity is dropped (the claim under way, or the counter's next ring, counts what it rang for),
 * and rule changes wait for the loop's claim.
 */
let db: Db;
let temporal: { client: Client; nativeConnection: NativeConnection; connection: { close(): Promise<void> } };
const children: ChildProcess[] = [];

beforeAll(async () => {
  db = testDb();
  temporal = await connectToTestTemporal();
});
afterAll(async () => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  await temporal?.connection.close();
  await temporal?.nativeConnection.close();
  await db?.destroy();
});

type HistoryEvent = temporalProto.api.history.v1.IHistoryEvent;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const plan = (id: string): Omit<PlanVersion, 'version'> => ({
  id,
  name: 'Calls',
  currency: 'USD',
  interval: 'month',
  base_fee: '0.00',
  alert_thresholds: [80, 90, 100],
  grace_period_seconds: 0,
  meters: [{ metric: 'calls', aggregation: 'count', limit: 1_000_000, pricing: { model: 'per_unit', unit_price: '0.001' } }],
});

function events(prefix: string, n: number): IncomingEvent[] {
  return Array.from({ length: n }, (_, i) => ({ id: `${prefix}-${i}`, metric: 'calls', quantity: '1', timestamp: null }));
}

/** A tenant's run on `taskQueue`, its first 10 events counted; `send` stores a batch and rings. */
async function startRun(taskQueue: string): Promise<{ tenantId: string; handle: WorkflowHandle; send(batch: IncomingEvent[]): Promise<void> }> {
  const tenantId = unique('sc');
  const anchor = new Date(Math.floor(Date.now() / 1000) * 1000 - 60_000).toISOString();
  const fixture = await createTenantFixture(db, { tenantId, plan: plan(unique('calls')), anchor });
  const handle = await temporal.client.workflow.start('tenantBilling', { taskQueue, workflowId: tenantWorkflowId(tenantId), args: [fixture.input] });
  const send = async (batch: IncomingEvent[]) => {
    expect((await storeUsage(db, tenantId, batch, new Date(), unique('req'))).kind).toBe('stored');
    await handle.signal(recordUsageSignal, { events: 0, highest_seq: null });
  };
  await send(events('a', 10));
  await eventually(async () => (await handle.query(usageQuery)).metrics.calls!.used === 10 || undefined, 20_000, 'first claim');
  return { tenantId, handle, send };
}

/** Waits until `handle`'s settled usage reaches `used`. */
async function countedUpTo(handle: WorkflowHandle, used: number): Promise<void> {
  await eventually(async () => ((await handle.executeUpdate(settledUsageUpdate)).metrics.calls!.used === used ? true : undefined), 60_000, 'every event counted');
}

/** A worker process on `taskQueue`, resolved once it polls. */
async function startWorkerProcess(taskQueue: string): Promise<ChildProcess> {
  const root = path.resolve(__dirname, '../..');
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(root, 'test/support/worker-process.ts'), taskQueue], {
    cwd: root,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let output = '';
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      if (output.includes('ready')) resolve();
    });
    child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.once('exit', (code) => reject(new Error(`worker process exited (${code}) before it was ready:\n${output}`)));
  });
  return child;
}

test('a run whose worker froze during its local claim replays from its history', async () => {
  const taskQueue = unique('frozen');
  const worker = await startWorkerProcess(taskQueue);
  const { tenantId, handle, send } = await startRun(taskQueue);

  // Hold the tenant's totals row, so the next claim waits on it inside its local activity.
  const locker = await db.client.acquireConnection();
  try {
    await locker.query('BEGIN');
    await locker.query('SELECT 1 FROM tenant_event_totals WHERE tenant_id = $1 FOR UPDATE', [tenantId]);
    const lockerPid = Number((await locker.query('SELECT pg_backend_pid() AS pid')).rows[0].pid);
    await send(events('b', 10));
    await eventually(async () => {
      const waiting = await db.raw<{ rows: unknown[] }>('SELECT 1 FROM pg_stat_activity WHERE ? = ANY(pg_blocking_pids(pid))', [lockerPid]);
      return waiting.rows.length > 0 || undefined;
    }, 10_000, 'the claim waits on the lock');
    // Rings sent while the task is under way reach the run in its next task.
    await send(events('c', 10));
    worker.kill('SIGSTOP');
    await locker.query('COMMIT');
  } finally {
    db.client.releaseConnection(locker);
  }
  await sleep(12_000); // past the workflow task's 10 s timeout
  worker.kill('SIGCONT');
  await send(events('d', 10));
  await countedUpTo(handle, 40);

  const history = await handle.fetchHistory();
  // The freeze outlasted the task: the server timed it out, and a later task finished the claim.
  expect(history.events!.filter((e) => e.workflowTaskTimedOutEventAttributes).length).toBeGreaterThan(0);
  await Worker.runReplayHistory({ workflowBundle: await workflowBundle() }, history, handle.workflowId);
  worker.kill('SIGTERM');
}, 120_000);

/** The patch ids of a history's patch markers, each with whether it was recorded as deprecated. */
function patchMarkers(history: HistoryEvent[]): Array<{ id: string; deprecated: boolean }> {
  return history
    .filter((e) => e.markerRecordedEventAttributes?.markerName === 'core_patch')
    .flatMap((e) =>
      Object.values(e.markerRecordedEventAttributes!.details ?? {}).flatMap((p) =>
        (p.payloads ?? []).map((d) => JSON.parse(Buffer.from(d.data!).toString('utf8')) as { id: string; deprecated: boolean }),
      ),
    );
}

test('a ring that reaches a run during a long local claim is dropped, as replay decides it, and rule changes follow the claim', async () => {
  const taskQueue = unique('slow-claim');
  const claims = new ActivityGate();
  const worker = await startWrappedWorker({
    db,
    temporal,
    taskQueue,
    wrap: (real) => ({
      async claimUsage(input) {
        await claims.pass();
        return real.claimUsage(input);
      },
    }),
  });
  try {
    const { handle, send } = await startRun(taskQueue);

    // The next claim waits at the gate, inside its local activity, while a ring arrives.
    const held = claims.arm();
    await send(events('b', 10));
    await held;
    await send(events('c', 10));
    // The worker heartbeats the task at 80 % of its 10 s timeout: the ring is written to the
    // history then, and the task after brings it to the run, the claim still held.
    await eventually(
      async () => (((await handle.fetchHistory()).events ?? []).filter((e) => e.workflowExecutionSignaledEventAttributes).length >= 3 ? true : undefined),
      20_000,
      'the ring sent during the claim in the history',
    );
    await sleep(1_000);
    claims.release();
    // The ring was dropped under the patch, whose marker is recorded as deprecated: replay skips it
    // where it brings the ring before the claim began.
    const dropped = await eventually(async () => {
      const markers = patchMarkers((await handle.fetchHistory()).events ?? []).filter((m) => m.id === TENANT_BILLING_PATCHES.signalsDuringLocalActivities);
      return markers.length > 0 ? markers : undefined;
    }, 10_000, 'the patch marker recorded');
    expect(dropped).toEqual([{ id: TENANT_BILLING_PATCHES.signalsDuringLocalActivities, deprecated: true }]);
    // A rule change on the patched path waits for the loop's claim.
    await handle.signal(alertRulesChangedSignal, { upsert: [{ id: 'ops-50', subject: 'calls', threshold: 50 }] });
    await send(events('d', 10));
    await countedUpTo(handle, 40);

    const history = await handle.fetchHistory();
    expect(patchMarkers(history.events ?? []).filter((m) => m.id === TENANT_BILLING_PATCHES.signalsDuringLocalActivities)).toHaveLength(1);
    await Worker.runReplayHistory({ workflowBundle: await workflowBundle() }, history, handle.workflowId);
  } finally {
    await worker.stop();
  }
}, 60_000);
