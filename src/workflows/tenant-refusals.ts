import { ApplicationFailure } from '@temporalio/workflow';
import type { TenantLedger } from './tenant-ledger';
import { PERIOD_ROLLING_OVER, argumentProblem, type CheckedMessage } from './messages';

/**
 * The failures a tenant's run refuses a request with, before it changes anything. Validators
 * check them as the request arrives; a handler that waited for the ledger checks the ledger's
 * again, since it may have changed meanwhile. The API retries a rolling-over refusal against the
 * next run, and answers each other one as a problem whose `code` is the failure's `type`.
 */

/** The run is finishing (continue-as-new or a rollover): the API retries against the next run. */
export function rollingOver(): ApplicationFailure {
  return ApplicationFailure.create({ type: PERIOD_ROLLING_OVER, message: 'the period is rolling over; retry', nonRetryable: true });
}

export function refuseMalformed(message: CheckedMessage, argument: unknown): void {
  const problem = argumentProblem(message, argument);
  if (problem) throw ApplicationFailure.nonRetryable(problem, 'validation_failed');
}

/** `ledger` is undefined while the run restores it from PostgreSQL: the handler checks again once it is there. */
export function refuseCancelled(ledger: TenantLedger | undefined): void {
  if (ledger?.cancelled) throw ApplicationFailure.nonRetryable('the subscription is cancelled', 'conflict');
}

export function refuseUnknownMetric(ledger: TenantLedger | undefined, metric: string): void {
  const unknown = ledger?.unknownMetric('authorize', metric);
  if (unknown) throw ApplicationFailure.nonRetryable(unknown, 'unknown_metric');
}
