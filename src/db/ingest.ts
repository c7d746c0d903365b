import type { Knex } from 'knex';
import type { Db } from './knex';
import { findPlanVersion } from './plans';
import { DECISIONS_WAITING_CHANNEL, counterAfterBatch } from './bulk-counting';
import { PlacementContexts, type PlacementContext } from './placement-contexts';
import { periodAfterEarlyClose } from '../domain/periods';
import { placeEvent, type Placement } from '../domain/placement';
import { findMeter, type Interval, type PlanVersion } from '../domain/plan';

/**
 * The ingest side of the event ledger (docs/design/core-v2.md): usage is placed in its periods,
 * then stored by one statement that first checks, under the tenant's ledger lock, that the
 * tenant is still as it was placed against. So a close, a cancellation or a finalization (which
 * take the lock exclusively) never interleaves with a batch being placed and stored. A committed
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
 * and future events; events without a timestamp are stamped as good as when the lock is held
 * (see `placeBatch`), so an event sent right after a close lands in the new period rather than
 * being refused as late.
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

/** SQLSTATEs of `ledger_ingest_check` (migration 20261231000000): a context changed, a backlog grew. */
const STALE_CONTEXT = 'TL001';
const BACKLOG_GREW = 'TL002';

/**
 * Stores that find a context stale place their batches again, this many times at most. Each
 * stale attempt means the tenant changed between two statements some milliseconds apart (a
 * close, a rollover, a finalization), which happens a few times per period.
 */
const MAX_PLACEMENTS = 5;

/**
 * A store found its tenants changing at each of its `MAX_PLACEMENTS` attempts (or a backlog
 * growing under each check) and stored nothing. Nothing is wrong with the request: the client
 * retries it (the API answers 503 with Retry-After).
 */
export class PlacementKeptChanging extends Error {
  constructor(readonly tenants: readonly string[]) {
    super(`the placement of ${tenants.join(', ')} changed at each of ${MAX_PLACEMENTS} attempts; nothing was stored`);
    this.name = 'PlacementKeptChanging';
  }
}

/**
 * Stores several requests in one statement when every tenant's placement context is kept
 * (`PlacementContexts`), and in two otherwise (the contexts are read first). The events are
 * placed in memory; then one statement takes every named tenant's ledger lock shared, in id
 * order (so statements never deadlock), checks that each context is still the one placed
 * against (`ledger_ingest_check`, migration 20261231000000), and inserts every storable request's
 * events with a receipt per tenant, all in its own transaction. When a context changed meanwhile
 * the statement stores nothing, and the batches are placed again against contexts read afresh.
 *
 * Each request is judged on its own: one refused or backlogged request stores nothing of itself
 * and changes nothing for the others. An event refused in one request is a resend (not refused)
 * when it is stored already, or placed by a request of the same statement that is stored for
 * certain (one with no refusal at all). A backlog is judged on the tenant's pending events as the
 * last store's check read them under the lock, read afresh before it refuses anything, and checked
 * again under the lock before anything is stored.
 */
export async function storeUsageRequests(
  db: Db,
  requests: readonly IngestRequest[],
  options: { maxPending?: number; contexts?: PlacementContexts } = {},
): Promise<RequestOutcome[]> {
  const maxPending = options.maxPending ?? 0;
  const kept = options.contexts ?? new PlacementContexts();
  const tenants = [...new Set(requests.flatMap((r) => [...r.batches.keys()]))].sort();
  for (let attempt = 1; ; attempt += 1) {
    const contexts = await kept.read(db, tenants, (context) => maxPending > 0 && context.pending > maxPending);
    const placedAt = new Date();
    const judged = await Promise.all(requests.map((request) => judgeRequest(db, request, contexts, maxPending, placedAt)));
    await forgiveResends(db, judged);
    const storable = judged.filter((j) => !j.backlogged && [...j.batches.values()].every((b) => b.kind === 'placed' && b.refusals.length === 0));
    try {
      const { inserted, pending } = await insertEvents(
        db,
        storable.flatMap((j) => [...j.batches].flatMap(([tenantId, b]) => (b.kind === 'placed' ? [{ tenantId, batchId: j.request.batchId, receivedAt: j.request.receivedAt, events: b.placed }] : []))),
        {
          tenants,
          versions: tenants.map((t) => contexts.get(t)?.version ?? null),
          storing: [...new Set(storable.flatMap((j) => [...j.batches.keys()]))],
          maxPending,
        },
      );
      for (const [tenantId, count] of pending) kept.notePending(tenantId, count);
      return outcomesOf(judged, storable, inserted);
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      if (code !== STALE_CONTEXT && code !== BACKLOG_GREW) throw err;
      if (attempt >= MAX_PLACEMENTS) throw new PlacementKeptChanging(tenants);
      kept.forget(tenants);
    }
  }
}

/** Places one request's batches, or finds a tenant it names backlogged. */
async function judgeRequest(db: Db, request: IngestRequest, contexts: ReadonlyMap<string, PlacementContext>, maxPending: number, placedAt: Date): Promise<JudgedRequest> {
  const backlogged = maxPending > 0 ? [...request.batches.keys()].find((t) => (contexts.get(t)?.pending ?? 0) > maxPending) : undefined;
  if (backlogged !== undefined) return { request, backlogged: { tenantId: backlogged, pending: contexts.get(backlogged)!.pending }, batches: new Map() };
  const batches = new Map<string, JudgedBatch>();
  for (const tenantId of [...request.batches.keys()].sort()) {
    batches.set(tenantId, await placeBatch(db, contexts.get(tenantId), request.batches.get(tenantId)!, request.receivedAt, placedAt));
  }
  return { request, batches };
}

/** Each request's outcomes, from the rows the statement stored. */
function outcomesOf(judged: readonly JudgedRequest[], storable: readonly JudgedRequest[], inserted: readonly StoredRow[]): RequestOutcome[] {
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
}

/** One tenant's batch of a request, placed: its events ready to store, and those refused. */
type JudgedBatch = { kind: 'no_tenant' } | { kind: 'placed'; received: number; placed: PlacedEvent[]; refusals: EventRefusal[]; events: IncomingEvent[] };

interface JudgedRequest {
  request: IngestRequest;
  backlogged?: { tenantId: string; pending: number };
  batches: Map<string, JudgedBatch>;
}

/**
 * Places each event of one tenant's batch in its period, or refuses it (nothing is stored here).
 * Events without a timestamp are stamped `placedAt`: the store's check under the ledger lock
 * makes that as good as a stamp taken under the lock, since a close in between makes the store
 * stale and the batch is placed again, with a new stamp.
 */
async function placeBatch(db: Db, context: PlacementContext | undefined, events: IncomingEvent[], receivedAt: Date, placedAt: Date): Promise<JudgedBatch> {
  if (!context) return { kind: 'no_tenant' };
  const { tenant, periods } = context;
  // The plan of periods not opened yet: read only when an event lands past the open period.
  const open = periods.find((p) => p.status === 'open');
  const latest = Math.max(placedAt.getTime(), ...events.map((e) => (e.timestamp === null ? 0 : Date.parse(e.timestamp))));
  const nextPlan = open && latest >= Date.parse(open.end) ? await findPlanVersion(db, tenant.plan_id) : undefined;
  const following = (end: string) =>
    periodAfterEarlyClose(tenant.billing_anchor.toISOString(), (nextPlan?.interval ?? 'month') as Interval, tenant.timezone, end);

  const stamp = placedAt.toISOString();
  const received = receivedAt.getTime();
  const placements = events.map((event): Placement => {
    const timestamp = event.timestamp ?? stamp;
    return placeEvent(Date.parse(timestamp), event.timestamp === null ? placedAt.getTime() : received, periods, following);
  });
  // Each period's plan version, looked up once per batch rather than once per event.
  const plans = new Map<string, PlanVersion | undefined>();
  for (const placement of placements) {
    if (placement.kind !== 'counted' || plans.has(placement.period_start)) continue;
    const period = periods.find((p) => p.start === placement.period_start);
    plans.set(placement.period_start, period ? await findPlanVersion(db, period.plan_id, period.plan_version) : nextPlan);
  }

  const refusals: EventRefusal[] = [];
  const placed: PlacedEvent[] = [];
  for (const [index, event] of events.entries()) {
    const placement = placements[index]!;
    if (placement.kind === 'refused') {
      refusals.push({ index, field: placement.code === 'subscription_cancelled' ? 'tenant_id' : 'timestamp', code: placement.code, message: placement.message });
      continue;
    }
    const plan = plans.get(placement.period_start);
    if (!plan || !findMeter(plan, event.metric)) {
      refusals.push({ index, field: 'metric', code: 'unknown_metric', message: `metric ${event.metric} is not in plan ${plan?.id ?? tenant.plan_id}` });
      continue;
    }
    placed.push({ ...event, timestamp: event.timestamp ?? stamp, period_start: placement.period_start });
  }
  return { kind: 'placed', received: events.length, placed, refusals, events };
}

/**
 * An event stored before is a resend, never an error, wherever its period stands now: drops the
 * refusals of events already stored, or placed by a request of this statement that has no
 * refusal at all (so it is stored for certain), in one query for the whole group. Stored events
 * stay stored, so this needs no lock.
 */
async function forgiveResends(db: Db, judged: readonly JudgedRequest[]): Promise<void> {
  const refused = judged.flatMap((j) => [...j.batches].flatMap(([tenantId, b]) => (b.kind === 'placed' ? b.refusals.map((r) => ({ tenantId, id: b.events[r.index]!.id })) : [])));
  if (refused.length === 0) return;
  const key = (tenantId: string, id: string) => JSON.stringify([tenantId, id]);
  const known = new Set<string>();
  for (const j of judged) {
    const certain = !j.backlogged && [...j.batches.values()].every((b) => b.kind === 'placed' && b.refusals.length === 0);
    if (!certain) continue;
    for (const [tenantId, b] of j.batches) if (b.kind === 'placed') for (const e of b.placed) known.add(key(tenantId, e.id));
  }
  const stored = await db.raw<{ rows: Array<{ tenant_id: string; event_id: string }> }>(
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
  const { inserted } = await insertEvents(db, [{ tenantId, batchId, receivedAt, events: placed }], NO_CHECK);
  return inserted.map((r) => BigInt(r.seq));
}

/** One tenant's placed events of one request. */
interface PlacedBatch {
  tenantId: string;
  batchId: string;
  receivedAt: Date;
  events: readonly PlacedEvent[];
}

/**
 * What the storing statement checks under each tenant's ledger lock first (`ledger_ingest_check`,
 * migration 20261231000000): that each tenant's placement version is still the one in `versions`
 * (null: no such tenant), and that no tenant in `storing` has more than `maxPending` events waiting (0: no limit).
 */
interface PlacementCheck {
  tenants: readonly string[];
  versions: ReadonlyArray<string | null>;
  storing: readonly string[];
  maxPending: number;
}

const NO_CHECK: PlacementCheck = { tenants: [], versions: [], storing: [], maxPending: 0 };

/** A stored event: its tenant, request and id, with its receive-order number. */
interface StoredRow {
  tenant_id: string;
  batch_id: string;
  event_id: string;
  seq: string;
}

/**
 * Checks the placement (see {@link PlacementCheck}), then stores placed events of any tenants
 * and requests, in one statement and so one transaction, with one receipt per tenant that
 * stored any. A check that fails raises (SQLSTATE `TL001` or `TL002`) and nothing is stored.
 * Answers the stored rows, and the pending events the check read of each tenant when there is a
 * limit.
 *
 * When the events stored for a tenant take one of its meters to the decision point its workflow
 * published (src/db/bulk-counting.ts), the statement notifies the counter with the tenant and
 * its receipt, which PostgreSQL delivers when the transaction commits. The judgement leaves out
 * events stored before and not counted yet: a point they help reach is found by the counter's
 * next tick.
 */
async function insertEvents(db: Db | Knex.Transaction, batches: readonly PlacedBatch[], check: PlacementCheck): Promise<{ inserted: StoredRow[]; pending: Map<string, number> }> {
  const columns = { tenants: [] as string[], ids: [] as string[], metrics: [] as string[], quantities: [] as string[], timestamps: [] as string[] };
  const more = { periods: [] as string[], properties: [] as Array<string | null>, batches: [] as string[], received: [] as string[] };
  for (const batch of batches) {
    const received = batch.receivedAt.toISOString();
    for (const e of batch.events) {
      columns.tenants.push(batch.tenantId);
      columns.ids.push(e.id);
      columns.metrics.push(e.metric);
      columns.quantities.push(e.quantity);
      columns.timestamps.push(e.timestamp);
      more.periods.push(e.period_start);
      more.properties.push(e.properties === undefined ? null : JSON.stringify(e.properties));
      more.batches.push(batch.batchId);
      more.received.push(received);
    }
  }
  if (columns.ids.length === 0 && check.tenants.length === 0) return { inserted: [], pending: new Map() };
  const result = await db.raw<{ rows: Array<StoredRow & { pending: string | null }> }>(
    `WITH checked AS (
       SELECT * FROM ledger_ingest_check(:checkTenants::text[], :versions::bigint[], :storing::text[], :maxPending::bigint)
     ), stored AS (
       INSERT INTO usage_events (tenant_id, event_id, metric, quantity, "timestamp", period_start, properties, batch_id, received_at)
       SELECT e.tenant_id, e.event_id, e.metric, e.quantity, e.ts, e.period_start, e.properties, e.batch_id, e.received_at
         FROM unnest(:tenants::text[], :ids::text[], :metrics::text[], :quantities::numeric[], :timestamps::timestamptz[], :periods::timestamptz[],
                     :properties::jsonb[], :batches::text[], :received::timestamptz[])
           AS e(tenant_id, event_id, metric, quantity, ts, period_start, properties, batch_id, received_at)
        -- A condition on no row is a one-time filter, evaluated before the first row: the check,
        -- with its locks, comes before any insert.
        WHERE (SELECT count(*) FROM checked) >= 0
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
     SELECT tenant_id, batch_id, event_id, seq::text, NULL::bigint AS pending FROM stored CROSS JOIN notified
     UNION ALL
     -- checked is read, so the check runs even when nothing is to be stored.
     SELECT tenant_id, NULL, NULL, NULL, pending FROM checked`,
    // pg sends each JS array as one PostgreSQL array parameter, unnest()ed into rows.
    {
      ...columns,
      ...more,
      checkTenants: check.tenants,
      versions: check.versions,
      storing: check.storing,
      maxPending: check.maxPending,
    } as unknown as Knex.ValueDict,
    // A named statement: each connection parses it once and PostgreSQL keeps its plan, where an
    // unnamed one is parsed and planned again for every statement (a quarter of its time in
    // the fleet's profile). With PgBouncer in transaction mode, set `max_prepared_statements`.
  ).options({ name: 'tally_store_checked_events' });
  const inserted: StoredRow[] = [];
  const pending = new Map<string, number>();
  for (const row of result.rows) {
    if (row.event_id !== null) inserted.push(row);
    else if (row.pending !== null) pending.set(row.tenant_id, Number(row.pending));
  }
  return { inserted, pending };
}
