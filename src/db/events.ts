import type { Knex } from 'knex';
import type { Db } from './knex';
import { readPeriodCounters } from './ledger';
import { findPlanVersion } from './plans';
import { counterFromAggregates } from '../domain/aggregation';
import type { PlanVersion } from '../domain/plan';

/**
 * Reads behind `GET /v1/tenants/{id}/events` beyond the plain listing: property filters, where
 * the tenant stands in its tiers (for per-event cost estimates), and where retention stopped.
 */

/**
 * Keeps the events whose `properties` hold `key` equal to `value`, for each filter (all must
 * hold). The value of a query string is text: it matches a string property, and also a number or
 * boolean property whose JSON is that text (`property.tier=3` matches `{"tier": 3}`).
 *
 * Written as `properties @> {key: value}` beside the listing's `tenant_id = …`, the two columns of
 * the GIN index `usage_events_tenant_properties` (migration 20261221000000_insight), so the index
 * answers with this tenant's events that have the pair.
 */
export function wherePropertiesMatch(query: Knex.QueryBuilder, filters: ReadonlyArray<{ key: string; value: string }>): void {
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
