import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { Worker } from '@temporalio/worker';
import type { Client } from '@temporalio/client';
import type { NativeConnection } from '@temporalio/worker';
import type { Db } from '../../src/db/knex';
import type { PlanVersion } from '../../src/domain/plan';
import { storeUsage, type IncomingEvent } from '../../src/db/ingest';
import { recordUsageSignal, settledUsageUpdate, tenantWorkflowId, usageQuery } from '../../src/workflows/messages';
import { connectToTestTemporal, testDb, unique, workflowBundle } from '../support/stack';
import { createTenantFixture } from '../support/tenant-fixture';
import { eventually } from '../support/api-harness';

/**
 * A worker frozen mid-task (SIGSTOP: its core, its activities and its workflows stop together, as
 * on a machine that stalls) while the run's claim, a local activity, waits on a row lock. The
 * server times the workflow task out while rings wait for the next one; the worker wakes with the
 * run in its cache. Every event is counted, and the run replays from its history. (The full
 * replicas chaos run of 2026-12-05 met a variant this test does not reach: a claim that finished
 * before its task timed out. See RELIABILITY.md.)
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
  const tenantId = unique('fz');
  const anchor = new Date(Math.floor(Date.now() / 1000) * 1000 - 60_000).toISOString();
  const fixture = await createTenantFixture(db, { tenantId, plan: plan(unique('calls')), anchor });
  const handle = await temporal.client.workflow.start('tenantBilling', { taskQueue, workflowId: tenantWorkflowId(tenantId), args: [fixture.input] });
  const ring = () => handle.signal(recordUsageSignal, { events: 0, highest_seq: null });
  const send = async (batch: IncomingEvent[]) => {
    expect((await storeUsage(db, tenantId, batch, new Date(), unique('req'))).kind).toBe('stored');
    await ring();
  };
  await send(events('a', 10));
  await eventually(async () => (await handle.query(usageQuery)).metrics.calls!.used === 10 || undefined, 20_000, 'first claim');

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
  await eventually(async () => {
    const usage = await handle.executeUpdate(settledUsageUpdate);
    return usage.metrics.calls!.used === 40 || undefined;
  }, 60_000, 'every event counted');

  const history = await handle.fetchHistory();
  // The freeze outlasted the task: the server timed it out, and a later task finished the claim.
  expect(history.events!.filter((e) => e.workflowTaskTimedOutEventAttributes).length).toBeGreaterThan(0);
  await Worker.runReplayHistory({ workflowBundle: await workflowBundle() }, history, handle.workflowId);
  worker.kill('SIGTERM');
}, 120_000);
