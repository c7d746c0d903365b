/**
 * Plan shapes, spelled exactly as the HTTP API spells them (snake_case), so that the same
 * JSON flows unchanged through the API, the database and the tenant workflow.
 */
import { Dec } from './decimal';

/** Length of a billing period: a local calendar day, a month or a year from the anchor. */
export type Interval = 'day' | 'month' | 'year';

/** How a meter turns a period's usage events into one counter (see BILLING.md, Aggregations). */
export type Aggregation = 'sum' | 'count' | 'max' | 'latest';

/**
 * One price tier of a graduated or volume meter. `up_to` is an inclusive upper bound in
 * units (null on the last, open-ended tier); prices are decimal strings.
 */
export interface Tier {
  up_to: number | null;
  unit_price: string;
  flat_fee?: string;
}

/** How a meter's counter is priced; one variant per pricing model of BILLING.md. */
export type Pricing =
  | { model: 'per_unit'; unit_price: string; included?: number }
  | { model: 'graduated'; tiers: Tier[] }
  | { model: 'volume'; tiers: Tier[] }
  | { model: 'package'; package_size: number; package_price: string; included?: number };

/** A metered metric of a plan: how it is counted, its optional per-period limit and its price. */
export interface Meter {
  metric: string;
  aggregation: Aggregation;
  limit?: number;
  hard_limit?: boolean;
  pricing: Pricing;
  /** Pricing by dimension: the event properties each group is made of (`src/domain/dimensions.ts`). */
  group_by?: string[];
  /** Per-group prices: the first entry whose `match` equals the group's properties; else `pricing`. */
  prices?: Array<{ match: Record<string, string>; pricing: Pricing }>;
}

/**
 * One immutable version of a plan. A running period keeps the version it started with,
 * so everything needed to rate and alert a period is in this object.
 */
export interface PlanVersion {
  id: string;
  version: number;
  name: string;
  currency: string;
  interval: Interval;
  base_fee: string;
  alert_thresholds: number[];
  cost_limit?: string;
  grace_period_seconds: number;
  /** Days the raw events of an invoiced period are kept after its end (absent: RETENTION_DAYS). */
  retention_days?: number;
  /** Prepaid only: authorize refuses consumption the available credit cannot pay for. */
  prepaid?: boolean;
  /** `balance.low` fires when available credit falls to or below this (a tenant may set its own). */
  low_balance_threshold?: string;
  meters: Meter[];
}

/** Alert thresholds (percent) a plan gets when it does not set its own: warning, critical, exceeded. */
export const DEFAULT_ALERT_THRESHOLDS = [80, 90, 100];

/** How long (seconds) a closed period still accepts late events when the plan does not say. */
export const DEFAULT_GRACE_PERIOD_SECONDS = 3600;

/** Metric names allowed by BILLING.md; shared so the API and the domain agree. */
export const METRIC_NAME_PATTERN = /^[a-z][a-z0-9_]{0,63}$/;

/** Looks up the meter of a plan for an incoming event's metric (undefined: unknown metric). */
export function findMeter(plan: PlanVersion, metric: string): Meter | undefined {
  return plan.meters.find((meter) => meter.metric === metric);
}

/** True when `value` parses as a finite decimal that is >= 0. */
function isNonNegativeDecimal(value: unknown): boolean {
  if (typeof value !== 'string' && typeof value !== 'number') return false;
  try {
    const d = new Dec(value);
    return d.isFinite() && (d.isZero() || d.isPositive());
  } catch {
    return false;
  }
}

/**
 * Lists what is wrong with a pricing definition (empty when it can be rated): tiers must
 * have strictly increasing bounds with only the last one open (null), prices and fees must
 * be non-negative decimals, package sizes positive. The rating functions assume a valid
 * pricing, so the API should refuse plans for which this returns problems.
 */
export function pricingProblems(pricing: Pricing): string[] {
  const problems: string[] = [];
  switch (pricing.model) {
    case 'per_unit':
      if (!isNonNegativeDecimal(pricing.unit_price)) problems.push('unit_price must be a decimal >= 0');
      if (pricing.included !== undefined && !isNonNegativeDecimal(pricing.included)) problems.push('included must be >= 0');
      break;
    case 'package':
      if (!isNonNegativeDecimal(pricing.package_size) || new Dec(pricing.package_size).isZero()) {
        problems.push('package_size must be > 0');
      }
      if (!isNonNegativeDecimal(pricing.package_price)) problems.push('package_price must be a decimal >= 0');
      if (pricing.included !== undefined && !isNonNegativeDecimal(pricing.included)) problems.push('included must be >= 0');
      break;
    case 'graduated':
    case 'volume': {
      const tiers = pricing.tiers;
      if (tiers.length === 0) problems.push('tiers must not be empty');
      let previous = new Dec(0);
      tiers.forEach((tier, i) => {
        const last = i === tiers.length - 1;
        if (!isNonNegativeDecimal(tier.unit_price)) problems.push(`tiers[${i}].unit_price must be a decimal >= 0`);
        if (tier.flat_fee !== undefined && !isNonNegativeDecimal(tier.flat_fee)) {
          problems.push(`tiers[${i}].flat_fee must be a decimal >= 0`);
        }
        if (tier.up_to === null) {
          if (!last) problems.push(`tiers[${i}].up_to may be null only on the last tier`);
        } else if (last) {
          problems.push('the last tier must have up_to null');
        } else if (!isNonNegativeDecimal(tier.up_to) || !new Dec(tier.up_to).greaterThan(previous)) {
          problems.push(`tiers[${i}].up_to must be greater than the previous bound`);
        } else {
          previous = new Dec(tier.up_to);
        }
      });
      break;
    }
    default:
      problems.push('unknown pricing model');
  }
  return problems;
}
