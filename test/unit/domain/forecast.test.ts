import fc from 'fast-check';
import {
  Dec,
  type Meter,
  type PlanVersion,
  dailyCostRate,
  daysRemaining,
  forecastMeter,
  projectedTotal,
  rateMeter,
  ratePeriod,
} from '../../../src/domain';
import { buildUsageView } from '../../../src/domain/usage-view';

const PERIOD = { start: '2026-11-01T00:00:00.000Z', end: '2026-12-01T00:00:00.000Z' };
const LENGTH_MS = Date.parse(PERIOD.end) - Date.parse(PERIOD.start);
const at = (ms: number) => new Date(Date.parse(PERIOD.start) + ms).toISOString();

const API_CALLS: Meter = {
  metric: 'api_calls',
  aggregation: 'sum',
  limit: 1000,
  pricing: {
    model: 'graduated',
    tiers: [
      { up_to: 500, unit_price: '0.10' },
      { up_to: null, unit_price: '0.05', flat_fee: '3.00' },
    ],
  },
};
const SEATS: Meter = { metric: 'seats', aggregation: 'max', limit: 10, pricing: { model: 'per_unit', unit_price: '7.00' } };

const PLAN: PlanVersion = {
  id: 'pro',
  version: 1,
  name: 'Pro',
  currency: 'USD',
  interval: 'month',
  base_fee: '20.00',
  alert_thresholds: [80, 90, 100],
  grace_period_seconds: 3600,
  meters: [API_CALLS, SEATS],
};

/** A usage quantity with at most 6 decimals, as BILLING.md admits. */
const quantity = fc.integer({ min: 0, max: 10_000_000_000 }).map((micro) => new Dec(micro).dividedBy(1_000_000).toFixed());
/** An instant at or after 1 % of the period. */
const elapsed = fc.integer({ min: Math.ceil(LENGTH_MS / 100), max: LENGTH_MS });

/** `projected_total` from the plan's meters' forecasts and the total so far, as the usage view builds it. */
function projectedTotalOf(values: Record<string, string>, asOf: string): string | null {
  const meters = PLAN.meters.map((meter) => ({
    amount: rateMeter(meter, values[meter.metric] ?? '0', 'USD').amount,
    forecast: forecastMeter({ meter, used: values[meter.metric] ?? '0', limit: meter.limit ?? null, period: PERIOD, asOf, currency: 'USD' }),
  }));
  return projectedTotal(ratePeriod(PLAN, values).total, 'USD', meters);
}

describe('forecastMeter', () => {
  it('projects linearly: used / elapsed × length, rated like the invoice', () => {
    // 300 calls in the first 3 of 30 days: 3,000 at the end, and the limit of 1,000 after 10 days.
    const forecast = forecastMeter({ meter: API_CALLS, used: '300', limit: 1000, period: PERIOD, asOf: at(3 * 86_400_000), currency: 'USD' });
    expect(forecast).toEqual({
      projected_used: 3000,
      projected_amount: rateMeter(API_CALLS, '3000', 'USD').amount,
      exhausts_at: '2026-11-11T00:00:00.000Z',
    });
    expect(forecast.projected_amount).toBe('178.00'); // 500 × 0.10 + 2,500 × 0.05 + 3.00
  });

  it('has null fields before 1 % of the period has elapsed', () => {
    const early = forecastMeter({ meter: API_CALLS, used: '50', limit: 1000, period: PERIOD, asOf: at(LENGTH_MS / 100 - 1), currency: 'USD' });
    expect(early).toEqual({ projected_used: null, projected_amount: null, exhausts_at: null });
    const onTime = forecastMeter({ meter: API_CALLS, used: '50', limit: 1000, period: PERIOD, asOf: at(LENGTH_MS / 100), currency: 'USD' });
    expect(onTime.projected_used).toBe(5000);
  });

  it('gives no exhausts_at without a limit, without usage, or past the period end', () => {
    const base = { meter: API_CALLS, period: PERIOD, asOf: at(15 * 86_400_000), currency: 'USD' };
    expect(forecastMeter({ ...base, used: '100', limit: null }).exhausts_at).toBeNull();
    expect(forecastMeter({ ...base, used: '0', limit: 1000 }).exhausts_at).toBeNull();
    expect(forecastMeter({ ...base, used: '499', limit: 1000 }).exhausts_at).toBeNull(); // 998 at the end
    expect(forecastMeter({ ...base, used: '500', limit: 1000 }).exhausts_at).toBeNull(); // exactly at the end: outside
    expect(forecastMeter({ ...base, used: '501', limit: 1000 }).exhausts_at).not.toBeNull();
  });

  it('projects a reading (max, latest) as the reading itself, with no exhausts_at', () => {
    const forecast = forecastMeter({ meter: SEATS, used: '12', limit: 10, period: PERIOD, asOf: at(86_400_000), currency: 'USD' });
    expect(forecast).toEqual({ projected_used: 12, projected_amount: '84.00', exhausts_at: null });
  });

  it('rates with the view’s own rating when given one (units from packs left out, say)', () => {
    const asOf = at(3 * 86_400_000);
    const billed = (counter: Dec) => rateMeter(API_CALLS, Dec.max(0, counter.minus(1000)), 'USD').amount; // 1,000 drawn from packs
    const forecast = forecastMeter({ meter: API_CALLS, used: '300', limit: 1000, period: PERIOD, asOf, currency: 'USD', billed });
    expect(forecast.projected_amount).toBe(rateMeter(API_CALLS, '2000', 'USD').amount);
  });

  it('uses the limit it is given (the effective one), not the plan meter’s', () => {
    const asOf = at(10 * 86_400_000);
    const planLimit = forecastMeter({ meter: API_CALLS, used: '100', limit: 1000, period: PERIOD, asOf, currency: 'USD' });
    const raised = forecastMeter({ meter: API_CALLS, used: '100', limit: 2500, period: PERIOD, asOf, currency: 'USD' });
    expect(planLimit.exhausts_at).toBeNull(); // 300 at the end
    expect(raised.exhausts_at).toBeNull();
    const lowered = forecastMeter({ meter: API_CALLS, used: '100', limit: 200, period: PERIOD, asOf, currency: 'USD' });
    expect(lowered.exhausts_at).toBe('2026-11-21T00:00:00.000Z');
  });

  it('property: monotone in usage (projected usage and amount never fall, exhaustion never comes later)', () => {
    fc.assert(
      fc.property(quantity, quantity, elapsed, fc.constantFrom(API_CALLS, SEATS), (a, b, ms, meter) => {
        const [low, high] = new Dec(a).lessThanOrEqualTo(b) ? [a, b] : [b, a];
        const input = { meter, limit: meter.limit ?? null, period: PERIOD, asOf: at(ms), currency: 'USD' };
        const fLow = forecastMeter({ ...input, used: low });
        const fHigh = forecastMeter({ ...input, used: high });
        expect(fHigh.projected_used!).toBeGreaterThanOrEqual(fLow.projected_used!);
        expect(new Dec(fHigh.projected_amount!).greaterThanOrEqualTo(fLow.projected_amount!)).toBe(true);
        if (fLow.exhausts_at !== null) {
          expect(fHigh.exhausts_at).not.toBeNull();
          expect(Date.parse(fHigh.exhausts_at!)).toBeLessThanOrEqual(Date.parse(fLow.exhausts_at));
        }
        const tLow = projectedTotalOf({ api_calls: low, seats: '1' }, at(ms))!;
        const tHigh = projectedTotalOf({ api_calls: high, seats: '1' }, at(ms))!;
        expect(new Dec(tHigh).greaterThanOrEqualTo(tLow)).toBe(true);
      }),
    );
  });

  it('property: at (or after) the period end every projection equals the actual figure', () => {
    fc.assert(
      fc.property(quantity, quantity, fc.integer({ min: 0, max: 86_400_000 }), (calls, seats, after) => {
        const asOf = at(LENGTH_MS + after);
        const values = { api_calls: calls, seats };
        for (const meter of PLAN.meters) {
          const used = values[meter.metric as keyof typeof values];
          const forecast = forecastMeter({ meter, used, limit: meter.limit ?? null, period: PERIOD, asOf, currency: 'USD' });
          expect(new Dec(forecast.projected_used!).equals(used)).toBe(true);
          expect(forecast.projected_amount).toBe(rateMeter(meter, used, 'USD').amount);
          // At the end, the limit "will be reached" inside the period only if it already was.
          const reached = meter.aggregation === 'sum' && new Dec(used).greaterThan(meter.limit!);
          expect(forecast.exhausts_at === null).toBe(!reached);
        }
        expect(projectedTotalOf(values, asOf)).toBe(ratePeriod(PLAN, values).total);
      }),
    );
  });

  it('property: the projection at an instant holds the usage so far (never below it)', () => {
    fc.assert(
      fc.property(quantity, elapsed, (used, ms) => {
        const forecast = forecastMeter({ meter: API_CALLS, used, limit: 1000, period: PERIOD, asOf: at(ms), currency: 'USD' });
        expect(new Dec(forecast.projected_used!).greaterThanOrEqualTo(new Dec(used).toDecimalPlaces(6))).toBe(true);
      }),
    );
  });
});

function buildUsageViewForTest(input: { plan: PlanVersion; period: typeof PERIOD; values: Record<string, string>; asOf: string }) {
  return buildUsageView({ tenantId: 't', alerts: [], pendingEvents: 0, ...input });
}

describe('the usage view carries the forecast', () => {
  it('reports forecast per meter and projected_total in costs', () => {
    const view = buildUsageViewForTest({ plan: PLAN, period: PERIOD, values: { api_calls: '300', seats: '2' }, asOf: at(3 * 86_400_000) });
    expect(view.metrics.api_calls!.forecast).toEqual({ projected_used: 3000, projected_amount: '178.00', exhausts_at: '2026-11-11T00:00:00.000Z' });
    expect(view.metrics.seats!.forecast).toEqual({ projected_used: 2, projected_amount: '14.00', exhausts_at: null });
    expect(view.costs.projected_total).toBe('212.00'); // 20 + 178 + 14
  });

  it('has a null projected_total right after the period starts', () => {
    const view = buildUsageViewForTest({ plan: PLAN, period: PERIOD, values: { api_calls: '3', seats: '2' }, asOf: at(60_000) });
    expect(view.costs.projected_total).toBeNull();
    expect(view.metrics.api_calls!.forecast.projected_used).toBeNull();
  });
});

describe('days_remaining of a prepaid balance', () => {
  it('is available / the daily cost rate so far, floored to a tenth of a day', () => {
    // 30.00 spent in 3 days: 10.00 a day; 25.00 left lasts 2.5 days.
    const rate = dailyCostRate('30.00', PERIOD, at(3 * 86_400_000));
    expect(rate).toBe('10');
    expect(daysRemaining('25.00', rate)).toBe(2.5);
    expect(daysRemaining('25.99', rate)).toBe(2.5);
    expect(daysRemaining('0', rate)).toBe(0);
    expect(daysRemaining('-4', rate)).toBe(0);
  });

  it('is null when nothing is being spent', () => {
    expect(daysRemaining('25.00', '0')).toBeNull();
    expect(daysRemaining('25.00', null)).toBeNull();
    expect(dailyCostRate('10', PERIOD, PERIOD.start)).toBeNull();
  });

  it('property: more balance never means fewer days, a higher rate never more', () => {
    fc.assert(
      fc.property(quantity, quantity, quantity.filter((q) => new Dec(q).greaterThan(0)), (a, b, rate) => {
        const [low, high] = new Dec(a).lessThanOrEqualTo(b) ? [a, b] : [b, a];
        expect(daysRemaining(high, rate)!).toBeGreaterThanOrEqual(daysRemaining(low, rate)!);
        expect(daysRemaining(high, new Dec(rate).times(2).toFixed())!).toBeLessThanOrEqual(daysRemaining(high, rate)!);
      }),
    );
  });
});
