import type { Client } from '@temporalio/client';
import type { Db } from '../db/knex';
import type { Logger } from '../logger';
import { tenantsWithUnclaimedEvents } from '../db/ledger';
import { ringTenantWorkflow } from '../temporal';
import { repeatEvery } from './repeating';

/**
 * The doorbell's safety net: every few seconds, tenants whose stored events have waited
 * unclaimed longer than `staleAfterMs` are rung again. That covers an API process that died
 * between its commit and its ring, a ring Temporal refused, and a tenant workflow that ended
 * unexpectedly (the ring starts a new run, which rebuilds its ledger from PostgreSQL). Several
 * workers may sweep at once: a ring is idempotent. Rings of a tenant whose events keep waiting
 * back off (`SweepSchedule`).
 */
export interface SweeperOptions {
  db: Db;
  temporal: Client;
  taskQueue: string;
  logger: Logger;
  searchAttributes?: boolean;
  intervalMs?: number;
  staleAfterMs?: number;
}

/** The longest a tenant whose events still wait goes without another ring from the sweeper. */
const MAX_RING_INTERVAL_MS = 30_000;

/**
 * Which waiting tenants to ring in a sweep. A tenant is rung when its events have waited too
 * long, then again only after a wait that doubles with each ring (up to 30 s) while they still
 * wait: a workflow that is merely behind (a burst, a Temporal server at its limit) is not helped
 * by a ring every sweep, and a thousand such rings a second would take the server's capacity
 * from the claims that would catch it up. A tenant counted up is forgotten.
 */
export class SweepSchedule {
  private readonly rung = new Map<string, { at: number; interval: number }>();

  constructor(private readonly firstIntervalMs: number) {}

  /** The tenants of `waiting` to ring now, remembered as rung at `now`. */
  due(waiting: readonly string[], now: number): string[] {
    const still = new Set(waiting);
    for (const tenantId of this.rung.keys()) if (!still.has(tenantId)) this.rung.delete(tenantId);
    const due: string[] = [];
    for (const tenantId of waiting) {
      const last = this.rung.get(tenantId);
      if (last && now - last.at < last.interval) continue;
      due.push(tenantId);
      this.rung.set(tenantId, { at: now, interval: last ? Math.min(last.interval * 2, MAX_RING_INTERVAL_MS) : this.firstIntervalMs });
    }
    return due;
  }
}

/** Starts sweeping; the returned function stops it (and waits for a sweep in progress). */
export function startSweeper(options: SweeperOptions): () => Promise<void> {
  const staleAfterMs = options.staleAfterMs ?? 3_000;
  const schedule = new SweepSchedule(staleAfterMs);
  return repeatEvery(
    options.intervalMs ?? 2_000,
    async (stopping) => {
      const tenants = schedule.due(await tenantsWithUnclaimedEvents(options.db, staleAfterMs), Date.now());
      for (const tenantId of tenants) {
        if (stopping()) return;
        await ringTenantWorkflow(options.temporal, {
          taskQueue: options.taskQueue,
          tenantId,
          doorbell: { events: 0, highest_seq: null },
          searchAttributes: options.searchAttributes !== false,
        }).catch((err: unknown) => options.logger.warn({ err, tenant_id: tenantId }, 'sweeper could not ring a tenant'));
      }
      if (tenants.length > 0) options.logger.info({ tenants: tenants.length }, 'sweeper rang tenants with unclaimed events');
    },
    (err) => options.logger.warn({ err }, 'sweep failed'),
  );
}
