import { gzipSync } from 'node:zlib';
import { Worker } from '@temporalio/worker';
import type { Client } from '@temporalio/client';
import { defaultPayloadConverter } from '@temporalio/common';
import { temporal } from '@temporalio/proto';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { createActivities, type BillingActivities } from '../../src/activities';
import { createRecordingNotifier } from '../../src/notifications/notifier';
import type { Db } from '../../src/db/knex';
import { quietLogger, workflowBundle } from './stack';

/**
 * What tests of billing periods on the time-skipping test server share: workers that can be
 * stopped and started again, absolute sleeps on the server's clock, gates that hold one activity
 * so two requests meet in a known order, and the histories of every run of a workflow id.
 */

type History = temporal.api.history.v1.IHistory;
type HistoryEvent = temporal.api.history.v1.IHistoryEvent;

/**
 * A worker with the real activities (optionally wrapped), running until `stop()`. A worker that
 * is to go away keeps no workflow in its cache (`sticky: false`): the test server never moves a
 * workflow task off a dead worker's sticky queue, so a worker started later would not see it.
 */
export async function startPeriodsWorker(
  env: TestWorkflowEnvironment,
  db: Db,
  taskQueue: string,
  options: { wrap?: (acts: BillingActivities) => BillingActivities; sticky?: boolean } = {},
): Promise<{ stop: () => Promise<void> }> {
  const { wrap } = options;
  const real = createActivities({ db, logger: quietLogger, notifier: createRecordingNotifier(quietLogger), temporal: env.client });
  const worker = await Worker.create({
    connection: env.nativeConnection,
    taskQueue,
    workflowBundle: await workflowBundle(),
    activities: wrap ? wrap(real) : real,
    shutdownGraceTime: '1 second',
    ...(options.sticky === false ? { maxCachedWorkflows: 0 } : {}),
  });
  const running = worker.run();
  let stopped: Promise<void> | undefined;
  return {
    stop: () => {
      stopped ??= (async () => {
        if (worker.getState() === 'RUNNING') worker.shutdown();
        await running;
      })();
      return stopped;
    },
  };
}

/**
 * Moves the test server's clock to an absolute instant. Its clock starts at the real now and
 * only moves forward; between sleeps it runs at the real pace (time skipping stays locked).
 */
export async function sleepUntil(env: TestWorkflowEnvironment, instantMs: number): Promise<void> {
  const now = await env.currentTimeMs();
  if (instantMs > now) await env.sleep(instantMs - now);
}

/**
 * Holds the first call of an activity made after `arm()` until `release()`. `arm()` resolves
 * once that call is held, so a test knows the step is in flight before it sends the next request.
 */
export class ActivityGate {
  private armed = false;
  private onReached: () => void = () => undefined;
  private opened: Promise<void> = Promise.resolve();
  private open: () => void = () => undefined;

  arm(): Promise<void> {
    this.armed = true;
    this.opened = new Promise((resolve) => (this.open = resolve));
    return new Promise((resolve) => (this.onReached = resolve));
  }

  release(): void {
    this.open();
  }

  async pass(): Promise<void> {
    if (!this.armed) return;
    this.armed = false;
    this.onReached();
    await this.opened;
  }
}

/** Every run of a workflow id, oldest first, following continue-as-new from its first run. */
export async function runHistories(client: Client, workflowId: string, firstRunId: string): Promise<Array<{ runId: string; history: History }>> {
  const runs: Array<{ runId: string; history: History }> = [];
  for (let runId: string | undefined = firstRunId; runId; ) {
    const history: History = await client.workflow.getHandle(workflowId, runId).fetchHistory();
    runs.push({ runId, history });
    const events: HistoryEvent[] = history.events ?? [];
    runId = events[events.length - 1]?.workflowExecutionContinuedAsNewEventAttributes?.newExecutionRunId ?? undefined;
  }
  return runs;
}

/**
 * Replays every run of these workflows against the current workflow code, in process, as
 * `replay.test.ts` replays the recorded ones: a history that the code that wrote it cannot replay
 * is a determinism bug, however rare the timing that produced it. Each such run is printed as
 * base64 of the gzipped protobuf, so a failure seen once (in CI) leaves its history behind:
 * `scripts/record-histories.ts --printed` turns the text into a fixture for `test/histories/`.
 * Answers what failed.
 */
export async function unreplayableRuns(client: Client, workflows: Array<{ workflowId: string; firstRunId: string }>): Promise<string[]> {
  const histories: Array<{ workflowId: string; history: History }> = [];
  for (const { workflowId, firstRunId } of workflows) {
    for (const run of await runHistories(client, workflowId, firstRunId)) histories.push({ workflowId, history: run.history });
  }
  const failed: string[] = [];
  // The replayer answers each history in the order it was given, one at a time.
  let index = 0;
  for await (const result of Worker.runReplayHistories({ workflowBundle: await workflowBundle(), replayName: 'suite-histories' }, histories)) {
    const { history } = histories[index++]!;
    if (!result.error) continue;
    const encoded = gzipSync(temporal.api.history.v1.History.encode(history).finish()).toString('base64');
    console.error(`unreplayable run ${result.workflowId} ${result.runId}: ${String(result.error)}\nits history (gzip, base64):\n${encoded}`);
    failed.push(`${result.workflowId} ${result.runId}: ${String(result.error)}`);
  }
  return failed;
}

/** The events of a set of histories, in order. */
export function eventsOf(histories: Array<{ history: History }>): HistoryEvent[] {
  return histories.flatMap((h) => h.history.events ?? []);
}

/** The type of every local activity these events record (one marker per completed local activity). */
export function localActivityTypes(events: HistoryEvent[]): string[] {
  return events
    .map((e) => e.markerRecordedEventAttributes)
    .filter((m) => m?.markerName === 'core_local_activity')
    .map((m) => defaultPayloadConverter.fromPayload<{ activity_type: string }>(m!.details!.data!.payloads![0]!).activity_type);
}

/** The first argument of every child workflow of this type started in these events. */
export function childInputs<T>(events: HistoryEvent[], workflowType: string): T[] {
  return events
    .map((e) => e.startChildWorkflowExecutionInitiatedEventAttributes)
    .filter((a) => a?.workflowType?.name === workflowType)
    .map((a) => defaultPayloadConverter.fromPayload<T>(a!.input!.payloads![0]!));
}

/** True once the update with this id has been admitted (accepted) by the run. */
export function updateAccepted(events: HistoryEvent[], updateId: string): boolean {
  return events.some((e) => e.workflowExecutionUpdateAcceptedEventAttributes?.acceptedRequest?.meta?.updateId === updateId);
}

/**
 * True when nothing is in flight in these events of one run: no workflow task waits or runs, and
 * every scheduled activity has ended. Timers may be running.
 */
export function runIsQuiet(events: HistoryEvent[]): boolean {
  let workflowTaskPending = false;
  const activities = new Set<string>();
  for (const e of events) {
    if (e.workflowTaskScheduledEventAttributes || e.workflowTaskStartedEventAttributes) workflowTaskPending = true;
    if (e.workflowTaskCompletedEventAttributes || e.workflowTaskFailedEventAttributes || e.workflowTaskTimedOutEventAttributes) workflowTaskPending = false;
    if (e.activityTaskScheduledEventAttributes) activities.add(String(e.eventId));
    const ended = e.activityTaskCompletedEventAttributes ?? e.activityTaskFailedEventAttributes ?? e.activityTaskTimedOutEventAttributes ?? e.activityTaskCanceledEventAttributes;
    if (ended) activities.delete(String(ended.scheduledEventId));
  }
  return !workflowTaskPending && activities.size === 0;
}
