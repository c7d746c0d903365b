import { NativeConnection, Worker, type WorkerOptions } from '@temporalio/worker';
import { createActivities, type ActivityDeps } from '../activities';

/** Where the workflow bundle's entry point is (the worker bundles it with webpack at start). */
export const WORKFLOWS_PATH = require.resolve('../workflows');

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
    ...(workflowBundle ? { workflowBundle } : { workflowsPath: WORKFLOWS_PATH }),
    activities: createActivities(deps),
    maxCachedWorkflows: 2_000,
    ...tuning,
  });
}
