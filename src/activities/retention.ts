import { Context } from '@temporalio/activity';
import type { Db } from '../db/knex';
import type { Logger } from '../logger';
import { deleteEventBatch, finishPurge, markNextDuePeriod, unfinishedPurge } from '../db/retention';

/** What one `purgeExpiredEvents` call is asked to do. */
export interface PurgeExpiredEventsInput {
  /** The instant retention is judged at (the run's start, so every step judges alike). */
  as_of: string;
  /** Days a period's raw events are kept when its plan sets no `retention_days`. */
  default_retention_days: number;
  /** Events deleted per statement. */
  batch_size: number;
  /** How long one call works before it returns (the workflow calls again while `more`). */
  time_budget_ms: number;
  /** Only these tenants' periods (a run started by hand); the schedule's runs purge every tenant. */
  tenant_ids?: string[];
}

/** What one call did. */
export interface PurgeProgress {
  periods: number;
  events: number;
  /** Work is left: the time budget ran out before every due period was emptied. */
  more: boolean;
}

/** The retention activity, spread into `createActivities` so the one worker registers it. */
export function createRetentionActivities({ db, logger }: { db: Db; logger: Logger }) {
  return {
    /**
     * Purges the raw events of periods past retention (`src/db/retention.ts`): finishes a purge a
     * failed attempt left half-way, then marks and empties due periods one at a time, one batch
     * per statement, heartbeating after each batch (the details are the progress so far, for the
     * UI). Returns when nothing is due or its time budget is spent. Idempotent: marks and
     * deletions are persistent, so a retry carries on where the last attempt stopped.
     */
    async purgeExpiredEvents(input: PurgeExpiredEventsInput): Promise<PurgeProgress> {
      const deadline = Date.now() + input.time_budget_ms;
      const progress: PurgeProgress = { periods: 0, events: 0, more: false };
      const asOf = new Date(input.as_of);
      while (Date.now() < deadline) {
        const target = (await unfinishedPurge(db, input.tenant_ids)) ?? (await markNextDuePeriod(db, asOf, input.default_retention_days, input.tenant_ids));
        if (!target) return progress;
        const deleted = await deleteEventBatch(db, target, input.batch_size);
        progress.events += deleted;
        if (deleted < input.batch_size) {
          await finishPurge(db, target);
          progress.periods += 1;
          logger.info({ tenant_id: target.tenant_id, period_start: target.start.toISOString() }, 'raw events of a period purged by retention');
        }
        Context.current().heartbeat(progress);
      }
      return { ...progress, more: true };
    },
  };
}
