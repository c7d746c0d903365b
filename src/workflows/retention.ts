import { continueAsNew, proxyActivities } from '@temporalio/workflow';
import type * as activities from '../activities';
import type { PurgeProgress } from '../activities/retention';
import { PURGE_STEP_SUMMARY } from './summaries';

const acts = proxyActivities<ReturnType<typeof activities.createActivities>>({
  // A step works for its time budget (PURGE_TIME_BUDGET_MS) and heartbeats after every batch.
  startToCloseTimeout: '5 minutes',
  heartbeatTimeout: '1 minute',
  retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '1 minute' },
});

/** What the `retention-daily` schedule starts a run with. */
export interface RetentionInput {
  /** Days a period's raw events are kept when its plan sets no `retention_days` (RETENTION_DAYS). */
  default_retention_days: number;
  /** Events deleted per statement; the default keeps each statement short. */
  batch_size?: number;
  /** Only these tenants' periods (a run started by hand, e.g. to purge one tenant now); the schedule's runs purge every tenant. */
  tenant_ids?: string[];
  /** The instant retention is judged at; set by the run itself, carried across continue-as-new. */
  as_of?: string;
  /** What earlier runs of this chain purged. */
  purged?: { periods: number; events: number };
}

/** What a run purged in all. */
export interface RetentionResult {
  as_of: string;
  periods: number;
  events: number;
}

/** Steps per run before it continues as new, so its history stays short whatever the backlog. */
const STEPS_PER_RUN = 200;
/** Events deleted per statement unless the input says otherwise: each statement stays short. */
const DEFAULT_PURGE_BATCH_SIZE = 2_000;
/** One step's working time, well inside its start-to-close timeout. */
const PURGE_TIME_BUDGET_MS = 30_000;

/**
 * The daily retention run (`retention-daily` schedule): deletes the raw events of invoiced periods
 * past retention, as activity steps that each work in bounded batches and heartbeat, until
 * nothing is due. Invoices, counters and periods are never deleted (`src/db/retention.ts`).
 */
export async function retention(input: RetentionInput): Promise<RetentionResult> {
  const asOf = input.as_of ?? new Date().toISOString(); // the workflow clock: replay-safe
  let purged = input.purged ?? { periods: 0, events: 0 };
  for (let step = 0; step < STEPS_PER_RUN; step += 1) {
    const progress: PurgeProgress = await acts.purgeExpiredEvents.executeWithOptions({ summary: PURGE_STEP_SUMMARY }, [
      { as_of: asOf, default_retention_days: input.default_retention_days, batch_size: input.batch_size ?? DEFAULT_PURGE_BATCH_SIZE, time_budget_ms: PURGE_TIME_BUDGET_MS, ...(input.tenant_ids ? { tenant_ids: input.tenant_ids } : {}) },
    ]);
    purged = { periods: purged.periods + progress.periods, events: purged.events + progress.events };
    if (!progress.more) return { as_of: asOf, ...purged };
  }
  return continueAsNew<typeof retention>({ ...input, as_of: asOf, purged });
}
