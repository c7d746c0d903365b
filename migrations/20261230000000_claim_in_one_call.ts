import type { Knex } from 'knex';

/**
 * A claim in one call (src/db/ledger.ts, `claimUsage`).
 *
 * `ledger_claim(...)` does in one statement what a claim did in five round trips inside its
 * transaction: it locks the tenant's totals row (created on the first claim), so claims of a
 * tenant take turns; answers a claim id already recorded as recorded (a retry, or an attempt that
 * committed while this one waited on the row); otherwise counts up to `p_limit` events above the
 * watermark and at or below `p_barrier` into `period_counters`, folds the receipts, moves the
 * watermark, records the claim (kept a day for its retries, which end long before) and answers
 * the counters it touched (and the other counters of `p_current`) as they stand after it.
 *
 * A function, because its statements after the lock take their snapshots once the lock is
 * granted, as the separate statements did; and PL/pgSQL keeps their plans, where a statement sent
 * afresh was planned on every claim.
 *
 * Its waits for a lock (the totals row behind another claim of the tenant, a counter row) give up
 * after 10 s, so a claim never holds its activity (30 s) on a lock it may not get. A claim that
 * commits after its activity timed out is still answered right: the retry, with the same claim
 * id, waits on the totals row and answers what that attempt recorded.
 *
 * The aggregates and the way they are added to the counters are those of `BATCH_AGGREGATES` and
 * `ADD_TO_COUNTERS` in src/db/ledger.ts as of this migration, which bulk counting shares; a
 * change to them that claims must follow needs a migration replacing this function.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    CREATE OR REPLACE FUNCTION ledger_claim(p_tenant text, p_claim text, p_limit integer, p_barrier bigint, p_current timestamptz,
                                            p_set_points boolean, p_points jsonb)
    RETURNS TABLE(claimed integer, more boolean, barrier_seq text,
                  period_start timestamptz, metric text, total text, events bigint, largest text, latest text)
    LANGUAGE plpgsql VOLATILE SET lock_timeout = '10s' AS $$
    #variable_conflict use_column
    DECLARE
      v_from bigint;
    BEGIN
      INSERT INTO tenant_event_totals AS t (tenant_id) VALUES (p_tenant)
      ON CONFLICT (tenant_id) DO UPDATE SET tenant_id = t.tenant_id
      RETURNING t.claimed_through_seq INTO v_from;

      IF EXISTS (SELECT 1 FROM ledger_claims l WHERE l.tenant_id = p_tenant AND l.claim_id = p_claim) THEN
        RETURN QUERY
          SELECT l.claimed, l.more, l.barrier_seq::text,
                 c.period_start, c.metric, c.total::text, c.events, c.largest::text, c.latest::text
            FROM ledger_claims l
            LEFT JOIN LATERAL (
              SELECT c.* FROM period_counters c
               WHERE c.tenant_id = l.tenant_id
                 AND (c.period_start = p_current
                      OR (c.period_start, c.metric) IN (SELECT t.period_start, t.metric FROM jsonb_to_recordset(l.touched) AS t(period_start timestamptz, metric text)))
            ) c ON true
           WHERE l.tenant_id = p_tenant AND l.claim_id = p_claim;
        RETURN;
      END IF;

      RETURN QUERY
        WITH batch AS (
          SELECT e.period_start, e.metric, e.quantity, e."timestamp", e.seq FROM usage_events e
           WHERE e.tenant_id = p_tenant AND e.seq > v_from AND e.seq <= p_barrier
           ORDER BY e.seq
           LIMIT p_limit
        ), deltas AS (
          SELECT b.period_start, b.metric, sum(b.quantity) AS total, count(*) AS events, max(b.quantity) AS largest,
                 (array_agg(b.quantity ORDER BY b."timestamp" DESC, b.seq DESC))[1] AS latest,
                 max(b."timestamp") AS latest_at,
                 (array_agg(b.seq ORDER BY b."timestamp" DESC, b.seq DESC))[1] AS latest_seq
            FROM batch b
           GROUP BY b.period_start, b.metric
        ), applied AS (
          INSERT INTO period_counters AS c (tenant_id, period_start, metric, total, events, largest, latest, latest_at, latest_seq)
          SELECT p_tenant, d.period_start, d.metric, d.total, d.events, d.largest, d.latest, d.latest_at, d.latest_seq FROM deltas d
          ON CONFLICT (tenant_id, period_start, metric) DO UPDATE SET
            total = c.total + EXCLUDED.total,
            events = c.events + EXCLUDED.events,
            largest = GREATEST(c.largest, EXCLUDED.largest),
            latest = CASE WHEN (EXCLUDED.latest_at, EXCLUDED.latest_seq) >= (c.latest_at, c.latest_seq) THEN EXCLUDED.latest ELSE c.latest END,
            latest_at = GREATEST(c.latest_at, EXCLUDED.latest_at),
            latest_seq = CASE WHEN (EXCLUDED.latest_at, EXCLUDED.latest_seq) >= (c.latest_at, c.latest_seq) THEN EXCLUDED.latest_seq ELSE c.latest_seq END,
            updated_at = now()
          RETURNING c.period_start, c.metric, c.total::text AS total, c.events, c.largest::text AS largest, c.latest::text AS latest
        ), reached AS (
          -- A full batch stops at its last event (more may wait below the barrier); a short one reached the barrier.
          SELECT count(*) AS claimed,
                 CASE WHEN count(*) >= p_limit THEN max(b.seq) ELSE GREATEST(p_barrier, v_from) END AS through,
                 count(*) >= p_limit AND max(b.seq) < p_barrier AS more
            FROM batch b
        ), folded AS (
          DELETE FROM event_receipts r WHERE r.tenant_id = p_tenant RETURNING r.events
        ), totals AS (
          UPDATE tenant_event_totals w SET
            claimed_through_seq = (SELECT x.through FROM reached x),
            stored = w.stored + (SELECT coalesce(sum(f.events), 0) FROM folded f),
            claimed = w.claimed + (SELECT x.claimed FROM reached x),
            decision_points = CASE WHEN p_set_points THEN p_points ELSE w.decision_points END,
            updated_at = now()
           WHERE w.tenant_id = p_tenant
        ), untouched AS (
          -- The period's other counters, as they stand (this statement changes only the touched ones).
          SELECT c.period_start, c.metric, c.total::text AS total, c.events, c.largest::text AS largest, c.latest::text AS latest
            FROM period_counters c
           WHERE c.tenant_id = p_tenant AND c.period_start = p_current
             AND NOT EXISTS (SELECT 1 FROM deltas d WHERE d.period_start = c.period_start AND d.metric = c.metric)
        ), recorded AS (
          INSERT INTO ledger_claims (claim_id, tenant_id, through_seq, barrier_seq, claimed, more, touched)
          SELECT p_claim, p_tenant, x.through, p_barrier, x.claimed, x.more,
                 coalesce((SELECT jsonb_agg(jsonb_build_object('period_start', d.period_start, 'metric', d.metric, 'claimed', d.events)) FROM deltas d), '[]'::jsonb)
            FROM reached x
        ), forgotten AS (
          DELETE FROM ledger_claims l WHERE l.tenant_id = p_tenant AND l.created_at < now() - interval '1 day'
        )
        SELECT r.claimed::integer, r.more, p_barrier::text, a.period_start, a.metric, a.total, a.events, a.largest, a.latest
          FROM reached r LEFT JOIN (SELECT * FROM applied UNION ALL SELECT * FROM untouched) a ON true;
    END
    $$`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('DROP FUNCTION IF EXISTS ledger_claim(text, text, integer, bigint, timestamptz, boolean, jsonb)');
}
