import type { Client } from '@temporalio/client';
import { defaultPayloadConverter } from '@temporalio/common';
import { tsToMs } from '@temporalio/common/lib/time';
import { temporal as temporalProto } from '@temporalio/proto';
import { alertDeliveryWorkflowId, tenantWorkflowId } from '../src/workflows/messages';
import { quantile } from './lib';

type HistoryEvent = temporalProto.api.history.v1.IHistoryEvent;
const EventType = temporalProto.api.enums.v1.EventType;

/** One delivered alert as the bench saw it: when its batch was acknowledged and its webhook arrived (wall clock, ms). */
export interface AlertSample {
  tenantId: string;
  alertId: string;
  acknowledgedAt: number;
  arrivedAt: number;
}

/**
 * Where an alert's time went, stage by stage, from Temporal's histories (the server's clock, the
 * same machine's as the bench's): the 202 to the counter's ring (signal) in the tenant run, to the
 * workflow task that claimed. An alert delivered by the run's inline attempt then goes to the
 * webhook's arrival, and on to that task's completion. One its delivery workflow delivered goes
 * from the task to its completion (claim done, alert decided, delivery started), to the delivery
 * workflow's start, to its first workflow task, to the delivery activity's start and end, to the
 * webhook's arrival at the receiver.
 */
export const ALERT_STAGES = [
  'ack_to_signal',
  'signal_to_task_started',
  'inline_task_started_to_webhook',
  'inline_webhook_to_task_completed',
  'task_started_to_completed',
  'child_initiated_to_started',
  'child_started_to_task_started',
  'child_task_to_activity_scheduled',
  'activity_scheduled_to_started',
  'activity_started_to_webhook',
  'webhook_to_activity_completed',
] as const;

export type AlertStage = (typeof ALERT_STAGES)[number];

/** p50 / p99 of each stage over the samples, in ms; `samples` is how many alerts could be traced, `inline` how many of them the run's inline attempt delivered. */
export interface AlertPath {
  samples: number;
  inline: number;
  stages: Record<AlertStage, { p50_ms: number; p99_ms: number }>;
  /** The tenant runs' workflow tasks that ran again after a failure or a timeout, over all traced tenants. */
  failed_or_timed_out_tasks: number;
  /**
   * History events the scenario wrote (each a share of a server commit): the traced tenants' runs
   * from the first acknowledgement on, and the delivery workflows whole.
   */
  history_events: { tenant_runs: number; deliveries: number; per_alert: number };
}

/** Traces every sample through the tenant's and the delivery's histories. */
export async function alertPath(temporal: Client, samples: AlertSample[]): Promise<AlertPath> {
  const tenantHistories = new Map<string, HistoryEvent[]>();
  const durations = new Map<AlertStage, number[]>(ALERT_STAGES.map((s) => [s, []]));
  let failedTasks = 0;
  let traced = 0;
  let inline = 0;
  let deliveryEvents = 0;
  const since = Math.min(...samples.map((s) => s.acknowledgedAt));
  for (const sample of samples) {
    let tenant = tenantHistories.get(sample.tenantId);
    if (!tenant) {
      tenant = (await temporal.workflow.getHandle(tenantWorkflowId(sample.tenantId)).fetchHistory()).events ?? [];
      tenantHistories.set(sample.tenantId, tenant);
      failedTasks += tenant.filter((e) => e.eventType === EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED || e.eventType === EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT).length;
    }
    const at = (e: HistoryEvent | undefined) => (e ? tsToMs(e.eventTime) : NaN);
    const childId = alertDeliveryWorkflowId(sample.alertId);
    const initiated = tenant.find((e) => e.startChildWorkflowExecutionInitiatedEventAttributes?.workflowId === childId);
    const childStarted = tenant.find((e) => e.childWorkflowExecutionStartedEventAttributes?.workflowExecution?.workflowId === childId);
    if (!initiated || !childStarted) {
      // Delivered inline: by the workflow task that was running when the webhook arrived, and recorded an inline attempt.
      const task = inlineTask(tenant, sample.arrivedAt);
      if (!task) continue;
      const signal = [...tenant].reverse().find((e) => Number(e.eventId) < Number(task.started.eventId) && e.eventType === EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED);
      if (!signal) continue;
      const points: Partial<Record<AlertStage, [number, number]>> = {
        ack_to_signal: [sample.acknowledgedAt, at(signal)],
        signal_to_task_started: [at(signal), at(task.started)],
        inline_task_started_to_webhook: [at(task.started), sample.arrivedAt],
        inline_webhook_to_task_completed: [sample.arrivedAt, at(task.completed)],
      };
      traced += 1;
      inline += 1;
      for (const [stage, [from, to]] of Object.entries(points) as Array<[AlertStage, [number, number]]>) {
        if (Number.isFinite(from) && Number.isFinite(to)) durations.get(stage)!.push(to - from);
      }
      continue;
    }
    // The task whose completion started the delivery, and the signal before that task.
    const completedId = Number(initiated.startChildWorkflowExecutionInitiatedEventAttributes!.workflowTaskCompletedEventId);
    const completed = tenant.find((e) => Number(e.eventId) === completedId);
    const taskStartedId = Number(completed?.workflowTaskCompletedEventAttributes?.startedEventId);
    const taskStarted = tenant.find((e) => Number(e.eventId) === taskStartedId);
    const signal = [...tenant].reverse().find((e) => Number(e.eventId) < taskStartedId && e.eventType === EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED);
    if (!completed || !taskStarted || !signal) continue;
    const child = (await temporal.workflow.getHandle(childId).fetchHistory()).events ?? [];
    deliveryEvents += child.length;
    const childTask = child.find((e) => e.eventType === EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED);
    const scheduled = child.find((e) => e.eventType === EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED);
    const activityStarted = child.find((e) => e.eventType === EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED);
    const activityCompleted = child.find((e) => e.eventType === EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED);
    const points: Partial<Record<AlertStage, [number, number]>> = {
      ack_to_signal: [sample.acknowledgedAt, at(signal)],
      signal_to_task_started: [at(signal), at(taskStarted)],
      task_started_to_completed: [at(taskStarted), at(completed)],
      child_initiated_to_started: [at(initiated), at(child[0])],
      child_started_to_task_started: [at(child[0]), at(childTask)],
      child_task_to_activity_scheduled: [at(childTask), at(scheduled)],
      activity_scheduled_to_started: [at(scheduled), at(activityStarted)],
      activity_started_to_webhook: [at(activityStarted), sample.arrivedAt],
      webhook_to_activity_completed: [sample.arrivedAt, at(activityCompleted)],
    };
    traced += 1;
    for (const [stage, [from, to]] of Object.entries(points) as Array<[AlertStage, [number, number]]>) {
      if (Number.isFinite(from) && Number.isFinite(to)) durations.get(stage)!.push(to - from);
    }
  }
  const stages = Object.fromEntries(ALERT_STAGES.map((s) => [s, { p50_ms: quantile(durations.get(s)!, 0.5), p99_ms: quantile(durations.get(s)!, 0.99) }])) as AlertPath['stages'];
  const tenantEvents = [...tenantHistories.values()].reduce((n, events) => n + events.filter((e) => tsToMs(e.eventTime) >= since).length, 0);
  return {
    samples: traced,
    inline,
    stages,
    failed_or_timed_out_tasks: failedTasks,
    history_events: { tenant_runs: tenantEvents, deliveries: deliveryEvents, per_alert: traced > 0 ? Math.round((tenantEvents + deliveryEvents) / traced) : NaN },
  };
}

/**
 * The workflow task of a tenant run that was running at `instant` (the webhook's arrival) and
 * recorded an inline delivery attempt (a `deliverAlertInline` local-activity marker).
 */
function inlineTask(events: HistoryEvent[], instant: number): { started: HistoryEvent; completed: HistoryEvent } | undefined {
  for (const completed of events) {
    const attributes = completed.workflowTaskCompletedEventAttributes;
    if (!attributes) continue;
    const started = events.find((e) => Number(e.eventId) === Number(attributes.startedEventId));
    if (!started || tsToMs(started.eventTime) > instant || tsToMs(completed.eventTime) < instant) continue;
    const recorded = events.filter((e) => Number(e.markerRecordedEventAttributes ? e.markerRecordedEventAttributes.workflowTaskCompletedEventId : 0) === Number(completed.eventId));
    if (recorded.some((e) => localActivityType(e) === 'deliverAlertInline')) return { started, completed };
  }
  return undefined;
}

function localActivityType(event: HistoryEvent): string | undefined {
  const marker = event.markerRecordedEventAttributes;
  const payload = marker?.markerName === 'core_local_activity' ? marker.details?.data?.payloads?.[0] : undefined;
  return payload ? defaultPayloadConverter.fromPayload<{ activity_type?: string }>(payload).activity_type : undefined;
}
