import { NativeConnection } from '@temporalio/worker';
import { loadConfigOrExit } from '../config';
import { POOLS, createDb } from '../db/knex';
import { logger } from '../logger';
import { createNotifier } from '../notifications/notifier';
import { webhookTargetPolicyFromConfig } from '../notifications/webhook-targets';
import { createBillingWorker, installWorkerRuntime } from './worker';
import { connectTemporal, temporalConnectionSettings } from '../temporal';
import { startBulkCounter } from './bulk-counter';
import { startFiguresRefresher } from './figures-refresher';
import { installRetentionSchedule } from './retention-schedule';

/** `npm run worker`: the billing worker alone, against TEMPORAL_ADDRESS and DATABASE_URL. */
async function main(): Promise<void> {
  const config = loadConfigOrExit();
  if (!config.TEMPORAL_ADDRESS || !config.DATABASE_URL) {
    logger.fatal('TEMPORAL_ADDRESS and DATABASE_URL are required for `npm run worker` (use `npm start` for the embedded stack)');
    process.exit(78);
  }
  // The SDK's own metrics, for Prometheus to scrape from this process (HOST: all interfaces by default).
  const runtime = installWorkerRuntime({
    metricsBindAddress: config.TEMPORAL_METRICS_PORT > 0 ? `${config.HOST}:${config.TEMPORAL_METRICS_PORT}` : undefined,
    logger,
  });
  const db = createDb(config.DATABASE_URL, { max: POOLS.worker });
  const settings = temporalConnectionSettings(config, config.TEMPORAL_ADDRESS);
  const connection = await NativeConnection.connect(settings);
  const temporal = await connectTemporal(settings, config.TEMPORAL_NAMESPACE);
  const worker = await createBillingWorker({
    tuning: { maxCachedWorkflows: config.WORKER_MAX_CACHED_WORKFLOWS },
    connection,
    namespace: config.TEMPORAL_NAMESPACE,
    taskQueue: config.TEMPORAL_TASK_QUEUE,
    db,
    logger,
    notifier: createNotifier({ logger, smtpUrl: config.SMTP_URL, webhookTargets: webhookTargetPolicyFromConfig(config) }),
    temporal: temporal.client,
  });
  const stopCounter = startBulkCounter({ db, temporal: temporal.client, taskQueue: config.TEMPORAL_TASK_QUEUE, logger, intervalMs: config.COUNTING_INTERVAL_MS });
  const stopRefresher = startFiguresRefresher({ db, logger });
  await installRetentionSchedule(temporal.client, { taskQueue: config.TEMPORAL_TASK_QUEUE, defaultRetentionDays: config.RETENTION_DAYS, logger });
  logger.info({ taskQueue: config.TEMPORAL_TASK_QUEUE, metrics: runtime.metricsUrl ?? null }, 'worker started');
  await worker.run(); // the SDK shuts down gracefully on SIGINT/SIGTERM
  await stopCounter();
  await stopRefresher();
  await connection.close();
  await temporal.connection.close();
  await db.destroy();
  logger.info('worker stopped');
}

void main().catch((err: unknown) => {
  logger.fatal({ err }, 'worker failed');
  process.exit(1);
});
