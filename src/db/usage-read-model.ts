import type { Db } from './knex';
import type { TenantRow } from './tenants';
import { toCounter, unclaimedEventsOf, type CounterRow } from './ledger';
import { findPlanVersion } from './plans';
import { alertView } from './alerts';
import { packFromRow } from './packs';
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

/** Whether the tenant is active, and its open period's figures (undefined when it has none). */
export interface TenantStanding {
  status: TenantRow['status'];
  figures: CurrentPeriodFigures | undefined;
}

/**
 * One statement (one snapshot, one round trip): the tenant's status, and its open period with its
 * counters, alerts and unclaimed events, its limits and packs. A read needs nothing else to answer
 * 404, 409 or the figures, so it never waits for a second round trip behind a loaded database. The
 * plan version comes from the process's cache (versions never change); only a dimensioned meter's
 * groups take a second query. Undefined when there is no such tenant.
 */
export async function tenantStanding(db: Db, tenantId: string): Promise<TenantStanding | undefined> {
  return (await tenantStandings(db, [tenantId])).get(tenantId);
}

/**
 * {@link tenantStanding} for a page of tenants in the same one statement (the tenants list with
 * its usage), keyed by tenant id; a tenant that does not exist has no entry.
 */
export async function tenantStandings(db: Db, tenantIds: readonly string[]): Promise<Map<string, TenantStanding>> {
  if (tenantIds.length === 0) return new Map();
  const result = await db.raw<{ rows: FiguresRow[] }>(`${CURRENT_PERIOD_FIGURES} WHERE t.id IN (${tenantIds.map(() => '?').join(', ')})`, [...tenantIds]);
  const standings = await Promise.all(
    result.rows.map(async (row): Promise<[string, TenantStanding]> => [row.tenant_id, { status: row.tenant_status, figures: await figuresOf(db, row.tenant_id, row) }]),
  );
  return new Map(standings);
}

/** The tenant's open period's figures, or undefined when it has none (cancelled, or no tenant). */
export async function currentPeriodFigures(db: Db, tenantId: string): Promise<CurrentPeriodFigures | undefined> {
  return (await tenantStanding(db, tenantId))?.figures;
}

async function figuresOf(db: Db, tenantId: string, row: FiguresRow): Promise<CurrentPeriodFigures | undefined> {
  const { start: periodStart, end: periodEnd, plan_id: planId, plan_version: planVersion } = row;
  if (periodStart === null || periodEnd === null || planId === null || planVersion === null) return undefined;
  const plan = await findPlanVersion(db, planId, planVersion);
  if (!plan) return undefined;
  const start = periodStart.toISOString();
  const groups = await aggregateStoredGroups(db, tenantId, periodStart, plan.meters, { countedOnly: true });
  const counters = row.counters.map((c) => toCounter({ ...c, period_start: periodStart }));
  const values: Record<string, string> = {};
  for (const meter of plan.meters) values[meter.metric] = counterFromAggregates(counters.find((c) => c.metric === meter.metric), meter.aggregation);
  return {
    tenantId,
    plan,
    period: { start, end: periodEnd.toISOString() },
    values,
    limitOverrides: { ...(row.limit_overrides ?? {}) },
    packs: row.packs.map((k) =>
      packFromRow(
        { ...k, purchased_at: new Date(k.purchased_at), expires_at: new Date(k.expires_at) },
        k.draws.map((d) => ({ period_start: new Date(d.period_start), units: d.units })),
      ),
    ),
    groups,
    alerts: row.alerts.map((a) => alertView({ ...a, tenant_id: tenantId, period_start: periodStart, fired_at: new Date(a.fired_at), covers: null, rule_id: null })),
    pendingEvents: Math.max(0, Number(row.pending)),
  };
}

/** What {@link CURRENT_PERIOD_FIGURES} returns: numerics as text, instants inside JSON as ISO text; the period's columns null when there is no open period. */
interface FiguresRow {
  tenant_id: string;
  tenant_status: TenantRow['status'];
  start: Date | null;
  end: Date | null;
  plan_id: string | null;
  plan_version: number | null;
  limit_overrides: Record<string, string> | null;
  pending: string;
  counters: Array<Omit<CounterRow, 'period_start'>>;
  alerts: Array<{ id: string; subject: string; threshold: string; level: string; status: string; used: string; limit: string; fired_at: string }>;
  packs: Array<{ id: string; metric: string; units: string; price: string | null; purchased_at: string; expires_at: string; draws: Array<{ period_start: string; units: string }> }>;
}

const CURRENT_PERIOD_FIGURES = `
  SELECT t.id AS tenant_id, t.status AS tenant_status, p.start, p."end", p.plan_id, p.plan_version, t.limit_overrides,
         ${unclaimedEventsOf('t.id')} AS pending,
         (SELECT coalesce(json_agg(json_build_object('metric', c.metric, 'total', c.total::text, 'events', c.events::text,
                                                     'largest', c.largest::text, 'latest', c.latest::text) ORDER BY c.metric), '[]')
            FROM period_counters c WHERE c.tenant_id = t.id AND c.period_start = p.start) AS counters,
         (SELECT coalesce(json_agg(json_build_object('id', a.id, 'subject', a.subject, 'threshold', a.threshold::text, 'level', a.level,
                                                     'status', a.status, 'used', a.used::text, 'limit', a."limit"::text, 'fired_at', a.fired_at)
                                   ORDER BY a.fired_at, a.threshold), '[]')
            FROM alerts a WHERE a.tenant_id = t.id AND a.period_start = p.start) AS alerts,
         (SELECT coalesce(json_agg(json_build_object('id', k.id, 'metric', k.metric, 'units', k.units::text, 'price', k.price::text,
                                                     'purchased_at', k.purchased_at, 'expires_at', k.expires_at,
                                                     'draws', (SELECT coalesce(json_agg(json_build_object('period_start', d.period_start, 'units', d.units::text)), '[]')
                                                                 FROM pack_draws d WHERE d.tenant_id = k.tenant_id AND d.pack_id = k.id))
                                   ORDER BY k.expires_at, k.id), '[]')
            FROM packs k WHERE k.tenant_id = t.id) AS packs
    FROM tenants t LEFT JOIN periods p ON p.tenant_id = t.id AND p.status = 'open'`;

/** `GET …/usage` from the read model. */
export async function currentUsage(db: Db, tenantId: string): Promise<UsageView | undefined> {
  const figures = await currentPeriodFigures(db, tenantId);
  return figures && usageViewOf(figures);
}

/** The usage view of an open period's figures, as of now. */
export function usageViewOf(figures: CurrentPeriodFigures): UsageView {
  return buildUsageView({ ...figures, asOf: new Date().toISOString() });
}
