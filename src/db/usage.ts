import type { Knex } from 'knex';
import type { Db } from './knex';
import type { CountableEvent, RefusedEvent } from '../activities/types';
import type { Aggregation } from '../domain/plan';
import { claimUsage } from './ledger';
import { normalizeDecimal } from './numeric';

export { normalizeDecimal };

/** A claim with no size limit: the chunk writer counts all it stored at once. */
const CLAIM_EVERYTHING = 1_000_000_000;

/**
 * Stores one chunk of usage exactly once: events whose `(tenant, event id)` already exists are
 * ignored, the rest are tagged with the chunk id. Reading back by chunk id makes the answer the
 * same on every retry of the activity, whether or not the first attempt committed.
 */
export async function insertUsageChunk(
  trx: Knex.Transaction,
  tenantId: string,
  chunkId: string,
  events: CountableEvent[],
): Promise<Set<string>> {
  if (events.length > 0) {
    await trx.raw(
      `INSERT INTO usage_events (tenant_id, event_id, metric, quantity, "timestamp", period_start, properties, batch_id, received_at)
       SELECT ?, e.event_id, e.metric, e.quantity, e.ts, e.period_start, e.properties, ?, e.received_at
       FROM unnest(?::text[], ?::text[], ?::numeric[], ?::timestamptz[], ?::timestamptz[], ?::jsonb[], ?::timestamptz[])
         AS e(event_id, metric, quantity, ts, period_start, properties, received_at)
       ON CONFLICT (tenant_id, event_id) DO NOTHING`,
      // pg sends each JS array as one PostgreSQL array parameter, unnest()ed into rows.
      [
        tenantId,
        chunkId,
        events.map((e) => e.id),
        events.map((e) => e.metric),
        events.map((e) => String(e.quantity)),
        events.map((e) => e.timestamp),
        events.map((e) => e.period_start),
        events.map((e) => (e.properties === undefined ? null : JSON.stringify(e.properties))),
        events.map((e) => e.received_at),
      ] as unknown as Knex.RawBinding[],
    );
  }
  // The chunk's new events join the read model in the same transaction (src/db/ledger.ts).
  await claimUsage(trx, tenantId, chunkId, CLAIM_EVERYTHING);
  const rows = await trx('usage_events').where({ batch_id: chunkId }).select<Array<{ event_id: string }>>('event_id');
  return new Set(rows.map((r) => r.event_id));
}

/** Keeps acknowledged events that could not be counted, with the reason (never dropped silently). */
export async function insertRefusedEvents(trx: Knex.Transaction, tenantId: string, refused: RefusedEvent[]): Promise<void> {
  if (refused.length === 0) return;
  await trx('rejected_events')
    .insert(
      refused.map((r) => ({
        tenant_id: tenantId,
        event_id: r.event.id,
        reason: r.reason,
        event: JSON.stringify({ ...r.event, received_at: r.received_at }),
      })),
    )
    .onConflict(['tenant_id', 'event_id'])
    .ignore();
}

/**
 * The reference aggregation of a period from its stored events, in SQL on exact numerics:
 * invoices are rated from this, never from the workflow's counters.
 */
export async function aggregateStoredUsage(
  db: Db | Knex.Transaction,
  tenantId: string,
  periodStart: string | Date,
  meters: Array<{ metric: string; aggregation: Aggregation }>,
): Promise<Record<string, string>> {
  const rows = await db.raw<{ rows: Array<{ metric: string; total: string; events: string; largest: string; latest: string }> }>(
    `SELECT metric,
            sum(quantity)::text AS total,
            count(*)::text AS events,
            max(quantity)::text AS largest,
            (array_agg(quantity ORDER BY "timestamp" DESC, seq DESC))[1]::text AS latest
       FROM usage_events
      WHERE tenant_id = ? AND period_start = ?
      GROUP BY metric`,
    [tenantId, periodStart],
  );
  const byMetric = new Map(rows.rows.map((r) => [r.metric, r]));
  const counters: Record<string, string> = {};
  for (const meter of meters) {
    const row = byMetric.get(meter.metric);
    if (!row) {
      counters[meter.metric] = '0';
      continue;
    }
    const value = { sum: row.total, count: row.events, max: row.largest, latest: row.latest }[meter.aggregation];
    counters[meter.metric] = normalizeDecimal(value);
  }
  return counters;
}
