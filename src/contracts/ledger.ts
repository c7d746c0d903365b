/**
 * The event ledger's shapes, shared by the repository that computes them (src/db/ledger.ts), the
 * activities that return them and the tenant workflow's ledger that applies them. Types only.
 */

import type { PeriodAggregates } from '../domain/aggregation';
import type { Period } from '../domain/periods';
import type { PlanVersion } from '../domain/plan';
import type { AlertView } from '../domain/usage-view';
import type { AlertLevel } from '../domain/thresholds';
import type { Pack } from '../domain/packs';
import type { MeterGroup } from '../domain/dimensions';
import type { Aggregation } from '../domain/plan';

export type { AlertView };

/** Every aggregate of one tenant, period and metric: a meter's counter is one of them. */
export interface PeriodCounter extends PeriodAggregates {
  period_start: string;
  metric: string;
}

/** What one claim counted, and where the counters it moved stand now. */
export interface ClaimResult {
  /** The tenant's prepaid credit after the claim, when the claim asked for it. */
  balance?: BalanceFacts;
  /** The tenant's packs and their stored draws after the claim, when the claim asked for its entitlements. */
  packs?: Pack[];
  /** Dimensioned meters' groups of the periods this claim touched, as absolute counters, when asked. */
  groups?: PeriodGroups[];
  /** Events this claim counted (a retry answers for the attempt that committed). */
  claimed: number;
  /** The counters of every period and metric this claim touched, after the claim. */
  counters: PeriodCounter[];
  /** True when the claim stopped at its size limit: more events stored before its barrier wait. */
  more: boolean;
  /**
   * The receive-order number this claim counted up to at most: every event at or below it was
   * stored when the claim began. Passing it to the next claims finishes what was stored before
   * the first one, however fast more arrives. Absent in answers recorded before barriers.
   */
  barrier_seq?: string;
}

/**
 * Where the tenant's ledger next has something to decide in its current period, so events that
 * reach none of it can be counted without it (bulk counting, docs/design/core-v2.md). For each
 * meter of the period's plan, `below`: while the meter's counter stays under it, counting decides
 * nothing (no alert threshold is crossed); null: nothing to decide at any usage. A metric missing
 * from `meters` is never counted in bulk.
 */
export interface DecisionPoints {
  period_start: string;
  meters: Record<string, { aggregation: Aggregation; below: string | null }>;
}

/**
 * What the ledger needs of the tenant's prepaid credit to decide balance alerts and prepaid
 * authorizations, read in one snapshot: the credit held now, which periods are not charged yet
 * (no finalized invoice: the ledger rates their books), and the tenant's own low-balance threshold.
 */
export interface BalanceFacts {
  balance: string;
  uncharged_periods: string[];
  low_balance_threshold: string | null;
}

/** Balance alerts of one kind: how many fired so far (their ids count them), and whether the next crossing fires. */
export interface BalanceAlertState {
  fired: number;
  armed: boolean;
}

/** A tenant's own alert rule, applied like the plan's thresholds (`subject` a metric, or the cost subject). */
export interface AlertRuleInput {
  id: string;
  subject: string;
  threshold: number;
}

/** The answer to an authorize request; the same id always gets the same answer. */
export interface AuthorizeResult {
  allowed: boolean;
  reason?: 'hard_limit' | 'insufficient_balance';
  /** Units the limit (or, refused for balance, the available credit) still allows; null: unlimited. */
  remaining: number | null;
  /** What the tenant can do about a refusal. */
  options?: string[];
}

/** One period's counters and alert decisions, as a tenant's ledger holds them. */
export interface BookSnapshot {
  period: Period;
  plan: PlanVersion;
  /** Closed periods only: late events are accepted until then. */
  grace_ends_at?: string;
  counters: PeriodCounter[];
  decided: Array<[subject: string, thresholds: number[]]>;
  /** The tenant's own limits in force for this period (`src/domain/limits.ts`); absent: the plan's. */
  limit_overrides?: Record<string, string>;
  /** Dimensioned meters' groups (counted events), by metric; absent: none. */
  groups?: Record<string, MeterGroup[]>;
}

/** One period's dimensioned meters' groups, by metric (absolute counters of the counted events). */
export interface PeriodGroups {
  period_start: string;
  groups: Record<string, MeterGroup[]>;
}

/** Who the tenant is, as its workflow needs it (timezone and anchor fix the period boundaries). */
export interface TenantProfile {
  id: string;
  name: string;
  timezone: string;
  billing_anchor: string;
}

/** What finance gets back from a close: the closed period, its invoice, the new period. */
export interface ClosePeriodResult {
  closed_period: Period;
  invoice_id: string;
  invoice_workflow_id: string;
  current_period: Period | null;
}

/** A tenant's ledger: what a run hands to the next (continue-as-new), or a restore rebuilds from PostgreSQL. */
export interface LedgerSnapshot {
  tenant: TenantProfile;
  alert_rules: AlertRuleInput[];
  current: BookSnapshot;
  /** Alerts of the current period, for the usage view (closed periods' alerts live in PostgreSQL). */
  alerts: AlertView[];
  closing: BookSnapshot[];
  /** Answers to recent authorize requests by id, oldest first (idempotency). */
  authorizations: Array<[id: string, result: AuthorizeResult]>;
  /** Answers to recent closes by their `Idempotency-Key`, oldest first (absent: none). */
  close_answers?: Array<[key: string, result: ClosePeriodResult]>;
  /** Set once the subscription is cancelled: no current period takes usage any more. */
  cancelled?: { final_invoice_id: string };
  /** The latest prepaid-credit facts read (absent: never read, or a ledger from before credits). */
  balance?: BalanceFacts;
  /** `balance.low` and `balance.depleted`: fired once per crossing, re-armed by a grant. */
  balance_alerts?: { low: BalanceAlertState; depleted: BalanceAlertState };
  /** The tenant's add-on packs with their draws per period (absent: none). */
  packs?: Pack[];
}

/** An alert the workflow decided to fire (notified) or to record as superseded. */
export interface AlertRecord {
  id: string;
  subject: string;
  threshold: number;
  level: Exclude<AlertLevel, 'none'>;
  status: 'notified' | 'superseded';
  used: string;
  limit: string;
  covers: number[];
  fired_at: string;
  rule_id?: string;
}
