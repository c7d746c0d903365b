import type pg from 'pg';
import { sleep } from './lib';

/**
 * What the bench counts as "counted": the read model a client reads (`GET …/usage`), straight
 * from PostgreSQL. An acknowledged event is counted once no event of its tenant waits unclaimed
 * (`pending_events`, `countUnclaimedEvents` in src/db/ledger.ts) and `period_counters` holds it.
 * Every query names its tenants (`= ANY`), so it reads each tenant's events above its watermark
 * (`usage_events (tenant_id, seq)`) and the counters' primary key, never the whole events table:
 * a poll every 50 ms must not load PostgreSQL while the run it measures drains.
 */

/** Events of these tenants above their watermark: acknowledged, not counted yet, counted row by row. */
const WAITING = `SELECT t.tenant_id, (SELECT count(*) FROM usage_events e
                   WHERE e.tenant_id = t.tenant_id AND e.seq > coalesce(w.claimed_through_seq, 0))::int AS n
                   FROM unnest($1::text[]) AS t(tenant_id) LEFT JOIN tenant_event_totals w ON w.tenant_id = t.tenant_id`;

/** Events of these tenants acknowledged but not claimed yet (their `pending_events`, summed). */
export async function unclaimedEvents(db: pg.Pool, tenants: readonly string[]): Promise<number> {
  const { rows } = await db.query(`SELECT coalesce(sum(n), 0)::int AS n FROM (${WAITING}) waiting`, [tenants]);
  return rows[0].n;
}

/** Events of these tenants the read model has counted, over every period. */
export async function countedEvents(db: pg.Pool, tenants: readonly string[]): Promise<number> {
  const { rows } = await db.query(`SELECT coalesce(sum(events), 0)::bigint::text AS n FROM period_counters WHERE tenant_id = ANY($1::text[])`, [tenants]);
  return Number(rows[0].n);
}

/**
 * Waits until the read model counts `target` events for these tenants and none waits unclaimed;
 * resolves with the time it saw that. Timing out means acknowledged events were lost or never
 * counted: a bug, so it throws with the figures.
 */
export async function waitCounted(db: pg.Pool, tenants: readonly string[], target: number, timeoutMs = 300_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const counted = await countedEvents(db, tenants);
    if (counted >= target && (await unclaimedEvents(db, tenants)) === 0) return Date.now();
    if (Date.now() > deadline) {
      const pending = await unclaimedEvents(db, tenants);
      throw new Error(`after ${timeoutMs / 1000} s the read model counts ${counted} of ${target} acknowledged events; ${pending} wait unclaimed`);
    }
    await sleep(50);
  }
}

/** What the bench had acknowledged (202) for one tenant: the counters it expects. */
export interface Tally {
  events: number;
  quantity: number;
}

/**
 * Exactly once, per tenant: every acknowledged event stored once, claimed, and counted once in
 * `period_counters` with its quantity. Answers one line per tenant that disagrees (empty when
 * all agree), naming the figures, for the report.
 */
export async function countingProblems(db: pg.Pool, tenants: readonly string[], tally: ReadonlyMap<string, Tally>): Promise<string[]> {
  const { rows } = await db.query(
    `SELECT t.tenant_id,
            (SELECT count(*) FROM usage_events e WHERE e.tenant_id = t.tenant_id)::int AS stored,
            waiting.n AS unclaimed,
            (SELECT coalesce(sum(events), 0) FROM period_counters c WHERE c.tenant_id = t.tenant_id)::bigint::text AS counted,
            (SELECT coalesce(sum(total), 0) FROM period_counters c WHERE c.tenant_id = t.tenant_id)::text AS total
       FROM unnest($1::text[]) AS t(tenant_id) JOIN (${WAITING}) waiting ON waiting.tenant_id = t.tenant_id`,
    [tenants],
  );
  const problems: string[] = [];
  for (const r of rows) {
    const expected = tally.get(r.tenant_id) ?? { events: 0, quantity: 0 };
    const counted = Number(r.counted);
    if (r.stored !== expected.events || r.unclaimed !== 0 || counted !== expected.events || Number(r.total) !== expected.quantity) {
      problems.push(
        `${r.tenant_id}: acknowledged ${expected.events} events (quantity ${expected.quantity}), stored ${r.stored}, unclaimed ${r.unclaimed}, ` +
          `counted ${counted} (quantity ${r.total}) in period_counters`,
      );
    }
  }
  return problems;
}
