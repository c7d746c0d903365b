import type { Db } from '../db/knex';
import type { Config } from '../config';
import type { BillingGateway } from './billing-gateway';
import type { TenantDirectory } from './tenant-directory';
import type { ApiMetrics } from './metrics';
import type { IngestBacklog } from './backlog';
import type { WebhookTargetPolicy } from '../notifications/webhook-targets';

/** Everything a route needs, built once by `createApp`. */
export interface ApiContext {
  db: Db;
  /** Ingest's own connections: batches waiting for one never hold up a read (see `createApp`). */
  ingestDb: Db;
  billing: BillingGateway;
  metrics: ApiMetrics;
  backlog: IngestBacklog;
  tenants: TenantDirectory;
  adminKey: string;
  /** Where webhook URLs may point; checked when a URL is registered (and again at each delivery). */
  webhookTargets: WebhookTargetPolicy;
  config: Pick<Config, 'TEMPORAL_NAMESPACE'>;
  /** Readiness of Temporal (the API's client can reach the server). */
  temporalReady: () => Promise<boolean>;
}
