import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { NativeConnection } from '@temporalio/worker';
import { loadConfigOrExit, type Config } from './config';
import { POOLS, createDb, migrateLatest } from './db/knex';
import { logger } from './logger';
import { connectTemporal, temporalConnectionSettings } from './temporal';
import { startApiThread } from './api/api-thread';
import { createBillingWorker, installWorkerRuntime } from './workers/worker';
import { startBulkCounter } from './workers/bulk-counter';
import { startFiguresRefresher } from './workers/figures-refresher';
import { installRetentionSchedule } from './workers/retention-schedule';
import { createNotifier } from './notifications/notifier';
import { webhookTargetPolicyFromConfig } from './notifications/webhook-targets';
import { startTemporalDevServer } from './platform/temporal-server';
import { startEmbeddedPostgres } from './platform/postgres';

/**
 * `npm start`: the whole system in one supervised process tree. Launches the Temporal dev server
 * (with its Web UI) and PostgreSQL unless TEMPORAL_ADDRESS / DATABASE_URL point elsewhere, applies
 * the migrations, runs the worker on the main thread and the API on a thread of its own
 * (src/api/api-thread.ts), and on SIGINT/SIGTERM stops them in reverse order.
 */
async function main(): Promise<void> {
  const config = loadConfigOrExit();
  const dataDir = path.resolve(config.DATA_DIR);
  fs.mkdirSync(dataDir, { recursive: true });
  const stops: Array<{ name: string; stop: () => Promise<unknown> }> = [];
  let stopping = false;
  /** Stops everything in reverse order, then exits with `exitCode` (1 when tally failed, so a supervisor sees it). */
  const shutdown = async (signal: string, exitCode = 0) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'stopping tally');
    for (const { name, stop } of stops.reverse()) {
      try {
        await stop();
        logger.info(`${name} stopped`);
      } catch (err) {
        logger.error({ err }, `${name} failed to stop`);
      }
    }
    process.exit(exitCode);
  };
  // `on`, not `once`: a second Ctrl+C during shutdown must not fall through to a default handler.
  process.on('SIGINT', () => void shutdown('SIGINT'));
  process.on('SIGTERM', () => void shutdown('SIGTERM'));

  try {
    // The worker's SDK metrics stay on loopback: the API's /metrics appends them.
    const runtime = installWorkerRuntime({
      metricsBindAddress: config.TEMPORAL_METRICS_PORT > 0 ? `127.0.0.1:${config.TEMPORAL_METRICS_PORT}` : undefined,
      logger,
    });

    let temporalAddress = config.TEMPORAL_ADDRESS;
    let uiUrl: string | null = null;
    if (!temporalAddress) {
      logger.info('starting the embedded Temporal dev server');
      const temporal = await startTemporalDevServer({
        dataDir,
        port: config.TEMPORAL_PORT,
        uiPort: config.TEMPORAL_UI_PORT,
        namespace: config.TEMPORAL_NAMESPACE,
      });
      stops.push({ name: 'Temporal dev server', stop: temporal.stop });
      temporalAddress = temporal.address;
      uiUrl = temporal.uiUrl;
    }

    let databaseUrl = config.DATABASE_URL;
    if (!databaseUrl) {
      logger.info('starting the embedded PostgreSQL');
      const database = await startEmbeddedPostgres({ dataDir, port: config.POSTGRES_PORT });
      stops.push({ name: 'PostgreSQL', stop: database.stop });
      databaseUrl = database.url;
    }

    const workerDb = createDb(databaseUrl, { max: POOLS.worker });
    stops.push({ name: 'database pool', stop: () => workerDb.destroy() });
    const applied = await migrateLatest(workerDb);
    logger.info({ applied }, 'schema up to date');

    const settings = temporalConnectionSettings(config, temporalAddress);
    const temporal = await connectTemporal(settings, config.TEMPORAL_NAMESPACE);
    stops.push({ name: 'Temporal client', stop: () => temporal.connection.close() });
    const workerConnection = await NativeConnection.connect(settings);
    stops.push({ name: 'worker connection', stop: () => workerConnection.close() });
    const worker = await createBillingWorker({
      tuning: { maxCachedWorkflows: config.WORKER_MAX_CACHED_WORKFLOWS },
      connection: workerConnection,
      namespace: config.TEMPORAL_NAMESPACE,
      taskQueue: config.TEMPORAL_TASK_QUEUE,
      db: workerDb,
      logger,
      notifier: createNotifier({ logger, smtpUrl: config.SMTP_URL, webhookTargets: webhookTargetPolicyFromConfig(config) }),
      temporal: temporal.client,
    });
    const workerRun = worker.run();
    stops.push({
      name: 'worker',
      stop: async () => {
        if (worker.getState() === 'RUNNING') worker.shutdown();
        await workerRun;
      },
    });
    const stopCounter = startBulkCounter({ db: workerDb, temporal: temporal.client, taskQueue: config.TEMPORAL_TASK_QUEUE, logger, intervalMs: config.COUNTING_INTERVAL_MS });
    await installRetentionSchedule(temporal.client, { taskQueue: config.TEMPORAL_TASK_QUEUE, defaultRetentionDays: config.RETENTION_DAYS, logger });
    stops.push({ name: 'counter', stop: stopCounter });
    stops.push({ name: 'figures refresher', stop: startFiguresRefresher({ db: workerDb, logger }) });

    const adminKey = config.BILLING_ADMIN_KEY ?? loadOrCreateAdminKey(dataDir);
    const api = await startApiThread(
      {
        databaseUrl,
        temporalAddress,
        adminKey,
        workerMetricsUrl: runtime.metricsUrl,
        dashboard: {
          sessionSecret: config.DASHBOARD_SESSION_SECRET ?? loadOrCreateSecret(dataDir, 'dashboard-session-secret', () => randomBytes(32).toString('base64url')),
          temporalUiUrl: config.TEMPORAL_UI_URL ?? uiUrl,
        },
      },
      (err) => {
        logger.fatal({ err }, 'the API thread failed');
        void shutdown('api-failure', 1);
      },
    );
    // First to stop: no new connections, requests in flight finish; then the counter, the
    // worker and the servers behind it stop.
    stops.push({
      name: 'API',
      stop: async () => {
        if ((await api.stop()) === 'timeout') logger.warn('requests still in flight after the shutdown timeout; closing anyway');
      },
    });

    printBanner(config, { apiPort: api.port, uiUrl, adminKey, temporalAddress });
    workerRun.catch((err: unknown) => {
      logger.fatal({ err }, 'worker crashed');
      void shutdown('worker-crash', 1);
    });
  } catch (err) {
    logger.fatal({ err }, 'tally failed to start');
    await shutdown('startup-failure', 1);
  }
}

/** In embedded mode the admin key is generated once and kept under DATA_DIR (mode 0600). */
function loadOrCreateAdminKey(dataDir: string): string {
  return loadOrCreateSecret(dataDir, 'admin-key', () => `ak_${randomBytes(24).toString('base64url')}`);
}

/** A secret generated on first start and kept under DATA_DIR (mode 0600), so it survives restarts. */
function loadOrCreateSecret(dataDir: string, name: string, generate: () => string): string {
  const file = path.join(dataDir, name);
  if (fs.existsSync(file)) return fs.readFileSync(file, 'utf8').trim();
  const secret = generate();
  fs.writeFileSync(file, `${secret}\n`, { mode: 0o600 });
  return secret;
}

function printBanner(config: Config, info: { apiPort: number; uiUrl: string | null; adminKey: string; temporalAddress: string }): void {
  const host = config.HOST === '0.0.0.0' ? 'localhost' : config.HOST;
  const lines = [
    '',
    'tally is running',
    `  API:          http://${host}:${info.apiPort}`,
    `  Temporal UI:  ${info.uiUrl ?? `(external Temporal at ${info.temporalAddress})`}`,
    `  Admin key:    ${info.adminKey}`,
    '  Stop with Ctrl+C.',
    '',
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
  logger.info({ api: `http://${host}:${info.apiPort}`, temporal_ui: info.uiUrl }, 'tally ready');
}

void main();
