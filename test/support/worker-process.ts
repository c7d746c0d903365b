/**
 * A billing worker in a process of its own, for tests that freeze it (SIGSTOP) or kill it: the
 * Temporal worker's core and its activities stop together, as on a machine that stalls. Reads
 * the test run's addresses from the environment; its first argument names its queue. Prints
 * `ready` once it polls, and stops on SIGTERM.
 */
import { Worker } from '@temporalio/worker';
import { createActivities } from '../../src/activities';
import { createRecordingNotifier } from '../../src/notifications/notifier';
import { connectToTestTemporal, quietLogger, testDb, workflowBundle } from './stack';

async function main(): Promise<void> {
  const taskQueue = process.argv[2];
  if (!taskQueue) throw new Error('usage: worker-process.ts <task queue>');
  const db = testDb();
  const temporal = await connectToTestTemporal();
  const worker = await Worker.create({
    connection: temporal.nativeConnection,
    taskQueue,
    workflowBundle: await workflowBundle(),
    activities: createActivities({ db, logger: quietLogger, notifier: createRecordingNotifier(quietLogger), temporal: temporal.client }),
    shutdownGraceTime: '1 second',
  });
  process.once('SIGTERM', () => worker.shutdown());
  const running = worker.run();
  process.stdout.write('ready\n');
  await running;
  await temporal.connection.close();
  await temporal.nativeConnection.close();
  await db.destroy();
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
