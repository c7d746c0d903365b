import type { Knex } from 'knex';

/**
 * Indexes for the paginated reads of API v1. Lists are keyset pages, newest first, so each needs
 * an index in exactly its sort order for a page to be one index seek however deep it is:
 *
 * - `GET /v1/tenants/{id}/events`: `(tenant_id, timestamp DESC, seq DESC)`, and with `?metric=`
 *   `(tenant_id, metric, timestamp DESC, seq DESC)`. The initial `(tenant_id, timestamp)` index
 *   lacks the `seq` tie-breaker, which made every page sort all events sharing a timestamp.
 * - `GET /v1/tenants/{id}/alerts`: `(tenant_id, fired_at DESC, threshold DESC, id DESC)`.
 * - `GET /v1/tenants`: `(created_at DESC, id DESC)`.
 * Periods (primary key `(tenant_id, start)`) and invoices (unique `(tenant_id, period_start,
 * version)`) already have theirs.
 *
 * Built CONCURRENTLY so a deploy never blocks ingest on `usage_events`, the largest table; that
 * cannot run in a transaction, hence `config.transaction = false` and `IF NOT EXISTS` (a rerun
 * after a failed build is safe).
 */
export const config = { transaction: false };

const INDEXES: Array<{ name: string; definition: string }> = [
  { name: 'usage_events_tenant_timestamp_seq', definition: 'usage_events (tenant_id, "timestamp" DESC, seq DESC)' },
  { name: 'usage_events_tenant_metric_timestamp_seq', definition: 'usage_events (tenant_id, metric, "timestamp" DESC, seq DESC)' },
  { name: 'alerts_tenant_fired_threshold_id', definition: 'alerts (tenant_id, fired_at DESC, threshold DESC, id DESC)' },
  { name: 'tenants_created_at_id', definition: 'tenants (created_at DESC, id DESC)' },
];

/** Creates the read indexes without locking writes. */
export async function up(knex: Knex): Promise<void> {
  for (const index of INDEXES) {
    await knex.raw(`CREATE INDEX CONCURRENTLY IF NOT EXISTS ${index.name} ON ${index.definition}`);
  }
}

/** Drops them again, also without locking writes. */
export async function down(knex: Knex): Promise<void> {
  for (const index of [...INDEXES].reverse()) {
    await knex.raw(`DROP INDEX CONCURRENTLY IF EXISTS ${index.name}`);
  }
}
