import type { Knex } from 'knex';
import type { Db } from './knex';
import { normalizeDecimal } from './numeric';
import type { ClaimResult, PeriodCounter } from '../contracts/ledger';

export type { ClaimResult, PeriodCounter };

/**
 * The event ledger's counting side (docs/design/core-v2.md). Stored usage events wait with
 * `claim_id` null until a claim takes them: one transaction marks them with the claim id and
 * adds them to `period_counters`, so each stored event is counted exactly once, whoever asks and
 * however often a claim is retried. A claim answers with the counters it touched as they stand
 * after it (absolute values, not deltas), so a caller that lost an earlier answer still ends up
 * with the right numbers.
 */

interface CounterRow {
  period_start: Date;
  metric: string;
  total: string;
  events: string;
  largest: string;
  latest: string;
}

function toCounter(row: CounterRow): PeriodCounter {
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

/** Each statement of a claim gives up after this long (two statements, well under 30 s). */
const CLAIM_STATEMENT_TIMEOUT_MS = 10_000;

/**
 * Claims up to `limit` of the tenant's unclaimed events, oldest received first, and adds them
 * to `period_counters`, in one transaction. `SKIP LOCKED` keeps two overlapping attempts of one
 * claim (a timed-out attempt still running beside its retry) on disjoint rows.
 */
export async function claimUsage(db: Db | Knex.Transaction, tenantId: string, claimId: string, limit: number): Promise<ClaimResult> {
  // Within a caller's transaction this is a savepoint: the claim commits with the caller's writes.
  return db.transaction(async (trx): Promise<ClaimResult> => {
    // A claim must commit well within its activity's 30 s, or not at all: an attempt that
    // committed after its activity timed out would count events whose counters the workflow,
    // having moved on to the retry's answer, never hears of.
    await trx.raw(`SET LOCAL statement_timeout = ${CLAIM_STATEMENT_TIMEOUT_MS}`);
    const added = await trx.raw<{ rows: Array<{ claimed: string }> }>(
      `WITH picked AS (
         SELECT event_id FROM usage_events
          WHERE tenant_id = :tenant AND claim_id IS NULL
          ORDER BY seq
          LIMIT :limit
          FOR UPDATE SKIP LOCKED
       ), claimed AS (
         UPDATE usage_events u SET claim_id = :claim
           FROM picked p
          WHERE u.tenant_id = :tenant AND u.event_id = p.event_id
         RETURNING u.period_start, u.metric, u.quantity, u."timestamp", u.seq
       ), deltas AS (
         SELECT period_start, metric, sum(quantity) AS total, count(*) AS events, max(quantity) AS largest,
                (array_agg(quantity ORDER BY "timestamp" DESC, seq DESC))[1] AS latest,
                max("timestamp") AS latest_at,
                (array_agg(seq ORDER BY "timestamp" DESC, seq DESC))[1] AS latest_seq
           FROM claimed
          GROUP BY period_start, metric
       ), applied AS (
         INSERT INTO period_counters AS c (tenant_id, period_start, metric, total, events, largest, latest, latest_at, latest_seq)
         SELECT :tenant, period_start, metric, total, events, largest, latest, latest_at, latest_seq FROM deltas
         ON CONFLICT (tenant_id, period_start, metric) DO UPDATE SET
           total = c.total + EXCLUDED.total,
           events = c.events + EXCLUDED.events,
           largest = GREATEST(c.largest, EXCLUDED.largest),
           latest = CASE WHEN (EXCLUDED.latest_at, EXCLUDED.latest_seq) >= (c.latest_at, c.latest_seq) THEN EXCLUDED.latest ELSE c.latest END,
           latest_at = GREATEST(c.latest_at, EXCLUDED.latest_at),
           latest_seq = CASE WHEN (EXCLUDED.latest_at, EXCLUDED.latest_seq) >= (c.latest_at, c.latest_seq) THEN EXCLUDED.latest_seq ELSE c.latest_seq END,
           updated_at = now()
         RETURNING 1
       )
       SELECT (SELECT coalesce(sum(events), 0) FROM deltas)::text AS claimed, (SELECT count(*) FROM applied) AS applied`,
      { tenant: tenantId, claim: claimId, limit },
    );
    const claimedNow = Number(added.rows[0]?.claimed ?? 0);
    // Read back by claim id: a retry after a committed attempt answers for that attempt too.
    const touched = await trx.raw<{ rows: Array<CounterRow & { claimed: string }> }>(
      `WITH mine AS (
         SELECT period_start, metric, count(*) AS claimed FROM usage_events
          WHERE tenant_id = :tenant AND claim_id = :claim
          GROUP BY period_start, metric
       )
       SELECT c.period_start, c.metric, c.total::text, c.events, c.largest::text, c.latest::text, mine.claimed
         FROM mine JOIN period_counters c
           ON c.tenant_id = :tenant AND c.period_start = mine.period_start AND c.metric = mine.metric
        ORDER BY c.period_start, c.metric`,
      { tenant: tenantId, claim: claimId },
    );
    return {
      claimed: touched.rows.reduce((n, r) => n + Number(r.claimed), 0),
      counters: touched.rows.map(toCounter),
      more: claimedNow >= limit,
    };
  });
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

/** Acknowledged events of a tenant not counted yet (`pending_events`), counted up to `upTo` when given. */
export async function countUnclaimedEvents(db: Db | Knex.Transaction, tenantId: string, upTo?: number): Promise<number> {
  const result = await db.raw<{ rows: Array<{ count: string }> }>(
    `SELECT count(*)::text AS count FROM (SELECT 1 FROM usage_events WHERE tenant_id = ? AND claim_id IS NULL LIMIT ?) waiting`,
    [tenantId, upTo ?? null],
  );
  return Number(result.rows[0]?.count ?? 0);
}

/**
 * Tenants with events that have waited unclaimed longer than `olderThanMs`: their workflow was
 * not rung (an API process died between its commit and its signal), or is not running.
 */
export async function tenantsWithUnclaimedEvents(db: Db, olderThanMs: number, limit = 1_000): Promise<string[]> {
  const rows = await db.raw<{ rows: Array<{ tenant_id: string }> }>(
    `SELECT DISTINCT tenant_id FROM usage_events
      WHERE claim_id IS NULL AND received_at < now() - make_interval(secs => :seconds)
      LIMIT :limit`,
    { seconds: olderThanMs / 1000, limit },
  );
  return rows.rows.map((r) => r.tenant_id);
}
