import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';
import type { AlertLevel } from '../domain/thresholds';
import type { CounterState } from '../domain/aggregation';
import { formatPeriodStamp, type Period } from '../domain/periods';
import type { PlanVersion } from '../domain/plan';
import type { AlertRuleInput } from '../activities/types';
import { parseQuantity } from '../domain/decimal';

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

/** What `usageEstimate` prices: this much more of one metric. */
export interface EstimateRequest {
  metric: string;
  quantity: number;
}

/**
 * The cost of extra usage given where the tenant stands in its tiers now (`POST …/estimate`). A
 * query, so the API can ask it as often as tenants do without writing to history. Its name sorts
 * after `state` and `usage`: the Temporal UI lists queries by name and preselects the first, and
 * that one should answer without an argument. Without its argument this one answers with an
 * error naming the argument it expects.
 */
export const estimateQuery = defineQuery<{ amount: string; currency: string }, [EstimateRequest]>('usageEstimate');

/** The query's earlier name: still answered (not listed), for API processes older than the workers. */
export const LEGACY_ESTIMATE_QUERY_NAME = 'estimate';

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

// ---- arguments ---------------------------------------------------------------------------------

/**
 * The argument each message with one expects, in the words its error uses. Messages not listed
 * take no argument and ignore one (`usage`, `state`, `settledUsage`, `finalizeNow`).
 */
export const MESSAGE_ARGUMENTS = {
  recordUsage: '{ batchId: string, receivedAt: ISO instant, events: [{ id, metric, quantity, timestamp }] }',
  alertRulesChanged: '{ upsert?: [{ id: string, subject: string, threshold: number }], removed?: string[] }',
  authorize: '{ id: string, metric: string, quantity: number >= 0 }',
  usageEstimate: '{ metric: string, quantity: number >= 0 }',
  closePeriod: '{ finalize?: boolean } or no argument',
  cancelSubscription: 'no argument',
} as const;

/** A message whose argument is checked. */
export type CheckedMessage = keyof typeof MESSAGE_ARGUMENTS;

/**
 * Why `value` is not a valid argument of `message`, as one sentence naming the expected shape
 * (`usageEstimate expects { metric: string, quantity: number >= 0 }; got no argument`), or
 * undefined when it is valid. Pure: update validators throw it, queries throw it, signal handlers
 * (which cannot answer) log it and drop the signal instead of failing the workflow task on it.
 */
export function argumentProblem(message: CheckedMessage, value: unknown): string | undefined {
  const problem = CHECKS[message](value);
  return problem === undefined ? undefined : `${message} expects ${MESSAGE_ARGUMENTS[message]}; ${problem}`;
}

const CHECKS: Record<CheckedMessage, (value: unknown) => string | undefined> = {
  recordUsage: (value) => {
    if (!isObject(value)) return got(value);
    if (typeof value.receivedAt !== 'string' || !Number.isFinite(Date.parse(value.receivedAt))) return `receivedAt is ${shown(value.receivedAt)}`;
    if (!Array.isArray(value.events)) return `events is ${shown(value.events)}`;
    const bad = value.events.findIndex((e) => !isObject(e));
    return bad >= 0 ? `events[${bad}] is ${shown(value.events[bad])}` : undefined;
  },
  alertRulesChanged: (value) => {
    if (!isObject(value)) return got(value);
    if (value.upsert !== undefined) {
      if (!Array.isArray(value.upsert)) return `upsert is ${shown(value.upsert)}`;
      const bad = value.upsert.findIndex(
        (r) => !isObject(r) || typeof r.id !== 'string' || typeof r.subject !== 'string' || typeof r.threshold !== 'number' || !Number.isFinite(r.threshold),
      );
      if (bad >= 0) return `upsert[${bad}] is ${shown(value.upsert[bad])}`;
    }
    if (value.removed !== undefined && (!Array.isArray(value.removed) || value.removed.some((id) => typeof id !== 'string'))) {
      return `removed is ${shown(value.removed)}`;
    }
    return undefined;
  },
  authorize: (value) => {
    if (!isObject(value)) return got(value);
    if (typeof value.id !== 'string' || value.id.length === 0) return `id is ${shown(value.id)}`;
    return metricAndQuantityProblem(value);
  },
  usageEstimate: (value) => (isObject(value) ? metricAndQuantityProblem(value) : got(value)),
  closePeriod: (value) => {
    if (value === undefined || value === null) return undefined;
    if (!isObject(value)) return got(value);
    return value.finalize === undefined || typeof value.finalize === 'boolean' ? undefined : `finalize is ${shown(value.finalize)}`;
  },
  cancelSubscription: (value) => (value === undefined || value === null ? undefined : got(value)),
};

function metricAndQuantityProblem(value: Record<string, unknown>): string | undefined {
  if (typeof value.metric !== 'string' || value.metric.length === 0) return `metric is ${shown(value.metric)}`;
  if (typeof value.quantity !== 'number' && typeof value.quantity !== 'string') return `quantity is ${shown(value.quantity)}`;
  try {
    parseQuantity(value.quantity);
  } catch (err) {
    return (err as Error).message;
  }
  return undefined;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function got(value: unknown): string {
  return value === undefined ? 'got no argument' : `got ${shown(value)}`;
}

/** A value as the error shows it: short, and `missing` for an absent field. */
function shown(value: unknown): string {
  if (value === undefined) return 'missing';
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}
