import { activityInfo } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import { DeliveryIncompleteError, type AttemptContext } from './dispatch';

/**
 * Glue between Temporal's retries and the delivery rows: the activity's retry policy decides
 * when an attempt is the last one, and the last attempt marks what is still failing `failed`.
 */

/**
 * This attempt, counting `budget.earlier` made before this activity's own, and whether it is the
 * last one allowed: by `budget.allowed` if given, else by the retry policy (plus the earlier
 * ones), or by the notifier's `maxAttempts` if lower. Without a bound, no attempt is final.
 */
export function currentAttempt(notifierMaxAttempts?: number, budget: { earlier?: number; allowed?: number } = {}): AttemptContext {
  const info = activityInfo();
  // Attempts made elsewhere first (the tenant run's inline one) count toward the same budget.
  const earlier = budget.earlier ?? 0;
  const attempt = info.attempt + earlier;
  const policyMax = budget.allowed ?? (info.retryPolicy?.maximumAttempts || Infinity) + earlier;
  const max = Math.min(policyMax, notifierMaxAttempts ?? Infinity);
  return { attempt, final: attempt >= max };
}

/**
 * What the activity throws for an incomplete delivery: retryable while attempts remain, and
 * non-retryable once the failing channels have been marked `failed` (the workflow logs it).
 */
export function deliveryFailure(err: unknown): unknown {
  if (err instanceof DeliveryIncompleteError && err.final) {
    return ApplicationFailure.nonRetryable(err.message, 'DeliveryFailed', err.outcomes);
  }
  return err;
}
