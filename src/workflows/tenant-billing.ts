import {
  ApplicationFailure,
  ParentClosePolicy,
  allHandlersFinished,
  condition,
  continueAsNew,
  log,
  patched,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  sleep,
  startChild,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import type * as activities from '../activities';
import type { ClaimResult, LedgerSnapshot, PeriodCounter } from '../contracts/ledger';
import type { AlertLevel } from '../domain/thresholds';
import { TenantLedger, type AlertDecision } from './tenant-ledger';
import {
  PERIOD_ROLLING_OVER,
  alertDeliveryWorkflowId,
  alertRulesChangedSignal,
  argumentProblem,
  authorizeUpdate,
  cancelSubscriptionUpdate,
  closePeriodUpdate,
  entitlementsChangedUpdate,
  estimateQuery,
  recordUsageSignal,
  settledUsageUpdate,
  stateQuery,
  usageQuery,
  type AlertRulesChange,
  type AuthorizeRequest,
  type AuthorizeResult,
  type ClosePeriodResult,
  type EntitlementsChange,
  type EntitlementsView,
  type TenantStateView,
} from './messages';
import { SEARCH_ATTRIBUTES } from './search-attributes';
import { alertDelivery } from './alert-delivery';
import {
  alertDeliverySummary,
  claimSummary,
  consumeSummary,
  entitlementsSummary,
  packDrawsSummary,
  graceEndTimerSummary,
  periodEndTimerSummary,
  recordAlertsSummary,
  restoreSummary,
  rolloverSummary,
  tenantCurrentDetails,
} from './summaries';

export { SEARCH_ATTRIBUTES };

/** What a run starts from. */
export interface TenantBillingInput {
  tenant_id: string;
  /** The ledger handed over by continue-as-new. Absent on a first run, or a run started again after one ended unexpectedly: it is then rebuilt from PostgreSQL. */
  ledger?: LedgerSnapshot;
  /** Alert-rule changes signalled to the previous run after its last step. */
  rule_changes?: AlertRulesChange[];
  /** History bounds; tests lower them to exercise continue-as-new. */
  limits?: Partial<RunLimits>;
  /** Off on servers without tally's search attributes registered (the time-skipping test server). */
  search_attributes?: boolean;
}

/** How a tenant's workflow ends: a cancelled subscription whose last period has settled, or no tenant at all. */
export type TenantBillingResult = { cancelled: true; final_invoice_id: string } | { cancelled: false; reason: 'no_tenant' };

/** Continue as new well before Temporal's history limits (and its warning at 10,240 events), whatever the load. */
export interface RunLimits {
  maxSignalsPerRun: number;
  maxClaimsPerRun: number;
  maxHistoryEvents: number;
}

const DEFAULT_LIMITS: RunLimits = { maxSignalsPerRun: 2_000, maxClaimsPerRun: 1_000, maxHistoryEvents: 8_000 };

const acts = proxyActivities<activities.BillingActivities>({
  startToCloseTimeout: '30 seconds',
  retry: { initialInterval: '200 milliseconds', backoffCoefficient: 2, maximumInterval: '10 seconds' },
});

/**
 * Runs ledger steps one at a time, in the order they asked: claims, authorizations and the
 * rollover never interleave, and a waiting step is served after the ones ahead of it, whatever
 * keeps arriving behind it.
 */
class OneAtATime {
  private tail: Promise<unknown> = Promise.resolve();

  run<T>(step: () => Promise<T>): Promise<T> {
    const result = this.tail.then(step);
    this.tail = result.catch(() => undefined);
    return result;
  }
}

/**
 * One tenant's subscription: a thin shell over its {@link TenantLedger}. Usage is stored by the
 * API in PostgreSQL; a `recordUsage` signal only rings the doorbell, and the run claims what
 * waits and decides the alerts it crossed. At the period's end (or a finance close) one activity
 * rolls the period over, and the run continues as new into the next period.
 */
export async function tenantBilling(input: TenantBillingInput): Promise<TenantBillingResult> {
  /**
   * Entitlements (limit overrides). A run recorded before them takes the old path: the first
   * entitlement message it gets makes it continue as new, and the next run (on this path) answers.
   */
  const entitlements = patched('entitlements-v1');
  let upgradeRequested = false;
  const limits: RunLimits = { ...DEFAULT_LIMITS, ...input.limits };
  const tenantId = input.tenant_id;
  const useSearchAttributes = input.search_attributes !== false;
  /** Set before anything reads it: handlers registered before a restore wait for it (`ready`). */
  let ledger: TenantLedger = undefined as unknown as TenantLedger;
  let ready = false;
  const steps = new OneAtATime();
  const run = { signals: 0, claims: 0, rung: 0, claimed: 0 };
  /**
   * Every run claims at once: events may wait unclaimed (a first run, a run restarted after one
   * ended unexpectedly, or a ring that reached the previous run after its last claim).
   */
  let rung = true;
  const ruleChanges: AlertRulesChange[] = [...(input.rule_changes ?? [])];
  let closeRequest: { finalize: boolean; cancel: boolean; idempotencyKey?: string } | undefined;
  let closeResult: ClosePeriodResult | undefined;
  /** Set before continue-as-new: new requests are refused at once and retried by the API against the next run. */
  let draining = false;
  let alertLevel: AlertLevel = 'none';
  let deadlineTimer: { at: number; passed: boolean } | undefined;

  const rollingOver = () => ApplicationFailure.create({ type: PERIOD_ROLLING_OVER, message: 'the period is rolling over; retry', nonRetryable: true });
  const refuseWhileDraining = () => {
    if (draining) throw rollingOver();
  };
  const invalid = (problem: string | undefined) => {
    if (problem) throw ApplicationFailure.nonRetryable(problem, 'validation_failed');
  };
  /** Refusals that need the ledger: checked by validators once it is there, and again by handlers that waited for it. */
  const refuseCancelled = () => {
    if (ready && ledger.cancelled) throw ApplicationFailure.nonRetryable('the subscription is cancelled', 'conflict');
  };
  const refuseUnknownMetric = (metric: string) => {
    const unknown = ready ? ledger.unknownMetric('authorize', metric) : undefined;
    if (unknown) throw ApplicationFailure.nonRetryable(unknown, 'unknown_metric');
  };
  const untilReady = () => condition(() => ready);
  const readyForQueries = () => {
    if (!ready) throw new Error('the run is restoring its ledger from PostgreSQL; ask again in a moment');
  };

  // ---- message handlers: each delegates to the ledger ------------------------------------------

  setHandler(
    recordUsageSignal,
    (doorbell) => {
      run.signals += 1;
      // A malformed doorbell still rings: a claim takes what is stored, whatever the signal said.
      const problem = argumentProblem('recordUsage', doorbell);
      if (problem) log.warn('recordUsage signal malformed; claiming anyway', { problem });
      else run.rung += doorbell.events;
      rung = true;
    },
    { description: 'New usage is stored in PostgreSQL: claim and count it (the API rings at most once per short window).' },
  );
  setHandler(
    alertRulesChangedSignal,
    (change) => {
      const problem = argumentProblem('alertRulesChanged', change);
      if (problem) log.warn('alertRulesChanged signal dropped', { problem });
      else ruleChanges.push(change);
    },
    { description: 'Alert rules created or deleted mid-period: they apply from the moment they are created.' },
  );
  setHandler(
    usageQuery,
    () => {
      readyForQueries();
      return ledger.usageView(now(), pendingEvents());
    },
    { description: 'The current period as GET …/usage shows it.' },
  );
  setHandler(
    stateQuery,
    () => {
      readyForQueries();
      return stateView();
    },
    { description: 'The whole ledger: every open book, closed periods in grace, and this run.' },
  );
  setHandler(
    estimateQuery,
    (request) => {
      const problem = argumentProblem('usageEstimate', request);
      if (problem) throw new Error(problem);
      readyForQueries();
      return ledger.estimate(request.metric, request.quantity);
    },
    { description: 'The cost of this much more of one metric, given where the tenant stands in its tiers.' },
  );
  setHandler(
    settledUsageUpdate,
    async () => {
      refuseWhileDraining();
      await untilReady();
      await steps.run(claimAll);
      return ledger.usageView(now(), pendingEvents());
    },
    { validator: refuseWhileDraining, description: 'Read-your-writes usage: counts every event stored before it, then answers.' },
  );
  setHandler(
    authorizeUpdate,
    async (request: AuthorizeRequest): Promise<AuthorizeResult> => {
      refuseWhileDraining();
      await untilReady();
      refuseCancelled();
      refuseUnknownMetric(request.metric);
      return steps.run(async () => {
        // Counters must include every stored event before a limit is checked.
        await claimAll();
        const step = ledger.authorize(request, now());
        if (step.kind === 'answer') return step.result;
        const claimed = await acts.consumeAuthorized.executeWithOptions({ summary: consumeSummary(step.event) }, [
          { tenant_id: tenantId, claim_id: `${workflowInfo().runId}-authorize-${request.id}`, event: step.event },
        ]);
        await applyClaim(claimed);
        return ledger.consumed(request, now());
      });
    },
    {
      validator: (request: AuthorizeRequest) => {
        refuseWhileDraining();
        invalid(argumentProblem('authorize', request));
        refuseCancelled();
        refuseUnknownMetric(request.metric);
      },
      description: 'Check-and-consume against a hard limit, one request at a time; idempotent on its id.',
    },
  );
  setHandler(
    entitlementsChangedUpdate,
    async (change?: EntitlementsChange): Promise<EntitlementsView> => {
      refuseWhileDraining();
      if (!entitlements) {
        upgradeRequested = true;
        throw rollingOver();
      }
      await untilReady();
      refuseCancelled();
      return steps.run(async () => {
        const stored = await acts.readEntitlements.executeWithOptions({ summary: entitlementsSummary() }, [{ tenant_id: tenantId }]);
        if (stored.packs) ledger.applyPacks(stored.packs, now());
        await fireAlerts(ledger.applyLimitOverrides(stored.limit_overrides, now()));
        await storeDraws();
        await fireAlerts(ledger.applyBalance(stored.balance, now(), change?.granted === true));
        publishDetails();
        return { limits: { ...ledger.limitOverrides } };
      });
    },
    {
      validator: (change?: EntitlementsChange) => {
        refuseWhileDraining();
        invalid(argumentProblem('entitlementsChanged', change));
        refuseCancelled();
      },
      description: "The tenant's limit overrides changed in PostgreSQL: read them and apply them to the current period at once.",
    },
  );
  const requestClose = async (finalize: boolean, cancel: boolean, idempotencyKey?: string): Promise<ClosePeriodResult> => {
    await untilReady();
    refuseCancelled();
    closeRequest ??= { finalize, cancel, ...(idempotencyKey ? { idempotencyKey } : {}) };
    await condition(() => closeResult !== undefined);
    return closeResult!;
  };
  const closeValidator = (message: 'closePeriod' | 'cancelSubscription') => (request?: unknown) => {
    refuseWhileDraining();
    invalid(argumentProblem(message, request));
    refuseCancelled();
  };
  setHandler(closePeriodUpdate, (request) => requestClose(request?.finalize === true, false, request?.idempotency_key), {
    validator: closeValidator('closePeriod'),
    description: 'Finance closes the current period now; finalize skips the grace of its invoice.',
  });
  setHandler(cancelSubscriptionUpdate, () => requestClose(false, true), {
    validator: closeValidator('cancelSubscription'),
    description: 'Cancels the subscription: the period closes now, its invoice follows its grace, and the workflow ends once it has settled.',
  });

  // ---- the run ---------------------------------------------------------------------------------

  const snapshot = input.ledger ?? (await acts.restoreLedger.executeWithOptions({ summary: restoreSummary() }, [{ tenant_id: tenantId }]));
  if (!snapshot) return { cancelled: false, reason: 'no_tenant' };
  ledger = new TenantLedger(snapshot);
  alertLevel = ledger.alertLevel();
  ready = true;
  publishSearchAttributes();
  publishDetails();
  for (;;) {
    const deadline = armDeadline();
    await condition(() => rung || ruleChanges.length > 0 || closeRequest !== undefined || deadline.passed || historyFull() || upgradeRequested);
    if (upgradeRequested) return continueWithLedger();
    if (ruleChanges.length > 0) {
      await steps.run(async () => {
        for (const change of ruleChanges.splice(0)) await fireAlerts(ledger.applyRulesChange(change, now()));
      });
    }
    if (rung) {
      rung = false;
      await steps.run(claimAll);
    }
    if (ledger.closingPeriods.some((p) => Date.now() >= Date.parse(p.grace_ends_at))) {
      // Past a grace end no event can be stored for that period: one more claim counts the last of them.
      await steps.run(async () => {
        const claimedFrom = Date.now();
        await claimAll();
        ledger.forgetSettled(claimedFrom);
      });
    }
    if (closeRequest !== undefined || ledger.periodEnded(Date.now())) {
      await steps.run(rollover);
      if (!ledger.cancelled) return continueWithLedger();
    }
    if (ledger.finished()) {
      await finishHandlers();
      return { cancelled: true, final_invoice_id: ledger.cancelled!.final_invoice_id };
    }
    if (historyFull()) return continueWithLedger();
  }

  // ---- steps -----------------------------------------------------------------------------------

  /**
   * One timer per deadline (the period end, or the next grace end), not one per wake-up: a
   * doorbell then costs the history only its claim, never a timer started and cancelled.
   */
  function armDeadline(): { passed: boolean } {
    const at = ledger.nextDeadline();
    if (deadlineTimer?.at === at) return deadlineTimer;
    const timer = { at, passed: false };
    deadlineTimer = timer;
    if (Number.isFinite(at)) {
      const summary = at === Date.parse(ledger.period.end) && !ledger.cancelled ? periodEndTimerSummary(ledger.period.end) : graceEndTimerSummary(new Date(at).toISOString());
      void sleep(Math.max(at - Date.now(), 1), { summary }).then(() => {
        timer.passed = true;
      });
    }
    return timer;
  }

  /** Claims until nothing waits: each claim counts up to a few thousand stored events. */
  async function claimAll(): Promise<void> {
    let claim: ClaimResult;
    do {
      run.claims += 1;
      const withBalance = entitlements && (ledger.watchesBalance() || ledger.hasPacks());
      const withGroups = entitlements && ledger.pricesByGroup();
      claim = await acts.claimUsage.executeWithOptions({ summary: claimSummary() }, [
        {
          tenant_id: tenantId,
          claim_id: `${workflowInfo().runId}-claim-${run.claims}`,
          ...(withBalance ? { balance: true } : {}),
          ...(withGroups ? { groups: true } : {}),
        },
      ]);
      await applyClaim(claim);
    } while (claim.more);
  }

  async function applyClaim(claim: ClaimResult): Promise<void> {
    run.claimed += claim.claimed;
    if (claim.packs) ledger.applyPacks(claim.packs, now());
    await fireAlerts(ledger.applyCounters(claim.counters, now(), claim.groups));
    await storeDraws();
    if (claim.balance) await fireAlerts(ledger.applyBalance(claim.balance, now()));
    publishDetails();
  }

  /** Stores the pack draws the ledger decided, so no unit is ever drawn twice. */
  async function storeDraws(): Promise<void> {
    for (const period of ledger.takeDraws()) {
      await acts.recordPackDraws.executeWithOptions({ summary: packDrawsSummary(period.period_start, period.draws) }, [{ tenant_id: tenantId, ...period }]);
    }
  }

  /**
   * Records what the ledger decided, and hands each notified alert to its own delivery workflow,
   * which the run does not wait for: a receiver that hangs must not hold up counting, nor the
   * next period.
   */
  async function fireAlerts(decisions: AlertDecision[]): Promise<void> {
    for (const decision of decisions) {
      for (const record of decision.records.filter((r) => r.status === 'notified')) {
        try {
          await startChild(alertDelivery, {
            workflowId: alertDeliveryWorkflowId(record.id),
            args: [{ tenant_id: tenantId, alert_id: record.id, record: { period_start: decision.period_start, alert: record }, subject: record.subject, threshold: record.threshold }],
            parentClosePolicy: ParentClosePolicy.ABANDON,
            staticSummary: alertDeliverySummary(tenantId, record.subject, record.threshold),
            ...(useSearchAttributes ? { typedSearchAttributes: [{ key: SEARCH_ATTRIBUTES.TenantId, value: tenantId }] } : {}),
          });
        } catch (err) {
          // Started before (a run restored after its start was recorded): one delivery per alert.
          if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
        }
      }
      await acts.recordAlerts.executeWithOptions({ summary: recordAlertsSummary(decision.records, decision.current ? undefined : decision.period_start) }, [
        { tenant_id: tenantId, period_start: decision.period_start, alerts: decision.records },
      ]);
    }
    const level = ledger.alertLevel();
    if (level !== alertLevel) {
      alertLevel = level;
      if (useSearchAttributes) upsertSearchAttributes([{ key: SEARCH_ATTRIBUTES.AlertLevel, value: level }]);
    }
  }

  /** Closes the period (its anniversary, or the close finance asked for) and opens the next, in one activity. */
  async function rollover(): Promise<void> {
    const request = closeRequest;
    // The instant is read now, as the rollover's turn comes: every step before it (a claim, an
    // authorization) decided against the period as it was, and nothing is decided between this
    // instant and the rollover's transaction, which moves what is stamped after it.
    const closeAt = request ? ledger.closeInstant(Date.now()) : ledger.period.end;
    const result = await acts.rollOverPeriod.executeWithOptions({ summary: rolloverSummary(ledger.period.start, closeAt, request?.cancel === true) }, [
      {
        tenant_id: tenantId,
        period_start: ledger.period.start,
        close_at: closeAt,
        grace_seconds: request?.finalize ? 0 : ledger.plan.grace_period_seconds,
        cancel: request?.cancel === true,
        ...(request?.idempotencyKey ? { idempotency_key: request.idempotencyKey } : {}),
        search_attributes: useSearchAttributes,
      },
    ]);
    ledger.rollOver(result);
    closeRequest = undefined;
    closeResult = {
      closed_period: { start: result.closed.start, end: result.closed.end },
      invoice_id: result.invoice_id,
      invoice_workflow_id: result.invoice_workflow_id,
      current_period: result.next?.period ?? null,
    };
    publishDetails();
  }

  async function finishHandlers(): Promise<void> {
    draining = true;
    await condition(allHandlersFinished);
  }

  /** Rule changes that arrived too late for this run travel on; the next run claims at once (a ring may have come too late too). */
  async function continueWithLedger(): Promise<never> {
    await finishHandlers();
    return continueAsNew<typeof tenantBilling>({
      tenant_id: tenantId,
      ledger: ledger.snapshot(),
      ...(ruleChanges.length > 0 ? { rule_changes: ruleChanges } : {}),
      limits: input.limits,
      search_attributes: input.search_attributes,
    });
  }

  function historyFull(): boolean {
    const info = workflowInfo();
    return info.continueAsNewSuggested || info.historyLength >= limits.maxHistoryEvents || run.signals >= limits.maxSignalsPerRun || run.claims >= limits.maxClaimsPerRun;
  }

  // ---- views -----------------------------------------------------------------------------------

  function now(): string {
    return new Date(Date.now()).toISOString();
  }

  /** Events rung but not claimed by this run yet (an estimate: the API's read model has the exact figure). */
  function pendingEvents(): number {
    return Math.max(0, run.rung - run.claimed);
  }

  function stateView(): TenantStateView {
    return {
      tenant: ledger.tenant,
      plan: ledger.plan,
      period: ledger.period,
      cancelled: ledger.cancelled ?? null,
      closing_periods: ledger.closingPeriods,
      books: ledger.books(),
      pending_events: pendingEvents(),
      run,
    };
  }

  /** The period this run bills, for List Filters in the Temporal UI (the alert level follows its changes). */
  function publishSearchAttributes(): void {
    if (!useSearchAttributes) return;
    upsertSearchAttributes([
      { key: SEARCH_ATTRIBUTES.PlanId, value: ledger.plan.id },
      { key: SEARCH_ATTRIBUTES.BillingPeriodStart, value: new Date(ledger.period.start) },
      { key: SEARCH_ATTRIBUTES.BillingPeriodEnd, value: new Date(ledger.period.end) },
      { key: SEARCH_ATTRIBUTES.AlertLevel, value: alertLevel },
    ]);
  }

  /** The run's current details in the Temporal UI (no history cost: a query answers them). */
  function publishDetails(): void {
    setCurrentDetails(
      tenantCurrentDetails({
        tenantId,
        tenantName: ledger.tenant.name,
        plan: ledger.plan,
        billingAnchor: ledger.tenant.billing_anchor,
        timezone: ledger.tenant.timezone,
        period: ledger.period,
        meters: ledger.meterDetails(),
        alertLevel,
        closing: ledger.closingPeriods,
      }),
    );
  }
}

export type { PeriodCounter };
