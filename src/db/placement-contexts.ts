import type { Db } from './knex';
import type { StoredPeriod } from '../domain/placement';

/**
 * What placing a tenant's events reads of it (src/db/ingest.ts): the tenant's plan, anchor and
 * time zone, and the periods that take events with the latest three invoiced ones
 * (`ledger_placement_periods`, migration 20261231000000), with the tenant's placement version
 * of the same snapshot: the statement that stores the events compares it, under the tenant's
 * ledger lock, with the version as it stands then.
 */
export interface PlacementContext {
  tenant: { plan_id: string; billing_anchor: Date; timezone: string };
  periods: Array<StoredPeriod & { plan_id: string; plan_version: number }>;
  /** `tenants.placement_version`, which changes whenever anything above changes (a bigint, as text). */
  version: string;
  /** Acknowledged events not counted yet, as last read (the read here, or a store's check). */
  pending: number;
}

/**
 * The placement contexts an API process keeps, so that a batch of a tenant seen before is placed
 * without reading anything first: its store is then one statement. A kept context is never
 * trusted, only checked: when the tenant changed meanwhile (a close, a rollover, a cancellation,
 * a finalization, a new plan), the store fails as stale, the caller forgets the tenant and places
 * again against a context read afresh. Least recently used contexts go first beyond `capacity`:
 * a context takes about a kilobyte, and the default keeps the API and worker process within its
 * memory budget at 10,000 open tenants (BENCHMARKS.md, session 24); a tenant beyond it costs its
 * batches one statement more.
 */
export class PlacementContexts {
  private readonly known = new Map<string, PlacementContext>();

  constructor(private readonly capacity = 5_000) {}

  /**
   * The contexts of `tenants`: kept ones, and the others read in one statement, as are kept ones
   * for which `readAgain` holds. A tenant that does not exist has none (and is not remembered).
   */
  async read(db: Db, tenants: readonly string[], readAgain: (context: PlacementContext) => boolean): Promise<Map<string, PlacementContext>> {
    const found = new Map<string, PlacementContext>();
    const missing: string[] = [];
    for (const tenantId of tenants) {
      const context = this.known.get(tenantId);
      if (!context || readAgain(context)) {
        missing.push(tenantId);
        continue;
      }
      // Map order is the eviction order: a context used now goes to the back.
      this.known.delete(tenantId);
      this.known.set(tenantId, context);
      found.set(tenantId, context);
    }
    if (missing.length === 0) return found;
    for (const [tenantId, context] of await readPlacementContexts(db, missing)) {
      found.set(tenantId, context);
      this.known.delete(tenantId);
      this.known.set(tenantId, context);
    }
    while (this.known.size > this.capacity) this.known.delete(this.known.keys().next().value!);
    return found;
  }

  /** Drops kept contexts (after a store found one stale): the next read reads them afresh. */
  forget(tenants: readonly string[]): void {
    for (const tenantId of tenants) this.known.delete(tenantId);
  }

  /** A store's check read the tenant's pending events under its lock. */
  notePending(tenantId: string, pending: number): void {
    const context = this.known.get(tenantId);
    if (context) context.pending = pending;
  }
}

/** A row of the read: the tenant joined with one of its periods (null period columns: none). */
type ContextRow = { tenant_id: string; tenant_plan_id: string; billing_anchor: Date; timezone: string; version: string; pending: string } & {
  start: Date | null;
  end: Date | null;
  status: StoredPeriod['status'] | null;
  grace_ends_at: Date | null;
  plan_id: string | null;
  plan_version: number | null;
};

/** Reads the contexts of `tenants` in one statement, without a lock: the store checks them under it. */
async function readPlacementContexts(db: Db, tenants: readonly string[]): Promise<Map<string, PlacementContext>> {
  const { rows } = await db.raw<{ rows: ContextRow[] }>(
    `SELECT t.id AS tenant_id, t.plan_id AS tenant_plan_id, t.billing_anchor, t.timezone, t.placement_version::text AS version,
            ledger_pending_events(t.id) AS pending, p.start, p."end", p.status, p.grace_ends_at, p.plan_id, p.plan_version
       FROM tenants t
       LEFT JOIN LATERAL ledger_placement_periods(t.id) p ON true
      WHERE t.id = ANY(?::text[])`,
    [[...tenants]],
  );
  const contexts = new Map<string, PlacementContext>();
  for (const row of rows) {
    let context = contexts.get(row.tenant_id);
    if (!context) {
      context = {
        tenant: { plan_id: row.tenant_plan_id, billing_anchor: row.billing_anchor, timezone: row.timezone },
        periods: [],
        version: row.version,
        pending: Number(row.pending),
      };
      contexts.set(row.tenant_id, context);
    }
    if (row.start === null) continue;
    context.periods.push({
      start: row.start.toISOString(),
      end: row.end!.toISOString(),
      status: row.status!,
      grace_ends_at: row.grace_ends_at?.toISOString() ?? null,
      plan_id: row.plan_id!,
      plan_version: row.plan_version!,
    });
  }
  return contexts;
}
