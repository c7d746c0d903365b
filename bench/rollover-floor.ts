import { fork } from 'node:child_process';
import { once } from 'node:events';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { DefaultLogger, NativeConnection, Runtime, Worker, type InjectedSinks } from '@temporalio/worker';
import { BILLING_WORKER_TUNING } from '../src/workers/worker';
import { cpuMsBetween, cpuTicks, rolloversCpuCost, runLoops, sleep, startScriptNodeFlags, type RolloversCpuCost } from './lib';
import { rolloverHistoryOf, type RolloverHistory } from './history';
import type { FloorActivities, FloorSinks } from './rollover-floor-workflows';

const TASK_QUEUE = 'bench-rollover-floor';
const tenantId = (i: number) => `floor-${i}`;
const invoiceId = (tenant: string) => `floor-invoice-${tenant}`;

/** The rollover floor: how long the Temporal part alone of `tenants` rollovers at one instant takes, and what it costs. */
export interface RolloverFloor {
  tenants: number;
  /** From the anniversary until every invoice workflow's finalize step ran. */
  seconds: number;
  cpu: RolloversCpuCost;
  history_events_per_rollover: number;
  example: RolloverHistory['types'];
}

interface FloorOptions {
  temporalAddress: string;
  stackPid: number;
  tenants: number;
}

/** The name this process's CPU goes under in the floor's figures. */
const FLOOR_WORKER = 'floor worker';

/**
 * The physical floor under the burst (bench/rollover-floor-workflows.ts): `tenants` runs that
 * reach their anniversary at one instant, each starting its invoice workflow and continuing as
 * new, on this stack's Temporal server, with a worker tuned as tally's is (cache, task slots,
 * polls, tally's Node.js flags). What the burst spends beyond it is tally's own; what it cannot
 * go below on this machine, whatever tally does, is this. It runs in a process of its own, so
 * that the load generator carries none of its heap or threads into the scenarios after it.
 */
export async function rolloverFloor(options: FloorOptions): Promise<RolloverFloor> {
  const child = fork(__filename, [JSON.stringify(options)], { execArgv: [...startScriptNodeFlags(), '--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const [message] = (await Promise.race([once(child, 'message'), once(child, 'exit').then(([code]) => Promise.reject(new Error(`the rollover floor's process exited with ${code}`)))])) as [
    { floor?: RolloverFloor; error?: string },
  ];
  await once(child, 'exit');
  if (!message.floor) throw new Error(`rollover floor: ${message.error}`);
  return message.floor;
}

async function measureRolloverFloor(options: FloorOptions): Promise<RolloverFloor> {
  const n = options.tenants;
  const clientConnection = await Connection.connect({ address: options.temporalAddress });
  const temporal = new Client({ connection: clientConnection });
  const waiting = new Set<string>();
  const finalized = new Set<string>();
  const activities: FloorActivities = {
    async startFloorInvoice(tenant) {
      await temporal.workflow.start('floorInvoice', { taskQueue: TASK_QUEUE, workflowId: invoiceId(tenant), args: [tenant] }).catch((err: Error) => {
        if (err.name !== 'WorkflowExecutionAlreadyStartedError') throw err;
      });
    },
    async finalizeFloorInvoice(tenant) {
      finalized.add(tenant);
    },
  };
  const sinks: InjectedSinks<FloorSinks> = { floor: { waiting: { fn: (_info, tenant) => void waiting.add(tenant) } } };
  // Warnings only: the bundler's and the worker's start would fill the bench's log.
  Runtime.install({ logger: new DefaultLogger('WARN') });
  const connection = await NativeConnection.connect({ address: options.temporalAddress });
  const worker = await Worker.create({
    connection,
    taskQueue: TASK_QUEUE,
    workflowsPath: path.join(__dirname, 'rollover-floor-workflows.ts'),
    activities,
    sinks,
    ...BILLING_WORKER_TUNING,
  });
  const running = worker.run();
  try {
    // The anniversary leaves room to start every run and let each set its timer first (2,000
    // took 30 to 40 s here).
    const anniversary = Math.ceil((Date.now() + n * 30 + 5_000) / 1000) * 1000;
    let next = 0;
    await runLoops(32, () => next < n, async () => {
      const tenant = tenantId(next++);
      await temporal.workflow.start('floorTenant', { taskQueue: TASK_QUEUE, workflowId: tenant, args: [tenant, anniversary, true] });
    });
    while (waiting.size < n) {
      if (Date.now() > anniversary - 500) throw new Error(`rollover floor: only ${waiting.size} of ${n} runs had set their timer by the anniversary`);
      await sleep(50);
    }
    await sleep(anniversary - Date.now());
    const ticksBefore = cpuTicks(options.stackPid, FLOOR_WORKER);
    const deadline = anniversary + 600_000;
    while (finalized.size < n) {
      if (Date.now() > deadline) throw new Error(`rollover floor: only ${finalized.size} of ${n} invoices finalized 600 s after the anniversary`);
      await sleep(50);
    }
    const seconds = Math.round((Date.now() - anniversary) / 100) / 10;
    const cpu = rolloversCpuCost(cpuMsBetween(ticksBefore, cpuTicks(options.stackPid, FLOOR_WORKER)), n, seconds * 1000);
    const sample = await rolloverHistoryOf(temporal, tenantId(0), invoiceId(tenantId(0)), anniversary);
    let stopped = 0;
    await runLoops(32, () => stopped < n, async () => {
      await temporal.workflow.getHandle(tenantId(stopped++)).terminate('bench rollover floor done');
    });
    return { tenants: n, seconds, cpu, history_events_per_rollover: sample.total, example: sample.types };
  } finally {
    worker.shutdown();
    await running;
    await connection.close();
    await clientConnection.close();
  }
}

if (require.main === module) {
  measureRolloverFloor(JSON.parse(process.argv[2]!) as FloorOptions).then(
    (floor) => process.send!({ floor }, () => process.exit(0)),
    (err: Error) => process.send!({ error: err.stack ?? String(err) }, () => process.exit(1)),
  );
}
