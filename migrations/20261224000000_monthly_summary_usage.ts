import type { Knex } from 'knex';

/**
 * Monthly summaries sorted by a metric's usage from an index (issue #14: `GET /v1/summaries?sort=-tokens`
 * under 50 ms p99 for 10,000 tenants).
 *
 * - `monthly_summary_usage`: per month, metric, tenant and currency, the usage of that metric in the
 *   tenant's `monthly_summaries` row (`metrics -> metric ->> 'used'`), one row per metric the summary
 *   row holds. `refreshSummaries` rewrites it in the statement that rewrites the summary row, so the
 *   two never disagree: a summary row that loses a metric loses its usage row.
 * - `monthly_summary_usage_ranking` on (month, metric, used, tenant_id, currency): a page sorted by a
 *   metric is one walk of it after the cursor's key, in either direction, and a metric's rows of
 *   a month are counted from it alone. The primary key leads with the summary row's key (month,
 *   tenant, currency), as `monthly_summaries`' does: a rewrite finds the row's usage rows, and a
 *   page asks whether a row holds a metric, without relying on an index skip scan (PostgreSQL
 *   18 and later).
 *
 * Filled here from the summary rows already stored.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    CREATE TABLE IF NOT EXISTS monthly_summary_usage (
      month date NOT NULL,
      metric text NOT NULL,
      tenant_id text NOT NULL,
      currency text NOT NULL,
      used numeric NOT NULL,
      PRIMARY KEY (month, tenant_id, currency, metric)
    )`);
  await knex.raw(`
    INSERT INTO monthly_summary_usage (month, metric, tenant_id, currency, used)
    SELECT s.month, m.key, s.tenant_id, s.currency, coalesce((m.value ->> 'used')::numeric, 0)
      FROM monthly_summaries s CROSS JOIN LATERAL jsonb_each(s.metrics) m
    ON CONFLICT DO NOTHING`);
  await knex.raw('CREATE INDEX IF NOT EXISTS monthly_summary_usage_ranking ON monthly_summary_usage (month, metric, used, tenant_id, currency)');
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('DROP TABLE IF EXISTS monthly_summary_usage');
}
