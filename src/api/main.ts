import { loadConfigOrExit } from '../config';
import { logger } from '../logger';
import { serveApi } from './serve';

/** `npm run api`: the HTTP API alone, against TEMPORAL_ADDRESS and DATABASE_URL. */
async function main(): Promise<void> {
  const config = loadConfigOrExit();
  if (!config.TEMPORAL_ADDRESS || !config.DATABASE_URL || !config.BILLING_ADMIN_KEY) {
    logger.fatal('TEMPORAL_ADDRESS, DATABASE_URL and BILLING_ADMIN_KEY are required for `npm run api` (use `npm start` for the embedded stack)');
    process.exit(78);
  }
  const api = await serveApi(config, { databaseUrl: config.DATABASE_URL, temporalAddress: config.TEMPORAL_ADDRESS, adminKey: config.BILLING_ADMIN_KEY });
  logger.info({ port: api.port }, 'API listening');
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'stopping the API: finishing requests in flight');
    if ((await api.stop()) === 'timeout') logger.warn('requests still in flight after the shutdown timeout; closing anyway');
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
