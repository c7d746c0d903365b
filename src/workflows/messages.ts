import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';
import type { Period } from '../domain/periods';
import type { PlanVersion } from '../domain/plan';
import type { AlertRuleInput, AuthorizeResult, BookSnapshot, ClosePeriodResult, TenantProfile } from '../contracts/ledger';
import type { UsageView } from '../domain/usage-view';
import { parseQuantity } from '../domain/decimal';

/**
 * The messages of the tenant workflow, shared by the workflow, the API and the tests: one
 * module, so the names on both sides of a signal or update can never drift apart.
 */

export { COST_SUBJECT, alertDeliveryWorkflowId, alertId, invoiceId, invoiceWorkflowId, tenantWorkflowId } from '../contracts/ids';
export type { AlertView, AuthorizeResult, ClosePeriodResult } from '../contracts/ledger';
export type { MeterUsage, UsageView } from '../domain/usage-view';

/**
 * Failure type of a request that reached a run while it was finishing (continue-as-new or a
 * rollover): the run ends with every handler finished, so the caller retries and the next run
 * answers.
 */
export const PERIOD_ROLLING_OVER = 'period_rolling_over';

/**
 * The doorbell: usage is stored in PostgreSQL (the API answered 202 once it was), and the
 * tenant's run should claim it. It carries no events, only how many were newly stored, so its
 * size never depends on the load; rings that arrive while a claim runs are answered by the next.
 */
export interface UsageDoorbell {
  /** Events newly stored by the ringing request(s). */
  events: number;
  /** The highest receive sequence among them (null when every event was a resend). */
  highest_seq: string | null;
}

/** Rings the tenant's run: new usage waits in PostgreSQL to be claimed. */
export const recordUsageSignal = defineSignal<[UsageDoorbell]>('recordUsage');

/** A check-and-consume request against a meter's hard limit. */
export interface AuthorizeRequest {
  id: string;
  metric: string;
  quantity: number | string;
}

/** Synchronous check-and-consume, idempotent on its id. */
export const authorizeUpdate = defineUpdate<AuthorizeResult, [AuthorizeRequest]>('authorize');

/** Finance closes the current period now; `finalize` skips the grace wait of its invoice. */
export interface ClosePeriodRequest {
  finalize?: boolean;
  /** The request's `Idempotency-Key`: stored with the closed period, so a retry can find the close it made. */
  idempotency_key?: string;
}

/** Closes the current period early (finance). */
export const closePeriodUpdate = defineUpdate<ClosePeriodResult, [ClosePeriodRequest]>('closePeriod');

/** Cancels the subscription: closes the period now, invoices it (finalized) and ends the workflow. */
export const cancelSubscriptionUpdate = defineUpdate<ClosePeriodResult, []>('cancelSubscription');

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


/** The workflow's whole state, for ops and tests. */
export interface TenantStateView {
  tenant: TenantProfile;
  plan: PlanVersion;
  period: Period;
  cancelled: { final_invoice_id: string } | null;
  /** Closed periods still taking late events. */
  closing_periods: Array<Period & { grace_ends_at: string }>;
  /** The current period's book first, then each closed period's: counters and decided thresholds. */
  books: BookSnapshot[];
  /** Events rung but not claimed by this run yet. */
  pending_events: number;
  /** This run: doorbells received, claims made, events rung and claimed. */
  run: { signals: number; claims: number; rung: number; claimed: number };
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
 * Brings a rule change to a run without waiting for it: what the API sends a cancelled tenant's
 * run, which only settles its last period's grace (`alertRulesStored` serves active tenants), and
 * what runs of earlier releases were sent. A new period reads the rules in its rollover.
 */
export const alertRulesChangedSignal = defineSignal<[AlertRulesChange]>('alertRulesChanged');

/**
 * The tenant's alert rules changed in PostgreSQL (a rule created or deleted): the run reads the
 * rules in force back from there and judges them against the usage so far, then answers. The API
 * answers the rule's request only after that, so every event acknowledged after the answer is
 * decided with the rule, even one that a claim already under way when the rule was stored would
 * have counted. Like `entitlementsChanged`, it carries no data: each run reads what is stored.
 */
export const alertRulesStoredUpdate = defineUpdate<void, []>('alertRulesStored');

/** Applies one change to a rule list, by rule id, so applying it twice changes nothing. */
export function applyAlertRulesChange(rules: readonly AlertRuleInput[], change: AlertRulesChange): AlertRuleInput[] {
  const gone = new Set([...(change.removed ?? []), ...(change.upsert ?? []).map((r) => r.id)]);
  const kept = rules.filter((r) => !gone.has(r.id));
  const removed = new Set(change.removed ?? []);
  return [...kept, ...(change.upsert ?? []).filter((r) => !removed.has(r.id))];
}

/** What a tenant's run applies after its entitlements changed: the limit overrides now in force. */
export interface EntitlementsView {
  limits: Record<string, string>;
}

/**
 * The tenant's entitlements changed in PostgreSQL (`PATCH /v1/tenants/{id}` with `limits`): the
 * run reads them back from there and applies them at once to the current period. It carries no
 * data, so concurrent changes can arrive in any order: each run reads what is stored.
 */
export const entitlementsChangedUpdate = defineUpdate<EntitlementsView, [EntitlementsChange?]>('entitlementsChanged');

/** What changed, as far as the run must know: a grant re-arms the balance alerts. */
export interface EntitlementsChange {
  granted?: boolean;
}

/** Finalizes an invoice now instead of waiting for the end of its grace period. */
export const finalizeInvoiceSignal = defineSignal('finalizeNow');

// ---- arguments ---------------------------------------------------------------------------------

/**
 * The argument each message with one expects, in the words its error uses. Messages not listed
 * take no argument and ignore one (`usage`, `state`, `settledUsage`, `finalizeNow`).
 */
export const MESSAGE_ARGUMENTS = {
  recordUsage: '{ events: number, highest_seq: string or null }',
  alertRulesChanged: '{ upsert?: [{ id: string, subject: string, threshold: number }], removed?: string[] }',
  authorize: '{ id: string, metric: string, quantity: number >= 0 }',
  usageEstimate: '{ metric: string, quantity: number >= 0 }',
  closePeriod: '{ finalize?: boolean, idempotency_key?: string } or no argument',
  cancelSubscription: 'no argument',
  alertRulesStored: 'no argument',
  entitlementsChanged: '{ granted?: boolean } or no argument',
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
    if (typeof value.events !== 'number' || !Number.isInteger(value.events) || value.events < 0) return `events is ${shown(value.events)}`;
    return value.highest_seq === null || typeof value.highest_seq === 'string' ? undefined : `highest_seq is ${shown(value.highest_seq)}`;
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
    if (value.finalize !== undefined && typeof value.finalize !== 'boolean') return `finalize is ${shown(value.finalize)}`;
    return value.idempotency_key === undefined || typeof value.idempotency_key === 'string' ? undefined : `idempotency_key is ${shown(value.idempotency_key)}`;
  },
  cancelSubscription: (value) => (value === undefined || value === null ? undefined : got(value)),
  alertRulesStored: (value) => (value === undefined || value === null ? undefined : got(value)),
  entitlementsChanged: (value) => {
    if (value === undefined || value === null) return undefined;
    if (!isObject(value)) return got(value);
    return value.granted === undefined || typeof value.granted === 'boolean' ? undefined : `granted is ${shown(value.granted)}`;
  },
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
