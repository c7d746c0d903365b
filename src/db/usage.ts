import type { Knex } from 'knex';
import type { Db } from './knex';
import type { Aggregation } from '../domain/plan';
import { normalizeDecimal } from './numeric';

export { normalizeDecimal };

/**
 * The reference aggregation of a period from its stored events, in SQL on exact numerics:
 * invoices are rated from this, never from the workflow's counters.
 */
export async function aggregateStoredUsage(
  db: Db | Knex.Transaction,
  tenantId: string,
  periodStart: string | Date,
  meters: Array<{ metric: string; aggregation: Aggregation }>,
): Promise<Record<string, string>> {
  const rows = await db.raw<{ rows: Array<{ metric: string; total: string; events: string; largest: string; latest: string }> }>(
    `SELECT metric,
            sum(quantity)::text AS total,
            count(*)::text AS events,
            max(quantity)::text AS largest,
            (array_agg(quantity ORDER BY "timestamp" DESC, seq DESC))[1]::text AS latest
       FROM usage_events
      WHERE tenant_id = ? AND period_start = ?
      GROUP BY metric`,
    [tenantId, periodStart],
  );
  const byMetric = new Map(rows.rows.map((r) => [r.metric, r]));
  const counters: Record<string, string> = {};
  for (const meter of meters) {
    const row = byMetric.get(meter.metric);
    if (!row) {
      counters[meter.metric] = '0';
      continue;
    }
    const value = { sum: row.total, count: row.events, max: row.largest, latest: row.latest }[meter.aggregation];
    counters[meter.metric] = normalizeDecimal(value);
  }
  return counters;
}
