import {
  ParentClosePolicy,
  getExternalWorkflowHandle,
  log,
  proxyActivities,
  proxyLocalActivities,
  setCurrentDetails,
  sleep,
  startChild,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import { WorkflowExecutionAlreadyStartedError, type SearchAttributePair } from '@temporalio/common';
import type * as activities from '../activities';
import type { ClaimUsageInput } from '../activities/ledger';
import type { AlertRecord, ClaimResult, LedgerSnapshot } from '../contracts/ledger';
import type { InlineDeliveryOutcome } from '../activities/types';
import type { AlertLevel } from '../domain/thresholds';
import type { AlertDecision, TenantLedger } from './tenant-ledger';
import {
  alertDeliveryWorkflowId,
  finalizeInvoiceSignal,
  type AlertRulesChange,
  type AuthorizeRequest,
  type AuthorizeResult,
  type ClosePeriodResult,
  type EntitlementsChange,
  type EntitlementsView,
  type TenantStateView,
  type UsageView,
} from './messages';
import { SEARCH_ATTRIBUTES, periodSearchAttributes } from './search-attributes';
import { TENANT_BILLING_PATCHES } from './patches';
import type { RunPatches } from './run-patches';
import { ALERT_DELIVERY_ATTEMPTS, alertDelivery } from './alert-delivery';
import {
  alertDeliverySummary,
  alertRulesSummary,
  claimSummary,
  closeKeySummary,
  consumeSummary,
  entitlementsSummary,
  packDrawsSummary,
  graceEndTimerSummary,
  notifyAlertSummary,
  recordAndNotifySummary,
  periodEndTimerSummary,
  recordAlertsSummary,
  restoreSummary,
  rolloverSummary,
  tenantCurrentDetails,
} from './summaries';

/**
 * The steps of a tenant's run that call activities, start children or timers, or publish to the
 * Temporal UI: what `tenantBilling`'s handlers and main loop delegate to. The ledger decides; a
 * step records its decisions in PostgreSQL and feeds it what the activities answered, with
 * instants read from the workflow clock.
 */

const ACTIVITY_OPTIONS = {
  startToCloseTimeout: '30 seconds',
  retry: { initialInterval: '200 milliseconds', backoffCoefficient: 2, maximumInterval: '10 seconds' },
} as const;

const acts = proxyActivities<activities.BillingActivities>(ACTIVITY_OPTIONS);

/**
 * The first claim of a step runs as a local activity: one short PostgreSQL transaction, run by
 * the worker inside the workflow task that asked for it and recorded as a marker, which spares
 * the Temporal server an activity task and a second workflow task for every claim (the bulk of
 * its work under ingest). The claims that follow it (a backlog of more than one claim) run as
 * activities, each ending the workflow task: a task that ran claim after claim would hold back
 * the doorbells arriving meanwhile, and past its buffer of about 100 events the server fails the
 * task, whose retry would claim again (the full bench's hot tenant stalled so).
 */
const localActs = proxyLocalActivities<activities.BillingActivities>(ACTIVITY_OPTIONS);

/**
 * How long an inline delivery attempt lets each webhook take. A receiver slower than this gets
 * the alert from the delivery workflow's next attempt; the run is held up by this much at most
 * (an email channel is never tried inline: its exchange cannot be cut short).
 */
const INLINE_SEND_BUDGET_MS = 2_000;

/** The inline attempt runs once: what it leaves undone, the delivery workflow retries. */
const inlineDelivery = proxyLocalActivities<activities.BillingActivities>({ startToCloseTimeout: '30 seconds', retry: { maximumAttempts: 1 } });

/** This run so far: doorbells received, claims made, events rung and claimed. Its history bounds count signals and claims. */
export type RunCounts = TenantStateView['run'];

/** A close asked for by message (finance's close, or a cancellation), and the answer its rollover gave every caller. */
export interface PeriodClose {
  request?: { finalize: boolean; cancel: boolean; idempotencyKey?: string };
  result?: ClosePeriodResult;
  /** The `Idempotency-Key` the rollover stored with the closed period: its request's. */
  storedKey?: string;
  /** Set as the rollover begins: whether it cancels the subscription and skips the grace (a close then no longer changes what it does). */
  begun?: { cancel: boolean; finalize: boolean };
}

export interface TenantStepsOptions {
  tenantId: string;
  /** The patches this run takes: recorded by its own markers, or handed over by the previous run. */
  patches: RunPatches;
  /** Patch `entitlements-v1`: claims also read the prepaid balance, packs and group prices. */
  entitlements: boolean;
  /** Patch `local-barrier-claims-v1`: claims run as local activities, and those of one step count what was stored when the first began. */
  localBarrierClaims: boolean;
  /** Patch `bulk-counting-v1`: claims store the ledger's decision points and answer the whole current period. */
  bulkCounting: boolean;
  /** Off on servers without tally's search attributes registered. */
  searchAttributes: boolean;
}

/** The tenant's ledger as PostgreSQL holds it, for a run that was handed none; null when there is no such tenant. */
export function restoreLedger(tenantId: string): Promise<LedgerSnapshot | null> {
  return acts.restoreLedger.executeWithOptions({ summary: restoreSummary() }, [{ tenant_id: tenantId }]);
}

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

/** A tenant's run, step by step. Every public step that touches PostgreSQL waits for its turn. */
export class TenantSteps {
  private readonly turns = new OneAtATime();
  private readonly tenantId: string;
  private alertLevel: AlertLevel;
  private deadlineTimer: { at: number; passed: boolean } | undefined;
  /** When the latest claim that completed began (workflow time): everything stored before it is counted. */
  private lastClaimFrom = Number.NEGATIVE_INFINITY;
  /** Local activities under way: a ring that arrives meanwhile may be dropped (tenant-billing.ts). */
  private localActivities = 0;

  constructor(
    readonly ledger: TenantLedger,
    private readonly run: RunCounts,
    private readonly options: TenantStepsOptions,
  ) {
    this.tenantId = options.tenantId;
    this.alertLevel = ledger.alertLevel();
  }

  /** True while one of this run's local activities is under way. */
  get localActivityUnderWay(): boolean {
    return this.localActivities > 0;
  }

  private async local<T>(activity: () => Promise<T>): Promise<T> {
    this.localActivities += 1;
    try {
      return await activity();
    } finally {
      this.localActivities -= 1;
    }
  }

  // ---- steps that take their turn --------------------------------------------------------------

  /** Claims what is stored now. */
  claim(): Promise<void> {
    return this.turns.run(() => this.claimAll());
  }

  /** Counters must include every stored event before a limit is checked: claim, then decide, then consume. */
  authorize(request: AuthorizeRequest): Promise<AuthorizeResult> {
    return this.turns.run(async () => {
      await this.claimAll();
      const step = this.ledger.authorize(request, now());
      if (step.kind === 'answer') return step.result;
      const claimed = await acts.consumeAuthorized.executeWithOptions({ summary: consumeSummary(step.event) }, [
        { tenant_id: this.tenantId, claim_id: `${workflowInfo().runId}-authorize-${request.id}`, event: step.event },
      ]);
      await this.applyClaim(claimed);
      return this.ledger.consumed(request, now());
    });
  }

  /** Reads the tenant's limit overrides, packs and balance from PostgreSQL and applies them to the current period. */
  applyEntitlements(change?: EntitlementsChange): Promise<EntitlementsView> {
    return this.turns.run(async () => {
      const ledger = this.ledger;
      await this.catchUpWithBulkCounts();
      const stored = await acts.readEntitlements.executeWithOptions({ summary: entitlementsSummary() }, [{ tenant_id: this.tenantId }]);
      if (stored.packs) ledger.applyPacks(stored.packs, now());
      await this.fireAlerts(ledger.applyLimitOverrides(stored.limit_overrides, now()));
      await this.storeDraws();
      await this.fireAlerts(ledger.applyBalance(stored.balance, now(), change?.granted === true));
      await this.publishDecisionPoints();
      this.publishDetails();
      return { limits: { ...ledger.limitOverrides } };
    });
  }

  /** Applies the rule changes waiting when its turn comes (it empties `waiting`). */
  applyRuleChanges(waiting: AlertRulesChange[]): Promise<void> {
    return this.turns.run(async () => {
      await this.catchUpWithBulkCounts();
      for (const change of waiting.splice(0)) await this.fireAlerts(this.ledger.applyRulesChange(change, now()));
      await this.publishDecisionPoints();
    });
  }

  /**
   * Reads the tenant's alert rules in force from PostgreSQL and judges them against the usage so
   * far. The step before it in turn (a claim under way) has ended, so the answer waits for it:
   * whatever is stored after the answer is decided with these rules.
   */
  applyStoredRules(): Promise<void> {
    return this.turns.run(async () => {
      await this.catchUpWithBulkCounts();
      const rules = await this.local(() => localActs.readAlertRules.executeWithOptions({ summary: alertRulesSummary() }, [{ tenant_id: this.tenantId }]));
      await this.fireAlerts(this.ledger.applyStoredRules(rules, now()));
      await this.publishDecisionPoints();
    });
  }

  /**
   * Past a grace end no event can be stored for that period: a claim that begins after it counts
   * the last of them. The run's latest claim may have (the first claim of a run that follows a
   * rollover without grace does); otherwise one more.
   */
  settleGraceEnds(): Promise<void> {
    return this.turns.run(async () => {
      const now = Date.now();
      const ended = this.ledger.closingPeriods.filter((p) => now >= Date.parse(p.grace_ends_at));
      if (ended.every((p) => Date.parse(p.grace_ends_at) <= this.lastClaimFrom)) {
        this.options.patches.deprecatePatch(TENANT_BILLING_PATCHES.graceSettledByLaterClaim);
        this.ledger.forgetSettled(this.lastClaimFrom);
        return;
      }
      const claimedFrom = Date.now();
      await this.claimAll();
      this.ledger.forgetSettled(claimedFrom);
    });
  }

  /**
   * Closes the period (its anniversary, or the close asked for by the time its turn comes) and
   * opens the next, in one activity; answers the close in `close`.
   */
  rollOver(close: PeriodClose): Promise<void> {
    return this.turns.run(async () => {
      const request = close.request;
      close.begun = { cancel: request?.cancel === true, finalize: request?.finalize === true };
      const ledger = this.ledger;
      // The instant is read now, as the rollover's turn comes: every step before it (a claim, an
      // authorization) decided against the period as it was, and nothing is decided between this
      // instant and the rollover's transaction, which moves what is stamped after it.
      const closeAt = request ? ledger.closeInstant(Date.now()) : ledger.period.end;
      const result = await acts.rollOverPeriod.executeWithOptions({ summary: rolloverSummary(ledger.period.start, closeAt, request?.cancel === true) }, [
        {
          tenant_id: this.tenantId,
          period_start: ledger.period.start,
          close_at: closeAt,
          grace_seconds: request?.finalize ? 0 : ledger.plan.grace_period_seconds,
          cancel: request?.cancel === true,
          ...(request?.idempotencyKey ? { idempotency_key: request.idempotencyKey } : {}),
          search_attributes: this.options.searchAttributes,
        },
      ]);
      ledger.rollOver(result);
      close.request = undefined;
      close.storedKey = request?.idempotencyKey;
      close.result = {
        closed_period: { start: result.closed.start, end: result.closed.end },
        invoice_id: result.invoice_id,
        invoice_workflow_id: result.invoice_workflow_id,
        current_period: result.next?.period ?? null,
      };
      this.publishDetails();
    });
  }

  /**
   * A keyed close's answer, kept for its retries: stored with the closed period in PostgreSQL
   * (where the API looks first), unless the rollover stored it as its own request's key, and kept
   * by the ledger, which answers a retry that reaches the next run (patch `close-keys-v1`).
   */
  async keepCloseAnswer(key: string, close: PeriodClose): Promise<ClosePeriodResult> {
    const result = close.result!;
    if (key !== close.storedKey) {
      const periodStart = result.closed_period.start;
      await this.local(() => localActs.storeCloseKey.executeWithOptions({ summary: closeKeySummary(key, periodStart) }, [{ tenant_id: this.tenantId, idempotency_key: key, period_start: periodStart }]));
    }
    this.ledger.rememberCloseAnswer(key, result);
    return result;
  }

  /**
   * Ends the grace of an invoice whose rollover kept it, for a close with `finalize` that shared
   * that rollover. The invoice workflow may have finalized and ended already (its grace ran out
   * while this run waited): then there is nothing left to do.
   */
  async finalizeInvoiceNow(result: ClosePeriodResult): Promise<void> {
    try {
      await getExternalWorkflowHandle(result.invoice_workflow_id).signal(finalizeInvoiceSignal);
    } catch (err) {
      log.info('the invoice workflow had already ended', { invoiceWorkflowId: result.invoice_workflow_id, error: String(err) });
    }
  }

  // ---- the deadline ----------------------------------------------------------------------------

  /**
   * One timer per deadline (the period end, or the next grace end), not one per wake-up: a
   * doorbell then costs the history only its claim, never a timer started and cancelled.
   */
  armDeadline(): { passed: boolean } {
    const ledger = this.ledger;
    const at = ledger.nextDeadline();
    if (this.deadlineTimer?.at === at) return this.deadlineTimer;
    const timer = { at, passed: false };
    this.deadlineTimer = timer;
    if (Number.isFinite(at) && at <= Date.now()) {
      // Already past (a grace of 0 after a rollover, a worker back after the period end): the
      // loop acts on it now, without a timer's two events and a workflow task of its own.
      this.options.patches.deprecatePatch(TENANT_BILLING_PATCHES.noTimerForPastDeadlines);
      timer.passed = true;
    } else if (Number.isFinite(at)) {
      const summary = at === Date.parse(ledger.period.end) && !ledger.cancelled ? periodEndTimerSummary(ledger.period.end) : graceEndTimerSummary(new Date(at).toISOString());
      void sleep(Math.max(at - Date.now(), 1), { summary }).then(() => {
        timer.passed = true;
      });
    }
    return timer;
  }

  /** Whether a closed period's grace has ended, so its last late events can be counted. */
  graceEnded(): boolean {
    return this.ledger.closingPeriods.some((p) => Date.now() >= Date.parse(p.grace_ends_at));
  }

  // ---- within a turn ---------------------------------------------------------------------------

  /**
   * Before a decision that does not come from a claim (a rule or a limit changed): the worker's
   * counter may have counted events in bulk that this ledger has not seen, and a claim answers
   * the whole current period.
   */
  private async catchUpWithBulkCounts(): Promise<void> {
    if (this.options.bulkCounting) await this.claimAll();
  }

  /**
   * After such a decision: its new rules or limits may move the decision points down, and the
   * counter must not count in bulk past them. A claim stores them (and counts what waits).
   */
  private async publishDecisionPoints(): Promise<void> {
    if (this.options.bulkCounting) await this.claimAll();
  }

  /**
   * Claims until what was stored when the first claim began is counted: the later claims stop at
   * its barrier, so a tenant that sends faster than it is counted cannot keep a step (a
   * consistent read, an authorization, the loop between two checks of the history) from ending.
   * What arrives meanwhile rang the doorbell, and the loop claims it next.
   */
  private async claimAll(): Promise<void> {
    const { ledger, run } = this;
    const from = Date.now();
    let claim: ClaimResult;
    let barrier: string | undefined;
    let first = true;
    do {
      run.claims += 1;
      const withBalance = this.options.entitlements && (ledger.watchesBalance() || ledger.hasPacks());
      const withGroups = this.options.entitlements && ledger.pricesByGroup();
      const input: ClaimUsageInput = {
        tenant_id: this.tenantId,
        claim_id: `${workflowInfo().runId}-claim-${run.claims}`,
        ...(withBalance ? { balance: true } : {}),
        ...(withGroups ? { groups: true } : {}),
        ...(barrier !== undefined ? { through_seq: barrier } : {}),
        // The points as decided before this claim: a claim can only move them up, so the stored
        // ones are never above the ledger's, and the counter never counts past a decision.
        ...(this.options.bulkCounting ? { decision_points: ledger.decisionPoints(), current_period: ledger.period.start } : {}),
      };
      if (this.options.localBarrierClaims && first) {
        claim = await this.local(() => localActs.claimUsage.executeWithOptions({ summary: claimSummary() }, [input]));
        barrier = claim.barrier_seq;
        first = false;
      } else {
        claim = await acts.claimUsage.executeWithOptions({ summary: claimSummary() }, [input]);
      }
      await this.applyClaim(claim);
    } while (claim.more);
    this.lastClaimFrom = from;
  }

  private async applyClaim(claim: ClaimResult): Promise<void> {
    const ledger = this.ledger;
    this.run.claimed += claim.claimed;
    if (claim.packs) ledger.applyPacks(claim.packs, now());
    await this.fireAlerts(ledger.applyCounters(claim.counters, now(), claim.groups));
    await this.storeDraws();
    if (claim.balance) await this.fireAlerts(ledger.applyBalance(claim.balance, now()));
    this.publishDetails();
  }

  /** Stores the pack draws the ledger decided, so no unit is ever drawn twice. */
  private async storeDraws(): Promise<void> {
    for (const period of this.ledger.takeDraws()) {
      await acts.recordPackDraws.executeWithOptions({ summary: packDrawsSummary(period.period_start, period.draws) }, [{ tenant_id: this.tenantId, ...period }]);
    }
  }

  /**
   * Records what the ledger decided, and delivers each notified alert: a first attempt inline,
   * whose webhooks wait at most {@link INLINE_SEND_BUDGET_MS}, then, for what it left undone,
   * a delivery workflow of the alert's own, which the run does not wait for: a receiver that
   * hangs must not hold up counting, nor the next period.
   */
  private async fireAlerts(decisions: AlertDecision[]): Promise<void> {
    const tenantId = this.tenantId;
    if (decisions.length > 0) this.options.patches.deprecatePatch(TENANT_BILLING_PATCHES.inlineAlertDelivery);
    for (const decision of decisions) {
      const notified = decision.records.filter((r) => r.status === 'notified');
      const record = { tenant_id: tenantId, period_start: decision.period_start, alerts: decision.records };
      const summary = recordAlertsSummary(decision.records, decision.current ? undefined : decision.period_start);
      // Recorded before any attempt: the attempt reads the alert back, and the alert exists
      // whatever comes of it. The first notified alert's attempt records them all itself, in the
      // same local activity; one that failed as a whole may not have, so then they are recorded
      // on their own, with retries, before the delivery workflow takes over.
      const recordedByAttempt = notified.length > 0;
      if (recordedByAttempt) this.options.patches.deprecatePatch(TENANT_BILLING_PATCHES.alertsRecordedByFirstAttempt);
      else await this.local(() => localActs.recordAlerts.executeWithOptions({ summary }, [record]));
      for (const [index, alert] of notified.entries()) {
        const recordsToo = index === 0;
        const first = await this.local(() =>
          inlineDelivery.deliverAlertInline.executeWithOptions({ summary: recordsToo ? recordAndNotifySummary(decision.records, alert, decision.current ? undefined : decision.period_start) : notifyAlertSummary(alert.subject, alert.threshold) }, [
            {
              tenant_id: tenantId,
              alert_id: alert.id,
              send_budget_ms: INLINE_SEND_BUDGET_MS,
              attempts_allowed: ALERT_DELIVERY_ATTEMPTS,
              ...(recordsToo ? { records: { period_start: decision.period_start, alerts: decision.records } } : {}),
            },
          ]),
        ).catch(() => undefined);
        if (first === undefined && recordsToo) await this.local(() => localActs.recordAlerts.executeWithOptions({ summary }, [record]));
        // An attempt that failed itself (PostgreSQL away, its timeout) is counted as made.
        const outcome: InlineDeliveryOutcome = first ?? { outcome: 'handed_on', attempts: 1 };
        if (outcome.outcome === 'handed_on') await this.startDelivery(decision.period_start, alert, outcome.attempts);
      }
    }
    const level = this.ledger.alertLevel();
    if (level !== this.alertLevel) {
      this.alertLevel = level;
      if (this.options.searchAttributes) upsertSearchAttributes([{ key: SEARCH_ATTRIBUTES.AlertLevel, value: level }]);
    }
  }

  /** Hands a notified alert to its delivery workflow, which goes on from the attempts made before it. */
  private async startDelivery(periodStart: string, alert: AlertRecord, earlierAttempts: number): Promise<void> {
    const tenantId = this.tenantId;
    try {
      await startChild(alertDelivery, {
        workflowId: alertDeliveryWorkflowId(alert.id),
        args: [
          {
            tenant_id: tenantId,
            alert_id: alert.id,
            record: { period_start: periodStart, alert },
            subject: alert.subject,
            threshold: alert.threshold,
            ...(earlierAttempts > 0 ? { earlier_attempts: earlierAttempts } : {}),
          },
        ],
        parentClosePolicy: ParentClosePolicy.ABANDON,
        staticSummary: alertDeliverySummary(tenantId, alert.subject, alert.threshold),
        ...(this.options.searchAttributes ? { typedSearchAttributes: [{ key: SEARCH_ATTRIBUTES.TenantId, value: tenantId }] } : {}),
      });
    } catch (err) {
      // Started before (a run restored after its start was recorded): one delivery per alert.
      if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
    }
  }

  // ---- views -----------------------------------------------------------------------------------

  /** The current period as GET …/usage shows it. */
  usageView(): UsageView {
    return this.ledger.usageView(now(), this.pendingEvents());
  }

  stateView(): TenantStateView {
    const ledger = this.ledger;
    return {
      tenant: ledger.tenant,
      plan: ledger.plan,
      period: ledger.period,
      cancelled: ledger.cancelled ?? null,
      closing_periods: ledger.closingPeriods,
      books: ledger.books(),
      pending_events: this.pendingEvents(),
      run: this.run,
    };
  }

  /**
   * The period this run bills: search attributes for List Filters (the alert level follows its
   * changes), and current details. A run whose previous run handed its patches over started with
   * these attributes set, and updates only what differs (nothing, unless that code erred); any
   * other run updates them all, as its history records.
   */
  publishPeriod(): void {
    if (this.options.searchAttributes) {
      const period = this.searchAttributesOfPeriod();
      const atStart = workflowInfo().typedSearchAttributes;
      const changed = this.options.patches.handedOver ? period.filter((pair) => !sameValue(atStart.get(pair.key), pair.value)) : period;
      if (changed.length > 0) upsertSearchAttributes(changed);
    }
    this.publishDetails();
  }

  /** The period the ledger bills now as search attributes. */
  searchAttributesOfPeriod(): SearchAttributePair[] {
    const ledger = this.ledger;
    return periodSearchAttributes(ledger.plan.id, ledger.period, ledger.alertLevel());
  }

  /** Events rung but not claimed by this run yet (an estimate: the API's read model has the exact figure). */
  private pendingEvents(): number {
    return Math.max(0, this.run.rung - this.run.claimed);
  }

  /** The run's current details in the Temporal UI (no history cost: a query answers them). */
  private publishDetails(): void {
    const ledger = this.ledger;
    setCurrentDetails(
      tenantCurrentDetails({
        tenantId: this.tenantId,
        tenantName: ledger.tenant.name,
        plan: ledger.plan,
        billingAnchor: ledger.tenant.billing_anchor,
        timezone: ledger.tenant.timezone,
        period: ledger.period,
        meters: ledger.meterDetails(),
        alertLevel: this.alertLevel,
        closing: ledger.closingPeriods,
      }),
    );
  }
}

/** Whether a search attribute's value at the run's start is the one wanted (dates by instant). */
function sameValue(atStart: unknown, wanted: unknown): boolean {
  if (atStart instanceof Date && wanted instanceof Date) return atStart.getTime() === wanted.getTime();
  return atStart === wanted;
}

function now(): string {
  return new Date(Date.now()).toISOString();
}
