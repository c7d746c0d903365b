import { fork } from 'node:child_process';
import { NativeConnection, Runtime, Worker, makeTelemetryFilterString, type WorkerOptions } from '@temporalio/worker';
import { createActivities, type ActivityDeps } from '../activities';
import { WORKFLOWS_PATH } from './workflows-path';

export { WORKFLOWS_PATH };

/**
 * The most workflow task polls the worker keeps open on each of its two queues: the task queue
 * every worker shares, and its own sticky queue for the workflows it has cached.
 */
export const WORKFLOW_TASK_POLLS_PER_QUEUE = 10;

/**
 * A tenant run that its history cannot replay (a nondeterminism error) fails, instead of retrying
 * its workflow task until someone deploys a fix: the ledger is in PostgreSQL, so the next ring
 * (the worker's counter rings a tenant whose events wait, and every API message goes with start)
 * starts a new run, which rebuilds it and claims what waits. Retried, the task would fail the same
 * way each time, and the tenant would stay uncounted. Invoice, rerun and alert delivery workflows
 * keep the default: each holds a step that no message would start again.
 */
export const WORKFLOW_FAILURE_ERROR_TYPES: NonNullable<WorkerOptions['workflowFailureErrorTypes']> = { '*': [], tenantBilling: ['NondeterminismError'] };

/**
 * How the billing worker is tuned, before the `tuning` a deployment or a test gives: its cache,
 * and its polls. The bench's rollover floor (bench/rollover-floor.ts) runs with the same.
 */
export const BILLING_WORKER_TUNING = {
  maxCachedWorkflows: 1_000,
  // Pollers scale with the backlog the server reports: a task handed to a waiting poll skips the
  // server's task-queue table, which on the embedded dev server (SQLite) is the scarce resource.
  // The bench's ingest sweep went from about 9,300 to 11,300 events/s with it. Every open poll
  // holds one of the 40 workflow task slots, and the scaler only gives a poll back after a long
  // poll comes back empty, so after many workflow starts (new tenants, rollovers) up to 39 idle
  // polls sat on the shared queue while the cached tenants' tasks, on this worker's sticky
  // queue, waited for a slot: alerts then took p99 1.4 s instead of 0.8 s. Ten per queue leaves
  // at least 20 slots for the tasks themselves (BENCHMARKS.md, session 28).
  workflowTaskPollerBehavior: { type: 'autoscaling', maximum: WORKFLOW_TASK_POLLS_PER_QUEUE },
  activityTaskPollerBehavior: { type: 'autoscaling' },
} satisfies Partial<WorkerOptions>;

/** What a billing worker needs: a Temporal connection, its queue and the activities' dependencies. */
export interface BillingWorkerOptions extends ActivityDeps {
  connection: NativeConnection;
  namespace: string;
  taskQueue: string;
  /** Tuning knobs (cache size, concurrency) for benchmarks and tests. */
  tuning?: Partial<Pick<WorkerOptions, 'maxCachedWorkflows' | 'maxConcurrentActivityTaskExecutions' | 'maxConcurrentWorkflowTaskExecutions'>>;
  workflowBundle?: WorkerOptions['workflowBundle'];
}

/** Creates the one worker that runs tenant and invoice workflows and all billing activities. */
export async function createBillingWorker(options: BillingWorkerOptions): Promise<Worker> {
  const { connection, namespace, taskQueue, tuning, workflowBundle, ...deps } = options;
  return Worker.create({
    connection,
    namespace,
    taskQueue,
    workflowBundle: workflowBundle ?? (await bundleWorkflowsApart()),
    activities: createActivities(deps),
    ...BILLING_WORKER_TUNING,
    workflowFailureErrorTypes: WORKFLOW_FAILURE_ERROR_TYPES,
    ...tuning,
  });
}

/**
 * Bundles the workflow code in a child process (`bundle-workflows.ts`, with this process's Node
 * options, so its TypeScript loader too). Bundled in this process, webpack's modules and their
 * garbage stayed in the heap for the process's life: about 150 MB of a fresh `npm start`'s 425 MB
 * resident (BENCHMARKS.md, "Alert latency and memory"). The bundle is what `workflowsPath` would build.
 */
export function bundleWorkflowsApart(): Promise<{ code: string }> {
  return new Promise((resolve, reject) => {
    const script = require.resolve('./bundle-workflows');
    // Without an inspector flag: a second process cannot listen on the parent's debugging port.
    const execArgv = process.execArgv.filter((arg) => !arg.startsWith('--inspect'));
    // A parent that compiles TypeScript itself (jest) passes no loader: the child then needs tsx's.
    if (script.endsWith('.ts') && !execArgv.some((arg) => arg.includes('tsx'))) execArgv.push('--import', 'tsx');
    const child = fork(script, [], { execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    let bundle: { code: string } | undefined;
    child.once('message', (message: { code: string }) => (bundle = message));
    child.once('error', reject);
    child.once('exit', (code, signal) => (bundle ? resolve(bundle) : reject(new Error(`bundling the workflow code failed (exit code ${code}, signal ${signal})`))));
  });
}

/** What {@link installWorkerRuntime} set up. */
export interface WorkerRuntime {
  /** Where the SDK's Prometheus exporter serves `/metrics`; undefined when off or not bound. */
  metricsUrl?: string;
}

/**
 * Installs the Temporal SDK runtime once per process: core logs at warnings, and, when a bind
 * address is given, the SDK's Prometheus exporter (worker task slots, poll latencies, workflow
 * and activity task metrics). A port already in use must not stop billing, so the runtime is then
 * installed without metrics and the failure is logged.
 */
export function installWorkerRuntime(options: { metricsBindAddress?: string; logger?: { warn: (obj: object, msg: string) => void } }): WorkerRuntime {
  const logging = { filter: makeTelemetryFilterString({ core: 'WARN' }) };
  if (options.metricsBindAddress) {
    try {
      Runtime.install({ telemetryOptions: { logging, metrics: { prometheus: { bindAddress: options.metricsBindAddress } } } });
      const [host, port] = splitHostPort(options.metricsBindAddress);
      const reachable = host === '0.0.0.0' || host === '::' || host === '[::]' ? '127.0.0.1' : host;
      return { metricsUrl: `http://${reachable}:${port}/metrics` };
    } catch (err) {
      options.logger?.warn({ err, bind_address: options.metricsBindAddress }, 'Temporal worker metrics are off: the exporter could not start');
    }
  }
  Runtime.install({ telemetryOptions: { logging } });
  return {};
}

function splitHostPort(address: string): [string, string] {
  const i = address.lastIndexOf(':');
  return [address.slice(0, i), address.slice(i + 1)];
}
