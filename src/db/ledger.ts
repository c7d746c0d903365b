import type { Knex } from 'knex';
import type { Db } from './knex';
import { normalizeDecimal } from './numeric';
import type { ClaimResult, DecisionPoints, PeriodCounter } from '../contracts/ledger';

export type { ClaimResult, PeriodCounter };

/**
 * The event ledger's counting side (docs/design/core-v2.md, "Claims"). Each tenant has a
 * watermark, `tenant_event_totals.claimed_through_seq`: its stored events at or below it (in
 * receive order, `seq`) are counted, those above wait. A claim takes the events above the
 * watermark, adds them to `period_counters` and moves the watermark in one transaction, so each
 * stored event is counted exactly once, whoever asks and however often a claim is retried, and
 * counting never writes an event's row. A claim answers with the counters it touched as they
 * stand after it (absolute values, not deltas), so a caller that lost an earlier answer still
 * ends up with the right numbers; `ledger_claims` keeps each claim's answer for its retries. A
 * claim rates nothing: moving the watermark makes the tenant's running figures due, and the
 * figures refresher rates them beside the claims (`refreshDueFigures`, src/db/summaries.ts).
 *
 * Events are numbered when they are inserted, not when they commit, so a claim first takes a
 * barrier: under the tenant's ledger lock held exclusively for a moment (every ingest
 * transaction of the tenant holds it shared), the highest stored `seq` is one below which every
 * event has committed and none will be added. A claim counts up to that barrier, never past it.
 */

export interface CounterRow {
  period_start: Date;
  metric: string;
  total: string;
  events: string;
  largest: string;
  latest: string;
}

export function toCounter(row: CounterRow): PeriodCounter {
  return {
    period_start: row.period_start.toISOString(),
    metric: row.metric,
    total: normalizeDecimal(row.total),
    events: Number(row.events),
    largest: normalizeDecimal(row.largest),
    latest: normalizeDecimal(row.latest),
  };
}

const COUNTER_COLUMNS = 'period_start, metric, total::text, events, largest::text, latest::text';

/**
 * SQL: the select list that turns a batch of events (`quantity`, `"timestamp"`, `seq`) into one
 * row of aggregates per group (`GROUP BY` the caller's), as `ADD_TO_COUNTERS` adds them. Bulk
 * counts use it; claims count the same way in `ledger_claim`, which holds a copy as of its
 * migration (20261230000000): a change here must replace that function too, by a migration.
 */
export const BATCH_AGGREGATES = `sum(quantity) AS total, count(*) AS events, max(quantity) AS largest,
                (array_agg(quantity ORDER BY "timestamp" DESC, seq DESC))[1] AS latest,
                max("timestamp") AS latest_at,
                (array_agg(seq ORDER BY "timestamp" DESC, seq DESC))[1] AS latest_seq`;

/**
 * SQL: the tail of an `INSERT INTO period_counters AS c …` of one batch's aggregates per
 * tenant, period and metric, that adds them to the counters already there (the latest quantity
 * goes by timestamp, then receive order). Bulk counts use it; `ledger_claim` holds a copy, as
 * `BATCH_AGGREGATES` says.
 */
export const ADD_TO_COUNTERS = `ON CONFLICT (tenant_id, period_start, metric) DO UPDATE SET
           total = c.total + EXCLUDED.total,
           events = c.events + EXCLUDED.events,
           largest = GREATEST(c.largest, EXCLUDED.largest),
           latest = CASE WHEN (EXCLUDED.latest_at, EXCLUDED.latest_seq) >= (c.latest_at, c.latest_seq) THEN EXCLUDED.latest ELSE c.latest END,
           latest_at = GREATEST(c.latest_at, EXCLUDED.latest_at),
           latest_seq = CASE WHEN (EXCLUDED.latest_at, EXCLUDED.latest_seq) >= (c.latest_at, c.latest_seq) THEN EXCLUDED.latest_seq ELSE c.latest_seq END,
           updated_at = now()`;

/**
 * The receive-order number below which every event of the tenant is stored and committed, and
 * none will be added: taken under the tenant's ledger lock held exclusively, which waits for the
 * ingest transactions in flight and holds new ones back for one index lookup. One statement on
 * its own (`ledger_stored_through`, migration 20261225000000): the lock goes with its implicit
 * transaction, and the lookup inside the function reads after the lock is granted.
 */
export async function storedThrough(db: Db, tenantId: string): Promise<string> {
  const found = await db.raw<{ rows: Array<{ seq: string }> }>('SELECT ledger_stored_through(?)::text AS seq', [tenantId]);
  return found.rows[0]!.seq;
}

/** A claim's answer row: the claim, and one counter it touched (null columns when it touched none). */
type ClaimRow = { claimed: number; more: boolean; barrier_seq: string } & { [K in keyof CounterRow]: CounterRow[K] | null };

function claimResultOf(rows: ClaimRow[]): ClaimResult | undefined {
  const claim = rows[0];
  if (!claim) return undefined;
  const counters = rows
    .filter((r): r is ClaimRow & CounterRow => r.period_start !== null)
    .map(toCounter)
    .sort((a, b) => (a.period_start === b.period_start ? (a.metric < b.metric ? -1 : 1) : a.period_start < b.period_start ? -1 : 1));
  return { claimed: Number(claim.claimed), counters, more: claim.more, barrier_seq: claim.barrier_seq };
}

/** What a claim is asked beyond counting. */
export interface ClaimOptions {
  /** Count no event received after this one (an earlier claim's barrier); default: a barrier taken now. */
  throughSeq?: string;
  /**
   * Where the tenant's ledger next decides something, stored with the claim for bulk counting
   * (src/db/bulk-counting.ts); null withdraws it. Absent: left as stored.
   */
  decisionPoints?: DecisionPoints | null;
  /** Also answer every counter of this period, touched or not (the counter may have counted some in bulk). */
  currentPeriod?: string;
}

/**
 * Claims up to `limit` of the tenant's events above its watermark and at or below its barrier,
 * oldest received first, in one transaction: one call of `ledger_claim` (migration
 * 20261230000000), after the barrier's own statement when none is given. Claims of one tenant
 * wait for each other on its totals row. A claim id already recorded answers as recorded.
 */
export async function claimUsage(db: Db, tenantId: string, claimId: string, limit: number, options: ClaimOptions = {}): Promise<ClaimResult> {
  const barrier = options.throughSeq ?? (await storedThrough(db, tenantId));
  const claimed = await db.raw<{ rows: ClaimRow[] }>('SELECT * FROM ledger_claim(?, ?, ?, ?::bigint, ?::timestamptz, ?, ?::jsonb)', [
    tenantId,
    claimId,
    limit,
    barrier,
    options.currentPeriod ?? null,
    options.decisionPoints !== undefined,
    options.decisionPoints == null ? null : JSON.stringify(options.decisionPoints),
  ]);
  return claimResultOf(claimed.rows)!;
}

/**
 * The tenant's watermark: its events at or below this receive-order number are counted. With
 * `lock`, held until the caller's transaction ends, so no claim moves it meanwhile (a rollover
 * moving counted events between periods).
 */
export async function countedThrough(trx: Knex.Transaction, tenantId: string, options: { lock?: boolean } = {}): Promise<bigint> {
  const found = await trx.raw<{ rows: Array<{ through: string }> }>(
    `SELECT claimed_through_seq::text AS through FROM tenant_event_totals WHERE tenant_id = ?${options.lock ? ' FOR UPDATE' : ''}`,
    [tenantId],
  );
  return BigInt(found.rows[0]?.through ?? 0);
}

/** SQL: the event row aliased `alias` of tenant `:tenant` is counted (at or below its tenant's watermark). */
export const COUNTED = (alias = 'usage_events') =>
  `${alias}.seq <= coalesce((SELECT w.claimed_through_seq FROM tenant_event_totals w WHERE w.tenant_id = ${alias}.tenant_id), 0)`;

/** The counters of one tenant's periods, as the read model holds them. */
export async function readPeriodCounters(db: Db | Knex.Transaction, tenantId: string, periodStarts: Array<string | Date>): Promise<PeriodCounter[]> {
  if (periodStarts.length === 0) return [];
  const rows = await db('period_counters')
    .where({ tenant_id: tenantId })
    .whereIn('period_start', periodStarts)
    .orderBy([{ column: 'period_start' }, { column: 'metric' }])
    .select<CounterRow[]>(db.raw(COUNTER_COLUMNS));
  return rows.map(toCounter);
}

/**
 * SQL: {@link countUnclaimedEvents}'s figure as text, for the tenant that `tenant` names (a
 * binding or a column). The SQL function `ledger_pending_events` (migration 20261231000000), which
 * ingest's check calls from PL/pgSQL, computes the same figure; it is written out here because
 * PostgreSQL does not inline a SQL function whose expression holds sub-selects (`EXPLAIN VERBOSE`
 * shows one call per row), so a read over a page of tenants would call it for each.
 */
export const unclaimedEventsOf = (tenant: string): string => `(coalesce((SELECT stored - claimed FROM tenant_event_totals WHERE tenant_id = ${tenant}), 0)
           + coalesce((SELECT sum(events) FROM event_receipts WHERE tenant_id = ${tenant}), 0))::text`;

/**
 * Acknowledged events of a tenant not counted yet (`pending_events`): events stored less events
 * claimed, from the tenant's totals and the receipts no claim has folded yet, so the answer costs
 * one row and a few receipts however large the backlog (one statement: one snapshot).
 */
export async function countUnclaimedEvents(db: Db | Knex.Transaction, tenantId: string): Promise<number> {
  const result = await db.raw<{ rows: Array<{ pending: string }> }>(`SELECT ${unclaimedEventsOf(':tenant')} AS pending`, { tenant: tenantId });
  return Math.max(0, Number(result.rows[0]?.pending ?? 0));
}
