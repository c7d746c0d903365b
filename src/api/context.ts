import type { Db } from '../db/knex';
import type { Config } from '../config';
import type { BillingGateway } from './billing-gateway';
import type { TenantDirectory } from './tenant-directory';
import type { ApiMetrics } from './metrics';
import type { IngestQueue } from './ingest-queue';
import type { TenantKeyCache } from './tenant-key-cache';
import type { WebhookTargetPolicy } from '../notifications/webhook-targets';

/** Everything a route needs, built once by `createApp`. */
export interface ApiContext {
  db: Db;
  billing: BillingGateway;
  metrics: ApiMetrics;
  /** Stores ingest requests, several per transaction when they come together (src/api/ingest-queue.ts). */
  ingest: IngestQueue;
  /** Per-tenant back-pressure (INGEST_MAX_PENDING_EVENTS); 0: none. */
  maxPendingEvents: number;
  tenants: TenantDirectory;
  adminKey: string;
  /** Tenant keys resolved recently (serveApi keeps one, kept current by revocation notifications); absent: every key is read from PostgreSQL. */
  tenantKeys?: TenantKeyCache;
  /** Where webhook URLs may point; checked when a URL is registered (and again at each delivery). */
  webhookTargets: WebhookTargetPolicy;
  config: Pick<Config, 'TEMPORAL_NAMESPACE'>;
  /** Readiness of Temporal (the API's client can reach the server). */
  temporalReady: () => Promise<boolean>;
}
