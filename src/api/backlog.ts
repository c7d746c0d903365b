import type { Db } from '../db/knex';
import { countUnclaimedEvents } from '../db/ledger';
import { ApiError } from './errors';

/**
 * Per-tenant back-pressure on ingest: when a tenant's acknowledged events wait uncounted beyond
 * `maxPending` (its workers are down, or it sends faster than they count), new batches for it
 * answer 503 `unavailable` with Retry-After, so a client slows down long before PostgreSQL's disk
 * or anyone's patience runs out. Other tenants are not affected.
 *
 * The count is read at most once a second per tenant, and once for all the requests that find
 * it stale at the same moment; it costs one row and a few receipts (`countUnclaimedEvents`), so
 * the check costs the hot path almost nothing however large the backlog.
 */
export class IngestBacklog {
  private readonly seen = new Map<string, { at: number; pending: Promise<number> }>();

  constructor(
    private readonly db: Db,
    private readonly maxPending: number,
    private readonly refreshMs = 1_000,
  ) {}

  /** Throws 503 when the tenant's backlog is over the limit (0: no limit). */
  async admit(tenantId: string): Promise<void> {
    if (this.maxPending <= 0) return;
    let entry = this.seen.get(tenantId);
    if (!entry || Date.now() - entry.at >= this.refreshMs) {
      const pending = countUnclaimedEvents(this.db, tenantId);
      entry = { at: Date.now(), pending };
      this.seen.set(tenantId, entry);
      // A failed read is not remembered: the next request reads again.
      pending.catch(() => this.seen.get(tenantId) === entry && this.seen.delete(tenantId));
      if (this.seen.size > 50_000) this.seen.delete(this.seen.keys().next().value!);
    }
    if ((await entry.pending) > this.maxPending) {
      throw new ApiError(503, 'unavailable', `tenant ${tenantId} has more than ${this.maxPending} events waiting to be counted; nothing was recorded, retry later`, undefined, {
        'Retry-After': '1',
      });
    }
  }
}
