import type { Config } from '../config';
import { POOLS, createDb } from '../db/knex';
import { logger } from '../logger';
import { connectTemporal, temporalConnectionSettings } from '../temporal';
import { appOptionsFromConfig, closeGracefully, createApp } from './app';
import type { DashboardSettings } from './dashboard/router';
import { listen } from './server';
import { startTenantKeyCache } from './tenant-key-cache';

/** Where a serving API finds its database and Temporal, and what it is told beyond the configuration. */
export interface ApiServiceSettings {
  databaseUrl: string;
  temporalAddress: string;
  adminKey: string;
  /** The worker's Prometheus endpoint in the same process (`npm start`), appended to `/metrics`. */
  workerMetricsUrl?: string;
  /** Overrides the dashboard settings the configuration gives (`npm start` generates a session secret). */
  dashboard?: DashboardSettings;
}

/** A listening API, and how to stop it. */
export interface ServingApi {
  port: number;
  /** Stops accepting, finishes the requests in flight, then closes its Temporal connection and pools. */
  stop(): Promise<'closed' | 'timeout'>;
}

/**
 * The API as a running service: its two pools (ingest has its own, so reads never queue behind
 * batches being stored), its Temporal client, the app and its HTTP server on `PORT`/`HOST`.
 * `npm run api` runs one in its process, `npm start` one on a thread of its own (api-thread.ts).
 */
export async function serveApi(config: Config, settings: ApiServiceSettings): Promise<ServingApi> {
  const db = createDb(settings.databaseUrl, { max: POOLS.api });
  const ingestDb = createDb(settings.databaseUrl, { max: POOLS.ingest });
  const temporal = await connectTemporal(temporalConnectionSettings(config, settings.temporalAddress), config.TEMPORAL_NAMESPACE);
  const options = appOptionsFromConfig(config);
  const tenantKeys = startTenantKeyCache(db, logger);
  const app = createApp({
    db,
    ingestDb,
    temporal: temporal.client,
    taskQueue: config.TEMPORAL_TASK_QUEUE,
    namespace: config.TEMPORAL_NAMESPACE,
    adminKey: settings.adminKey,
    logger,
    workerMetricsUrl: settings.workerMetricsUrl,
    ...options,
    dashboard: settings.dashboard ?? options.dashboard,
    tenantKeys: tenantKeys.cache,
  });
  const server = await listen(app, config.PORT, config.HOST);
  return {
    port: server.port,
    stop: async () => {
      const outcome = await closeGracefully(app, server);
      // After the requests in flight: their signals need the Temporal connection.
      await temporal.connection.close();
      await tenantKeys.stop();
      await Promise.all([db.destroy(), ingestDb.destroy()]);
      return outcome;
    },
  };
}
