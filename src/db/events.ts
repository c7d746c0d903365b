import type { Knex } from 'knex';
import type { Db } from './knex';
import { keysetPage, type Page, type PageRequest } from './pagination';
import { readPeriodCounters } from './ledger';
import { findPlanVersion } from './plans';
import { counterFromAggregates } from '../domain/aggregation';
import type { PlanVersion } from '../domain/plan';

/**
 * Reads behind `GET /v1/tenants/{id}/events`: the listing with its filters, where the tenant
 * stands in its tiers (for per-event cost estimates), and where retention stopped.
 */

/** A stored usage event as the events listing shows it. */
export interface ListedEventRow {
  event_id: string;
  tenant_id: string;
  metric: string;
  quantity: string;
  timestamp: Date;
  period_start: Date;
  properties: Record<string, unknown> | null;
  received_at: Date;
}

/** What the events listing keeps: one metric, a timestamp range `[from, to)`, property pairs (all must hold). */
export interface EventFilters {
  metric?: string;
  from?: Date;
  to?: Date;
  properties: ReadonlyArray<{ key: string; value: string }>;
}

/** Up to this many matching events, the listing's `total_count` is exact; beyond, an estimate. */
export const EXACT_EVENT_COUNT = 10_000;

/** A page of events, and whether its `total_count` is exact or the planner's estimate. */
export type EventPage = Page<ListedEventRow> & { total_count_exact: boolean };

/**
 * A page of the tenant's stored events, newest first by timestamp, `seq` (receive order) breaking
 * ties as for `latest`. Any event of the tenant is a valid cursor, filtered out or not.
 */
export async function listUsageEvents(db: Db, tenantId: string, filters: EventFilters, page: PageRequest): Promise<EventPage> {
  const scope = db('usage_events').where({ tenant_id: tenantId });
  const filtered = scope.clone();
  if (filters.metric !== undefined) filtered.where('metric', filters.metric);
  wherePropertiesMatch(filtered, filters.properties);
  if (filters.from !== undefined) filtered.where('timestamp', '>=', filters.from);
  if (filters.to !== undefined) filtered.where('timestamp', '<', filters.to);
  let exact = true;
  const found = await keysetPage<ListedEventRow>(
    filtered.select('event_id', 'tenant_id', 'metric', 'quantity', 'timestamp', 'period_start', 'properties', 'received_at'),
    page,
    {
      sort: ['timestamp', 'seq'],
      idColumn: 'event_id',
      cursorScope: scope,
      count: async (matching) => {
        const counted = await countUpTo(db, matching, EXACT_EVENT_COUNT);
        exact = counted.exact;
        return counted.count;
      },
    },
  );
  return { ...found, total_count_exact: exact };
}

/**
 * How many rows `matching` (no select, no order) has: counted exactly up to `cap`, so the cost
 * stays that of `cap` rows however many match (a tenant with millions of events, or a property
 * value one event in five has). Beyond it, the planner's estimate of the rows, and never less than
 * the `cap + 1` rows just seen.
 */
async function countUpTo(db: Db, matching: Knex.QueryBuilder, cap: number): Promise<{ count: number; exact: boolean }> {
  const rows = matching.clone().select(db.raw('1')).limit(cap + 1);
  const counted = await db.raw<{ rows: Array<{ count: string }> }>('SELECT count(*)::text AS count FROM ? matching', [rows]);
  const count = Number(counted.rows[0]?.count ?? 0);
  if (count <= cap) return { count, exact: true };
  const { sql, bindings } = matching.clone().select(db.raw('1')).toSQL();
  const plan = await db.raw<{ rows: Array<{ 'QUERY PLAN': Array<{ Plan: { 'Plan Rows': number } }> }> }>(`EXPLAIN (FORMAT JSON) ${sql}`, bindings);
  const estimate = Math.round(plan.rows[0]?.['QUERY PLAN'][0]?.Plan['Plan Rows'] ?? 0);
  return { count: Math.max(estimate, count), exact: false };
}

/**
 * Keeps the events whose `properties` hold `key` equal to `value`, for each filter (all must
 * hold). The value of a query string is text: it matches a string property, and also a number or
 * boolean property whose JSON is that text (`property.tier=3` matches `{"tier": 3}`).
 *
 * Written as `properties @> {key: value}` beside the listing's `tenant_id = …`, the two columns of
 * the GIN index `usage_events_tenant_properties` (migration 20261221000000_insight), so the index
 * answers with this tenant's events that have the pair.
 */
function wherePropertiesMatch(query: Knex.QueryBuilder, filters: ReadonlyArray<{ key: string; value: string }>): void {
  for (const { key, value } of filters) {
    const documents = [value, ...jsonScalar(value)].map((v) => JSON.stringify({ [key]: v }));
    query.where((q) => {
      for (const document of documents) q.orWhereRaw('properties @> ?::jsonb', [document]);
    });
  }
  if (filters.length > 0) query.whereNotNull('properties'); // the index is partial: only events with properties
}

/** A query-string value read as a JSON number or boolean, when it is one. */
function jsonScalar(value: string): Array<number | boolean> {
  if (value === 'true') return [true];
  if (value === 'false') return [false];
  if (/^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?$/.test(value) && Number.isFinite(Number(value))) return [Number(value)];
  return [];
}

/**
 * The start of the tenant's oldest period whose raw events are kept: the end of the latest period
 * retention purged. Undefined when nothing was ever purged.
 */
export async function retainedSince(db: Db, tenantId: string): Promise<Date | undefined> {
  const row = await db('periods').where({ tenant_id: tenantId }).whereNotNull('events_purged_at').max<{ end: Date | null }>({ end: 'end' }).first();
  return row?.end ?? undefined;
}

/**
 * Where the tenant stands in its tiers now: the open period's plan and counters (a cancelled
 * tenant's: its final period's).
 */
export async function currentTierPosition(db: Db, tenantId: string): Promise<{ plan: PlanVersion; values: Record<string, string> } | undefined> {
  const period = await db('periods')
    .where({ tenant_id: tenantId })
    .orderByRaw(`status = 'open' DESC, start DESC`)
    .first<{ start: Date; plan_id: string; plan_version: number } | undefined>('start', 'plan_id', 'plan_version');
  if (!period) return undefined;
  const [plan, counters] = await Promise.all([findPlanVersion(db, period.plan_id, period.plan_version), readPeriodCounters(db, tenantId, [period.start])]);
  if (!plan) return undefined;
  const values: Record<string, string> = {};
  for (const meter of plan.meters) values[meter.metric] = counterFromAggregates(counters.find((c) => c.metric === meter.metric), meter.aggregation);
  return { plan, values };
}
