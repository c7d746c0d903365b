import { SearchAttributeType, defineSearchAttributeKey, type SearchAttributePair } from '@temporalio/common';
import { deprecatePatch, patched, workflowInfo } from '@temporalio/workflow';
import { TENANT_BILLING_PATCHES } from './patches';
import { SEARCH_ATTRIBUTES } from './search-attributes';

/**
 * The patches one tenant run takes. A run that this code started (by continue-as-new, or the API's
 * start) can meet no history from before the patches this code hands over: its starter names them
 * in the input (`patches_at_start`), and the run takes their new paths without asking `patched()`.
 * It then records no marker and no `TemporalChangeVersion` update for them, two history events
 * and one visibility write per patch per run, which every rollover would otherwise pay for every
 * patch ever made (BENCHMARKS.md, session 29). A run that earlier code started asks `patched()`
 * as before, and its history records the answer.
 *
 * Replay stays deterministic: the input is the run's first history event, and old histories,
 * whose input names no patches, replay through `patched()` exactly as recorded. During a rolling
 * deploy an older worker, which reads no `patches_at_start`, may run a handed run and record
 * markers for patches it has too: replaying, a handed patch is still asked for, which takes the
 * marker where there is one and records nothing where there is none.
 */
export class RunPatches {
  private readonly atStart: ReadonlySet<string>;

  constructor(patchesAtStart: readonly string[] | undefined) {
    this.atStart = new Set(patchesAtStart ?? []);
  }

  /** `patched(id)`, answered from the input when the run started with the patch. */
  patched(id: string): boolean {
    if (!this.atStart.has(id)) return patched(id);
    if (workflowInfo().unsafe.isReplaying) patched(id);
    return true;
  }

  /** `deprecatePatch(id)`, left out when the run started with the patch (but for a marker an older worker recorded, on replay). */
  deprecatePatch(id: string): void {
    if (!this.atStart.has(id) || workflowInfo().unsafe.isReplaying) deprecatePatch(id);
  }

  /**
   * A patch asked only where the situation it changes arises, which a replay may meet at another
   * point of the history or not at all (a signal that reached the run during a local activity
   * carried over a timed-out workflow task comes, in replay, before the activity began). Its
   * marker is recorded as deprecated: the SDK's core skips a deprecated marker that the code does
   * not ask for, where it refuses any other. Asked, it answers as `patched` does: true unless
   * replaying a history without the marker, whose code took the old path.
   */
  patchedWhereReached(id: string): boolean {
    if (this.atStart.has(id)) {
      this.deprecatePatch(id);
      return true;
    }
    // `deprecatePatch` records the marker and settles the run's answer, which `patched` then reads.
    deprecatePatch(id);
    return patched(id);
  }

  /** Whether the run's starter handed patches over: code that also sets the run's search attributes as it starts it. */
  get handedOver(): boolean {
    return this.atStart.size > 0;
  }
}

/**
 * The patches this code hands the runs it starts: each one that an older worker, still running
 * beside this code during a rolling deploy, has too. A new patch joins them in the release after
 * the one that brought it: until then an older worker could run a handed run down the patch's
 * old path, without a marker, and this code would replay that history down the new one.
 */
export const HANDED_OVER_PATCHES: readonly string[] = [
  TENANT_BILLING_PATCHES.entitlements,
  TENANT_BILLING_PATCHES.localBarrierClaims,
  TENANT_BILLING_PATCHES.bulkCounting,
  TENANT_BILLING_PATCHES.noTimerForPastDeadlines,
  TENANT_BILLING_PATCHES.inlineAlertDelivery,
  TENANT_BILLING_PATCHES.alertsRecordedByFirstAttempt,
  TENANT_BILLING_PATCHES.graceSettledByLaterClaim,
  TENANT_BILLING_PATCHES.closeKeys,
  TENANT_BILLING_PATCHES.cancelAfterRollover,
  TENANT_BILLING_PATCHES.finalizeJoinsRollover,
];

/**
 * Temporal's own search attribute for the patches a run took (the SDK updates it with each
 * marker). A handed run carries the handed patches there from its start instead, so
 * docs/deployment.md's count of runs that lack a patch still finds only those. (A run that is
 * handed some patches and records a newer one ends up listing only the newer: the SDK's update
 * names the patches of the run's own markers. The count then errs on the side of waiting.)
 */
const TEMPORAL_CHANGE_VERSION = defineSearchAttributeKey('TemporalChangeVersion', SearchAttributeType.KEYWORD_LIST);

/**
 * The search attributes a run handed {@link HANDED_OVER_PATCHES} starts with: its tenant, the
 * period's when its starter knows them, and `TemporalChangeVersion`.
 */
export function handedRunSearchAttributes(tenantId: string, period: SearchAttributePair[] = []): SearchAttributePair[] {
  return [{ key: SEARCH_ATTRIBUTES.TenantId, value: tenantId }, ...period, { key: TEMPORAL_CHANGE_VERSION, value: [...HANDED_OVER_PATCHES] }];
}
