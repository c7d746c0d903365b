import type { Knex } from 'knex';

/**
 * Money and summed quantities become unconstrained `numeric`, so that every period the API
 * admits can be invoiced.
 *
 * A period has no cap on its events, and each may carry a quantity up to 10^15, at prices of up
 * to 18 integer digits. `numeric(28,10)` holds less than 10^18, so 1,000 events of 10^15 units at
 * a price of 1 could never be written ("numeric field overflow"): the invoice workflow would
 * retry its activity forever. The same held for a cost alert's running cost (`alerts.used`), and
 * for `alerts.limit` with a meter limit above 10^24. Unconstrained `numeric` stores each value
 * exactly as written, whatever its size, as `period_counters` already does.
 *
 * Dropping a numeric's precision rewrites no table in PostgreSQL (it is a catalog change), so
 * this is quick on a large `invoice_lines`.
 *
 * `usage_events.quantity` keeps `numeric(30,6)`: one event's quantity is validated to at most
 * 10^15 with 6 decimal places, which it holds exactly. Thresholds keep `numeric(10,4)`, which
 * holds every admissible percent (at most 1000, 4 decimal places).
 */
const COLUMNS: Array<{ table: string; column: string; before: string }> = [
  { table: 'plan_versions', column: 'base_fee', before: 'numeric(28,10)' },
  { table: 'plan_versions', column: 'cost_limit', before: 'numeric(28,10)' },
  { table: 'invoices', column: 'subtotal', before: 'numeric(28,10)' },
  { table: 'invoices', column: 'total', before: 'numeric(28,10)' },
  { table: 'invoice_lines', column: 'quantity', before: 'numeric(30,6)' },
  { table: 'invoice_lines', column: 'amount', before: 'numeric(28,10)' },
  { table: 'alerts', column: 'used', before: 'numeric(30,6)' },
  { table: 'alerts', column: 'limit', before: 'numeric(30,6)' },
];

/** Drops the precision of every money and summed-quantity column. */
export async function up(knex: Knex): Promise<void> {
  for (const { table, column } of COLUMNS) {
    await knex.raw('ALTER TABLE ?? ALTER COLUMN ?? TYPE numeric', [table, column]);
  }
}

/**
 * Restores the old precisions. It fails ("numeric field overflow") rather than truncate when a
 * stored amount no longer fits them: such a rollback would lose money.
 */
export async function down(knex: Knex): Promise<void> {
  for (const { table, column, before } of [...COLUMNS].reverse()) {
    await knex.raw(`ALTER TABLE ?? ALTER COLUMN ?? TYPE ${before}`, [table, column]);
  }
}
