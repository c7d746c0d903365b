import type { Db } from './knex';
import { keysetPage, type Page, type PageRequest } from './pagination';

/**
 * The record of notifications sent (`notification_deliveries`) as the API lists it. Deliveries
 * are written by the dispatcher (`src/notifications/dispatch.ts`), one row per event, channel and
 * target.
 */

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
