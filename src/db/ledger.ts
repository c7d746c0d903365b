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
 * row of aggregates per group (`GROUP BY` the caller's), as `ADD_TO_COUNTERS` adds them. Claims
 * and bulk counts share it.
 */
export const BATCH_AGGREGATES = `sum(quantity) AS total, count(*) AS events, max(quantity) AS largest,
                (array_agg(quantity ORDER BY "timestamp" DESC, seq DESC))[1] AS latest,
                max("timestamp") AS latest_at,
                (array_agg(seq ORDER BY "timestamp" DESC, seq DESC))[1] AS latest_seq`;

/**
 * SQL: the tail of an `INSERT INTO period_counters AS c …` of one batch's aggregates per
 * tenant, period and metric, that adds them to the counters already there (the latest quantity
 * goes by timestamp, then receive order). Claims and bulk counts share it.
 */
export const ADD_TO_COUNTERS = `ON CONFLICT (tenant_id, period_start, metric) DO UPDATE SET
           total = c.total + EXCLUDED.total,
           events = c.events + EXCLUDED.events,
           largest = GREATEST(c.largest, EXCLUDED.largest),
           latest = CASE WHEN (EXCLUDED.latest_at, EXCLUDED.latest_seq) >= (c.latest_at, c.latest_seq) THEN EXCLUDED.latest ELSE c.latest END,
           latest_at = GREATEST(c.latest_at, EXCLUDED.latest_at),
           latest_seq = CASE WHEN (EXCLUDED.latest_at, EXCLUDED.latest_seq) >= (c.latest_at, c.latest_seq) THEN EXCLUDED.latest_seq ELSE c.latest_seq END,
           updated_at = now()`;

/** Each statement of a claim gives up after this long (the one that reads and counts events above all). */
const CLAIM_STATEMENT_TIMEOUT_MS = 10_000;

/** Claims answered for retries this long; after it a claim id is forgotten (its activity's retries end long before). */
const CLAIM_MEMORY = '1 day';

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
 * oldest received first, in one transaction. Claims of one tenant wait for each other on its
 * totals row. A claim id already recorded answers as recorded.
 */
export async function claimUsage(db: Db, tenantId: string, claimId: string, limit: number, options: ClaimOptions = {}): Promise<ClaimResult> {
  const barrier = options.throughSeq ?? (await storedThrough(db, tenantId));
  const current = options.currentPeriod ?? null;
  return db.transaction(async (trx): Promise<ClaimResult> => {
    // A claim must commit well within its activity's 30 s, or not at all: an attempt that
    // committed after its activity timed out would count events whose counters the workflow,
    // having moved on to the retry's answer, never hears of. So each of its statements, the wait
    // for the totals row included, gives up after `CLAIM_STATEMENT_TIMEOUT_MS`.
    await trx.raw(`SET LOCAL statement_timeout = ${CLAIM_STATEMENT_TIMEOUT_MS}`);
    // The tenant's totals row, locked (created on its first claim): claims of a tenant take turns.
    const totals = await trx.raw<{ rows: Array<{ through: string }> }>(
      `INSERT INTO tenant_event_totals AS t (tenant_id) VALUES (?)
       ON CONFLICT (tenant_id) DO UPDATE SET tenant_id = t.tenant_id
       RETURNING claimed_through_seq::text AS through`,
      [tenantId],
    );
    // A retry, or an attempt of this claim that committed while this one waited on the row: it answers for both.
    const recorded = await recordedClaim(trx, tenantId, claimId, current);
    if (recorded) return recorded;
    // One statement counts the batch and answers with the counters it touched as they stand after it.
    const counted = await trx.raw<{ rows: ClaimRow[] }>(
      `WITH batch AS (
         SELECT period_start, metric, quantity, "timestamp", seq FROM usage_events
          WHERE tenant_id = :tenant AND seq > :from AND seq <= :barrier
          ORDER BY seq
          LIMIT :limit
       ), deltas AS (
         SELECT period_start, metric, ${BATCH_AGGREGATES}
           FROM batch
          GROUP BY period_start, metric
       ), applied AS (
         INSERT INTO period_counters AS c (tenant_id, period_start, metric, total, events, largest, latest, latest_at, latest_seq)
         SELECT :tenant, period_start, metric, total, events, largest, latest, latest_at, latest_seq FROM deltas
         ${ADD_TO_COUNTERS}
         RETURNING ${COUNTER_COLUMNS}
       ), reached AS (
         -- A full batch stops at its last event (more may wait below the barrier); a short one reached the barrier.
         SELECT count(*) AS claimed,
                CASE WHEN count(*) >= :limit THEN max(seq) ELSE GREATEST(:barrier::bigint, :from::bigint) END AS through,
                count(*) >= :limit AND max(seq) < :barrier::bigint AS more
           FROM batch
       ), folded AS (
         DELETE FROM event_receipts WHERE tenant_id = :tenant RETURNING events
       ), totals AS (
         UPDATE tenant_event_totals SET
           claimed_through_seq = (SELECT through FROM reached),
           stored = stored + (SELECT coalesce(sum(events), 0) FROM folded),
           claimed = claimed + (SELECT claimed FROM reached),
           decision_points = CASE WHEN :setPoints THEN :points::jsonb ELSE decision_points END,
           updated_at = now()
          WHERE tenant_id = :tenant
       ), untouched AS (
         -- The period's other counters, as they stand (this statement changes only the touched ones).
         SELECT ${COUNTER_COLUMNS} FROM period_counters c
          WHERE c.tenant_id = :tenant AND c.period_start = :current::timestamptz
            AND NOT EXISTS (SELECT 1 FROM deltas d WHERE d.period_start = c.period_start AND d.metric = c.metric)
       ), recorded AS (
         INSERT INTO ledger_claims (claim_id, tenant_id, through_seq, barrier_seq, claimed, more, touched)
         SELECT :claim, :tenant, through, :barrier, claimed, more,
                coalesce((SELECT jsonb_agg(jsonb_build_object('period_start', period_start, 'metric', metric, 'claimed', events)) FROM deltas), '[]'::jsonb)
           FROM reached
       ), forgotten AS (
         DELETE FROM ledger_claims WHERE tenant_id = :tenant AND created_at < now() - interval '${CLAIM_MEMORY}'
       )
       SELECT r.claimed::int AS claimed, r.more, :barrier::text AS barrier_seq, a.*
         FROM reached r LEFT JOIN (SELECT * FROM applied UNION ALL SELECT * FROM untouched) a ON true`,
      {
        tenant: tenantId,
        claim: claimId,
        limit,
        from: totals.rows[0]!.through,
        barrier,
        current,
        setPoints: options.decisionPoints !== undefined,
        points: options.decisionPoints == null ? null : JSON.stringify(options.decisionPoints),
      },
    );
    return claimResultOf(counted.rows)!;
  });
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

/** A claim as recorded: what it counted, and the counters it touched (and those of `current`) as they stand now. */
async function recordedClaim(db: Db | Knex.Transaction, tenantId: string, claimId: string, current: string | null): Promise<ClaimResult | undefined> {
  const found = await db.raw<{ rows: ClaimRow[] }>(
    `SELECT l.claimed, l.more, l.barrier_seq::text AS barrier_seq,
            c.period_start, c.metric, c.total::text AS total, c.events, c.largest::text AS largest, c.latest::text AS latest
       FROM ledger_claims l
       LEFT JOIN LATERAL (
         SELECT c.* FROM period_counters c
          WHERE c.tenant_id = l.tenant_id
            AND (c.period_start = :current::timestamptz
                 OR (c.period_start, c.metric) IN (SELECT period_start, metric FROM jsonb_to_recordset(l.touched) AS t(period_start timestamptz, metric text)))
       ) c ON true
      WHERE l.tenant_id = :tenant AND l.claim_id = :claim`,
    { tenant: tenantId, claim: claimId, current },
  );
  return claimResultOf(found.rows);
}

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

/** SQL: {@link countUnclaimedEvents}'s figure as text, for the tenant bound as `:tenant`. */
export const UNCLAIMED_EVENTS = `(coalesce((SELECT stored - claimed FROM tenant_event_totals WHERE tenant_id = :tenant), 0)
           + coalesce((SELECT sum(events) FROM event_receipts WHERE tenant_id = :tenant), 0))::text`;

/**
 * Acknowledged events of a tenant not counted yet (`pending_events`): events stored less events
 * claimed, from the tenant's totals and the receipts no claim has folded yet, so the answer costs
 * one row and a few receipts however large the backlog (one statement: one snapshot).
 */
export async function countUnclaimedEvents(db: Db | Knex.Transaction, tenantId: string): Promise<number> {
  const result = await db.raw<{ rows: Array<{ pending: string }> }>(`SELECT ${UNCLAIMED_EVENTS} AS pending`, { tenant: tenantId });
  return Math.max(0, Number(result.rows[0]?.pending ?? 0));
}
