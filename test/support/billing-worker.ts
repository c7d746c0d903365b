import { Worker, type NativeConnection } from '@temporalio/worker';
import type { Client } from '@temporalio/client';
import { createActivities, type BillingActivities } from '../../src/activities';
import type { Db } from '../../src/db/knex';
import { createRecordingNotifier } from '../../src/notifications/notifier';
import { quietLogger, workflowBundle } from './stack';

/**
 * A billing worker in the test's own process, on its own task queue, with the real activities
 * over `db` and some of them replaced by what `wrap` makes of the real ones: a fault, a gate, a
 * hold. For tests that need one step of a run to fail, stall or wait; `stop` shuts it down.
 */
export async function startWrappedWorker(options: {
  db: Db;
  temporal: { client: Client; nativeConnection: NativeConnection };
  taskQueue: string;
  wrap?: (real: BillingActivities) => Partial<BillingActivities>;
}): Promise<{ stop(): Promise<void> }> {
  const real = createActivities({ db: options.db, logger: quietLogger, notifier: createRecordingNotifier(quietLogger), temporal: options.temporal.client });
  const worker = await Worker.create({
    connection: options.temporal.nativeConnection,
    taskQueue: options.taskQueue,
    workflowBundle: await workflowBundle(),
    activities: { ...real, ...options.wrap?.(real) },
    shutdownGraceTime: '1 second',
  });
  const running = worker.run();
  return {
    stop: async () => {
      worker.shutdown();
      await running;
    },
  };
}
