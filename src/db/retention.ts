import type { Db } from './knex';

/**
 * Retention of raw usage events (BILLING.md, "Retention and summaries"): a period's events are
 * deleted once the period is invoiced and its end is more than `retention_days` old (the period's
 * plan version says; otherwise the default). Whole periods, never part of one: a period is first
 * marked (`events_purged_at`), which from then on refuses reruns, then emptied in bounded
 * batches, each its own short statement, then marked finished. Invoices, invoice lines,
 * `period_counters` and the periods themselves are never deleted.
 *
 * Nothing here takes the ledger lock ingest takes: an invoiced period takes no new events, so
 * ingest never touches the rows being deleted. The mark waits for a rerun that holds the period's
 * row lock, so a rerun rates either every event or none.
 */

/** A period whose events are being purged. */
export interface PurgeTarget {
  tenant_id: string;
  start: Date;
}

/** A purge a failed run left half-way: marked, not finished (of `tenantIds` only, when given). */
export async function unfinishedPurge(db: Db, tenantIds?: string[]): Promise<PurgeTarget | undefined> {
  return db('periods')
    .modify((q) => (tenantIds ? q.whereIn('tenant_id', tenantIds) : q))
    .whereNotNull('events_purged_at')
    .whereNull('events_purge_finished_at')
    .orderBy('events_purged_at')
    .first<PurgeTarget | undefined>('tenant_id', 'start');
}

/**
 * Marks the next period due for purge (of `tenantIds` only, when given), oldest end first, and
 * returns it; undefined when none is due at `asOf`. Two runs racing for one period: only one marks it (the other looks again).
 */
export async function markNextDuePeriod(db: Db, asOf: Date, defaultRetentionDays: number, tenantIds?: string[]): Promise<PurgeTarget | undefined> {
  for (;;) {
    const due = await db.raw<{ rows: PurgeTarget[] }>(
      `SELECT p.tenant_id, p.start
         FROM periods p
         JOIN plan_versions v ON v.plan_id = p.plan_id AND v.version = p.plan_version
        WHERE p.status = 'invoiced' AND p.events_purged_at IS NULL
          AND p."end" <= ?::timestamptz - make_interval(days => coalesce((v.definition->>'retention_days')::int, ?))
          AND (?::text[] IS NULL OR p.tenant_id = ANY(?::text[]))
        ORDER BY p."end"
        LIMIT 1`,
      [asOf, defaultRetentionDays, tenantIds ?? null, tenantIds ?? null],
    );
    const candidate = due.rows[0];
    if (!candidate) return undefined;
    const marked = await db('periods')
      .where({ tenant_id: candidate.tenant_id, start: candidate.start, status: 'invoiced' })
      .whereNull('events_purged_at')
      .update({ events_purged_at: db.fn.now() })
      .returning<PurgeTarget[]>(['tenant_id', 'start']);
    if (marked[0]) return marked[0];
  }
}

/** Deletes up to `limit` of the period's events in one short statement; returns how many. */
export async function deleteEventBatch(db: Db, target: PurgeTarget, limit: number): Promise<number> {
  const result = await db.raw<{ rowCount: number }>(
    `DELETE FROM usage_events
      WHERE (tenant_id, event_id) IN (
        SELECT tenant_id, event_id FROM usage_events WHERE tenant_id = ? AND period_start = ? LIMIT ?
      )`,
    [target.tenant_id, target.start, limit],
  );
  return result.rowCount ?? 0;
}

/** Records that the period's events are all gone. */
export async function finishPurge(db: Db, target: PurgeTarget): Promise<void> {
  await db('periods').where({ tenant_id: target.tenant_id, start: target.start }).update({ events_purge_finished_at: db.fn.now() });
}
