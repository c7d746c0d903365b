import type { Db } from './knex';
import { listenOnChannel } from './channel-listener';
import { ADD_TO_COUNTERS, BATCH_AGGREGATES } from './ledger';

/**
 * Bulk counting (docs/design/core-v2.md, "Bulk counting"): the worker's counter counts the
 * waiting events of many tenants in one transaction, without their workflows, whenever counting
 * them decides nothing. A tenant's workflow publishes where its ledger next has something to
 * decide (`tenant_event_totals.decision_points`, written by its claims): per meter of the current
 * period, the counter value below which no alert threshold is crossed. A tenant is counted in
 * bulk when every event waiting below its barrier is in that period, of a metric it lists, and
 * leaves the metric's counter below its point. Otherwise nothing of the tenant is counted here,
 * and the counter rings its workflow, which claims and decides (src/db/ledger.ts).
 *
 * A bulk count is a claim in every other respect: it counts up to the tenant's barrier (taken
 * first, in one statement for all the tenants), moves the watermark, adds to `period_counters`
 * and folds the receipts, under the tenant's totals row. A row a claim holds is skipped, not
 * waited for. Nothing is recorded for retries: the transaction commits or counts nothing.
 */

/** A tenant with events waiting, and the newest receipt among them (a later one means new events). */
export interface WaitingTenant {
  tenant_id: string;
  newest_receipt: string;
  /** Whether its workflow published decision points: without them, nothing of it is counted in bulk. */
  countable: boolean;
}

/** What the counter did with one tenant. */
export type BulkOutcome =
  /** Counted here (`more`: it stopped at its size limit; more waits below the barrier). */
  | { tenant_id: string; kind: 'counted'; counted: number; more: boolean }
  /** Waiting events would decide something, or the tenant has published nothing: its workflow must claim. */
  | { tenant_id: string; kind: 'decides' }
  /** A claim holds the tenant's totals row: its workflow is counting it now. */
  | { tenant_id: string; kind: 'busy' };

/**
 * SQL: the value a meter's counter reaches when a batch's aggregates `d` (`total`, `events`,
 * `largest`, per tenant, period and metric) are added to its stored counter `c` (columns null
 * when it has none), by the aggregation the decision points `points` list for `d.metric`. For a
 * latest meter the counter ends up one of the batch's quantities or the old one, so the largest
 * of them is the bound.
 */
export function counterAfterBatch(points: string): string {
  return `CASE ${points}->'meters'->d.metric->>'aggregation'
            WHEN 'sum' THEN coalesce(c.total, 0) + d.total
            WHEN 'count' THEN coalesce(c.events, 0) + d.events
            ELSE GREATEST(coalesce(c.largest, 0), coalesce(c.latest, 0), d.largest)
          END`;
}

/**
 * The channel on which a committed ingest says that it stored events which reach a decision
 * point (src/db/ingest.ts), one notification per tenant, carrying a {@link DecisionWaiting}: the
 * counter, listening, rings that tenant's workflow at once, so an alert waits for no round.
 */
export const DECISIONS_WAITING_CHANNEL = 'tally_decisions_waiting';

/** A tenant whose events, stored under `receipt` (`event_receipts.id`), reach a decision point. */
export interface DecisionWaiting {
  tenant_id: string;
  receipt: string;
}

/**
 * Calls `onNotice` for each notification on {@link DECISIONS_WAITING_CHANNEL}, from a connection
 * of its own (a listening session cannot go back to a pool), with the tenant it names. Each time
 * it starts listening, first and after a lost connection (opened again after `retryMs`),
 * `onNotice` is called once without a tenant, for what may have been committed before or
 * meanwhile (so too for a payload it cannot read). The returned function stops listening.
 */
export function listenForDecisionsWaiting(
  db: Db,
  onNotice: (waiting: DecisionWaiting | undefined) => void,
  onError: (err: unknown) => void,
  retryMs = 1_000,
): () => Promise<void> {
  return listenOnChannel(db, DECISIONS_WAITING_CHANNEL, { onNotice: (payload) => onNotice(decisionWaitingOf(payload)), onListening: () => onNotice(undefined), onError }, retryMs);
}

function decisionWaitingOf(payload: string | undefined): DecisionWaiting | undefined {
  try {
    const parsed = JSON.parse(payload ?? '') as Partial<DecisionWaiting>;
    return typeof parsed.tenant_id === 'string' && typeof parsed.receipt === 'string' && /^\d{1,19}$/.test(parsed.receipt)
      ? { tenant_id: parsed.tenant_id, receipt: parsed.receipt }
      : undefined;
  } catch {
    return undefined;
  }
}

/** Each statement of a bulk count gives up after this long: a stuck one must not stall the counter. */
const STATEMENT_TIMEOUT_MS = 10_000;

/**
 * Tenants whose stored events wait: those with receipts no claim has folded, and those a claim
 * left with more than it could count, in tenant id order from just after `after`. Only tenants
 * that exist: events of any other have no workflow to ring.
 */
export async function tenantsWaiting(db: Db, limit: number, after = ''): Promise<WaitingTenant[]> {
  const rows = await db.raw<{ rows: WaitingTenant[] }>(
    `SELECT w.tenant_id, w.newest_receipt,
            EXISTS (SELECT 1 FROM tenant_event_totals x WHERE x.tenant_id = w.tenant_id AND x.decision_points IS NOT NULL) AS countable
       FROM (
         SELECT tenant_id, max(newest)::text AS newest_receipt FROM (
           SELECT tenant_id, max(id) AS newest FROM event_receipts WHERE tenant_id > :after GROUP BY tenant_id
           UNION ALL
           SELECT tenant_id, 0 FROM tenant_event_totals WHERE stored > claimed AND tenant_id > :after
         ) waiting
         WHERE EXISTS (SELECT 1 FROM tenants t WHERE t.id = waiting.tenant_id)
         GROUP BY tenant_id ORDER BY tenant_id LIMIT :limit
       ) w
      ORDER BY w.tenant_id`,
    { limit, after },
  );
  return rows.rows;
}

/**
 * Counts in bulk what it may of `tenantIds`' waiting events, up to `perTenantLimit` events a
 * tenant; the outcome of each tenant. A tenant without a totals row has never been claimed: its
 * workflow must claim first (`decides`).
 */
export async function countInBulk(db: Db, tenantIds: readonly string[], perTenantLimit: number): Promise<BulkOutcome[]> {
  if (tenantIds.length === 0) return [];
  // Locked in the order ingest takes them (src/db/ingest.ts), so the two never deadlock.
  const tenants = [...new Set(tenantIds)].sort();
  // The barriers in one statement: each tenant's ledger lock is held, exclusively, from its turn
  // until the statement ends (src/db/ledger.ts, `storedThrough`).
  const barriers = await db.raw<{ rows: Array<{ tenant_id: string; through: string }> }>(
    `SELECT t AS tenant_id, ledger_stored_through(t)::text AS through FROM unnest(?::text[]) WITH ORDINALITY AS u(t, i) ORDER BY i`,
    [tenants],
  );
  const rows = await db.transaction(async (trx) => {
    await trx.raw(`SET LOCAL statement_timeout = ${STATEMENT_TIMEOUT_MS}`);
    return trx.raw<{ rows: Array<{ tenant_id: string; kind: BulkOutcome['kind']; counted: number; more: boolean }> }>(
      `WITH barrier AS (
         SELECT * FROM unnest(:tenants::text[], :barriers::bigint[]) AS b(tenant_id, through)
       ), locked AS (
         SELECT t.tenant_id, t.claimed_through_seq AS from_seq, b.through AS barrier, t.decision_points AS points
           FROM tenant_event_totals t JOIN barrier b ON b.tenant_id = t.tenant_id
          ORDER BY t.tenant_id
            FOR UPDATE OF t SKIP LOCKED
       ), batch AS (
         SELECT l.tenant_id, e.period_start, e.metric, e.quantity, e."timestamp", e.seq
           FROM locked l CROSS JOIN LATERAL (
             SELECT period_start, metric, quantity, "timestamp", seq FROM usage_events
              WHERE tenant_id = l.tenant_id AND seq > l.from_seq AND seq <= l.barrier
              ORDER BY seq
              LIMIT :limit
           ) e
       ), deltas AS (
         SELECT tenant_id, period_start, metric, ${BATCH_AGGREGATES}
           FROM batch
          GROUP BY tenant_id, period_start, metric
       ), judged AS (
         -- Quiet: the current period, a metric the ledger listed, and its counter stays below the point.
         SELECT d.tenant_id, coalesce(
                  d.period_start = (l.points->>'period_start')::timestamptz
                  AND l.points->'meters'->d.metric IS NOT NULL
                  AND (l.points->'meters'->d.metric->>'below' IS NULL
                       OR ${counterAfterBatch('l.points')} < (l.points->'meters'->d.metric->>'below')::numeric),
                  false) AS quiet
           FROM deltas d
           JOIN locked l ON l.tenant_id = d.tenant_id
           LEFT JOIN period_counters c ON c.tenant_id = d.tenant_id AND c.period_start = d.period_start AND c.metric = d.metric
       ), quiet AS (
         SELECT l.tenant_id FROM locked l
          WHERE l.points IS NOT NULL AND NOT EXISTS (SELECT 1 FROM judged j WHERE j.tenant_id = l.tenant_id AND NOT j.quiet)
       ), reached AS (
         SELECT l.tenant_id, count(b.seq) AS claimed,
                CASE WHEN count(b.seq) >= :limit THEN max(b.seq) ELSE GREATEST(l.barrier, l.from_seq) END AS through,
                count(b.seq) >= :limit AND max(b.seq) < l.barrier AS more
           FROM locked l
           JOIN quiet q ON q.tenant_id = l.tenant_id
           LEFT JOIN batch b ON b.tenant_id = l.tenant_id
          GROUP BY l.tenant_id, l.barrier, l.from_seq
       ), applied AS (
         INSERT INTO period_counters AS c (tenant_id, period_start, metric, total, events, largest, latest, latest_at, latest_seq)
         SELECT d.tenant_id, d.period_start, d.metric, d.total, d.events, d.largest, d.latest, d.latest_at, d.latest_seq
           FROM deltas d JOIN quiet q ON q.tenant_id = d.tenant_id
         ${ADD_TO_COUNTERS}
       ), folded AS (
         DELETE FROM event_receipts r USING quiet q WHERE r.tenant_id = q.tenant_id RETURNING r.tenant_id, r.events
       ), totals AS (
         UPDATE tenant_event_totals t SET
           claimed_through_seq = r.through,
           stored = t.stored + coalesce((SELECT sum(f.events) FROM folded f WHERE f.tenant_id = t.tenant_id), 0),
           claimed = t.claimed + r.claimed,
           updated_at = now()
           FROM reached r
          WHERE t.tenant_id = r.tenant_id
       )
       SELECT b.tenant_id,
              CASE WHEN r.tenant_id IS NOT NULL THEN 'counted'
                   WHEN l.tenant_id IS NOT NULL THEN 'decides'
                   -- Not locked: a claim holds the row, or there is none (never claimed: its workflow claims first).
                   WHEN EXISTS (SELECT 1 FROM tenant_event_totals x WHERE x.tenant_id = b.tenant_id) THEN 'busy'
                   ELSE 'decides' END AS kind,
              coalesce(r.claimed, 0)::int AS counted, coalesce(r.more, false) AS more
         FROM barrier b LEFT JOIN locked l ON l.tenant_id = b.tenant_id LEFT JOIN reached r ON r.tenant_id = b.tenant_id`,
      {
        tenants: barriers.rows.map((b) => b.tenant_id),
        barriers: barriers.rows.map((b) => b.through),
        limit: perTenantLimit,
      },
    );
  });
  return rows.rows.map((r): BulkOutcome => (r.kind === 'counted' ? { tenant_id: r.tenant_id, kind: 'counted', counted: r.counted, more: r.more } : { tenant_id: r.tenant_id, kind: r.kind }));
}
