/**
 * The estimated cost of one stored usage event (`GET …/events`): its quantity at the meter's unit
 * price where the tenant stands in its tiers now. An estimate for reading a list, not a bill: the
 * invoice rates the period's counter once, and tiers, included units and packages make the real
 * cost of one event depend on everything else counted.
 *
 * - `per_unit`: the unit price, or 0 while the counter is within the included units;
 * - `graduated`: the price of the tier the next unit falls in;
 * - `volume`: the price of the tier the counter falls in (the first tier at 0);
 * - `package`: the package price spread over its units, or 0 within the included units;
 * - only `sum` meters: the quantity of a `count`, `max` or `latest` event is not what it adds to
 *   the bill, so those events have no cost (null).
 *
 * Exact (not rounded to the currency): one event often costs a fraction of the minor unit.
 */
import { Dec, toDecimalString } from './decimal';
import type { Meter, Tier } from './plan';

/** The unit price of the next unit of a meter whose counter stands at `counter`. */
export function marginalUnitPrice(meter: Meter, counter: Dec.Value): string {
  const q = new Dec(counter);
  const pricing = meter.pricing;
  switch (pricing.model) {
    case 'per_unit':
      return q.lessThan(pricing.included ?? 0) ? '0' : pricing.unit_price;
    case 'package':
      return q.lessThan(pricing.included ?? 0) ? '0' : toDecimalString(new Dec(pricing.package_price).dividedBy(pricing.package_size));
    case 'graduated':
      return tierAt(pricing.tiers, (upper) => q.lessThan(upper)).unit_price;
    case 'volume':
      return tierAt(pricing.tiers, (upper) => q.lessThanOrEqualTo(upper)).unit_price;
    default:
      throw new RangeError(`unknown pricing model: ${String((pricing as { model: unknown }).model)}`);
  }
}

/** The first tier whose upper bound `inside` accepts; the last tier is open-ended. */
function tierAt(tiers: readonly Tier[], inside: (upper: Dec) => boolean): Tier {
  for (let i = 0; i < tiers.length - 1; i += 1) {
    const upper = tiers[i]!.up_to;
    if (upper === null || inside(new Dec(upper))) return tiers[i]!;
  }
  return tiers[tiers.length - 1]!;
}

/** `quantity × marginalUnitPrice`, or null for a meter that is not a `sum` (see above). */
export function estimatedEventCost(meter: Meter, counter: Dec.Value, quantity: Dec.Value): string | null {
  if (meter.aggregation !== 'sum') return null;
  return toDecimalString(new Dec(quantity).times(marginalUnitPrice(meter, counter)));
}
