import type { Knex } from 'knex';

/**
 * Indexes that no query needs, dropped: every stored row paid for them. Each is the leading part
 * of another index of its table, or selects by a column no query selects by
 * (test/integration/migrations.test.ts keeps the first kind out).
 *
 * - `usage_events_tenant_id_timestamp_index` `(tenant_id, timestamp)`: every query that ranges
 *   over a tenant's timestamps is served by `usage_events_tenant_timestamp_seq`
 *   `(tenant_id, timestamp DESC, seq DESC)`, which PostgreSQL scans in either direction.
 * - `usage_events_batch_id_index` `(batch_id)`: no query selects events by their batch; the
 *   column stays, to say which request stored each event.
 * - `alerts_tenant_id_fired_at_index` `(tenant_id, fired_at)`: led by
 *   `alerts_tenant_fired_threshold_id` `(tenant_id, fired_at DESC, threshold DESC, id DESC)`.
 *
 * An event row carried eight btree indexes and now six; in the fleet's profile (1,000 tenants,
 * 10-event batches) the ingest statement took 10–19 % less time (BENCHMARKS.md, session 13).
 * Dropped CONCURRENTLY so a deploy never blocks ingest on the largest table, which cannot run in
 * a transaction; `IF EXISTS` / `IF NOT EXISTS` make a rerun after a failure safe.
 */
export const config = { transaction: false };

const INDEXES: Array<{ name: string; definition: string }> = [
  { name: 'usage_events_tenant_id_timestamp_index', definition: 'usage_events (tenant_id, "timestamp")' },
  { name: 'usage_events_batch_id_index', definition: 'usage_events (batch_id)' },
  { name: 'alerts_tenant_id_fired_at_index', definition: 'alerts (tenant_id, fired_at)' },
];

/** Drops the unused indexes without locking writes. */
export async function up(knex: Knex): Promise<void> {
  for (const index of INDEXES) await knex.raw(`DROP INDEX CONCURRENTLY IF EXISTS ${index.name}`);
}

/** Builds them again, also without locking writes. */
export async function down(knex: Knex): Promise<void> {
  for (const index of INDEXES) await knex.raw(`CREATE INDEX CONCURRENTLY IF NOT EXISTS ${index.name} ON ${index.definition}`);
}
