import type { Knex } from 'knex';
import type { Db } from './knex';
import { cachedPlanVersion, findPlanVersion } from './plans';
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
  const outcomes = await storeUsageBatches(db, new Map([[tenantId, events]]), receivedAt, batchId);
  return outcomes.get(tenantId)!;
}

/**
 * Stores one request's batches, one per tenant, in a single transaction: every tenant's events
 * are stored, or (when any tenant's batch is refused) none are. Tenants are locked in id order,
 * so two requests naming the same tenants cannot deadlock on each other.
 */
export async function storeUsageBatches(
  db: Db,
  batches: ReadonlyMap<string, IncomingEvent[]>,
  receivedAt: Date,
  batchId: string,
): Promise<Map<string, StoreOutcome>> {
  const outcomes = new Map<string, StoreOutcome>();
  try {
    await db.transaction(async (trx) => {
      for (const tenantId of [...batches.keys()].sort()) outcomes.set(tenantId, await placeAndStore(trx, tenantId, batches.get(tenantId)!, receivedAt, batchId));
      if ([...outcomes.values()].some((o) => o.kind !== 'stored')) throw ROLL_BACK;
    });
  } catch (err) {
    if (err !== ROLL_BACK) throw err;
  }
  return outcomes;
}

/** Thrown to roll a request's transaction back once one of its batches was refused. */
const ROLL_BACK = new Error('a batch of the request was refused');

/** The tenant joined with one of its periods (null period columns: it has none to show). */
type TenantPeriodRow = { tenant_plan_id: string; billing_anchor: Date; timezone: string } & { [K in keyof PeriodBounds]: PeriodBounds[K] | null };

async function placeAndStore(trx: Knex.Transaction, tenantId: string, events: IncomingEvent[], receivedAt: Date, batchId: string): Promise<StoreOutcome> {
  await lockTenantLedger(trx, tenantId, 'shared');
  // The tenant, with the periods that take events (open, or closed within grace) and the latest
  // invoiced ones so a late event can be told which period refused it: one query, read after the
  // lock is granted (so after any close that held it).
  const found = await trx.raw<{ rows: Array<TenantPeriodRow> }>(
    `SELECT t.plan_id AS tenant_plan_id, t.billing_anchor, t.timezone, p.start, p."end", p.status, p.grace_ends_at, p.plan_id, p.plan_version
       FROM tenants t
       LEFT JOIN LATERAL (
         (SELECT start, "end", status, grace_ends_at, plan_id, plan_version FROM periods WHERE tenant_id = t.id AND status <> 'invoiced')
         UNION ALL
         (SELECT start, "end", status, grace_ends_at, plan_id, plan_version FROM periods WHERE tenant_id = t.id AND status = 'invoiced' ORDER BY start DESC LIMIT 3)
       ) p ON true
      WHERE t.id = ?`,
    [tenantId],
  );
  const first = found.rows[0];
  if (!first) return { kind: 'no_tenant' } as const;
  const tenant = { plan_id: first.tenant_plan_id, billing_anchor: first.billing_anchor, timezone: first.timezone };
  const rows: PeriodBounds[] = found.rows.filter((r): r is TenantPeriodRow & PeriodBounds => r.start !== null);
  const periods: StoredPeriod[] = rows.map((r) => ({
    start: r.start.toISOString(),
    end: r.end.toISOString(),
    status: r.status,
    grace_ends_at: r.grace_ends_at?.toISOString() ?? null,
  }));
  const lockedAt = new Date();
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
      plan = row ? cachedPlanVersion(trx, row.plan_id, row.plan_version) : Promise.resolve(nextPlan);
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
  if (refusals.length > 0) {
    // An event stored before is a resend, never an error, wherever its period stands now.
    const known = await trx('usage_events')
      .where({ tenant_id: tenantId })
      .whereIn('event_id', refusals.map((r) => events[r.index]!.id))
      .pluck<string[]>('event_id');
    const real = refusals.filter((r) => !known.includes(events[r.index]!.id));
    if (real.length > 0) return { kind: 'refused', refusals: real } as const;
  }

  const seqs = await insertPlacedEvents(trx, tenantId, placed, batchId, receivedAt);
  const highest = seqs.reduce<bigint | null>((max, s) => (max === null || s > max ? s : max), null);
  return { kind: 'stored', received: events.length, stored: seqs.length, highest_seq: highest === null ? null : highest.toString() } as const;
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
  const inserted = await db.raw<{ rows: Array<{ seq: string }> }>(
    `WITH stored AS (
       INSERT INTO usage_events (tenant_id, event_id, metric, quantity, "timestamp", period_start, properties, batch_id, received_at)
       SELECT :tenant, e.event_id, e.metric, e.quantity, e.ts, e.period_start, e.properties, :batch, :receivedAt
         FROM unnest(:ids::text[], :metrics::text[], :quantities::numeric[], :timestamps::timestamptz[], :periods::timestamptz[], :properties::jsonb[])
           AS e(event_id, metric, quantity, ts, period_start, properties)
       ON CONFLICT (tenant_id, event_id) DO NOTHING
       RETURNING seq
     ), receipt AS (
       INSERT INTO event_receipts (tenant_id, events) SELECT :tenant, count(*) FROM stored HAVING count(*) > 0
     )
     SELECT seq FROM stored`,
    // pg sends each JS array as one PostgreSQL array parameter, unnest()ed into rows.
    {
      tenant: tenantId,
      batch: batchId,
      receivedAt: receivedAt.toISOString(),
      ids: placed.map((e) => e.id),
      metrics: placed.map((e) => e.metric),
      quantities: placed.map((e) => e.quantity),
      timestamps: placed.map((e) => e.timestamp),
      periods: placed.map((e) => e.period_start),
      properties: placed.map((e) => (e.properties === undefined ? null : JSON.stringify(e.properties))),
    } as unknown as Knex.ValueDict,
  );
  return inserted.rows.map((r) => BigInt(r.seq));
}
