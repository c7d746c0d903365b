import type { Knex } from 'knex';
import type { Db } from './knex';
import { findPlanVersion } from './plans';
import { DECISIONS_WAITING_CHANNEL, counterAfterBatch } from './bulk-counting';
import type { PeriodBounds } from './invoices';
import { periodAfterEarlyClose } from '../domain/periods';
import { placeEvent, type Placement, type StoredPeriod } from '../domain/placement';
import { findMeter, type Interval, type PlanVersion } from '../domain/plan';

/**
 * The ingest side of the event ledger (docs/design/core-v2.md): usage is judged and stored in
 * one transaction under the tenant's ledger lock, so a close, a cancellation or a finalization
 * (which take the lock exclusively) never interleaves with a batch being placed. A committed
 * batch is durable and will be counted; nothing else about it can fail later.
 */

/** Advisory-lock class of the tenant ledger lock (the tenant id's hash is the second key); `ledger_stored_through` (migration 20261225000000) takes it too. */
const LEDGER_LOCK_CLASS = 0x7a11;

/** Takes the tenant's ledger lock for this transaction: shared for ingest, exclusive for closing. */
export async function lockTenantLedger(trx: Knex.Transaction, tenantId: string, mode: 'shared' | 'exclusive'): Promise<void> {
  const fn = mode === 'shared' ? 'pg_advisory_xact_lock_shared' : 'pg_advisory_xact_lock';
  await trx.raw(`SELECT ${fn}(?, hashtext(?))`, [LEDGER_LOCK_CLASS, tenantId]);
}

/** One event as the API validated it; `timestamp` null means "when it is stored". */
export interface IncomingEvent {
  id: string;
  metric: string;
  quantity: string;
  timestamp: string | null;
  properties?: Record<string, unknown>;
}

/** Why one event of a batch cannot be stored; the batch is then stored not at all. */
export interface EventRefusal {
  index: number;
  field: 'timestamp' | 'metric' | 'tenant_id';
  code: 'future_event' | 'late_event' | 'subscription_cancelled' | 'unknown_metric';
  message: string;
}

/** What storing a batch did. */
export type StoreOutcome =
  | { kind: 'stored'; received: number; stored: number; highest_seq: string | null }
  | { kind: 'refused'; refusals: EventRefusal[] }
  | { kind: 'no_tenant' };

/**
 * Places and stores one tenant's batch, all or nothing. Events already stored (same id) are
 * not stored again and not refused: resending is how clients retry. `receivedAt` judges late
 * and future events; events without a timestamp are stamped when the lock is held, so an
 * event sent right after a close lands in the new period rather than being refused as late.
 */
export async function storeUsage(db: Db, tenantId: string, events: IncomingEvent[], receivedAt: Date, batchId: string): Promise<StoreOutcome> {
  const [result] = await storeUsageRequests(db, [{ batches: new Map([[tenantId, events]]), receivedAt, batchId }]);
  return (result as Extract<RequestOutcome, { kind: 'judged' }>).outcomes.get(tenantId)!;
}

/** One ingest request: its batches, one per tenant, stored all or nothing. */
export interface IngestRequest {
  batches: ReadonlyMap<string, IncomingEvent[]>;
  receivedAt: Date;
  /** Stored with its events: the request id, which a client may repeat (outcomes never rely on it alone). */
  batchId: string;
}

/**
 * What became of one request. `judged`: each tenant's outcome; the request was stored only if
 * every one is `stored` (otherwise nothing of it was, and `stored` outcomes count 0).
 * `backlogged`: a tenant had more than `maxPending` events waiting to be counted; nothing stored.
 */
export type RequestOutcome = { kind: 'judged'; outcomes: Map<string, StoreOutcome> } | { kind: 'backlogged'; tenantId: string; pending: number };

/**
 * Stores several requests in one transaction and a few round trips, whatever their number:
 * one statement locks every tenant named (shared, in id order, so transactions never deadlock)
 * and reads their periods and backlogs (`ledger_ingest_context`, migration 20261227000000); the
 * events are placed in memory; one statement inserts every storable request's events with a
 * receipt per tenant. Each request is judged on its own: one refused or backlogged request
 * stores nothing of itself and changes nothing for the others. An event refused in one request
 * is a resend (not refused) when it is stored already, or placed by a request of the same
 * transaction that is stored for certain (one with no refusal at all).
 */
export async function storeUsageRequests(db: Db, requests: readonly IngestRequest[], options: { maxPending?: number } = {}): Promise<RequestOutcome[]> {
  const maxPending = options.maxPending ?? 0;
  return db.transaction(async (trx) => {
    const tenants = [...new Set(requests.flatMap((r) => [...r.batches.keys()]))].sort();
    const found = await trx.raw<{ rows: ContextRow[] }>('SELECT * FROM ledger_ingest_context(?::text[])', [tenants]);
    const contexts = contextsOf(found.rows);
    const lockedAt = new Date();

    const judged = await Promise.all(
      requests.map(async (request): Promise<JudgedRequest> => {
        const backlogged = maxPending > 0 ? [...request.batches.keys()].find((t) => (contexts.get(t)?.pending ?? 0) > maxPending) : undefined;
        if (backlogged !== undefined) return { request, backlogged: { tenantId: backlogged, pending: contexts.get(backlogged)!.pending }, batches: new Map() };
        const batches = new Map<string, JudgedBatch>();
        for (const tenantId of [...request.batches.keys()].sort()) {
          batches.set(tenantId, await placeBatch(trx, contexts.get(tenantId), request.batches.get(tenantId)!, request.receivedAt, lockedAt));
        }
        return { request, batches };
      }),
    );
    await forgiveResends(trx, judged);

    const storable = judged.filter((j) => !j.backlogged && [...j.batches.values()].every((b) => b.kind === 'placed' && b.refusals.length === 0));
    const inserted = await insertEvents(
      trx,
      storable.flatMap((j) => [...j.batches].flatMap(([tenantId, b]) => (b.kind === 'placed' ? b.placed.map((e) => ({ ...e, tenant_id: tenantId, batch_id: j.request.batchId, received_at: j.request.receivedAt })) : []))),
    );
    // Each stored row to the first request that placed it (batch ids come from request ids, which
    // a client may repeat; the event id tells them apart, and a row two requests placed is one).
    // NUL separates the parts: no id holds one (the API refuses NUL in a body, body-guard.ts).
    const key = (tenantId: string, batchId: string, eventId: string) => `${tenantId}\u0000${batchId}\u0000${eventId}`;
    const placedBy = new Map<string, JudgedRequest>();
    for (const j of storable) {
      for (const [tenantId, b] of j.batches) {
        if (b.kind !== 'placed') continue;
        for (const e of b.placed) {
          const k = key(tenantId, j.request.batchId, e.id);
          if (!placedBy.has(k)) placedBy.set(k, j);
        }
      }
    }
    const storedBy = new Map<JudgedRequest, Map<string, { stored: number; highest: bigint }>>();
    for (const row of inserted) {
      const j = placedBy.get(key(row.tenant_id, row.batch_id, row.event_id));
      if (!j) continue;
      const ofRequest = storedBy.get(j) ?? storedBy.set(j, new Map()).get(j)!;
      const seq = BigInt(row.seq);
      const sofar = ofRequest.get(row.tenant_id);
      if (!sofar) ofRequest.set(row.tenant_id, { stored: 1, highest: seq });
      else {
        sofar.stored += 1;
        if (seq > sofar.highest) sofar.highest = seq;
      }
    }
    return judged.map((j): RequestOutcome => {
      if (j.backlogged) return { kind: 'backlogged', ...j.backlogged };
      const outcomes = new Map<string, StoreOutcome>();
      for (const [tenantId, b] of j.batches) {
        if (b.kind === 'no_tenant') outcomes.set(tenantId, { kind: 'no_tenant' });
        else if (b.refusals.length > 0) outcomes.set(tenantId, { kind: 'refused', refusals: b.refusals });
        else {
          const stored = storedBy.get(j)?.get(tenantId);
          outcomes.set(tenantId, { kind: 'stored', received: b.received, stored: stored?.stored ?? 0, highest_seq: stored ? stored.highest.toString() : null });
        }
      }
      return { kind: 'judged', outcomes };
    });
  });
}

/** A row of `ledger_ingest_context`: the tenant joined with one of its periods (null period columns: none). */
type ContextRow = { tenant_id: string; tenant_plan_id: string; billing_anchor: Date; timezone: string; pending: string } & {
  [K in keyof PeriodBounds]: PeriodBounds[K] | null;
};

/** What placing needs of a tenant, read under its ledger lock. */
interface TenantContext {
  tenant: { plan_id: string; billing_anchor: Date; timezone: string };
  rows: PeriodBounds[];
  periods: StoredPeriod[];
  pending: number;
}

function contextsOf(rows: readonly ContextRow[]): Map<string, TenantContext> {
  const contexts = new Map<string, TenantContext>();
  for (const row of rows) {
    let context = contexts.get(row.tenant_id);
    if (!context) {
      context = { tenant: { plan_id: row.tenant_plan_id, billing_anchor: row.billing_anchor, timezone: row.timezone }, rows: [], periods: [], pending: Number(row.pending) };
      contexts.set(row.tenant_id, context);
    }
    if (row.start === null) continue;
    const bounds = row as ContextRow & PeriodBounds;
    context.rows.push(bounds);
    context.periods.push({ start: bounds.start.toISOString(), end: bounds.end.toISOString(), status: bounds.status, grace_ends_at: bounds.grace_ends_at?.toISOString() ?? null });
  }
  return contexts;
}

/** One tenant's batch of a request, placed: its events ready to store, and those refused. */
type JudgedBatch = { kind: 'no_tenant' } | { kind: 'placed'; received: number; placed: PlacedEvent[]; refusals: EventRefusal[]; events: IncomingEvent[] };

interface JudgedRequest {
  request: IngestRequest;
  backlogged?: { tenantId: string; pending: number };
  batches: Map<string, JudgedBatch>;
}

/** Places each event of one tenant's batch in its period, or refuses it (nothing is stored here). */
async function placeBatch(trx: Knex.Transaction, context: TenantContext | undefined, events: IncomingEvent[], receivedAt: Date, lockedAt: Date): Promise<JudgedBatch> {
  if (!context) return { kind: 'no_tenant' };
  const { tenant, rows, periods } = context;
  // The plan of periods not opened yet: read only when an event lands past the open period.
  const open = rows.find((r) => r.status === 'open');
  const latest = Math.max(lockedAt.getTime(), ...events.map((e) => (e.timestamp === null ? 0 : Date.parse(e.timestamp))));
  const nextPlan = open && latest >= open.end.getTime() ? await findPlanVersion(trx, tenant.plan_id) : undefined;
  const following = (end: string) =>
    periodAfterEarlyClose(tenant.billing_anchor.toISOString(), (nextPlan?.interval ?? 'month') as Interval, tenant.timezone, end);

  // Each period's plan version, looked up once per batch rather than once per event.
  const plans = new Map<string, Promise<PlanVersion | undefined>>();
  const planOf = (periodStart: string) => {
    let plan = plans.get(periodStart);
    if (!plan) {
      const row = rows.find((r) => r.start.toISOString() === periodStart);
      plan = row ? findPlanVersion(trx, row.plan_id, row.plan_version) : Promise.resolve(nextPlan);
      plans.set(periodStart, plan);
    }
    return plan;
  };
  const received = receivedAt.getTime();
  const refusals: EventRefusal[] = [];
  const placed: PlacedEvent[] = [];
  for (const [index, event] of events.entries()) {
    const timestamp = event.timestamp ?? lockedAt.toISOString();
    const placement: Placement = placeEvent(Date.parse(timestamp), event.timestamp === null ? lockedAt.getTime() : received, periods, following);
    if (placement.kind === 'refused') {
      refusals.push({ index, field: placement.code === 'subscription_cancelled' ? 'tenant_id' : 'timestamp', code: placement.code, message: placement.message });
      continue;
    }
    const plan = await planOf(placement.period_start);
    if (!plan || !findMeter(plan, event.metric)) {
      refusals.push({ index, field: 'metric', code: 'unknown_metric', message: `metric ${event.metric} is not in plan ${plan?.id ?? tenant.plan_id}` });
      continue;
    }
    placed.push({ ...event, timestamp, period_start: placement.period_start });
  }
  return { kind: 'placed', received: events.length, placed, refusals, events };
}

/**
 * An event stored before is a resend, never an error, wherever its period stands now: drops the
 * refusals of events already stored, or placed by a request of this transaction that has no
 * refusal at all (so it is stored for certain), in one query for the whole transaction.
 */
async function forgiveResends(trx: Knex.Transaction, judged: readonly JudgedRequest[]): Promise<void> {
  const refused = judged.flatMap((j) => [...j.batches].flatMap(([tenantId, b]) => (b.kind === 'placed' ? b.refusals.map((r) => ({ tenantId, id: b.events[r.index]!.id })) : [])));
  if (refused.length === 0) return;
  const key = (tenantId: string, id: string) => JSON.stringify([tenantId, id]);
  const known = new Set<string>();
  for (const j of judged) {
    const certain = !j.backlogged && [...j.batches.values()].every((b) => b.kind === 'placed' && b.refusals.length === 0);
    if (!certain) continue;
    for (const [tenantId, b] of j.batches) if (b.kind === 'placed') for (const e of b.placed) known.add(key(tenantId, e.id));
  }
  const stored = await trx.raw<{ rows: Array<{ tenant_id: string; event_id: string }> }>(
    `SELECT e.tenant_id, e.event_id FROM usage_events e
       JOIN unnest(?::text[], ?::text[]) AS r(tenant_id, event_id) ON e.tenant_id = r.tenant_id AND e.event_id = r.event_id`,
    [refused.map((r) => r.tenantId), refused.map((r) => r.id)],
  );
  for (const row of stored.rows) known.add(key(row.tenant_id, row.event_id));
  for (const j of judged) {
    for (const [tenantId, b] of j.batches) {
      if (b.kind === 'placed' && b.refusals.length > 0) b.refusals = b.refusals.filter((r) => !known.has(key(tenantId, b.events[r.index]!.id)));
    }
  }
}

/** An event placed in its period, ready to store. */
export interface PlacedEvent {
  id: string;
  metric: string;
  quantity: string;
  timestamp: string;
  period_start: string;
  properties?: Record<string, unknown>;
}

/**
 * Stores placed events not stored before (same id: skipped) with one receipt saying how many
 * were, for `pending_events` (`countUnclaimedEvents`): the events wait for a claim. Answers the
 * stored events' receive-order numbers.
 */
export async function insertPlacedEvents(db: Db | Knex.Transaction, tenantId: string, placed: PlacedEvent[], batchId: string, receivedAt: Date): Promise<bigint[]> {
  const inserted = await insertEvents(db, placed.map((e) => ({ ...e, tenant_id: tenantId, batch_id: batchId, received_at: receivedAt })));
  return inserted.map((r) => BigInt(r.seq));
}

/**
 * Placed events of any tenants and requests, in one statement, with one receipt per tenant that
 * stored any. When the events stored for a tenant take one of its meters to the decision point
 * its workflow published (src/db/bulk-counting.ts), the statement notifies the counter with the
 * tenant and its receipt, which PostgreSQL delivers when the transaction commits. The judgement
 * leaves out events stored before and not counted yet: a point they help reach is found by the
 * counter's next tick.
 */
async function insertEvents(
  db: Db | Knex.Transaction,
  rows: ReadonlyArray<PlacedEvent & { tenant_id: string; batch_id: string; received_at: Date }>,
): Promise<Array<{ tenant_id: string; batch_id: string; event_id: string; seq: string }>> {
  if (rows.length === 0) return [];
  const inserted = await db.raw<{ rows: Array<{ tenant_id: string; batch_id: string; event_id: string; seq: string }> }>(
    `WITH stored AS (
       INSERT INTO usage_events (tenant_id, event_id, metric, quantity, "timestamp", period_start, properties, batch_id, received_at)
       SELECT e.tenant_id, e.event_id, e.metric, e.quantity, e.ts, e.period_start, e.properties, e.batch_id, e.received_at
         FROM unnest(:tenants::text[], :ids::text[], :metrics::text[], :quantities::numeric[], :timestamps::timestamptz[], :periods::timestamptz[],
                     :properties::jsonb[], :batches::text[], :received::timestamptz[])
           AS e(tenant_id, event_id, metric, quantity, ts, period_start, properties, batch_id, received_at)
       ON CONFLICT (tenant_id, event_id) DO NOTHING
       RETURNING tenant_id, batch_id, event_id, seq, period_start, metric, quantity
     ), receipt AS (
       INSERT INTO event_receipts (tenant_id, events) SELECT tenant_id, count(*) FROM stored GROUP BY tenant_id
       RETURNING tenant_id, id
     ), d AS (
       SELECT tenant_id, period_start, metric, sum(quantity) AS total, count(*) AS events, max(quantity) AS largest
         FROM stored GROUP BY tenant_id, period_start, metric
     ), reaching AS (
       SELECT DISTINCT d.tenant_id FROM d
        CROSS JOIN LATERAL (SELECT decision_points FROM tenant_event_totals WHERE tenant_id = d.tenant_id) x
         LEFT JOIN LATERAL (SELECT total, events, largest, latest FROM period_counters
                             WHERE tenant_id = d.tenant_id AND period_start = d.period_start AND metric = d.metric) c ON true
        WHERE d.period_start = (x.decision_points->>'period_start')::timestamptz
          AND x.decision_points->'meters'->d.metric->>'below' IS NOT NULL
          AND ${counterAfterBatch('x.decision_points')} >= (x.decision_points->'meters'->d.metric->>'below')::numeric
     ), notified AS (
       SELECT count(pg_notify('${DECISIONS_WAITING_CHANNEL}', json_build_object('tenant_id', r.tenant_id, 'receipt', r.id::text)::text)) AS n
         FROM reaching JOIN receipt r USING (tenant_id)
     )
     -- notified is read, so it runs: a CTE that only selects runs when something reads it.
     SELECT tenant_id, batch_id, event_id, seq::text FROM stored CROSS JOIN notified`,
    // pg sends each JS array as one PostgreSQL array parameter, unnest()ed into rows.
    {
      tenants: rows.map((e) => e.tenant_id),
      ids: rows.map((e) => e.id),
      metrics: rows.map((e) => e.metric),
      quantities: rows.map((e) => e.quantity),
      timestamps: rows.map((e) => e.timestamp),
      periods: rows.map((e) => e.period_start),
      properties: rows.map((e) => (e.properties === undefined ? null : JSON.stringify(e.properties))),
      batches: rows.map((e) => e.batch_id),
      received: rows.map((e) => e.received_at.toISOString()),
    } as unknown as Knex.ValueDict,
    // A named statement: each connection parses it once and PostgreSQL keeps its plan, where an
    // unnamed one is parsed and planned again for every transaction (a quarter of its time in
    // the fleet's profile). With PgBouncer in transaction mode, set `max_prepared_statements`.
  ).options({ name: 'tally_store_events' });
  return inserted.rows;
}
