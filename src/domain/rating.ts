/**
 * Rating (BILLING.md, "Pricing"): turning a meter's counter into money, and a period's
 * counters into invoice lines. Everything is exact; each line is rounded once, half-up,
 * to the currency's minor unit, and totals are sums of rounded lines.
 */
import { Dec, roundMoney, toDecimalString } from './decimal';
import type { Aggregation, Meter, PlanVersion, Pricing, Tier } from './plan';

/**
 * One row of a graduated or volume breakdown, kept on the invoice so a customer can see
 * how a line was computed. The tier covers the units above `from` up to and including
 * `up_to` (null: no upper bound); `tier` is 1-based; `amount` is exact (not rounded) and
 * includes the tier's flat fee.
 */
export interface TierLine {
  tier: number;
  from: string;
  up_to: number | null;
  quantity: string;
  unit_price: string;
  flat_fee: string;
  amount: string;
}

/**
 * A meter priced for a period: the billed `quantity`, the `exact` amount and the invoice
 * `amount` (rounded once, half-up, to the currency's minor unit), plus the tier breakdown
 * for graduated and volume meters (only the tiers that are reached).
 */
export interface RatedMeter {
  quantity: string;
  exact: string;
  amount: string;
  tiers?: TierLine[];
}

/** An invoice line before it is stored: a meter line or the `base_fee` line. */
export interface InvoiceLineDraft {
  metric: string;
  description: string;
  quantity: string;
  amount: string;
  tiers?: TierLine[];
  /** `pack`: an add-on pack's price (see `src/domain/packs.ts`); absent: derived from `metric`. */
  kind?: 'usage' | 'base_fee' | 'pack';
  /** A usage line: the units drawn from each pack, which its quantity leaves out. */
  pack_draws?: Array<{ pack_id: string; units: string }>;
  /** A dimensioned meter's line: the group's properties (`src/domain/dimensions.ts`). */
  group?: Record<string, string>;
}

/** Everything an invoice (or a running-cost check) needs from rating one period. */
export interface RatedPeriod {
  lines: InvoiceLineDraft[];
  /** Sum of the rounded lines. */
  subtotal: string;
  /** What the customer owes: equal to the subtotal while there are no taxes. */
  total: string;
  currency: string;
  /** Sum of the rounded meter lines (the total without the base fee). */
  usage: string;
  /** The rounded base fee ("0.00" when the plan has none). */
  base_fee: string;
}

/** Metric name of the invoice line that carries the plan's base fee. */
export const BASE_FEE_METRIC = 'base_fee';

function billableQuantity(quantity: Dec.Value): Dec {
  const q = new Dec(quantity);
  if (!q.isFinite() || (q.isNegative() && !q.isZero())) {
    throw new RangeError(`cannot rate quantity ${String(quantity)}: it must be a finite decimal >= 0`);
  }
  return q.isZero() ? new Dec(0) : q;
}

function tierLine(index: number, tiers: readonly Tier[], from: Dec, units: Dec): TierLine {
  const tier = tiers[index] as Tier;
  const flatFee = new Dec(tier.flat_fee ?? 0);
  return {
    tier: index + 1,
    from: toDecimalString(from),
    up_to: index === tiers.length - 1 ? null : tier.up_to,
    quantity: toDecimalString(units),
    unit_price: tier.unit_price,
    flat_fee: toDecimalString(flatFee),
    amount: toDecimalString(units.times(tier.unit_price).plus(flatFee)),
  };
}

/** Upper bound of tier `index`; the last tier is open-ended whatever its `up_to` says. */
function upperBound(tiers: readonly Tier[], index: number): Dec | null {
  const tier = tiers[index] as Tier;
  return tier.up_to === null || index === tiers.length - 1 ? null : new Dec(tier.up_to);
}

function rateGraduated(tiers: readonly Tier[], q: Dec): TierLine[] {
  const lines: TierLine[] = [];
  let from = new Dec(0);
  for (let i = 0; i < tiers.length && q.greaterThan(from); i += 1) {
    const upper = upperBound(tiers, i);
    const units = (upper === null ? q : Dec.min(q, upper)).minus(from);
    lines.push(tierLine(i, tiers, from, units));
    if (upper === null) break;
    from = upper;
  }
  return lines;
}

function rateVolume(tiers: readonly Tier[], q: Dec): TierLine[] {
  if (q.isZero()) return [];
  let from = new Dec(0);
  for (let i = 0; i < tiers.length; i += 1) {
    const upper = upperBound(tiers, i);
    if (upper === null || q.lessThanOrEqualTo(upper)) return [tierLine(i, tiers, from, q)];
    from = upper;
  }
  throw new RangeError('volume pricing has no tiers');
}

/**
 * Prices one meter's counter for a period. `per_unit`: max(0, q - included) * unit_price.
 * `graduated`: each tier's units at that tier's price, plus the flat fee of every tier
 * reached (a tier is reached when q is above its lower bound; q = 0 reaches none).
 * `volume`: all units at the price of the tier q falls in, plus that tier's flat fee
 * (q = 0 costs nothing). `package`: ceil(max(0, q - included) / package_size) * package_price.
 * Tier bounds are inclusive upper bounds; quantities may be fractional. The pricing is
 * assumed valid (see `pricingProblems`); a last tier with a bound is treated as open-ended.
 */
export function rateMeter(meter: Meter | Pricing, quantity: Dec.Value, currency: string): RatedMeter {
  const pricing = 'pricing' in meter ? meter.pricing : meter;
  const q = billableQuantity(quantity);
  let exact: Dec;
  let tiers: TierLine[] | undefined;
  switch (pricing.model) {
    case 'per_unit':
      exact = Dec.max(0, q.minus(pricing.included ?? 0)).times(pricing.unit_price);
      break;
    case 'package': {
      const billable = Dec.max(0, q.minus(pricing.included ?? 0));
      let packages = billable.divToInt(pricing.package_size);
      if (!billable.mod(pricing.package_size).isZero()) packages = packages.plus(1);
      exact = packages.times(pricing.package_price);
      break;
    }
    case 'graduated':
      tiers = rateGraduated(pricing.tiers, q);
      exact = tiers.reduce((sum, line) => sum.plus(line.amount), new Dec(0));
      break;
    case 'volume':
      tiers = rateVolume(pricing.tiers, q);
      exact = tiers.reduce((sum, line) => sum.plus(line.amount), new Dec(0));
      break;
    default:
      throw new RangeError(`unknown pricing model: ${String((pricing as { model: unknown }).model)}`);
  }
  const rated: RatedMeter = { quantity: toDecimalString(q), exact: toDecimalString(exact), amount: roundMoney(exact, currency) };
  return tiers === undefined ? rated : { ...rated, tiers };
}

function describe(meter: Meter): string {
  switch (meter.pricing.model) {
    case 'per_unit':
      return `${meter.metric} at ${meter.pricing.unit_price} per unit`;
    case 'package':
      return `${meter.metric} in packages of ${meter.pricing.package_size} at ${meter.pricing.package_price}`;
    default:
      return `${meter.metric}, ${meter.pricing.model} tiers`;
  }
}

/**
 * Rates a whole period from its meter counters (metric -> exact decimal string; a missing
 * metric counts as 0): a `base_fee` line (quantity "1") when the plan's base fee is above
 * zero, then one line per meter in the plan's order, zero usage included. Each line is
 * rounded once; subtotal and total are the sum of the rounded lines. Used for invoices
 * and for the running cost compared with `cost_limit`.
 */
export function ratePeriod(
  plan: PlanVersion,
  counters: Readonly<Record<string, string>>,
  /** Lines that stand for a meter instead of its one line (a dimensioned meter's groups, `src/domain/dimensions.ts`). */
  meterLines: Readonly<Record<string, InvoiceLineDraft[]>> = {},
): RatedPeriod {
  const { currency } = plan;
  const lines: InvoiceLineDraft[] = [];
  const baseFee = new Dec(plan.base_fee);
  if (baseFee.greaterThan(0)) {
    lines.push({ metric: BASE_FEE_METRIC, description: `${plan.name} base fee`, quantity: '1', amount: roundMoney(baseFee, currency) });
  }
  let usage = new Dec(0);
  for (const meter of plan.meters) {
    const own = meterLines[meter.metric];
    if (own) {
      for (const line of own) usage = usage.plus(line.amount);
      lines.push(...own);
      continue;
    }
    const rated = rateMeter(meter, counters[meter.metric] ?? '0', currency);
    usage = usage.plus(rated.amount);
    const line: InvoiceLineDraft = { metric: meter.metric, description: describe(meter), quantity: rated.quantity, amount: rated.amount };
    lines.push(rated.tiers === undefined ? line : { ...line, tiers: rated.tiers });
  }
  const subtotal = lines.reduce((sum, line) => sum.plus(line.amount), new Dec(0));
  return {
    lines,
    subtotal: roundMoney(subtotal, currency),
    total: roundMoney(subtotal, currency),
    currency,
    usage: roundMoney(usage, currency),
    base_fee: roundMoney(baseFee, currency),
  };
}

/**
 * The counter a meter would have after `extra` more usage: `sum` adds it, `count` adds it
 * as a number of extra events, `max` keeps the larger, `latest` becomes `extra`. Shared by
 * cost estimates and by hard-limit authorization (would this consumption exceed the limit?).
 */
export function projectedCounter(aggregation: Aggregation, current: Dec.Value, extra: Dec.Value): string {
  switch (aggregation) {
    case 'sum':
    case 'count':
      return toDecimalString(new Dec(current).plus(extra));
    case 'max':
      return toDecimalString(Dec.max(current, extra));
    case 'latest':
      return toDecimalString(extra);
    default:
      throw new RangeError(`unknown aggregation: ${String(aggregation)}`);
  }
}

/**
 * How much the meter's invoice line would change with `extraQuantity` more usage (see
 * {@link projectedCounter}): the rounded amount after minus the rounded amount before,
 * rounded to the currency's minor unit. Answers the cost-estimate endpoint; can be
 * negative for a `latest` meter whose new reading is lower.
 */
export function estimateExtraCost(meter: Meter, currentQuantity: Dec.Value, extraQuantity: Dec.Value, currency: string): string {
  const before = rateMeter(meter, currentQuantity, currency).amount;
  const after = rateMeter(meter, projectedCounter(meter.aggregation, currentQuantity, extraQuantity), currency).amount;
  return roundMoney(new Dec(after).minus(before), currency);
}
