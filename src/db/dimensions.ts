import type { Knex } from 'knex';
import type { Db } from './knex';
import { normalizeDecimal } from './numeric';
import { groupOf, isDimensioned, type MeterGroup } from '../domain/dimensions';
import type { Meter } from '../domain/plan';
import { Dec, toDecimalString } from '../domain/decimal';
import { findPlanVersion } from './plans';
import { COUNTED } from './ledger';
import type { PeriodGroups } from '../contracts/ledger';

/**
 * The groups of a period's dimensioned meters, aggregated in SQL from the stored events (each
 * `group_by` property projected out of `properties`). Invoices rate from all stored events; the
 * usage view reads the counted ones only (`countedOnly`), like the read model's totals. One query
 * per dimensioned meter, none for a plan without one.
 */
export async function aggregateStoredGroups(
  db: Db | Knex.Transaction,
  tenantId: string,
  periodStart: string | Date,
  meters: readonly Meter[],
  options: { countedOnly?: boolean } = {},
): Promise<Record<string, MeterGroup[]>> {
  const groups: Record<string, MeterGroup[]> = {};
  for (const meter of meters.filter(isDimensioned)) {
    const keys = meter.group_by!;
    const projections = keys.map((_, i) => `properties -> :k${i} AS g${i}`).join(', ');
    const bindings: Record<string, unknown> = { tenant: tenantId, start: periodStart, metric: meter.metric };
    keys.forEach((k, i) => (bindings[`k${i}`] = k));
    const rows = await db.raw<{ rows: Array<Record<string, unknown> & { total: string; events: string; largest: string; latest: string }> }>(
      `SELECT ${projections}, sum(quantity)::text AS total, count(*)::text AS events, max(quantity)::text AS largest,
              (array_agg(quantity ORDER BY "timestamp" DESC, seq DESC))[1]::text AS latest
         FROM usage_events
        WHERE tenant_id = :tenant AND period_start = :start AND metric = :metric${options.countedOnly ? ` AND ${COUNTED()}` : ''}
        GROUP BY ${keys.map((_, i) => i + 1).join(', ')}`,
      bindings,
    );
    // Property values that are not strings, numbers or booleans join the group without them.
    const merged = new Map<string, MeterGroup>();
    for (const row of rows.rows) {
      const group = groupOf(meter, Object.fromEntries(keys.map((k, i) => [k, row[`g${i}`]])));
      const value = normalizeDecimal({ sum: row.total, count: row.events, max: row.largest, latest: row.latest }[meter.aggregation]);
      const key = JSON.stringify(group);
      const known = merged.get(key);
      if (!known) merged.set(key, { group, value });
      else if (meter.aggregation === 'max') known.value = toDecimalString(Dec.max(known.value, value));
      else if (meter.aggregation !== 'latest') known.value = toDecimalString(new Dec(known.value).plus(value));
    }
    groups[meter.metric] = [...merged.values()];
  }
  return groups;
}

/**
 * The counted groups of each of these periods whose plan prices by group (none for the others):
 * what a tenant's ledger rates its running cost with. Absolute, so a retried claim answers the same.
 */
export async function countedGroupsOfPeriods(db: Db | Knex.Transaction, tenantId: string, periodStarts: readonly string[]): Promise<PeriodGroups[]> {
  const answers: PeriodGroups[] = [];
  for (const start of [...new Set(periodStarts)]) {
    const period = await db('periods').where({ tenant_id: tenantId, start }).first<{ plan_id: string; plan_version: number } | undefined>('plan_id', 'plan_version');
    const plan = period && (await findPlanVersion(db, period.plan_id, period.plan_version));
    if (!plan || !plan.meters.some(isDimensioned)) continue;
    answers.push({ period_start: new Date(start).toISOString(), groups: await aggregateStoredGroups(db, tenantId, start, plan.meters, { countedOnly: true }) });
  }
  return answers;
}
