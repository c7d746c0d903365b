import type { Db } from './knex';
import { countUnclaimedEvents, readPeriodCounters } from './ledger';
import { findPlanVersion } from './plans';
import { alertView, type AlertRow } from './alerts';
import { readLimitOverrides } from './entitlements';
import { readPacks } from './packs';
import { aggregateStoredGroups } from './dimensions';
import type { MeterGroup } from '../domain/dimensions';
import type { Pack } from '../domain/packs';
import { counterFromAggregates } from '../domain/aggregation';
import type { Period } from '../domain/periods';
import type { PlanVersion } from '../domain/plan';
import { buildUsageView, type AlertView, type UsageView } from '../domain/usage-view';

/**
 * The current period as PostgreSQL holds it (docs/design/core-v2.md, "Reads"): the open period,
 * its plan version, the read model's counters (every claimed event), the period's alerts, and
 * how many acknowledged events wait unclaimed. Answers `GET …/usage` and estimates without a
 * round trip through Temporal.
 */

/** The open period's figures, or undefined when the tenant has none (cancelled, or no tenant). */
export interface CurrentPeriodFigures {
  tenantId: string;
  plan: PlanVersion;
  period: Period;
  /** Every meter's counter value ('0' when nothing was counted). */
  values: Record<string, string>;
  /** The tenant's own limits, which replace the plan's. */
  limitOverrides: Record<string, string>;
  /** The tenant's add-on packs with their draws. */
  packs: Pack[];
  /** Dimensioned meters' groups, from the counted events (none without such a meter). */
  groups: Record<string, MeterGroup[]>;
  alerts: AlertView[];
  pendingEvents: number;
}

export async function currentPeriodFigures(db: Db, tenantId: string): Promise<CurrentPeriodFigures | undefined> {
  const period = await db('periods')
    .where({ tenant_id: tenantId, status: 'open' })
    .first<{ start: Date; end: Date; plan_id: string; plan_version: number } | undefined>('start', 'end', 'plan_id', 'plan_version');
  if (!period) return undefined;
  const plan = await findPlanVersion(db, period.plan_id, period.plan_version);
  if (!plan) return undefined;
  const start = period.start.toISOString();
  const [counters, alerts, pendingEvents, limitOverrides, packs] = await Promise.all([
    readPeriodCounters(db, tenantId, [start]),
    db('alerts').where({ tenant_id: tenantId, period_start: period.start }).orderBy([{ column: 'fired_at' }, { column: 'threshold' }]).select<AlertRow[]>(),
    countUnclaimedEvents(db, tenantId),
    readLimitOverrides(db, tenantId),
    readPacks(db, tenantId),
  ]);
  const groups = await aggregateStoredGroups(db, tenantId, period.start, plan.meters, { countedOnly: true });
  const values: Record<string, string> = {};
  for (const meter of plan.meters) values[meter.metric] = counterFromAggregates(counters.find((c) => c.metric === meter.metric), meter.aggregation);
  return {
    tenantId,
    plan,
    period: { start, end: period.end.toISOString() },
    values,
    limitOverrides,
    packs,
    groups,
    alerts: alerts.map(alertView),
    pendingEvents,
  };
}

/** `GET …/usage` from the read model. */
export async function currentUsage(db: Db, tenantId: string): Promise<UsageView | undefined> {
  const figures = await currentPeriodFigures(db, tenantId);
  return figures && buildUsageView({ ...figures, asOf: new Date().toISOString() });
}
