import type { Client } from '@temporalio/client';
import type { Db } from '../db/knex';
import type { Logger } from '../logger';
import { tenantsWithUnclaimedEvents } from '../db/ledger';
import { ringTenantWorkflow } from '../temporal';

/**
 * The doorbell's safety net: every few seconds, tenants whose stored events have waited
 * unclaimed longer than `staleAfterMs` are rung again. That covers an API process that died
 * between its commit and its ring, a ring Temporal refused, and a tenant workflow that ended
 * unexpectedly (the ring starts a new run, which rebuilds its ledger from PostgreSQL). Several
 * workers may sweep at once: a ring is idempotent.
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

/** Starts sweeping; the returned function stops it (and waits for a sweep in progress). */
export function startSweeper(options: SweeperOptions): () => Promise<void> {
  const intervalMs = options.intervalMs ?? 2_000;
  const staleAfterMs = options.staleAfterMs ?? 3_000;
  let stopped = false;
  let sweeping: Promise<void> = Promise.resolve();

  const sweep = async () => {
    const tenants = await tenantsWithUnclaimedEvents(options.db, staleAfterMs);
    for (const tenantId of tenants) {
      if (stopped) return;
      await ringTenantWorkflow(options.temporal, {
        taskQueue: options.taskQueue,
        tenantId,
        doorbell: { events: 0, highest_seq: null },
        searchAttributes: options.searchAttributes !== false,
      }).catch((err: unknown) => options.logger.warn({ err, tenant_id: tenantId }, 'sweeper could not ring a tenant'));
    }
    if (tenants.length > 0) options.logger.info({ tenants: tenants.length }, 'sweeper rang tenants with unclaimed events');
  };
  const timer = setInterval(() => {
    sweeping = sweeping.then(sweep).catch((err: unknown) => options.logger.warn({ err }, 'sweep failed'));
  }, intervalMs);
  timer.unref();
  return async () => {
    stopped = true;
    clearInterval(timer);
    await sweeping;
  };
}
