/**
 * Every patch of `tenantBilling`, oldest first: the one place its ids are written. Workflow code
 * asks for a patch by its key here; `replay.test.ts` replays each live id on both of its paths
 * and each retired one (`deprecatePatch`) on its new path, and docs/architecture.md ("Changing
 * workflow code") names each one.
 *
 * A live patch is read at the top of the run, before any local activity, or synchronously as a
 * handler starts, in the activation that delivers its message. Read after a local activity,
 * `patched` can answer false on replay: a local activity's result can reach the workflow one
 * task after its marker was recorded, and replay brings it one task earlier, before the task
 * whose commands hold the patch's marker. So the patches that were read after a claim are retired.
 *
 * A patch is not free. Each run that reaches one records a marker, and the SDK's core adds an
 * update of the `TemporalChangeVersion` search attribute, which the server writes to its
 * visibility store: two history events and one visibility task per patch per run. A run that
 * this code starts (by continue-as-new or the API's start) is handed the patches of earlier
 * releases instead and records none of them (run-patches.ts); runs that older code started, and
 * any patch new in this release, still pay. So the changes of one deploy share one patch, and
 * patches are retired (docs/deployment.md, "Workflow code"). Workflow code asks through
 * `RunPatches`, never the SDK's patch calls directly.
 */
export const TENANT_BILLING_PATCHES = {
  /** Entitlements (limit overrides): a run before it continues as new on its first entitlement message. Read at the top of each run. */
  entitlements: 'entitlements-v1',
  /** A step's first claim as a local activity, the rest bounded by its barrier. Read at the top of each run. */
  localBarrierClaims: 'local-barrier-claims-v1',
  /** Claims publish the ledger's decision points, and the worker's counter counts in bulk what decides nothing. Read at the top of each run. */
  bulkCounting: 'bulk-counting-v1',
  /** A deadline already past is acted on at once, without a timer. Retired: `deprecatePatch` where it applies. */
  noTimerForPastDeadlines: 'no-timer-for-past-deadlines-v1',
  /** Alerts recorded by local activity, and each delivered first inline. Retired: `deprecatePatch` where it applies. */
  inlineAlertDelivery: 'inline-alert-delivery-v1',
  /** A decision's alerts recorded by its first notified alert's inline attempt, in one local activity instead of two. Retired: `deprecatePatch` where it applies. */
  alertsRecordedByFirstAttempt: 'alerts-recorded-by-first-attempt-v1',
  /** A grace end settled by a claim that began after it, without one more. Retired: `deprecatePatch` where it applies. */
  graceSettledByLaterClaim: 'grace-settled-by-later-claim-v1',
  /**
   * A keyed close keeps its answer (its key stored with the closed period, and in the ledger), so
   * a retry answers it even when it shared another close's rollover. Read at the start of a keyed
   * close's handler, before it awaits anything: only runs that get one pay for its marker.
   */
  closeKeys: 'close-keys-v1',
  /**
   * A cancellation that meets a rollover which does not cancel (an anniversary, a finance close
   * already under way) waits for it and is refused, so the API sends it again to the next run;
   * one that meets a finance close not yet begun makes that close cancel. Read at the start of a
   * cancellation's handler, before it awaits anything.
   */
  cancelAfterRollover: 'cancel-after-rollover-v1',
  /**
   * A close with `finalize` that meets a rollover without it still finalizes its invoice at once:
   * it makes a close not yet begun finalize, and after one under way (an anniversary, another
   * close) it signals that rollover's invoice workflow to finalize now. Read at the start of a
   * finalizing close's handler, before it awaits anything.
   */
  finalizeJoinsRollover: 'finalize-joins-rollover-v1',
  /**
   * A ring that reaches the run while one of its local activities is under way is dropped, and
   * rule changes wait for the loop's claim: the run then decides the same whether a signal reached
   * it during a step or, as replay may bring it, before the step began (RELIABILITY.md). Asked
   * only where it is reached (`RunPatches.patchedWhereReached`): by a ring during a local activity,
   * and by each `alertRulesChanged` signal. Its marker is recorded as deprecated, so only runs that
   * meet such a signal pay for it, and a replay that does not reach the question skips the marker.
   */
  signalsDuringLocalActivities: 'signals-during-local-activities-v1',
} as const;
