import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';
import type { AlertLevel } from '../domain/thresholds';
import type { CounterState } from '../domain/aggregation';
import { formatPeriodStamp, type Period } from '../domain/periods';
import type { PlanVersion } from '../domain/plan';
import type { AlertRuleInput } from '../activities/types';

/**
 * The messages of the tenant workflow, shared by the workflow, the API and the tests: one
 * module, so the names on both sides of a signal or update can never drift apart.
 */

/** The tenant's billing workflow id: ops search for it in the Temporal UI. */
export function tenantWorkflowId(tenantId: string): string {
  return `billing-${tenantId}`;
}

/** One invoice workflow per period and version: `invoice-<tenant>-<YYYYMMDDTHHmmssZ>-v<n>`. */
export function invoiceWorkflowId(tenantId: string, periodStart: string, version: number): string {
  return `invoice-${tenantId}-${formatPeriodStamp(periodStart)}-v${version}`;
}

/** Invoice ids are deterministic from (tenant, period start, version): a retry cannot make a second one. */
export function invoiceId(tenantId: string, periodStart: string, version: number): string {
  return `in_${tenantId}_${formatPeriodStamp(periodStart)}_v${version}`;
}

/** Alert ids are deterministic from their unique key, so a retried activity finds the same row. */
export function alertId(tenantId: string, periodStart: string, subject: string, threshold: number): string {
  // `cost-limit` cannot collide with a metric: metric names have no hyphen.
  const name = subject === COST_SUBJECT ? 'cost-limit' : subject;
  return `al_${tenantId}_${formatPeriodStamp(periodStart)}_${name}_${threshold}`;
}

/** The alert subject of a plan's cost limit; `$` keeps it apart from any metric name. */
export const COST_SUBJECT = '$cost';

/**
 * An API request must land its usage signal within this long after receiving the request, or it
 * fails unacknowledged (503): so every acknowledged event is in its tenant's history by then.
 */
export const USAGE_SIGNAL_DEADLINE_MS = 3_000;

/**
 * A closed period is sealed (its invoice finalizes) this long after its grace ends: longer than
 * the signal deadline plus clock skew, so no acknowledged event for it can still be on its way.
 */
export const LATE_EVENT_SETTLE_MS = 8_000;

/**
 * Failure type of an authorize update that reached a run while its period was rolling over: the
 * run ends with every handler finished, so the caller retries and the next period answers.
 */
export const PERIOD_ROLLING_OVER = 'period_rolling_over';

/** One usage event as the API accepted it (timestamp already defaulted to receipt time). */
export interface UsageEventInput {
  id: string;
  metric: string;
  quantity: number | string;
  timestamp: string;
  properties?: Record<string, unknown>;
}

/** A batch of usage, signalled once per API request (or per coalesced group of requests). */
export interface UsageBatch {
  /** Unique per batch; ties a batch to the API request(s) it came from in logs. */
  batchId: string;
  /** When the API received it: decides whether a late event is still within grace. */
  receivedAt: string;
  events: UsageEventInput[];
}

/** Carries usage into the tenant's current period (the ingest path). */
export const recordUsageSignal = defineSignal<[UsageBatch]>('recordUsage');

/** A check-and-consume request against a meter's hard limit. */
export interface AuthorizeRequest {
  id: string;
  metric: string;
  quantity: number | string;
}

/** The answer to an authorize request; the same id always gets the same answer. */
export interface AuthorizeResult {
  allowed: boolean;
  reason?: 'hard_limit';
  remaining: number | null;
}

/** Synchronous check-and-consume, idempotent on its id. */
export const authorizeUpdate = defineUpdate<AuthorizeResult, [AuthorizeRequest]>('authorize');

/** Finance closes the current period now; `finalize` skips the grace wait of its invoice. */
export interface ClosePeriodRequest {
  finalize?: boolean;
}

/** What finance gets back from a close: the closed period, its invoice, the new period. */
export interface ClosePeriodResult {
  closed_period: Period;
  invoice_id: string;
  invoice_workflow_id: string;
  current_period: Period | null;
}

/** Closes the current period early (finance). */
export const closePeriodUpdate = defineUpdate<ClosePeriodResult, [ClosePeriodRequest]>('closePeriod');

/** Cancels the subscription: closes the period now, invoices it (finalized) and ends the workflow. */
export const cancelSubscriptionUpdate = defineUpdate<ClosePeriodResult, []>('cancelSubscription');

/** One meter in the usage view (the shape of `GET /v1/tenants/{id}/usage`). */
export interface MeterUsage {
  used: number;
  limit: number | null;
  percent: number | null;
  hard_limit: boolean;
  amount: string;
}

/** An alert as the tenant sees it in the usage view. */
export interface AlertView {
  id: string;
  metric: string;
  threshold: number;
  level: Exclude<AlertLevel, 'none'>;
  status: 'notified' | 'superseded';
  used: number;
  limit: number;
  period_start: string;
  fired_at: string;
}

/** The current period as the usage query answers it. */
export interface UsageView {
  tenant_id: string;
  plan_id: string;
  plan_version: number;
  period: Period & { interval: PlanVersion['interval'] };
  metrics: Record<string, MeterUsage>;
  costs: { base_fee: string; usage: string; total: string; currency: string };
  alerts: AlertView[];
  alert_level: AlertLevel;
  pending_events: number;
  as_of: string;
}

/** Answers `GET /v1/tenants/{id}/usage`. */
export const usageQuery = defineQuery<UsageView>('usage');

/**
 * Read-your-writes usage: an update is ordered after every signal already in history, so its
 * answer includes every event acknowledged before it (`GET .../usage?consistent=true`).
 */
export const settledUsageUpdate = defineUpdate<UsageView>('settledUsage');

/** The cost of extra usage given where the tenant stands in its tiers now. */
export const estimateQuery = defineQuery<{ amount: string; currency: string }, [{ metric: string; quantity: number }]>('estimate');

/** The workflow's whole state, for ops and tests. */
export interface TenantStateView {
  tenant_id: string;
  plan: PlanVersion;
  period: Period;
  closing_periods: Array<{ start: string; end: string; grace_ends_at: string; seal_at: string }>;
  counters: Record<string, CounterState>;
  decided_thresholds: Record<string, number[]>;
  events_counted: number;
  pending_batches: number;
  pending_events: number;
  deferred_events: number;
  run: { signals: number; events: number; chunks: number };
}

/** Answers ops questions about a tenant (the Temporal UI's query tab shows it). */
export const stateQuery = defineQuery<TenantStateView>('state');

/** A change to a tenant's alert rules, sent by the API right after the change is stored. */
export interface AlertRulesChange {
  /** Rules created (or changed): replace any rule with the same id. */
  upsert?: AlertRuleInput[];
  /** Ids of rules deleted. */
  removed?: string[];
}

/**
 * Brings rules created or deleted mid-period to the running period (a new period loads them in
 * `startPeriod`): they apply from the moment they are created, once per period.
 */
export const alertRulesChangedSignal = defineSignal<[AlertRulesChange]>('alertRulesChanged');

/** Applies one change to a rule list, by rule id, so applying it twice changes nothing. */
export function applyAlertRulesChange(rules: readonly AlertRuleInput[], change: AlertRulesChange): AlertRuleInput[] {
  const gone = new Set([...(change.removed ?? []), ...(change.upsert ?? []).map((r) => r.id)]);
  const kept = rules.filter((r) => !gone.has(r.id));
  const removed = new Set(change.removed ?? []);
  return [...kept, ...(change.upsert ?? []).filter((r) => !removed.has(r.id))];
}

/** Finalizes an invoice now instead of waiting for the end of its grace period. */
export const finalizeInvoiceSignal = defineSignal('finalizeNow');
