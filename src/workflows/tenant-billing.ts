import {
  ApplicationFailure,
  allHandlersFinished,
  condition,
  continueAsNew,
  log,
  patched,
  proxyActivities,
  setCurrentDetails,
  setDefaultQueryHandler,
  setHandler,
  upsertSearchAttributes,
  getExternalWorkflowHandle,
  workflowInfo,
} from '@temporalio/workflow';
import type * as activities from '../activities';
import type { AlertRecord, AlertRuleInput, CountableEvent, RefusedEvent } from '../activities/types';
import { Dec, decimalToNumber, parseQuantity } from '../domain/decimal';
import { applyToCounter, type CounterState } from '../domain/aggregation';
import { periodAfterEarlyClose, periodContaining, type Period } from '../domain/periods';
import { findMeter, type PlanVersion } from '../domain/plan';
import { estimateExtraCost, rateMeter, ratePeriod } from '../domain/rating';
import { decideThresholds, highestLevel, levelForThreshold, usagePercent, type AlertLevel } from '../domain/thresholds';
import {
  COST_SUBJECT,
  argumentProblem,
  alertId,
  alertRulesChangedSignal,
  applyAlertRulesChange,
  authorizeUpdate,
  cancelSubscriptionUpdate,
  closePeriodUpdate,
  estimateQuery,
  finalizeInvoiceSignal,
  LATE_EVENT_SETTLE_MS,
  LEGACY_ESTIMATE_QUERY_NAME,
  PERIOD_ROLLING_OVER,
  invoiceId,
  invoiceWorkflowId,
  recordUsageSignal,
  settledUsageUpdate,
  stateQuery,
  usageQuery,
  type AlertRulesChange,
  type AlertView,
  type AuthorizeRequest,
  type AuthorizeResult,
  type ClosePeriodResult,
  type EstimateRequest,
  type TenantStateView,
  type UsageBatch,
  type UsageEventInput,
  type UsageView,
} from './messages';
import { SEARCH_ATTRIBUTES } from './search-attributes';
import {
  closePeriodSummary,
  countEventsSummary,
  notifyAlertSummary,
  openPeriodSummary,
  periodEndTimerSummary,
  recordAlertsSummary,
  sealTimerSummary,
  settledUsageTimerSummary,
  startInvoiceSummary,
  tenantCurrentDetails,
} from './summaries';

/** Search attributes of tenant workflows (API.md, "Temporal conventions"); the API imports them from here. */
export { SEARCH_ATTRIBUTES };

/**
 * A closed period that still takes events until it is sealed: late events received within its
 * grace, and events acknowledged before the close whose signal lands after it. The tenant
 * workflow seals it (and lets its invoice finalize) only once every such event is in its history.
 */
export interface ClosingPeriod extends Period {
  grace_ends_at: string;
  /** grace end + LATE_EVENT_SETTLE_MS: past it no acknowledged event for the period can still arrive. */
  seal_at: string;
  plan: PlanVersion;
  invoice_workflow_id: string;
  /**
   * The period's counters and decided thresholds at the close: late events keep moving them, so a
   * threshold they cross still fires once. Absent on periods closed before alerts for late events.
   */
  counters?: Record<string, CounterState>;
  decided?: Record<string, number[]>;
}


/** What a run carries into the next run of the same period (history bounding). */
export interface CarriedCounters {
  counters: Record<string, CounterState>;
  decided: Record<string, number[]>;
  alerts: AlertView[];
  events_counted: number;
  authorizations: Record<string, AuthorizeResult>;
  /** The latest timestamp counted in this period: an early close never ends the period before it. */
  latest_counted_at?: number;
}

/** Everything one run needs; continue-as-new passes only this forward. */
export interface TenantBillingInput {
  tenant_id: string;
  /**
   * The tenant's name, for the run's current details: continue-as-new cannot carry the first
   * run's static summary, so every run repeats it there. `startPeriod` reads it for each period.
   */
  tenant_name?: string;
  timezone: string;
  billing_anchor: string;
  plan: PlanVersion;
  period: Period;
  alert_rules?: AlertRuleInput[];
  /** Closed periods not sealed yet (usually none or one). */
  closing?: ClosingPeriod[];
  /** Set when the subscription was cancelled: the run only seals its last period, then ends. */
  cancelled?: { final_invoice_id: string };
  /** Set when the run continues within the same period. */
  carried?: CarriedCounters;
  /** Batches received but not counted yet, including events that belong to the next period. */
  pending?: UsageBatch[];
  /** Workflow-internal limits; tests lower them to exercise continue-as-new. */
  limits?: Partial<RunLimits>;
  /** Off on servers without the search attributes registered (e.g. the time-skipping test server). */
  search_attributes?: boolean;
}

/** How a tenant's workflow ends (only on cancellation). */
export interface TenantBillingResult {
  cancelled: true;
  final_invoice_id: string;
}

/** History bounds: continue as new well before Temporal's 10,000-signal / 51,200-event limits. */
export interface RunLimits {
  maxSignalsPerRun: number;
  maxEventsPerRun: number;
  maxEventsPerChunk: number;
  /** The pending queue travels in the next run's input (payloads are limited to 2 MB). */
  maxCarriedEvents: number;
}

/** How long a read-your-writes usage read waits for the queue to drain before answering anyway. */
const SETTLED_USAGE_WAIT_MS = 10_000;

const DEFAULT_LIMITS: RunLimits = { maxSignalsPerRun: 2_000, maxEventsPerRun: 20_000, maxEventsPerChunk: 2_000, maxCarriedEvents: 5_000 };

/** One period's alert state: the current period's, or a closed period's that late events still move. */
interface AlertBook {
  period_start: string;
  plan: PlanVersion;
  counters: Record<string, CounterState>;
  decided: Record<string, number[]>;
  current: boolean;
}

/** Every meter of a plan with its counter value ('0' when nothing was counted). */
function valuesOf(plan: PlanVersion, counters: Record<string, CounterState>): Record<string, string> {
  const values: Record<string, string> = {};
  for (const meter of plan.meters) values[meter.metric] = counters[meter.metric]?.value ?? '0';
  return values;
}

/** Events may be timestamped at most this far in the future (BILLING.md). */
const FUTURE_TOLERANCE_MS = 5 * 60_000;

/**
 * Every activity of the tenant workflow is a regular one. Local activities were tried for the
 * rollover: the chaos suite showed why not here — when the workflow task that ran them and then
 * continued as new was rejected (a signal arrived meanwhile, or the worker died), their database
 * writes stayed but the close update and its markers were lost. Counting as a local activity also
 * held workflow tasks open, and queries waited behind them (query p99 x10 in the bench).
 */
const acts = proxyActivities<ReturnType<typeof activities.createActivities>>({
  startToCloseTimeout: '30 seconds',
  retry: { initialInterval: '200 milliseconds', backoffCoefficient: 2, maximumInterval: '10 seconds' },
});

/**
 * One tenant's subscription, one run per billing period. Usage arrives in batches by signal,
 * is stored exactly once by an activity, and only what PostgreSQL newly accepted moves the
 * counters. The run ends at the anniversary (or a finance close) by continuing as new into the
 * next period, after handing the closed period to its invoice workflow.
 */
export async function tenantBilling(input: TenantBillingInput): Promise<TenantBillingResult> {
  const limits: RunLimits = { ...DEFAULT_LIMITS, ...input.limits };
  const tenantId = input.tenant_id;
  const plan = input.plan;
  const period = input.period;
  const useSearchAttributes = input.search_attributes !== false;
  const closing: ClosingPeriod[] = [...(input.closing ?? [])];
  let cancelled = input.cancelled;
  let alertRules = input.alert_rules ?? [];
  /** Rule changes signalled in this run: replayed onto the rules `startPeriod` reads at rollover. */
  const ruleChanges: AlertRulesChange[] = [];
  let rulesChanged = false;

  const counters: Record<string, CounterState> = { ...input.carried?.counters };
  const decided: Record<string, number[]> = { ...input.carried?.decided };
  const alerts: AlertView[] = [...(input.carried?.alerts ?? [])];
  const authorizations: Record<string, AuthorizeResult> = { ...input.carried?.authorizations };
  let eventsCounted = input.carried?.events_counted ?? 0;
  let latestCountedAt = input.carried?.latest_counted_at ?? 0;
  /** The latest timestamp placed in this period by the chunk being counted (its outcome not known yet). */
  let latestPlacedAt = 0;

  const queue: UsageBatch[] = [...(input.pending ?? [])];
  const deferred: UsageBatch[] = [];
  const run = { signals: 0, events: 0, chunks: 0 };
  let counting = false;
  let authorizing = false;
  /** Outcome of authorize-consumed events by id: the update handler waits on it. */
  const consumed = new Map<string, 'counted' | 'duplicate' | 'refused'>();
  const awaitingOutcome = new Set<string>();
  /** Alert deliveries run beside counting (retries must not stall usage); awaited before the run ends. */
  const deliveries = new Set<Promise<void>>();
  let closeRequest: { finalize: boolean; cancel: boolean; at: string } | undefined;
  let closeResult: ClosePeriodResult | undefined;
  /** Set once the rollover began: nothing may start waiting on this run's counters any more. */
  let rollingOver = false;

  // Behaviour added after tenant workflows were running: runs recorded without these markers
  // replay on the old paths (see docs/architecture.md, "Changing workflow code").
  /** Late events counted into a closed period move its counters and fire its thresholds. */
  const alertsForLateEvents = patched('alerts-for-late-events');
  /** The rollover and the seal do not wait for an empty queue (sustained ingest). */
  const closesUnderLoad = patched('close-and-seal-under-load');
  /** Deliveries start beside `recordAlerts`, each storing its own alert first (one round trip less). */
  const deliversWithRecord = patched('deliver-alerts-with-record');

  // ---- message handlers -------------------------------------------------------------------

  // A signal cannot answer its sender: a malformed one is logged and dropped, so it can never
  // fail the workflow task again and again (the API only sends well-formed ones).
  setHandler(
    recordUsageSignal,
    (batch) => {
      run.signals += 1;
      const problem = argumentProblem('recordUsage', batch);
      if (problem) {
        log.warn('recordUsage signal dropped', { problem });
        return;
      }
      queue.push(batch);
      run.events += batch.events.length;
    },
    { description: 'Usage events to count (the API sends one per request or per coalesced group of requests).' },
  );

  setHandler(
    alertRulesChangedSignal,
    (change) => {
      const problem = argumentProblem('alertRulesChanged', change);
      if (problem) {
        log.warn('alertRulesChanged signal dropped', { problem });
        return;
      }
      ruleChanges.push(change);
      alertRules = applyAlertRulesChange(alertRules, change);
      rulesChanged = true;
    },
    { description: 'Alert rules created or deleted mid-period (the API sends it after storing the change).' },
  );

  // The UI lists queries by name and preselects the first (`state`): see `estimateQuery`.
  setHandler(usageQuery, () => usageView(), { description: 'The current period as GET /v1/tenants/{id}/usage shows it. No argument.' });
  setHandler(stateQuery, () => stateView(), { description: "The run's whole state: counters, decided thresholds, queues, closed periods in grace. No argument." });
  setHandler(estimateQuery, (request) => estimate(request), {
    description: 'The cost of extra usage from where the tenant stands now. Argument: { "metric": string, "quantity": number }.',
  });
  // Unlisted, so the UI's query list stays as above; any other unknown name fails as usual.
  setDefaultQueryHandler((name, ...args) => {
    if (name === LEGACY_ESTIMATE_QUERY_NAME) return estimate(args[0] as EstimateRequest);
    throw new ReferenceError(`tenantBilling has no query ${name}; its queries: usage, state, ${estimateQuery.name}`);
  });
  setHandler(
    settledUsageUpdate,
    async () => {
      // A rollover that began answers with the closed period's final view rather than waiting.
      await condition(() => (queue.length === 0 && !counting) || (closesUnderLoad && rollingOver), SETTLED_USAGE_WAIT_MS, {
        summary: settledUsageTimerSummary(SETTLED_USAGE_WAIT_MS),
      });
      return usageView();
    },
    { description: 'The usage view once every event signalled before it is counted (read-your-writes). No argument.' },
  );

  setHandler(
    authorizeUpdate,
    async (request: AuthorizeRequest): Promise<AuthorizeResult> => {
      const known = authorizations[request.id];
      if (known) return known;
      // One check-and-consume at a time, against counters that include every acknowledged event.
      await condition(() => (!authorizing && queue.length === 0 && !counting) || (closesUnderLoad && rollingOver));
      if (closesUnderLoad && rollingOver) {
        // The run must end with every handler finished: the caller retries against the next period.
        throw ApplicationFailure.create({ type: PERIOD_ROLLING_OVER, message: 'the period is rolling over; retry', nonRetryable: true });
      }
      authorizing = true;
      try {
        const again = authorizations[request.id];
        if (again) return again;
        const meter = findMeter(plan, request.metric)!;
        const current = counters[meter.metric];
        const prospective = applyToCounter(current, meter.aggregation, {
          quantity: request.quantity,
          timestamp: new Date(Date.now()).toISOString(),
        });
        const limit = meter.limit === undefined ? null : new Dec(meter.limit);
        const remainingAfter = (value: string) => (limit === null ? null : decimalToNumber(Dec.max(0, limit.minus(value))));
        if (meter.hard_limit && limit !== null && new Dec(prospective.value).greaterThan(limit)) {
          const refused: AuthorizeResult = { allowed: false, reason: 'hard_limit', remaining: remainingAfter(current?.value ?? '0') };
          authorizations[request.id] = refused;
          return refused;
        }
        const now = new Date(Date.now()).toISOString();
        queue.push({
          batchId: `authorize-${request.id}`,
          receivedAt: now,
          events: [{ id: request.id, metric: request.metric, quantity: request.quantity, timestamp: now }],
        });
        awaitingOutcome.add(request.id);
        await condition(() => consumed.has(request.id));
        const outcome = consumed.get(request.id);
        consumed.delete(request.id);
        const result: AuthorizeResult =
          outcome === 'refused'
            ? { allowed: false, reason: 'hard_limit', remaining: remainingAfter(counters[meter.metric]?.value ?? '0') }
            : { allowed: true, remaining: remainingAfter(counters[meter.metric]?.value ?? '0') };
        authorizations[request.id] = result;
        return result;
      } finally {
        authorizing = false;
      }
    },
    {
      validator: (request: AuthorizeRequest) => {
        const problem = argumentProblem('authorize', request);
        if (problem) throw ApplicationFailure.nonRetryable(problem, 'validation_failed');
        if (!findMeter(plan, request.metric)) {
          const known = plan.meters.map((m) => m.metric).join(', ');
          throw ApplicationFailure.nonRetryable(`authorize: plan ${plan.id} v${plan.version} has no metric ${request.metric} (it meters ${known})`, 'unknown_metric');
        }
      },
      description: 'Check-and-consume against a hard limit, idempotent on id. Argument: { "id": string, "metric": string, "quantity": number }.',
    },
  );

  const requestClose = async (finalize: boolean, cancel: boolean): Promise<ClosePeriodResult> => {
    if (!closeRequest) {
      // The period ends now, to the second (ids carry the start to the second; a close in the
      // period's first second keeps milliseconds) — but never before an event it already counted
      // (events may be stamped up to 5 minutes ahead). Events counted after this instant with
      // timestamps at or past it go to the next period.
      const now = Date.now();
      const second = Math.floor(now / 1000) * 1000;
      const start = Date.parse(period.start);
      // A chunk in flight already placed its events in this period: the period must hold them too.
      const latest = closesUnderLoad ? Math.max(latestCountedAt, latestPlacedAt) : latestCountedAt;
      const at = Math.max(second > start ? second : now, latest + 1, start + 1);
      closeRequest = { finalize, cancel, at: new Date(at).toISOString() };
    }
    await condition(() => closeResult !== undefined);
    return closeResult!;
  };
  setHandler(closePeriodUpdate, (request) => requestClose(request?.finalize === true, false), {
    validator: (request) => {
      const problem = argumentProblem('closePeriod', request);
      if (problem) throw ApplicationFailure.nonRetryable(problem, 'validation_failed');
    },
    description: 'Finance closes the current period now and invoices it. Argument: { "finalize"?: boolean } (finalize skips the grace) or none.',
  });
  setHandler(cancelSubscriptionUpdate, () => requestClose(true, true), {
    validator: (...args: unknown[]) => {
      const problem = argumentProblem('cancelSubscription', args[0]);
      if (problem) throw ApplicationFailure.nonRetryable(problem, 'validation_failed');
    },
    description: 'Cancels the subscription: closes the period now, writes its final invoice, ends the workflow. No argument.',
  });

  // ---- the period's story in the UI ----------------------------------------------------------

  if (useSearchAttributes) {
    upsertSearchAttributes([
      { key: SEARCH_ATTRIBUTES.PlanId, value: plan.id },
      { key: SEARCH_ATTRIBUTES.BillingPeriodStart, value: new Date(period.start) },
      { key: SEARCH_ATTRIBUTES.BillingPeriodEnd, value: new Date(period.end) },
    ]);
  }
  let alertLevel: AlertLevel = currentAlertLevel();
  // A new run starts from the previous run's search attributes: reset the level to this period's.
  if (useSearchAttributes) upsertSearchAttributes([{ key: SEARCH_ATTRIBUTES.AlertLevel, value: alertLevel }]);
  publishDetails();

  // ---- the main loop -------------------------------------------------------------------------

  for (;;) {
    const now = Date.now();
    const nextSeal = Math.min(...closing.map((c) => Date.parse(c.seal_at)));
    const deadline = Math.min(cancelled ? Infinity : Date.parse(period.end), nextSeal);
    await condition(
      () => queue.length > 0 || (closeRequest !== undefined && !cancelled) || readyToContinue() || rulesChanged,
      Math.max(deadline - now, 1),
      { summary: timerSummary(deadline) },
    );

    // History bound first, even under load: the queue is carried into the next run.
    if (readyToContinue()) {
      log.info('history bound reached: continuing as new within the period', { ...run, pending: pendingEvents() });
      await Promise.all([...deliveries]);
      await continueAsNew<typeof tenantBilling>({
        ...input,
        closing,
        cancelled,
        alert_rules: alertRules,
        carried: { counters, decided, alerts, events_counted: eventsCounted, authorizations: recentAuthorizations(), latest_counted_at: latestCountedAt },
        pending: [...deferred, ...queue],
      });
    }
    if (closesUnderLoad) {
      if (await stepUnderLoad()) return { cancelled: true, final_invoice_id: cancelled!.final_invoice_id };
      continue;
    }
    if (queue.length > 0) {
      await countNextChunk();
      continue;
    }
    if (rulesChanged) {
      // A rule applies from the moment it is created: judge it against the usage so far.
      rulesChanged = false;
      await fireAlerts(currentBook(), new Map());
      continue;
    }
    // Every event signalled before now has been counted (the queue is empty): seal what is due.
    for (const due of closing.filter((c) => Date.now() >= Date.parse(c.seal_at))) {
      await getExternalWorkflowHandle(due.invoice_workflow_id).signal(finalizeInvoiceSignal);
      closing.splice(closing.indexOf(due), 1);
    }
    if (cancelled) {
      if (closing.length === 0) {
        await condition(allHandlersFinished);
        return { cancelled: true, final_invoice_id: cancelled.final_invoice_id };
      }
      continue;
    }
    if (closeRequest !== undefined || Date.now() >= Date.parse(period.end)) {
      await rollover();
    }
  }

  /**
   * One step of the main loop when closes do not wait for an empty queue: seal what has settled,
   * roll over when due, else count. Under sustained ingest the queue is never empty, so a close
   * waits only until the queue is small enough to carry into the next run. True when the
   * cancelled subscription's last period is sealed and the workflow may end.
   */
  async function stepUnderLoad(): Promise<boolean> {
    await sealSettledPeriods();
    if (cancelled) {
      if (closing.length === 0 && queue.length === 0) {
        await condition(allHandlersFinished);
        return true;
      }
    } else if (
      (closeRequest !== undefined || Date.now() >= Date.parse(period.end)) &&
      pendingEvents() <= limits.maxCarriedEvents &&
      awaitingOutcome.size === 0
    ) {
      await rollover(); // continues as new, except for a cancellation
      return false;
    }
    if (queue.length > 0) {
      await countNextChunk();
    } else if (rulesChanged) {
      rulesChanged = false;
      await fireAlerts(currentBook(), new Map());
    }
    return false;
  }

  /**
   * Seals each closed period whose seal time has passed, once no batch received before that time
   * waits in the queue. Every signal written to history before the seal time was delivered by now
   * (this runs in a workflow task that started after it). A batch the API received at or after
   * the seal time holds no event it acknowledged for the period: events received after the grace
   * are refused as late, and the API's view of the periods is at most seconds old. The arrival
   * time in the workflow cannot stand in for the receive time: after an outage of the worker a
   * backlog of older signals is delivered long after the seal time.
   */
  async function sealSettledPeriods(): Promise<void> {
    const now = Date.now();
    const earliestQueued = Math.min(...queue.map((b) => Date.parse(b.receivedAt)).map((t) => (Number.isFinite(t) ? t : -Infinity)));
    for (const due of closing.filter((c) => now >= Date.parse(c.seal_at) && earliestQueued >= Date.parse(c.seal_at))) {
      await getExternalWorkflowHandle(due.invoice_workflow_id).signal(finalizeInvoiceSignal);
      closing.splice(closing.indexOf(due), 1);
    }
  }

  // ---- counting ------------------------------------------------------------------------------

  function pendingEvents(): number {
    return queue.reduce((n, b) => n + b.events.length, 0);
  }

  /**
   * Continue as new when the history is long, no handler is mid-way, and what must be carried
   * stays small (the pending queue travels in the next run's input, which has a size limit).
   */
  function readyToContinue(): boolean {
    return historyFull() && allHandlersFinished() && !counting && pendingEvents() <= limits.maxCarriedEvents;
  }

  /** Authorize answers kept for idempotency; older ids fall back to the stored event (allowed). */
  function recentAuthorizations(): Record<string, AuthorizeResult> {
    return Object.fromEntries(Object.entries(authorizations).slice(-2_000));
  }

  function historyFull(): boolean {
    return (
      workflowInfo().continueAsNewSuggested ||
      run.signals >= limits.maxSignalsPerRun ||
      run.events >= limits.maxEventsPerRun
    );
  }

  /** Takes up to `maxEventsPerChunk` events off the queue and counts them exactly once. */
  async function countNextChunk(): Promise<void> {
    counting = true;
    try {
      const chunk: Array<{ event: UsageEventInput; receivedAt: string }> = [];
      while (queue.length > 0 && chunk.length < limits.maxEventsPerChunk) {
        const batch = queue[0]!;
        const room = limits.maxEventsPerChunk - chunk.length;
        const taken = batch.events.length <= room ? batch.events : batch.events.slice(0, room);
        for (const event of taken) chunk.push({ event, receivedAt: batch.receivedAt });
        if (taken.length === batch.events.length) queue.shift();
        else queue[0] = { ...batch, events: batch.events.slice(room) };
      }

      const countable: CountableEvent[] = [];
      const refused: RefusedEvent[] = [];
      const later: UsageBatch = { batchId: `deferred-${run.chunks}`, receivedAt: '', events: [] };
      const seen = new Set<string>();
      for (const { event, receivedAt } of chunk) {
        if (seen.has(event.id)) continue; // the same id twice in one chunk counts once
        seen.add(event.id);
        const problem = eventProblem(event);
        if (problem) {
          refused.push({ event: storableEvent(event), received_at: receivedAt, reason: 'validation_failed' });
          continue;
        }
        const placed = placeEvent(event, receivedAt);
        if (placed.kind === 'count') {
          countable.push({ ...event, period_start: placed.periodStart, received_at: receivedAt });
          if (placed.periodStart === period.start) latestPlacedAt = Math.max(latestPlacedAt, Date.parse(event.timestamp));
        }
        else if (placed.kind === 'next') {
          later.receivedAt = receivedAt;
          later.events.push(event);
        } else refused.push({ event, received_at: receivedAt, reason: placed.reason });
      }
      if (later.events.length > 0) deferred.push(later);

      run.chunks += 1;
      const chunkId = `${workflowInfo().runId}-${run.chunks}`;
      const result = await acts.recordUsage.executeWithOptions(
        { summary: countEventsSummary(countable.length, refused.length), startToCloseTimeout: '60 seconds' },
        [{ tenant_id: tenantId, chunk_id: chunkId, events: countable, refused }],
      );

      const notCounted = new Set<string>([...result.duplicates, ...result.refused.map((r) => r.id)]);
      // Each period's percents before this chunk, by period start: the current one, and each closed
      // period its late events move.
      const current = currentBook();
      const before = new Map<string, { book: AlertBook; percents: Map<string, string> }>([
        [current.period_start, { book: current, percents: snapshotPercents(current) }],
      ]);
      for (const event of countable) {
        const outcome = result.duplicates.includes(event.id) ? 'duplicate' : notCounted.has(event.id) ? 'refused' : 'counted';
        settleAuthorization(event.id, outcome);
        if (outcome !== 'counted') continue;
        if (event.period_start === period.start) {
          const meter = findMeter(plan, event.metric)!;
          counters[meter.metric] = applyToCounter(counters[meter.metric], meter.aggregation, event);
          eventsCounted += 1;
          latestCountedAt = Math.max(latestCountedAt, Date.parse(event.timestamp));
        } else if (alertsForLateEvents) {
          // A late event in a closed period: its thresholds are judged like the current period's.
          const book = before.get(event.period_start)?.book ?? closedBook(event.period_start);
          if (!book) continue;
          if (!before.has(book.period_start)) before.set(book.period_start, { book, percents: snapshotPercents(book) });
          const meter = findMeter(book.plan, event.metric)!;
          book.counters[meter.metric] = applyToCounter(book.counters[meter.metric], meter.aggregation, event);
        }
      }
      for (const r of refused) settleAuthorization(r.event.id, 'refused');
      for (const { book, percents } of before.values()) await fireAlerts(book, percents);
      publishDetails();
    } finally {
      counting = false;
    }
  }

  /**
   * What makes an event impossible to count or store, whatever sent it (the API validates, a
   * direct signal does not): a quantity that is not a decimal >= 0 with <= 6 places, or text
   * PostgreSQL cannot store (NUL, unpaired surrogates) in the id, metric or properties.
   */
  function eventProblem(event: UsageEventInput): string | undefined {
    if (typeof event.id !== 'string' || event.id.length === 0 || event.id.length > 128 || !storableText(event.id)) return 'id';
    if (typeof event.metric !== 'string' || !storableText(event.metric)) return 'metric';
    if (typeof event.quantity !== 'number' && typeof event.quantity !== 'string') return 'quantity';
    try {
      parseQuantity(event.quantity);
    } catch {
      return 'quantity';
    }
    if (typeof event.timestamp !== 'string') return 'timestamp';
    if (event.properties !== undefined && (event.properties === null || typeof event.properties !== 'object' || !storableText(JSON.stringify(event.properties)))) {
      return 'properties';
    }
    return undefined;
  }

  function storableText(text: string): boolean {
    return !text.includes('\u0000') && !/\\u0000/.test(text) && !/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/.test(text);
  }

  /** A refused event as `rejected_events` can hold it: unstorable text replaced, properties dropped. */
  function storableEvent(event: UsageEventInput): UsageEventInput {
    // eslint-disable-next-line no-control-regex -- NUL is exactly what PostgreSQL text cannot hold
    const clean = (value: unknown) => String(value).replace(/\u0000|[\ud800-\udfff]/g, '\ufffd').slice(0, 256);
    return { id: clean(event.id), metric: clean(event.metric), quantity: clean(event.quantity), timestamp: clean(event.timestamp) };
  }

  /** Hands an authorize update the outcome of the event it consumed. */
  function settleAuthorization(id: string, outcome: 'counted' | 'duplicate' | 'refused'): void {
    if (!awaitingOutcome.delete(id)) return;
    consumed.set(id, outcome);
  }

  /** Decides where one event counts: this period, the previous one (grace), the next, or nowhere. */
  function placeEvent(
    event: UsageEventInput,
    receivedAt: string,
  ): { kind: 'count'; periodStart: string } | { kind: 'next' } | { kind: 'refuse'; reason: string } {
    const at = Date.parse(event.timestamp);
    if (!Number.isFinite(at)) return { kind: 'refuse', reason: 'validation_failed' };
    if (at > Date.parse(receivedAt) + FUTURE_TOLERANCE_MS) return { kind: 'refuse', reason: 'future_event' };
    if (!cancelled && at >= Date.parse(period.start)) {
      // A requested close ends the period at its own instant, even before the rollover runs.
      if (at >= Date.parse(closeRequest?.at ?? period.end)) return { kind: 'next' };
      return findMeter(plan, event.metric) ? { kind: 'count', periodStart: period.start } : { kind: 'refuse', reason: 'unknown_metric' };
    }
    // A closed period takes its events until it is sealed. The API refuses events received after
    // the grace (late_event); one it acknowledged anyway (its view of the periods was a moment
    // old) is still counted where it belongs rather than lost.
    const home = closing.find((c) => at >= Date.parse(c.start) && at < Date.parse(c.end));
    if (home) {
      return findMeter(home.plan, event.metric) ? { kind: 'count', periodStart: home.start } : { kind: 'refuse', reason: 'unknown_metric' };
    }
    if (cancelled && at >= Date.parse(period.start)) return { kind: 'refuse', reason: 'subscription_cancelled' };
    return { kind: 'refuse', reason: 'late_event' };
  }

  // ---- alerts --------------------------------------------------------------------------------

  /** The current period's alert book: its counters and decisions are this run's own. */
  function currentBook(): AlertBook {
    return { period_start: period.start, plan, counters, decided, current: true };
  }

  /** The alert book of a closed period that still takes late events (none for older runs' periods). */
  function closedBook(periodStart: string): AlertBook | undefined {
    const home = closing.find((c) => c.start === periodStart);
    if (!home?.counters || !home.decided) return undefined;
    return { period_start: home.start, plan: home.plan, counters: home.counters, decided: home.decided, current: false };
  }

  /** Every alert subject of a period with its current percent. */
  function snapshotPercents(book: AlertBook): Map<string, string> {
    const percents = new Map<string, string>();
    for (const meter of book.plan.meters) {
      if (meter.limit !== undefined && meter.limit > 0) {
        percents.set(meter.metric, usagePercent(book.counters[meter.metric]?.value ?? '0', meter.limit));
      }
    }
    if (book.plan.cost_limit !== undefined && new Dec(book.plan.cost_limit).greaterThan(0)) {
      percents.set(COST_SUBJECT, usagePercent(ratePeriod(book.plan, valuesOf(book.plan, book.counters)).total, book.plan.cost_limit));
    }
    return percents;
  }

  function thresholdsFor(book: AlertBook, subject: string): number[] {
    const own = alertRules.filter((r) => r.subject === subject).map((r) => r.threshold);
    return [...new Set([...book.plan.alert_thresholds, ...own])].sort((a, b) => a - b);
  }

  /** Decides, records and delivers the thresholds a period crossed since `before`. */
  async function fireAlerts(book: AlertBook, before: Map<string, string>): Promise<void> {
    const { plan, counters, decided } = book;
    const after = snapshotPercents(book);
    const records: AlertRecord[] = [];
    const firedAt = new Date(Date.now()).toISOString();
    for (const [subject, percent] of after) {
      if (before.get(subject) === percent) continue;
      const decision = decideThresholds(thresholdsFor(book, subject), decided[subject] ?? [], percent);
      if (decision.notify === null && decision.superseded.length === 0) continue;
      // Superseded thresholds are recorded even when nothing is notified (a rule added below a
      // threshold that already fired): each crossed threshold is decided exactly once.
      decided[subject] = [...(decided[subject] ?? []), ...(decision.notify === null ? [] : [decision.notify]), ...decision.superseded];
      const used = subject === COST_SUBJECT ? ratePeriod(plan, valuesOf(plan, counters)).total : counters[subject]?.value ?? '0';
      const limit = subject === COST_SUBJECT ? plan.cost_limit! : String(findMeter(plan, subject)!.limit);
      const covers = [...decision.superseded, ...(decision.notify === null ? [] : [decision.notify])].sort((a, b) => a - b);
      for (const threshold of covers) {
        const status = threshold === decision.notify ? 'notified' : 'superseded';
        records.push({
          id: alertId(tenantId, book.period_start, subject, threshold),
          subject,
          threshold,
          level: levelForThreshold(threshold),
          status,
          used,
          limit,
          covers: status === 'notified' ? covers : [],
          fired_at: firedAt,
          rule_id: alertRules.find((r) => r.subject === subject && r.threshold === threshold)?.id,
        });
      }
    }
    if (records.length === 0) return;
    // The usage view and the alert level speak of the current period only.
    for (const record of book.current ? records : []) {
      alerts.push({
        id: record.id,
        metric: record.subject,
        threshold: record.threshold,
        level: record.level,
        status: record.status,
        used: decimalToNumber(record.used),
        limit: decimalToNumber(record.limit),
        period_start: period.start,
        fired_at: record.fired_at,
      });
    }
    const recording = () =>
      acts.recordAlerts.executeWithOptions(
        { summary: recordAlertsSummary(records, book.current ? undefined : book.period_start) },
        [{ tenant_id: tenantId, period_start: book.period_start, alerts: records }],
      );
    // Older runs record first, then deliver; newer ones deliver at once (each delivery stores its
    // own alert first) and still await the record of every decided threshold before going on.
    if (!deliversWithRecord) await recording();
    for (const record of records.filter((r) => r.status === 'notified')) {
      const delivery: Promise<void> = acts.deliverAlert
        .executeWithOptions(
          {
            summary: notifyAlertSummary(record.subject, record.threshold),
            startToCloseTimeout: '30 seconds',
            retry: { maximumAttempts: 8, initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '1 minute' },
          },
          [
            {
              tenant_id: tenantId,
              alert_id: record.id,
              ...(deliversWithRecord ? { record: { period_start: book.period_start, alert: record } } : {}),
            },
          ],
        )
        .then(
          () => undefined,
          (err: unknown) => log.error('alert delivery failed for good', { alertId: record.id, error: String(err) }),
        )
        .finally(() => deliveries.delete(delivery));
      deliveries.add(delivery);
    }
    if (deliversWithRecord) await recording();
    const level = currentAlertLevel();
    if (level !== alertLevel) {
      alertLevel = level;
      if (useSearchAttributes) upsertSearchAttributes([{ key: SEARCH_ATTRIBUTES.AlertLevel, value: level }]);
    }
  }

  function currentAlertLevel(): AlertLevel {
    return highestLevel(alerts.map((a) => a.level));
  }

  // ---- rollover ------------------------------------------------------------------------------

  /** Closes this period, hands it to its invoice workflow and continues into the next period. */
  async function rollover(): Promise<void> {
    rollingOver = true;
    const request = closeRequest;
    const closedAt = request ? request.at : period.end;
    const closed: Period = { start: period.start, end: closedAt };
    const graceMs = request?.finalize ? 0 : plan.grace_period_seconds * 1000;
    const graceEndsAt = new Date(Date.parse(closedAt) + graceMs).toISOString();

    await acts.recordPeriodClosed.executeWithOptions({ summary: closePeriodSummary(closed) }, [
      { tenant_id: tenantId, period: closed, counters: counterValues(), grace_ends_at: graceEndsAt },
    ]);
    const invoiceWorkflow = invoiceWorkflowId(tenantId, closed.start, 1);
    // Started by an activity rather than as a child: the invoice outlives this run (it waits out
    // the grace while the next period runs) and is owned by no run of the tenant's workflow.
    await acts.startInvoiceWorkflow.executeWithOptions({ summary: startInvoiceSummary(invoiceWorkflow) }, [
      {
        workflow_id: invoiceWorkflow,
        input: { tenant_id: tenantId, period_start: closed.start, period_end: closed.end, grace_ends_at: graceEndsAt, version: 1 },
        search_attributes: useSearchAttributes,
      },
    ]);

    let next: Period | null = null;
    let nextPlan = plan;
    let nextRules = alertRules;
    let nextName = input.tenant_name;
    if (!request?.cancel) {
      next = request
        ? periodAfterEarlyClose(input.billing_anchor, plan.interval, input.timezone, closedAt)
        : periodContaining(input.billing_anchor, plan.interval, input.timezone, closedAt);
      const opened = await acts.startPeriod.executeWithOptions({ summary: openPeriodSummary(next) }, [
        { tenant_id: tenantId, period: { start: next.start, end: next.end } },
      ]);
      nextPlan = opened.plan;
      nextName = opened.tenant_name ?? nextName;
      // A rule change signalled after startPeriod read the rules must not be lost.
      nextRules = ruleChanges.reduce(applyAlertRulesChange, opened.alert_rules);
    }

    closeResult = {
      closed_period: closed,
      invoice_id: invoiceId(tenantId, closed.start, 1),
      invoice_workflow_id: invoiceWorkflow,
      current_period: next ? { start: next.start, end: next.end } : null,
    };
    closing.push({
      ...closed,
      grace_ends_at: graceEndsAt,
      seal_at: new Date(Date.parse(graceEndsAt) + LATE_EVENT_SETTLE_MS).toISOString(),
      plan,
      invoice_workflow_id: invoiceWorkflow,
      ...(alertsForLateEvents ? { counters, decided } : {}),
    });
    if (request?.cancel || next === null) {
      // Stay until the last period is sealed: events acknowledged before the cancellation still count.
      cancelled = { final_invoice_id: closeResult.invoice_id };
      return;
    }
    await Promise.all([...deliveries]);
    await condition(allHandlersFinished);
    await continueAsNew<typeof tenantBilling>({
      tenant_id: tenantId,
      ...(nextName === undefined ? {} : { tenant_name: nextName }),
      timezone: input.timezone,
      billing_anchor: input.billing_anchor,
      plan: nextPlan,
      period: { start: next.start, end: next.end },
      alert_rules: nextRules,
      closing,
      pending: [...deferred, ...queue],
      limits: input.limits,
      search_attributes: input.search_attributes,
    });
  }

  // ---- views ---------------------------------------------------------------------------------

  function counterValues(): Record<string, string> {
    return valuesOf(plan, counters);
  }

  function usageView(): UsageView {
    const rated = ratePeriod(plan, counterValues());
    const metrics: UsageView['metrics'] = {};
    for (const meter of plan.meters) {
      const used = counters[meter.metric]?.value ?? '0';
      metrics[meter.metric] = {
        used: decimalToNumber(used),
        limit: meter.limit ?? null,
        percent: meter.limit ? decimalToNumber(usagePercent(used, meter.limit)) : null,
        hard_limit: meter.hard_limit === true,
        amount: rateMeter(meter, used, plan.currency).amount,
      };
    }
    return {
      tenant_id: tenantId,
      plan_id: plan.id,
      plan_version: plan.version,
      period: { start: period.start, end: period.end, interval: plan.interval },
      metrics,
      costs: { base_fee: rated.base_fee, usage: rated.usage, total: rated.total, currency: plan.currency },
      alerts,
      alert_level: currentAlertLevel(),
      pending_events: pendingEvents(),
      as_of: new Date(Date.now()).toISOString(),
    };
  }

  function estimate(request: EstimateRequest): { amount: string; currency: string } {
    const problem = argumentProblem('usageEstimate', request);
    if (problem) throw ApplicationFailure.nonRetryable(problem, 'invalid_argument');
    const meter = findMeter(plan, request.metric);
    if (!meter) {
      const known = plan.meters.map((m) => m.metric).join(', ');
      throw ApplicationFailure.nonRetryable(`usageEstimate: plan ${plan.id} v${plan.version} has no metric ${request.metric} (it meters ${known})`, 'unknown_metric');
    }
    return {
      amount: estimateExtraCost(meter, counters[meter.metric]?.value ?? '0', request.quantity, plan.currency),
      currency: plan.currency,
    };
  }

  function stateView(): TenantStateView {
    return {
      tenant_id: tenantId,
      plan,
      period,
      closing_periods: closing.map((c) => ({ start: c.start, end: c.end, grace_ends_at: c.grace_ends_at, seal_at: c.seal_at })),
      counters,
      decided_thresholds: decided,
      events_counted: eventsCounted,
      pending_batches: queue.length,
      pending_events: pendingEvents(),
      deferred_events: deferred.reduce((n, b) => n + b.events.length, 0),
      run,
    };
  }

  /** What the main loop's timer waits for: the period's end, or the seal of a closed period. */
  function timerSummary(deadline: number): string {
    const sealing = closing.find((c) => Date.parse(c.seal_at) === deadline);
    return sealing ? sealTimerSummary(sealing, LATE_EVENT_SETTLE_MS) : periodEndTimerSummary(period.end);
  }

  function publishDetails(): void {
    setCurrentDetails(
      tenantCurrentDetails({
        tenantId,
        tenantName: input.tenant_name,
        plan,
        billingAnchor: input.billing_anchor,
        timezone: input.timezone,
        period,
        meters: plan.meters.map((m) => ({ metric: m.metric, used: counters[m.metric]?.value ?? '0', limit: m.limit })),
        alertLevel,
        closing,
      }),
    );
  }
}
