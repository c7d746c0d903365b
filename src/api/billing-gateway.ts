import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  WithStartWorkflowOperation,
  WorkflowIdConflictPolicy,
  WorkflowUpdateFailedError,
  WorkflowUpdateRPCTimeoutOrCancelledError,
  type Client,
  type WorkflowStartOptions,
} from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import type { Period } from '../domain/periods';
import type { PlanVersion } from '../domain/plan';
import type { UsageView } from '../domain/usage-view';
import { periodSearchAttributes } from '../workflows/search-attributes';
import type { tenantBilling } from '../workflows/tenant-billing';
import { tenantRunDetails, tenantRunSummary } from '../workflows/summaries';
import {
  PERIOD_ROLLING_OVER,
  alertRulesStoredUpdate,
  authorizeUpdate,
  cancelSubscriptionUpdate,
  closePeriodUpdate,
  entitlementsChangedUpdate,
  settledUsageUpdate,
  tenantWorkflowId,
  type AuthorizeRequest,
  type AuthorizeResult,
  type ClosePeriodResult,
  type EntitlementsChange,
  type EntitlementsView,
  type UsageDoorbell,
} from '../workflows/messages';
import { ApiError } from './errors';
import { ringTenantWorkflow, tenantRunInput, tenantRunSearchAttributes } from '../temporal';

/** How the gateway talks to Temporal; tests and `createApp` set these. */
export interface BillingGatewayOptions {
  /** False on servers without tally's search attributes (the time-skipping test server). */
  searchAttributes: boolean;
}

/** What the API needs to start a tenant's workflow. */
export interface StartTenantInput {
  tenantId: string;
  tenantName: string;
  timezone: string;
  billingAnchor: string;
  plan: PlanVersion;
  period: Period;
}

/**
 * How long the API waits for a tenant's run to answer a request (an update), then answers 503
 * `unavailable` with `Retry-After`. Without it a request would wait as long as the run's worker
 * is away. A request that timed out may still be applied when the run comes back, as a request
 * whose answer was lost may: each is safe to retry (see `update`).
 */
export const RUN_ANSWER_DEADLINE_MS = 10_000;

/**
 * The API's only door into Temporal: every workflow id, message name and search attribute the
 * API uses goes through here, so routes stay thin and tests can read one place.
 *
 * Every message to a tenant's run goes "with start": if the run is not there (it ended
 * unexpectedly, terminated by hand or by a limit), a new one starts, rebuilds its ledger from
 * PostgreSQL and answers. Nothing a run holds is lost with it.
 */
export class BillingGateway {
  constructor(
    private readonly client: Client,
    private readonly taskQueue: string,
    private readonly options: BillingGatewayOptions = { searchAttributes: true },
  ) {}

  /** Starts `billing-<tenant>` (its first run reads its ledger from PostgreSQL); a second call is a no-op. */
  async startTenant(input: StartTenantInput): Promise<string> {
    const { workflowId } = await this.client.workflow.start('tenantBilling', {
      ...this.startOptions(input.tenantId),
      staticSummary: tenantRunSummary(input.tenantId, input.tenantName),
      staticDetails: tenantRunDetails(input.plan, input.billingAnchor, input.timezone),
      ...(this.options.searchAttributes
        ? {
            typedSearchAttributes: tenantRunSearchAttributes(input.tenantId, periodSearchAttributes(input.plan.id, input.period, 'none')),
          }
        : {}),
    });
    return workflowId;
  }

  /** Rings a tenant's run: stored usage waits to be claimed (the worker's counter rings; tests and ops may too). */
  async ring(tenantId: string, doorbell: UsageDoorbell): Promise<void> {
    await ringTenantWorkflow(this.client, { taskQueue: this.taskQueue, tenantId, doorbell, searchAttributes: this.options.searchAttributes });
  }

  /**
   * Read-your-writes usage: the run counts every event stored before this call, then answers. A
   * run that cannot within the deadline answers 503, never a view that misses acknowledged events.
   */
  async settledUsage(tenantId: string): Promise<UsageView> {
    return this.update(tenantId, settledUsageUpdate, [], { unanswered: 'usage could not be settled in time; retry' });
  }

  /**
   * Check-and-consume against a hard limit (a workflow update). Its update id is the event's, so a
   * retry of an authorization whose answer was lost or late is answered with its outcome.
   */
  async authorize(tenantId: string, request: AuthorizeRequest): Promise<AuthorizeResult> {
    return this.update(tenantId, authorizeUpdate, [request], { updateId: `authorize-${request.id}` });
  }

  /**
   * Finance closes the current period now. With an idempotency key, concurrent retries share one
   * update (its id), and the run stores the key with the closed period for later retries.
   */
  async closePeriod(tenantId: string, finalize: boolean, idempotencyKey?: string): Promise<ClosePeriodResult> {
    // A close sent without a key gets one: if the run does not answer in time, the close may still
    // be made, and the 503 names the key, so that a retry with it answers this close instead of
    // closing the next period too.
    const key = idempotencyKey ?? `generated-${randomUUID()}`;
    return this.update(tenantId, closePeriodUpdate, [{ finalize, idempotency_key: key }], {
      updateId: `close-${key}`,
      unanswered:
        `the billing run of tenant ${tenantId} did not answer within ${RUN_ANSWER_DEADLINE_MS / 1000} seconds, and the close may still be made; ` +
        `retry with the header Idempotency-Key: ${key} to get its answer without closing again`,
      unansweredHeaders: { 'Idempotency-Key': key },
    });
  }

  /** Tells the tenant's run its entitlements changed in PostgreSQL; answers once it has applied them. */
  async entitlementsChanged(tenantId: string, change: EntitlementsChange = {}): Promise<EntitlementsView> {
    return this.update(tenantId, entitlementsChangedUpdate, [change]);
  }

  /**
   * Tells the tenant's run its alert rules changed in PostgreSQL; answers once it has read and
   * judged them, so every event stored after the answer is decided with them.
   */
  async alertRulesStored(tenantId: string): Promise<void> {
    await this.update(tenantId, alertRulesStoredUpdate, []);
  }

  /**
   * After the API undid a change that the run did not confirm, asks the run once more, without
   * waiting, to read what is stored. An update that reached the run all the same (late, or while
   * the API was undoing) then leaves nothing of the undone change in it.
   */
  rereadAfterUndo(tenantId: string, what: 'entitlements' | 'alert rules', onError: (err: unknown) => void): void {
    (what === 'entitlements' ? this.entitlementsChanged(tenantId) : this.alertRulesStored(tenantId)).catch(onError);
  }

  /** Cancels the subscription: the period closes now, its final invoice follows its grace. */
  async cancel(tenantId: string): Promise<ClosePeriodResult> {
    return this.update(tenantId, cancelSubscriptionUpdate, []);
  }

  /**
   * One update, with start, answered within `RUN_ANSWER_DEADLINE_MS` or refused with 503. A run
   * that is finishing (continue-as-new, a rollover) refuses new requests at once; the next run
   * answers, so the request is retried a few times. Every retry keeps the first attempt's update
   * id: an attempt whose answer was lost (a Temporal server restarting) may have been applied, and
   * the run answers a retry of it with that outcome instead of applying it twice (a second cancel
   * would meet a cancelled tenant).
   */
  private async update<Ret, Args extends unknown[]>(
    tenantId: string,
    update: UpdateDefinition,
    args: Args,
    options: { updateId?: string; unanswered?: string; unansweredHeaders?: Record<string, string> } = {},
  ): Promise<Ret> {
    try {
      return await this.client.withDeadline(Date.now() + RUN_ANSWER_DEADLINE_MS, () => this.updateUntilAnswered<Ret, Args>(tenantId, update, args, options.updateId ?? randomUUID()));
    } catch (err) {
      if (err instanceof ApiError) throw err;
      if (err instanceof WorkflowUpdateRPCTimeoutOrCancelledError || isDeadline(err)) {
        const unanswered = options.unanswered ?? `the billing run of tenant ${tenantId} did not answer within ${RUN_ANSWER_DEADLINE_MS / 1000} seconds; retry`;
        throw new ApiError(503, 'unavailable', unanswered, undefined, { 'Retry-After': '1', ...options.unansweredHeaders });
      }
      throw err;
    }
  }

  private async updateUntilAnswered<Ret, Args extends unknown[]>(tenantId: string, update: UpdateDefinition, args: Args, id: string): Promise<Ret> {
    for (let attempt = 1; ; attempt += 1) {
      try {
        return (await this.client.workflow.executeUpdateWithStart(update, {
          args,
          updateId: id,
          startWorkflowOperation: new WithStartWorkflowOperation('tenantBilling', {
            ...this.startOptions(tenantId),
            staticSummary: tenantRunSummary(tenantId),
            workflowIdConflictPolicy: WorkflowIdConflictPolicy.USE_EXISTING,
          }),
        })) as Ret;
      } catch (err) {
        const failure = err instanceof WorkflowUpdateFailedError ? err.cause : undefined;
        if (failure instanceof ApplicationFailure ? failure.type === PERIOD_ROLLING_OVER : isWorkflowNotReady(err)) {
          if (attempt >= 20) throw new ApiError(503, 'unavailable', 'the billing period is rolling over; retry', undefined, { 'Retry-After': '1' });
          await sleep(50 * attempt);
          continue;
        }
        if (!(failure instanceof ApplicationFailure)) throw err;
        if (failure.type === 'conflict') throw new ApiError(409, 'conflict', failure.message);
        if (failure.type === 'unknown_metric') throw new ApiError(422, 'unknown_metric', failure.message, [{ path: 'metric', message: 'unknown metric' }]);
        if (failure.type === 'validation_failed') throw new ApiError(422, 'validation_failed', failure.message);
        throw err;
      }
    }
  }

  private startOptions(tenantId: string): WorkflowStartOptions<typeof tenantBilling> & { workflowId: string } {
    return {
      taskQueue: this.taskQueue,
      workflowId: tenantWorkflowId(tenantId),
      args: [tenantRunInput(tenantId, this.options.searchAttributes)],
      ...(this.options.searchAttributes ? { typedSearchAttributes: tenantRunSearchAttributes(tenantId) } : {}),
    };
  }
}

type UpdateDefinition = Parameters<Client['workflow']['executeUpdateWithStart']>[0] & { name: string };

/**
 * The server could not hand the update to the run this time (FAILED_PRECONDITION): its workflow
 * task was superseded by new history (a doorbell arrived meanwhile) or the run was continuing as
 * new. Nothing was applied; the next attempt reaches a settled run.
 */
function isWorkflowNotReady(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: unknown }).code === 9;
}

/** The client's own deadline error (gRPC DEADLINE_EXCEEDED). */
function isDeadline(err: unknown): boolean {
  return err instanceof Error && /deadline/i.test(err.message);
}
