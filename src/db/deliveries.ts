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

/** Creates the delivery with its payload unless it exists (a retried attempt): true when this call created it. */
export async function insertDeliveryOnce(
  db: Db,
  key: DeliveryKey,
  row: { tenant_id: string; event_type: EventType; status: DeliveryStatus; attempts: number; payload: unknown },
): Promise<boolean> {
  const inserted = await db('notification_deliveries')
    .insert({ ...key, ...row, payload: JSON.stringify(row.payload) })
    .onConflict(['event_id', 'channel', 'target'])
    .ignore()
    .returning('id');
  return inserted.length > 0;
}

/** The delivery under `key` (it exists once `insertDeliveryOnce` has run). */
export async function findDelivery(db: Db, key: DeliveryKey): Promise<DeliveryState> {
  return db('notification_deliveries').where(key).first<DeliveryState>();
}

/**
 * Takes the lease on a pending delivery, so only one attempt at a time sends it, and counts the
 * attempt: the delivery as leased, or undefined when it is no longer pending or another attempt
 * holds an unexpired lease.
 */
export async function leaseDelivery(db: Db, id: string): Promise<DeliveryState | undefined> {
  const [leased] = await db('notification_deliveries')
    .where({ id, status: 'pending' })
    .andWhere((q) => q.whereNull('locked_until').orWhere('locked_until', '<', db.fn.now()))
    .update({
      attempts: db.raw('attempts + 1'),
      last_attempt_at: db.fn.now(),
      locked_until: db.raw(`now() + interval '${LEASE_SECONDS} seconds'`),
    })
    .returning<DeliveryState[]>(STATE_COLUMNS);
  return leased;
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
