import type { Knex } from 'knex';

/**
 * Insight (issue #14): alert triage, retention, summaries and the events property filter.
 *
 * - `alerts.acknowledged_at`: triage state only (the decided set is what keeps an alert from
 *   firing twice). `alerts_open_fired` holds only the open ones, in the order
 *   `GET /v1/alerts?acknowledged=false` lists them across tenants, so the list is one index walk
 *   however many alerts were acknowledged; `alerts_fired` serves the list without the filter.
 * - `periods.events_purged_at`: set by retention before it deletes a period's raw events, so a
 *   rerun that would rate from them is refused (409 `events_purged`) from that instant on;
 *   `events_purge_finished_at` once the last of them is deleted. `periods_purge_unfinished`
 *   finds a purge a failed run left half-way.
 * - `periods_retention_due`: the invoiced periods whose events are still there, by end, so the
 *   daily retention run finds what is due without reading every period.
 * - `periods_not_invoiced_start`: the periods a monthly summary reads from the read model
 *   (not invoiced yet), by start.
 * - `monthly_summaries`: per month, tenant and currency, the figures of the finalized invoices
 *   of the periods that started in that month (total, per-metric usage and amount, how many
 *   periods), kept by the transaction that finalizes or reruns an invoice, and filled here from
 *   the invoices already finalized. `GET /v1/summaries` pages it through
 *   `monthly_summaries_month_total` without adding anything up. Never deleted.
 * - `invoices_finalized_period_start`: a tenant's finalized invoices of one month, to refresh its
 *   summary row.
 * - `usage_events_tenant_properties`: a GIN index over `(tenant_id, properties jsonb_path_ops)`,
 *   so `property.<key>=<value>` on one tenant's events is answered from the index entries of that
 *   tenant and that key and value together, not from every tenant's events with that property,
 *   and the recheck is a plain `properties @>` on the row. Built only over events that have
 *   properties. A GIN index on a text column needs `btree_gin`, a contrib extension PostgreSQL
 *   marks trusted (since 13), so the database's owner may create it.
 *
 * Indexes on existing large tables are built CONCURRENTLY (no write lock on ingest), hence no
 * transaction and `IF NOT EXISTS`.
 */
export const config = { transaction: false };

const INDEXES: Array<{ name: string; definition: string }> = [
  { name: 'alerts_open_fired', definition: `alerts (fired_at DESC, threshold DESC, id DESC) WHERE acknowledged_at IS NULL AND status <> 'superseded'` },
  { name: 'alerts_fired', definition: 'alerts (fired_at DESC, threshold DESC, id DESC)' },
  { name: 'periods_retention_due', definition: `periods ("end") WHERE status = 'invoiced' AND events_purged_at IS NULL` },
  { name: 'periods_purge_unfinished', definition: 'periods (events_purged_at) WHERE events_purged_at IS NOT NULL AND events_purge_finished_at IS NULL' },
  { name: 'periods_not_invoiced_start', definition: `periods (start) WHERE status <> 'invoiced'` },
  { name: 'invoices_finalized_period_start', definition: `invoices (tenant_id, period_start) INCLUDE (total, currency, id) WHERE status = 'finalized'` },
  {
    name: 'usage_events_tenant_properties',
    definition: 'usage_events USING gin (tenant_id, properties jsonb_path_ops) WHERE properties IS NOT NULL',
  },
];

export async function up(knex: Knex): Promise<void> {
  // Adding a nullable column without a default is a catalog change only: no rewrite, a brief lock.
  await knex.raw('ALTER TABLE alerts ADD COLUMN IF NOT EXISTS acknowledged_at timestamptz');
  await knex.raw('ALTER TABLE periods ADD COLUMN IF NOT EXISTS events_purged_at timestamptz');
  await knex.raw('ALTER TABLE periods ADD COLUMN IF NOT EXISTS events_purge_finished_at timestamptz');
  await knex.raw('CREATE EXTENSION IF NOT EXISTS btree_gin');
  await knex.raw(`
    CREATE TABLE IF NOT EXISTS monthly_summaries (
      month date NOT NULL,
      tenant_id text NOT NULL,
      currency text NOT NULL,
      total numeric NOT NULL,
      metrics jsonb NOT NULL,
      periods integer NOT NULL,
      updated_at timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (month, tenant_id, currency)
    )`);
  await knex.raw('CREATE INDEX IF NOT EXISTS monthly_summaries_month_total ON monthly_summaries (month, total, tenant_id, currency)');
  await knex.raw(`
    INSERT INTO monthly_summaries (month, tenant_id, currency, total, metrics, periods)
    SELECT month, tenant_id, currency, sum(total), coalesce((
             SELECT jsonb_object_agg(metric, jsonb_build_object('used', used::text, 'amount', amount::text))
               FROM (SELECT l.metric, sum(l.quantity) AS used, sum(l.amount) AS amount
                       FROM invoices j JOIN invoice_lines l ON l.invoice_id = j.id
                      WHERE j.status = 'finalized' AND j.tenant_id = i.tenant_id AND j.currency = i.currency
                        AND date_trunc('month', j.period_start AT TIME ZONE 'UTC')::date = i.month AND l.metric <> 'base_fee'
                      GROUP BY l.metric) lines), '{}'::jsonb), count(*)
      FROM (SELECT *, date_trunc('month', period_start AT TIME ZONE 'UTC')::date AS month FROM invoices WHERE status = 'finalized') i
     GROUP BY month, tenant_id, currency
    ON CONFLICT DO NOTHING`);
  for (const index of INDEXES) {
    await knex.raw(`CREATE INDEX CONCURRENTLY IF NOT EXISTS ${index.name} ON ${index.definition}`);
  }
}

export async function down(knex: Knex): Promise<void> {
  for (const index of [...INDEXES].reverse()) {
    await knex.raw(`DROP INDEX CONCURRENTLY IF EXISTS ${index.name}`);
  }
  await knex.raw('DROP TABLE IF EXISTS monthly_summaries');
  await knex.raw('ALTER TABLE periods DROP COLUMN IF EXISTS events_purge_finished_at');
  await knex.raw('ALTER TABLE periods DROP COLUMN IF EXISTS events_purged_at');
  await knex.raw('ALTER TABLE alerts DROP COLUMN IF EXISTS acknowledged_at');
}
