import { NativeConnection, Runtime, makeTelemetryFilterString } from '@temporalio/worker';
import { loadConfigOrExit } from '../config';
import { createDb } from '../db/knex';
import { logger } from '../logger';
import { createRecordingNotifier } from '../activities/notifier';
import { createBillingWorker } from './worker';
import { connectTemporal } from '../temporal';

/** `npm run worker`: the billing worker alone, against TEMPORAL_ADDRESS and DATABASE_URL. */
async function main(): Promise<void> {
  const config = loadConfigOrExit();
  if (!config.TEMPORAL_ADDRESS || !config.DATABASE_URL) {
    logger.fatal('TEMPORAL_ADDRESS and DATABASE_URL are required for `npm run worker` (use `npm start` for the embedded stack)');
    process.exit(78);
  }
  Runtime.install({ logger: undefined, telemetryOptions: { logging: { filter: makeTelemetryFilterString({ core: 'WARN' }) } } });
  const db = createDb(config.DATABASE_URL);
  const connection = await NativeConnection.connect({ address: config.TEMPORAL_ADDRESS });
  const temporal = await connectTemporal(config.TEMPORAL_ADDRESS, config.TEMPORAL_NAMESPACE);
  const worker = await createBillingWorker({
    connection,
    namespace: config.TEMPORAL_NAMESPACE,
    taskQueue: config.TEMPORAL_TASK_QUEUE,
    db,
    logger,
    notifier: createRecordingNotifier(logger),
    temporal: temporal.client,
  });
  logger.info({ taskQueue: config.TEMPORAL_TASK_QUEUE }, 'worker started');
  await worker.run(); // the SDK shuts down gracefully on SIGINT/SIGTERM
  await connection.close();
  await temporal.connection.close();
  await db.destroy();
  logger.info('worker stopped');
}

void main().catch((err: unknown) => {
  logger.fatal({ err }, 'worker failed');
  process.exit(1);
});
