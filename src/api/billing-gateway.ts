import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { WorkflowIdConflictPolicy, WorkflowNotFoundError, WorkflowUpdateFailedError, type Client } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { TypedSearchAttributes } from '@temporalio/common';
import type { Period } from '../domain/periods';
import type { PlanVersion } from '../domain/plan';
import { SEARCH_ATTRIBUTES, type TenantBillingInput } from '../workflows/tenant-billing';
import {
  authorizeUpdate,
  cancelSubscriptionUpdate,
  closePeriodUpdate,
  estimateQuery,
  recordUsageSignal,
  PERIOD_ROLLING_OVER,
  USAGE_SIGNAL_DEADLINE_MS,
  settledUsageUpdate,
  tenantWorkflowId,
  usageQuery,
  type AuthorizeRequest,
  type AuthorizeResult,
  type ClosePeriodResult,
  type UsageEventInput,
  type UsageView,
} from '../workflows/messages';
import { IngestCoalescer, type CoalescerOptions } from './ingest-coalescer';
import { ApiError } from './errors';

/** How the gateway talks to Temporal; tests and `createApp` set these. */
export interface BillingGatewayOptions {
  /** False on servers without tally's search attributes (the time-skipping test server). */
  searchAttributes: boolean;
  /** Ingest coalescing options, or false to send one signal per request and tenant. */
  coalescing?: CoalescerOptions | false;
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
 * The API's only door into Temporal: every workflow id, message name and search attribute the
 * API uses goes through here, so routes stay thin and tests can read one place.
 */
export class BillingGateway {
  private readonly coalescer: IngestCoalescer | undefined;

  constructor(
    private readonly client: Client,
    private readonly taskQueue: string,
    private readonly options: BillingGatewayOptions = { searchAttributes: true },
  ) {
    // Coalescing is on unless explicitly turned off: it is how ingest scales per tenant.
    this.coalescer =
      options.coalescing === false ? undefined : new IngestCoalescer((t, e, r) => this.signalUsage(t, e, r), options.coalescing ?? {});
  }

  /** Starts `billing-<tenant>`; a second call for a running tenant is a no-op. */
  async startTenant(input: StartTenantInput): Promise<string> {
    const workflowId = tenantWorkflowId(input.tenantId);
    const args: TenantBillingInput = {
      tenant_id: input.tenantId,
      timezone: input.timezone,
      billing_anchor: input.billingAnchor,
      plan: input.plan,
      period: input.period,
      search_attributes: this.options.searchAttributes,
    };
    await this.client.workflow.start('tenantBilling', {
      taskQueue: this.taskQueue,
      workflowId,
      args: [args],
      workflowIdConflictPolicy: WorkflowIdConflictPolicy.USE_EXISTING,
      staticSummary: `Billing for ${input.tenantName} (${input.tenantId})`,
      staticDetails: `Plan ${input.plan.id} v${input.plan.version}, ${input.plan.interval}ly periods from ${input.billingAnchor} (${input.timezone}).`,
      ...(this.options.searchAttributes
        ? {
            typedSearchAttributes: new TypedSearchAttributes([
              { key: SEARCH_ATTRIBUTES.TenantId, value: input.tenantId },
              { key: SEARCH_ATTRIBUTES.PlanId, value: input.plan.id },
              { key: SEARCH_ATTRIBUTES.BillingPeriodStart, value: new Date(input.period.start) },
              { key: SEARCH_ATTRIBUTES.BillingPeriodEnd, value: new Date(input.period.end) },
              { key: SEARCH_ATTRIBUTES.AlertLevel, value: 'none' },
            ]),
          }
        : {}),
    });
    return workflowId;
  }

  /**
   * Records one request's usage; resolves once Temporal has durably accepted the signal that
   * carries it. Concurrent requests for one tenant share a signal (see ingest-coalescer.ts).
   */
  async recordUsage(tenantId: string, events: UsageEventInput[], receivedAt: Date): Promise<void> {
    if (this.coalescer) await this.coalescer.submit(tenantId, events, receivedAt);
    else await this.signalUsage(tenantId, events, receivedAt);
  }

  /** Resolves once no usage signal is queued or in flight (graceful shutdown, tests). */
  async drainUsage(): Promise<void> {
    await this.coalescer?.drain();
  }

  /** One `recordUsage` signal: the only place usage enters a workflow. */
  private async signalUsage(tenantId: string, events: UsageEventInput[], receivedAt: Date): Promise<void> {
    // Acknowledge only what lands in the tenant's history within the deadline: a closed period is
    // sealed after its grace plus a settle time longer than this, so nothing acknowledged for it
    // can arrive after its invoice was finalized. Late is better refused (503, retried) than lost.
    const deadline = receivedAt.getTime() + USAGE_SIGNAL_DEADLINE_MS;
    const unavailable = (why: string) =>
      new ApiError(503, 'unavailable', `usage could not be recorded in time (${why}); nothing was recorded, retry`, undefined, { 'Retry-After': '1' });
    if (Date.now() >= deadline) throw unavailable('deadline passed before sending');
    try {
      await this.client.withDeadline(deadline, () =>
        this.handle(tenantId).signal(recordUsageSignal, { batchId: randomUUID(), receivedAt: receivedAt.toISOString(), events }),
      );
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) throw err;
      throw unavailable((err as Error).message);
    }
  }

  /** The current period's usage, from the workflow's counters. */
  async usage(tenantId: string, consistent = false): Promise<UsageView> {
    const handle = this.handle(tenantId);
    return consistent ? handle.executeUpdate(settledUsageUpdate) : handle.query(usageQuery);
  }

  /** The cost of extra usage from where the tenant stands now. */
  async estimate(tenantId: string, metric: string, quantity: number): Promise<{ amount: string; currency: string }> {
    return this.handle(tenantId).query(estimateQuery, { metric, quantity });
  }

  /** Check-and-consume against a hard limit (a workflow update). */
  async authorize(tenantId: string, request: AuthorizeRequest): Promise<AuthorizeResult> {
    // A request that meets a rollover is answered by the next period's run: retry a few times.
    for (let attempt = 1; ; attempt += 1) {
      try {
        return await this.handle(tenantId).executeUpdate(authorizeUpdate, { args: [request], updateId: `authorize-${request.id}` });
      } catch (err) {
        const rollingOver = err instanceof WorkflowUpdateFailedError && err.cause instanceof ApplicationFailure && err.cause.type === PERIOD_ROLLING_OVER;
        if (!rollingOver) throw err;
        if (attempt >= 10) {
          throw new ApiError(503, 'unavailable', 'the billing period is rolling over; retry', undefined, { 'Retry-After': '1' });
        }
        await sleep(100 * attempt);
      }
    }
  }

  /** Finance closes the current period now. */
  async closePeriod(tenantId: string, finalize: boolean): Promise<ClosePeriodResult> {
    return this.handle(tenantId).executeUpdate(closePeriodUpdate, { args: [{ finalize }] });
  }

  /** Cancels the subscription: final invoice, then the workflow completes. */
  async cancel(tenantId: string): Promise<ClosePeriodResult> {
    return this.handle(tenantId).executeUpdate(cancelSubscriptionUpdate, { args: [] });
  }

  /** True when the tenant's workflow is running. */
  async isRunning(tenantId: string): Promise<boolean> {
    try {
      const d = await this.handle(tenantId).describe();
      return d.status.name === 'RUNNING';
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) return false;
      throw err;
    }
  }

  private handle(tenantId: string) {
    return this.client.workflow.getHandle(tenantWorkflowId(tenantId));
  }
}
