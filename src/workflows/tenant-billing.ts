import { allHandlersFinished, condition, continueAsNew, log, makeContinueAsNewFunc, setHandler, workflowInfo } from '@temporalio/workflow';
import type { LedgerSnapshot } from '../contracts/ledger';
import { TenantLedger } from './tenant-ledger';
import { TENANT_BILLING_PATCHES } from './patches';
import { HANDED_OVER_PATCHES, RunPatches, handedRunSearchAttributes } from './run-patches';
import { TenantSteps, restoreLedger, type PeriodClose, type RunCounts } from './tenant-steps';
import { refuseCancelled, refuseMalformed, refuseUnknownMetric, rollingOver } from './tenant-refusals';
import {
  alertRulesChangedSignal,
  alertRulesStoredUpdate,
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
  type ClosePeriodResult,
  type EntitlementsChange,
} from './messages';

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
  /** The patches the code that started this run (its continue-as-new, or the API's start) handed it: taken without a marker (run-patches.ts). */
  patches_at_start?: string[];
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

/**
 * One tenant's subscription: a thin shell over its {@link TenantLedger}, in the shape of
 * Temporal's safe-message-handlers sample. Usage is stored by the API in PostgreSQL; a
 * `recordUsage` signal only rings the doorbell, and the run claims what waits and decides the
 * alerts it crossed. At the period's end (or a finance close) one activity rolls the period over,
 * and the run continues as new into the next period. Handlers delegate to {@link TenantSteps},
 * which runs every step that touches PostgreSQL one at a time; the main loop below wakes on a ring,
 * a rule change, a close request or a deadline.
 */
export async function tenantBilling(input: TenantBillingInput): Promise<TenantBillingResult> {
  const patches = new RunPatches(input.patches_at_start);
  /**
   * Entitlements (limit overrides). A run recorded before them takes the old path: the first
   * entitlement message it gets makes it continue as new, and the next run (on this path) answers.
   */
  const entitlements = patches.patched(TENANT_BILLING_PATCHES.entitlements);
  /**
   * A step's first claim as a local activity, the rest bounded by its barrier (tenant-steps.ts). A run
   * recorded before them claims by activity until nothing waits, which a tenant sending faster
   * than it is counted never lets end.
   */
  const localBarrierClaims = patches.patched(TENANT_BILLING_PATCHES.localBarrierClaims);
  /**
   * Claims publish where the ledger next decides something, and read back the whole current
   * period: the worker's counter counts in bulk what decides nothing (docs/design/core-v2.md,
   * "Bulk counting"). A run recorded before it publishes nothing, so all its counting stays its own.
   */
  const bulkCounting = patches.patched(TENANT_BILLING_PATCHES.bulkCounting);
  let upgradeRequested = false;
  const limits: RunLimits = { ...DEFAULT_LIMITS, ...input.limits };
  const tenantId = input.tenant_id;
  /** Set once the ledger is there: handlers registered before a restore wait for it. */
  let steps: TenantSteps | undefined = undefined;
  const run: RunCounts = { signals: 0, claims: 0, rung: 0, claimed: 0 };
  /**
   * Every run claims at once: events may wait unclaimed (a first run, a run restarted after one
   * ended unexpectedly, or a ring that reached the previous run after its last claim).
   */
  let rung = true;
  const ruleChanges: AlertRulesChange[] = [...(input.rule_changes ?? [])];
  const periodClose: PeriodClose = {};
  /**
   * Rule changes wait for the loop's claim instead of going before it (patch
   * `signals-during-local-activities-v1`): one that reached the run during the claim and one that
   * replay brings before it are then applied at the same point.
   */
  let rulesAfterClaim = false;
  /** Set before continue-as-new: new requests are refused at once and retried by the API against the next run. */
  let draining = false;

  const refuseWhileDraining = () => {
    if (draining) throw rollingOver();
  };
  const untilReady = () => condition(() => steps !== undefined);
  const restored = (): TenantSteps => {
    if (!steps) throw new Error('the run is restoring its ledger from PostgreSQL; ask again in a moment');
    return steps;
  };

  // ---- message handlers: each delegates to the ledger's steps ----------------------------------

  setHandler(
    recordUsageSignal,
    (doorbell) => {
      run.signals += 1;
      // A malformed doorbell still rings: a claim takes what is stored, whatever the signal said.
      const problem = argumentProblem('recordUsage', doorbell);
      if (problem) log.warn('recordUsage signal malformed; claiming anyway', { problem });
      else run.rung += doorbell.events;
      // A ring during a local activity is dropped: replay may bring it before that step began (its
      // task timed out), where the step absorbs it. What it rang for is counted by the claim under
      // way or waits for the next ring, which the worker's counter sends while events wait.
      if (steps?.localActivityUnderWay && patches.patchedWhereReached(TENANT_BILLING_PATCHES.signalsDuringLocalActivities)) return;
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
      if (patches.patchedWhereReached(TENANT_BILLING_PATCHES.signalsDuringLocalActivities)) rulesAfterClaim = true;
    },
    { description: "Alert rules created or deleted mid-period, applied without an answer (a cancelled tenant's run, and earlier releases)." },
  );
  setHandler(
    alertRulesStoredUpdate,
    async () => {
      refuseWhileDraining();
      await untilReady();
      await restored().applyStoredRules();
    },
    {
      validator: (argument?: unknown) => {
        refuseWhileDraining();
        refuseMalformed('alertRulesStored', argument);
      },
      description: 'Alert rules created or deleted in PostgreSQL: read them and judge them against the usage so far, then answer.',
    },
  );
  setHandler(usageQuery, () => restored().usageView(), { description: 'The current period as GET …/usage shows it.' });
  setHandler(stateQuery, () => restored().stateView(), { description: 'The whole ledger: every open book, closed periods in grace, and this run.' });
  setHandler(
    estimateQuery,
    (request) => {
      const problem = argumentProblem('usageEstimate', request);
      if (problem) throw new Error(problem);
      return restored().ledger.estimate(request.metric, request.quantity);
    },
    { description: 'The cost of this much more of one metric, given where the tenant stands in its tiers.' },
  );
  setHandler(
    settledUsageUpdate,
    async () => {
      refuseWhileDraining();
      await untilReady();
      await restored().claim();
      return restored().usageView();
    },
    { validator: refuseWhileDraining, description: 'Read-your-writes usage: counts every event stored before it, then answers.' },
  );
  setHandler(
    authorizeUpdate,
    async (request: AuthorizeRequest) => {
      refuseWhileDraining();
      await untilReady();
      refuseCancelled(restored().ledger);
      refuseUnknownMetric(restored().ledger, request.metric);
      return restored().authorize(request);
    },
    {
      validator: (request: AuthorizeRequest) => {
        refuseWhileDraining();
        refuseMalformed('authorize', request);
        refuseCancelled(steps?.ledger);
        refuseUnknownMetric(steps?.ledger, request.metric);
      },
      description: 'Check-and-consume against a hard limit, one request at a time; idempotent on its id.',
    },
  );
  setHandler(
    entitlementsChangedUpdate,
    async (change?: EntitlementsChange) => {
      refuseWhileDraining();
      if (!entitlements) {
        upgradeRequested = true;
        throw rollingOver();
      }
      await untilReady();
      refuseCancelled(restored().ledger);
      return restored().applyEntitlements(change);
    },
    {
      validator: (change?: EntitlementsChange) => {
        refuseWhileDraining();
        refuseMalformed('entitlementsChanged', change);
        refuseCancelled(steps?.ledger);
      },
      description: "The tenant's limit overrides changed in PostgreSQL: read them and apply them to the current period at once.",
    },
  );
  /**
   * The main loop rolls the period over; every close asked for before then gets that rollover's
   * answer. A cancellation must end the subscription: it turns a close not yet begun into one that
   * cancels, and after a rollover that does not cancel it is refused, to be sent to the next run.
   * A close with `finalize` must not wait out a grace: it makes a close not yet begun finalize,
   * and after a rollover that keeps its grace it ends that grace.
   */
  const requestClose = async (finalize: boolean, cancel: boolean, idempotencyKey?: string): Promise<ClosePeriodResult> => {
    const keepAnswer = idempotencyKey !== undefined && patches.patched(TENANT_BILLING_PATCHES.closeKeys);
    const cancelAfterRollover = cancel && patches.patched(TENANT_BILLING_PATCHES.cancelAfterRollover);
    const finalizeJoins = finalize && patches.patched(TENANT_BILLING_PATCHES.finalizeJoinsRollover);
    await untilReady();
    refuseCancelled(restored().ledger);
    const earlier = keepAnswer ? restored().ledger.closeAnswer(idempotencyKey) : undefined;
    if (earlier) return earlier;
    if (cancelAfterRollover) {
      if (periodClose.begun && !periodClose.begun.cancel) {
        await condition(() => periodClose.result !== undefined);
        throw rollingOver();
      }
      if (periodClose.request) periodClose.request.cancel = true;
    }
    if (finalizeJoins && periodClose.request && !periodClose.begun) periodClose.request.finalize = true;
    periodClose.request ??= { finalize, cancel, ...(idempotencyKey ? { idempotencyKey } : {}) };
    await condition(() => periodClose.result !== undefined);
    if (finalizeJoins && !periodClose.begun!.finalize) await restored().finalizeInvoiceNow(periodClose.result!);
    return keepAnswer ? restored().keepCloseAnswer(idempotencyKey, periodClose) : periodClose.result!;
  };
  const closeValidator = (message: 'closePeriod' | 'cancelSubscription') => (request?: unknown) => {
    refuseWhileDraining();
    refuseMalformed(message, request);
    refuseCancelled(steps?.ledger);
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

  const snapshot = input.ledger ?? (await restoreLedger(tenantId));
  if (!snapshot) return { cancelled: false, reason: 'no_tenant' };
  const ledger = new TenantLedger(snapshot);
  steps = new TenantSteps(ledger, run, { tenantId, patches, entitlements, localBarrierClaims, bulkCounting, searchAttributes: input.search_attributes !== false });
  steps.publishPeriod();
  for (;;) {
    const deadline = steps.armDeadline();
    await condition(() => rung || ruleChanges.length > 0 || periodClose.request !== undefined || deadline.passed || historyFull() || upgradeRequested);
    if (upgradeRequested) return continueWithLedger();
    if (ruleChanges.length > 0 && !rulesAfterClaim) await steps.applyRuleChanges(ruleChanges);
    if (rung) {
      rung = false;
      await steps.claim();
    }
    if (ruleChanges.length > 0 && rulesAfterClaim) await steps.applyRuleChanges(ruleChanges);
    if (steps.graceEnded()) await steps.settleGraceEnds();
    if (periodClose.request !== undefined || ledger.periodEnded(Date.now())) {
      await steps.rollOver(periodClose);
      if (!ledger.cancelled) return continueWithLedger();
    }
    if (ledger.finished()) {
      await finishHandlers();
      return { cancelled: true, final_invoice_id: ledger.cancelled!.final_invoice_id };
    }
    if (historyFull()) return continueWithLedger();
  }

  // ---- continue-as-new -------------------------------------------------------------------------

  function historyFull(): boolean {
    const info = workflowInfo();
    return info.continueAsNewSuggested || info.historyLength >= limits.maxHistoryEvents || run.signals >= limits.maxSignalsPerRun || run.claims >= limits.maxClaimsPerRun;
  }

  async function finishHandlers(): Promise<void> {
    draining = true;
    await condition(allHandlersFinished);
  }

  /**
   * Rule changes that arrived too late for this run travel on; the next run claims at once (a ring
   * may have come too late too). The next run starts with this code's patches and its period's
   * search attributes, so it records neither (run-patches.ts).
   */
  async function continueWithLedger(): Promise<never> {
    await finishHandlers();
    const steps = restored();
    const args: TenantBillingInput = {
      tenant_id: tenantId,
      ledger: steps.ledger.snapshot(),
      ...(ruleChanges.length > 0 ? { rule_changes: ruleChanges } : {}),
      limits: input.limits,
      search_attributes: input.search_attributes,
      patches_at_start: [...HANDED_OVER_PATCHES],
    };
    if (input.search_attributes === false) return continueAsNew<typeof tenantBilling>(args);
    return makeContinueAsNewFunc<typeof tenantBilling>({ typedSearchAttributes: handedRunSearchAttributes(tenantId, steps.searchAttributesOfPeriod()) })(args);
  }
}
