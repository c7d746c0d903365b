import type { Knex } from 'knex';
import { backfillPeriodFigures } from '../src/db/summaries';

/**
 * Running figures of the periods not invoiced yet, in the monthly summaries (issue #14,
 * docs/billing.md "Retention and summaries").
 *
 * - `period_figures`: per tenant and period, what the period's `period_counters` come to when
 *   rated with its plan version: the currency, the total (base fee included), and per metric
 *   `{ used, amount }`. The transaction that moves a period's counters or opens it (a claim, a
 *   rollover, the tenant's creation) stores it. A row of an invoiced period is no longer read:
 *   its invoice counts instead.
 * - `monthly_summaries` now holds every period of the month: those with a finalized invoice
 *   with it, the others with their running figure; `final` is false while one of them is not
 *   invoiced. The transactions that store a running figure or finalize or rerun an invoice
 *   rewrite the tenant's row, so every month, the current one too, is one index walk of
 *   `monthly_summaries_month_total` for a page sorted by total.
 *
 * The periods not invoiced yet when this migration runs are rated here, with the rating code the
 * application runs (a backfilled figure is the one a claim would store), and their months'
 * rows rewritten; a figure a claim stored meanwhile is kept.
 */
export async function up(knex: Knex): Promise<void> {
  // A constant default: a catalog change only, no rewrite of the table.
  await knex.raw('ALTER TABLE monthly_summaries ADD COLUMN IF NOT EXISTS final boolean NOT NULL DEFAULT true');
  await knex.raw(`
    CREATE TABLE IF NOT EXISTS period_figures (
      tenant_id text NOT NULL,
      period_start timestamptz NOT NULL,
      currency text NOT NULL,
      total numeric NOT NULL,
      metrics jsonb NOT NULL,
      updated_at timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (tenant_id, period_start)
    )`);
  await backfillPeriodFigures(knex);
}

/** Back to rows of finalized invoices only: a row's running part goes, and a row with nothing else. */
export async function down(knex: Knex): Promise<void> {
  const moving = await knex.raw<{ rows: Array<{ month: string; tenant_id: string; currency: string }> }>(
    `DELETE FROM monthly_summaries WHERE NOT final RETURNING month::text AS month, tenant_id, currency`,
  );
  const rows = moving.rows;
  await knex.raw(
    `WITH rewritten AS (
       SELECT * FROM unnest(?::date[], ?::text[], ?::text[]) AS r(month, tenant_id, currency)
     ), invoiced AS (
       SELECT r.month, i.tenant_id, i.currency, i.id, i.total
         FROM rewritten r JOIN invoices i ON i.tenant_id = r.tenant_id AND i.currency = r.currency AND i.status = 'finalized'
          AND date_trunc('month', i.period_start AT TIME ZONE 'UTC')::date = r.month
     )
     INSERT INTO monthly_summaries (month, tenant_id, currency, total, metrics, periods)
     SELECT v.month, v.tenant_id, v.currency, sum(v.total), coalesce((
              SELECT jsonb_object_agg(metric, jsonb_build_object('used', used::text, 'amount', amount::text))
                FROM (SELECT l.metric, sum(l.quantity) AS used, sum(l.amount) AS amount
                        FROM invoiced j JOIN invoice_lines l ON l.invoice_id = j.id
                       WHERE j.month = v.month AND j.tenant_id = v.tenant_id AND j.currency = v.currency AND l.metric <> 'base_fee'
                       GROUP BY l.metric) lines), '{}'::jsonb), count(*)
       FROM invoiced v
      GROUP BY v.month, v.tenant_id, v.currency`,
    [rows.map((r) => r.month), rows.map((r) => r.tenant_id), rows.map((r) => r.currency)] as unknown as Knex.RawBinding[],
  );
  await knex.raw('DROP TABLE IF EXISTS period_figures');
  await knex.raw('ALTER TABLE monthly_summaries DROP COLUMN IF EXISTS final');
}
