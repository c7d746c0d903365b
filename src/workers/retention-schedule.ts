import { ScheduleAlreadyRunning, ScheduleOverlapPolicy, type Client, type ScheduleOptionsStartWorkflowAction } from '@temporalio/client';
import type { Priority } from '@temporalio/common';
import type { retention } from '../workflows/retention';
import { retentionRunSummary } from '../workflows/summaries';

/** The id of the daily retention schedule (the Temporal UI's Schedules page lists it by this). */
export const RETENTION_SCHEDULE_ID = 'retention-daily';

/**
 * The retention run's task priority (Temporal's priority keys: 1 first, 3 by default). It shares
 * the billing task queue with the tenant runs, and a backlog of theirs (thousands of tenants
 * started or rung at once) would otherwise hold its first task back for minutes. It costs the
 * tenants little: one task at a time, a purge step every 30 s. A server that does not order
 * tasks by priority runs them in arrival order.
 */
export const RETENTION_PRIORITY = { priorityKey: 1 } as const;

/**
 * What the schedule starts: a `retention` run on the billing task queue, ahead of the tenant runs'
 * tasks. (The client sends an action's `priority`, and describes it back, but 1.24's type for a
 * new action leaves it out.)
 */
function action(taskQueue: string, defaultRetentionDays: number): ScheduleOptionsStartWorkflowAction<typeof retention> & { priority: Priority } {
  return {
    type: 'startWorkflow',
    workflowType: 'retention',
    workflowId: 'retention',
    taskQueue,
    args: [{ default_retention_days: defaultRetentionDays }],
    staticSummary: retentionRunSummary(defaultRetentionDays),
    priority: RETENTION_PRIORITY,
  };
}

/**
 * Creates the daily retention schedule, or brings an existing one up to date (task queue,
 * default retention, priority), so every start of a worker may call it: the first creates it, the others
 * change nothing that matters. Daily at 03:00 UTC; a run still going at the next start is left
 * alone (`SKIP`), so two runs never purge side by side.
 */
export async function ensureRetentionSchedule(client: Client, options: { taskQueue: string; defaultRetentionDays: number }): Promise<'created' | 'updated'> {
  const spec = { calendars: [{ hour: 3, minute: 0, comment: 'daily at 03:00 UTC' }] };
  try {
    await client.schedule.create({
      scheduleId: RETENTION_SCHEDULE_ID,
      spec,
      action: action(options.taskQueue, options.defaultRetentionDays),
      policies: { overlap: ScheduleOverlapPolicy.SKIP, catchupWindow: '1 day' },
      state: { note: 'Deletes raw usage events of invoiced periods past retention (docs/billing.md)' },
    });
    return 'created';
  } catch (err) {
    if (!(err instanceof ScheduleAlreadyRunning)) throw err;
  }
  await client.schedule.getHandle(RETENTION_SCHEDULE_ID).update((previous) => ({
    ...previous,
    spec,
    action: action(options.taskQueue, options.defaultRetentionDays),
    policies: { ...previous.policies, overlap: ScheduleOverlapPolicy.SKIP },
  }));
  return 'updated';
}

/**
 * `ensureRetentionSchedule` at a worker's start: a failure is logged, never fatal, since billing
 * does not depend on retention (events are only kept longer until the next start succeeds).
 */
export async function installRetentionSchedule(
  client: Client,
  options: { taskQueue: string; defaultRetentionDays: number; logger: { info: (obj: object, msg: string) => void; error: (obj: object, msg: string) => void } },
): Promise<void> {
  try {
    const outcome = await ensureRetentionSchedule(client, options);
    options.logger.info({ schedule: RETENTION_SCHEDULE_ID, outcome, default_retention_days: options.defaultRetentionDays }, 'retention schedule ready');
  } catch (err) {
    options.logger.error({ err, schedule: RETENTION_SCHEDULE_ID }, 'the retention schedule could not be created or updated: raw events are kept until it is');
  }
}
