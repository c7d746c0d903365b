import { loadConfigOrExit } from '../config';
import { POOLS, createDb } from '../db/knex';
import { logger } from '../logger';
import { connectTemporal, temporalConnectionSettings } from '../temporal';
import { appOptionsFromConfig, closeGracefully, createApp } from './app';
import { listen } from './server';

/** `npm run api`: the HTTP API alone, against TEMPORAL_ADDRESS and DATABASE_URL. */
async function main(): Promise<void> {
  const config = loadConfigOrExit();
  if (!config.TEMPORAL_ADDRESS || !config.DATABASE_URL || !config.BILLING_ADMIN_KEY) {
    logger.fatal('TEMPORAL_ADDRESS, DATABASE_URL and BILLING_ADMIN_KEY are required for `npm run api` (use `npm start` for the embedded stack)');
    process.exit(78);
  }
  const db = createDb(config.DATABASE_URL, { max: POOLS.api });
  const ingestDb = createDb(config.DATABASE_URL, { max: POOLS.ingest });
  const temporal = await connectTemporal(temporalConnectionSettings(config, config.TEMPORAL_ADDRESS), config.TEMPORAL_NAMESPACE);
  const app = createApp({
    db,
    ingestDb,
    temporal: temporal.client,
    taskQueue: config.TEMPORAL_TASK_QUEUE,
    namespace: config.TEMPORAL_NAMESPACE,
    adminKey: config.BILLING_ADMIN_KEY,
    logger,
    ...appOptionsFromConfig(config),
  });
  const server = await listen(app, config.PORT, config.HOST);
  logger.info({ port: server.port }, 'API listening');
  let stopping = false;
  // Stop accepting, finish the requests in flight (their signals need the Temporal connection,
  // so it closes after them), then release the connections.
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'stopping the API: finishing requests in flight');
    const outcome = await closeGracefully(app, server);
    if (outcome === 'timeout') logger.warn('requests still in flight after the shutdown timeout; closing anyway');
    await temporal.connection.close();
    await Promise.all([db.destroy(), ingestDb.destroy()]);
    logger.info('API stopped');
    process.exit(0);
  };
  // `on`, not `once`: a second signal during shutdown must not kill requests in flight.
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGTERM', () => void stop('SIGTERM'));
}

void main().catch((err: unknown) => {
  logger.fatal({ err }, 'API failed');
  process.exit(1);
});
