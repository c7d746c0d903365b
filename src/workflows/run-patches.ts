import { SearchAttributeType, defineSearchAttributeKey, type SearchAttributePair } from '@temporalio/common';
import { deprecatePatch, patched } from '@temporalio/workflow';
import { TENANT_BILLING_PATCHES } from './patches';

/**
 * The patches one tenant run takes. A run that this code's own continue-as-new started can meet
 * no history from before any patch this code knows: the previous run hands them over in the
 * input (`patches_at_start`), and the run takes their new paths without asking `patched()`. It
 * then records no marker and no `TemporalChangeVersion` update for them, two history events and
 * one visibility write per patch per run, which every rollover would otherwise pay for every
 * patch ever made (BENCHMARKS.md, session 29). A run started any other way (the API's first
 * start, a restart after a run ended unexpectedly, a continue-as-new of earlier code) asks
 * `patched()` as before, and its history records the answer.
 *
 * Replay stays deterministic: the input is the run's first history event. Old histories, whose
 * input names no patches, replay through `patched()` and `deprecatePatch()` exactly as recorded.
 */
export class RunPatches {
  private readonly atStart: ReadonlySet<string>;

  constructor(patchesAtStart: readonly string[] | undefined) {
    this.atStart = new Set(patchesAtStart ?? []);
  }

  /** `patched(id)`, answered from the input when the run started with the patch. */
  patched(id: string): boolean {
    return this.atStart.has(id) || patched(id);
  }

  /** `deprecatePatch(id)`, left out when the run started with the patch: no history of this run can hold its old path. */
  deprecatePatch(id: string): void {
    if (!this.atStart.has(id)) deprecatePatch(id);
  }

  /** Whether the previous run handed patches over: a continue-as-new of code that also sets the next period's search attributes as it starts the run. */
  get handedOver(): boolean {
    return this.atStart.size > 0;
  }
}

/** Every patch this code knows: what its continue-as-new hands over. */
export const PATCHES_OF_THIS_CODE: readonly string[] = Object.values(TENANT_BILLING_PATCHES);

/**
 * Temporal's own search attribute for the patches a run took (the SDK updates it with each
 * marker). A run that takes its patches from its input carries them here from its start instead,
 * so docs/deployment.md's count of runs that lack a patch still finds only those.
 */
const TEMPORAL_CHANGE_VERSION = defineSearchAttributeKey('TemporalChangeVersion', SearchAttributeType.KEYWORD_LIST);

/** The `TemporalChangeVersion` a run started with {@link PATCHES_OF_THIS_CODE} carries. */
export function changeVersionOfThisCode(): SearchAttributePair {
  return { key: TEMPORAL_CHANGE_VERSION, value: [...PATCHES_OF_THIS_CODE] };
}
