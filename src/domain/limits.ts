/**
 * Per-tenant limits (BILLING.md, "Per-tenant limits"): the admin may override a meter's limit, or
 * the plan's cost limit, for one tenant. The override replaces the plan's figure from the moment it
 * is stored until it is removed; percent, alerts, authorize and the usage view all read the limit
 * through {@link meterLimit} and {@link costLimit}, so they can never disagree on it.
 */
import { Dec, toDecimalString } from './decimal';
import { COST_SUBJECT } from '../contracts/ids';
import { findMeter, type Meter, type PlanVersion } from './plan';

/** A tenant's overrides: a metric (or `$cost`) to its limit, as an exact decimal string > 0. */
export type LimitOverrides = Readonly<Record<string, string>>;

/** What `PATCH /v1/tenants/{id}` asks for: a limit per subject, or null to remove the override. */
export type LimitChange = Readonly<Record<string, number | string | null>>;

/** The limit a meter is judged against for this tenant: its override, else the plan's (none: unlimited). */
export function meterLimit(meter: Pick<Meter, 'metric' | 'limit'>, overrides: LimitOverrides = {}): string | undefined {
  const own = overrides[meter.metric];
  if (own !== undefined) return own;
  return meter.limit !== undefined && meter.limit > 0 ? toDecimalString(meter.limit) : undefined;
}

/** The running-cost limit for this tenant: its `$cost` override, else the plan's `cost_limit`. */
export function costLimit(plan: Pick<PlanVersion, 'cost_limit'>, overrides: LimitOverrides = {}): string | undefined {
  const own = overrides[COST_SUBJECT];
  if (own !== undefined) return own;
  return plan.cost_limit !== undefined && new Dec(plan.cost_limit).greaterThan(0) ? plan.cost_limit : undefined;
}

/**
 * The overrides after a change: a number sets (or replaces) a subject's limit, null removes it.
 * Applying the same change twice gives the same overrides.
 */
export function applyLimitChange(overrides: LimitOverrides, change: LimitChange): Record<string, string> {
  const next: Record<string, string> = { ...overrides };
  for (const [subject, limit] of Object.entries(change)) {
    if (limit === null) delete next[subject];
    else next[subject] = toDecimalString(limit);
  }
  return next;
}

/**
 * What is wrong with a limit change for a tenant on these plans (the running period's and the one
 * the next period opens on), one entry per offending key, `path` relative to `limits`. A subject
 * must be a metric of one of the plans, or `$cost`; a limit must be a finite decimal > 0 (a limit
 * of 0 would make every percent infinite: block a meter with a hard limit instead).
 */
export function limitChangeProblems(plans: readonly PlanVersion[], change: LimitChange): Array<{ path: string; message: string }> {
  const problems: Array<{ path: string; message: string }> = [];
  for (const [subject, limit] of Object.entries(change)) {
    if (subject !== COST_SUBJECT && !plans.some((plan) => findMeter(plan, subject))) {
      problems.push({ path: subject, message: `the tenant's plan has no metric ${subject} (use a metric of the plan, or $cost)` });
      continue;
    }
    if (limit === null) continue;
    let value: Dec | undefined;
    try {
      value = new Dec(limit);
    } catch {
      value = undefined;
    }
    if (!value || !value.isFinite() || !value.greaterThan(0)) problems.push({ path: subject, message: 'must be a number > 0, or null to remove the override' });
  }
  return problems;
}
