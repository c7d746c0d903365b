import type { Db } from './knex';
import { keysetPage, type Page, type PageRequest } from './pagination';
import type { Channel, DeliveryStatus, EventType } from '../notifications/dispatch';

/**
 * The record of notifications sent (`notification_deliveries`): one row per event, channel and
 * target, created on the first attempt with the payload frozen in it, then leased, completed or
 * failed by the dispatcher (`src/notifications/dispatch.ts`); and the list the API shows.
 */

/** One delivery: an event sent through one channel to one target (the table's unique key). */
export interface DeliveryKey {
  event_id: string;
  channel: Channel;
  target: string;
}

/** A delivery as the dispatcher reads it: where it stands, and the payload stored on its first attempt. */
export interface DeliveryState {
  id: string;
  status: DeliveryStatus;
  attempts: number;
  last_error: string | null;
  payload: unknown;
}

const STATE_COLUMNS = ['id', 'status', 'attempts', 'last_error', 'payload'];

/** Longer than one send can take (webhook 10 s, email 16 s), so a live attempt keeps its lease. */
const LEASE_SECONDS = 30;

/** What opening an attempt at a delivery found: the row leased to this attempt, or how it stands. */
export type DeliveryAttempt =
  | { kind: 'leased'; created: boolean; delivery: DeliveryState }
  | { kind: 'settled'; created: boolean; delivery: DeliveryState }
  | { kind: 'busy'; attempts: number };

/**
 * Opens one attempt at a delivery in one statement: creates the row with its payload unless it
 * exists (a retried attempt), and takes the lease on a pending row, so only one attempt at a time
 * sends it, counting the attempt. `settled`: the row is no longer pending (or was created as kept,
 * `recorded`); `busy`: another attempt holds an unexpired lease, or created the row in a
 * transaction this statement cannot see yet.
 */
export async function openDeliveryAttempt(
  db: Db,
  key: DeliveryKey,
  row: { tenant_id: string; event_type: EventType; status: DeliveryStatus; attempts: number; payload: unknown },
): Promise<DeliveryAttempt> {
  const lease = `now() + interval '${LEASE_SECONDS} seconds'`;
  const columns = STATE_COLUMNS.join(', ');
  const found = await db.raw<{ rows: Array<DeliveryState & { how: 'created' | 'leased' | 'found' }> }>(
    `WITH created AS (
       INSERT INTO notification_deliveries (event_id, channel, target, tenant_id, event_type, status, attempts, payload, last_attempt_at, locked_until)
       VALUES (:event_id, :channel, :target, :tenant_id, :event_type, :status, :attempts + (CASE WHEN :status = 'pending' THEN 1 ELSE 0 END), :payload::jsonb,
               CASE WHEN :status = 'pending' THEN now() END, CASE WHEN :status = 'pending' THEN ${lease} END)
       ON CONFLICT (event_id, channel, target) DO NOTHING
       RETURNING ${columns}
     ), leased AS (
       UPDATE notification_deliveries SET attempts = attempts + 1, last_attempt_at = now(), locked_until = ${lease}
        WHERE event_id = :event_id AND channel = :channel AND target = :target AND status = 'pending'
          AND (locked_until IS NULL OR locked_until < now()) AND NOT EXISTS (SELECT 1 FROM created)
       RETURNING ${columns}
     )
     SELECT 'created' AS how, ${columns} FROM created
     UNION ALL SELECT 'leased', ${columns} FROM leased
     UNION ALL SELECT 'found', ${columns} FROM notification_deliveries
      WHERE event_id = :event_id AND channel = :channel AND target = :target
        AND NOT EXISTS (SELECT 1 FROM created) AND NOT EXISTS (SELECT 1 FROM leased)`,
    { ...key, ...row, payload: JSON.stringify(row.payload) },
  );
  const [state] = found.rows;
  if (!state) return { kind: 'busy', attempts: 0 };
  const { how, ...delivery } = state;
  const created = how === 'created';
  if (delivery.status !== 'pending') return { kind: 'settled', created, delivery };
  return how === 'found' ? { kind: 'busy', attempts: delivery.attempts } : { kind: 'leased', created, delivery };
}

/** Ends a leased delivery as sent (`delivered`) or kept without sending (`recorded`). */
export async function completeDelivery(db: Db, id: string, status: 'delivered' | 'recorded'): Promise<DeliveryState> {
  const [done] = await db('notification_deliveries')
    .where({ id })
    .update({ status, delivered_at: status === 'delivered' ? db.fn.now() : null, last_error: null, locked_until: null })
    .returning<DeliveryState[]>(STATE_COLUMNS);
  return done!;
}

/** Releases a leased delivery whose send failed: `failed` on the last attempt, else `pending` for the next. */
export async function recordDeliveryFailure(db: Db, id: string, error: string, final: boolean): Promise<DeliveryState> {
  const [failed] = await db('notification_deliveries')
    .where({ id })
    .update({ status: final ? 'failed' : 'pending', last_error: error, locked_until: null })
    .returning<DeliveryState[]>(STATE_COLUMNS);
  return failed!;
}

/** A delivery as the deliveries list shows it: where an event went, how many attempts, how it ended. */
export interface DeliveryListRow {
  id: string;
  event_id: string;
  event_type: string | null;
  channel: string;
  target: string;
  status: string;
  attempts: number;
  last_error: string | null;
  created_at: Date;
  last_attempt_at: Date | null;
  delivered_at: Date | null;
}

/** What the deliveries list keeps: one event's rows, one status's rows. */
export interface DeliveryFilters {
  event_id?: string;
  status?: string;
}

/**
 * A page of the tenant's deliveries, newest first. Their ids are bigint serials, so a cursor that
 * is not one names no row; any delivery of the tenant is a valid cursor, filtered out or not.
 */
export async function listNotificationDeliveries(db: Db, tenantId: string, filters: DeliveryFilters, page: PageRequest): Promise<Page<DeliveryListRow>> {
  const scope = db('notification_deliveries').where({ tenant_id: tenantId });
  const filtered = scope.clone();
  if (filters.event_id) filtered.where({ event_id: filters.event_id });
  if (filters.status) filtered.where({ status: filters.status });
  return keysetPage<DeliveryListRow>(filtered.select('*'), page, {
    sort: ['created_at', 'id'],
    idColumn: 'id',
    parseId: (id) => (/^\d{1,18}$/.test(id) ? id : undefined),
    cursorScope: scope,
  });
}
