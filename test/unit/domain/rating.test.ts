import fc from 'fast-check';
import {
  type Meter,
  type PlanVersion,
  type Pricing,
  type Tier,
  estimateExtraCost,
  pricingProblems,
  projectedCounter,
  ratePeriod,
  rateMeter,
} from '../../../src/domain';

/** The minutes tiers of the design document (and of callcov-graduated.json). */
const MINUTES: Pricing = {
  model: 'graduated',
  tiers: [
    { up_to: 1000, unit_price: '0.10' },
    { up_to: 10000, unit_price: '0.08' },
    { up_to: 100000, unit_price: '0.06' },
    { up_to: null, unit_price: '0.05' },
  ],
};

function plan(overrides: Partial<PlanVersion>): PlanVersion {
  return {
    id: 'p',
    version: 1,
    name: 'Plan',
    currency: 'USD',
    interval: 'month',
    base_fee: '0.00',
    alert_thresholds: [80, 90, 100],
    grace_period_seconds: 3600,
    meters: [],
    ...overrides,
  };
}

describe('rateMeter: graduated', () => {
  it('prices the design example: 1310.5 minutes cost 1000 * 0.10 + 310.5 * 0.08 = 124.84', () => {
    const rated = rateMeter(MINUTES, 1310.5, 'USD');
    expect(rated).toEqual({
      quantity: '1310.5',
      exact: '124.84',
      amount: '124.84',
      tiers: [
        { tier: 1, from: '0', up_to: 1000, quantity: '1000', unit_price: '0.10', flat_fee: '0', amount: '100' },
        { tier: 2, from: '1000', up_to: 10000, quantity: '310.5', unit_price: '0.08', flat_fee: '0', amount: '24.84' },
      ],
    });
  });

  it('treats up_to as inclusive: the 1000th unit is in tier 1', () => {
    expect(rateMeter(MINUTES, 1000, 'USD').tiers).toHaveLength(1);
    expect(rateMeter(MINUTES, 1000, 'USD').amount).toBe('100.00');
    expect(rateMeter(MINUTES, '1000.000001', 'USD').tiers).toHaveLength(2);
    expect(rateMeter(MINUTES, 150000, 'USD').amount).toBe(String(100 + 9000 * 0.08 + 90000 * 0.06 + 50000 * 0.05) + '.00');
  });

  it('adds the flat fee of every tier reached, none for zero usage', () => {
    const pricing: Pricing = {
      model: 'graduated',
      tiers: [
        { up_to: 10, unit_price: '0', flat_fee: '5' },
        { up_to: 20, unit_price: '1', flat_fee: '2' },
        { up_to: null, unit_price: '0.5', flat_fee: '1' },
      ],
    };
    expect(rateMeter(pricing, 0, 'USD')).toEqual({ quantity: '0', exact: '0', amount: '0.00', tiers: [] });
    expect(rateMeter(pricing, 10, 'USD').amount).toBe('5.00');
    expect(rateMeter(pricing, 10.5, 'USD').amount).toBe('7.50');
    expect(rateMeter(pricing, 25, 'USD').amount).toBe('20.50');
  });
});

describe('rateMeter: volume', () => {
  const pricing: Pricing = {
    model: 'volume',
    tiers: [
      { up_to: 100, unit_price: '1.00' },
      { up_to: 1000, unit_price: '0.50', flat_fee: '10' },
      { up_to: null, unit_price: '0.25' },
    ],
  };
  it('prices all units at the tier q falls in, plus that tier flat fee', () => {
    expect(rateMeter(pricing, 100, 'USD').amount).toBe('100.00');
    expect(rateMeter(pricing, 101, 'USD').amount).toBe('60.50');
    expect(rateMeter(pricing, 5000, 'USD').amount).toBe('1250.00');
    expect(rateMeter(pricing, 101, 'USD').tiers).toEqual([
      { tier: 2, from: '100', up_to: 1000, quantity: '101', unit_price: '0.50', flat_fee: '10', amount: '60.5' },
    ]);
  });
  it('costs nothing for zero usage', () => {
    expect(rateMeter(pricing, 0, 'USD')).toEqual({ quantity: '0', exact: '0', amount: '0.00', tiers: [] });
  });
});

describe('rateMeter: per_unit and package', () => {
  it('bills units above the included ones', () => {
    const pricing: Pricing = { model: 'per_unit', unit_price: '0.001', included: 1000 };
    expect(rateMeter(pricing, 950, 'USD').amount).toBe('0.00');
    expect(rateMeter(pricing, 1200, 'USD').amount).toBe('0.20');
  });

  it('rates 10-decimal unit prices exactly and rounds once', () => {
    expect(rateMeter({ model: 'per_unit', unit_price: '0.0001944444' }, 36310, 'USD')).toEqual({
      quantity: '36310',
      exact: '7.060276164',
      amount: '7.06',
    });
  });

  it('charges whole packages above the included units', () => {
    const pricing: Pricing = { model: 'package', package_size: 1000, package_price: '0.06' };
    expect(rateMeter(pricing, 0, 'USD').amount).toBe('0.00');
    expect(rateMeter(pricing, 1, 'USD').amount).toBe('0.06');
    expect(rateMeter(pricing, 1000, 'USD').amount).toBe('0.06');
    expect(rateMeter(pricing, 1000.5, 'USD').amount).toBe('0.12');
    expect(rateMeter(pricing, 520000, 'USD').amount).toBe('31.20');
    expect(rateMeter({ ...pricing, included: 500 }, 1500, 'USD').amount).toBe('0.06');
    expect(rateMeter({ ...pricing, included: 500 }, 1500.000001, 'USD').amount).toBe('0.12');
  });

  it('rounds half-up to the currency minor unit', () => {
    expect(rateMeter({ model: 'per_unit', unit_price: '0.125' }, 1, 'USD').amount).toBe('0.13');
    expect(rateMeter({ model: 'per_unit', unit_price: '0.0125' }, 100.4, 'USD').amount).toBe('1.26'); // 1.255
    expect(rateMeter({ model: 'per_unit', unit_price: '0.5' }, 5, 'JPY').amount).toBe('3'); // 2.5 yen
    expect(rateMeter({ model: 'per_unit', unit_price: '1.4' }, 1, 'JPY').amount).toBe('1');
    expect(rateMeter({ model: 'per_unit', unit_price: '0.0005' }, 1, 'BHD').amount).toBe('0.001');
  });

  it('accepts a meter as well as a pricing', () => {
    const meter: Meter = { metric: 'storage_gb', aggregation: 'max', pricing: { model: 'per_unit', unit_price: '0.20' } };
    expect(rateMeter(meter, '15.2', 'USD').amount).toBe('3.04');
  });

  it('refuses negative or non-finite quantities', () => {
    expect(() => rateMeter(MINUTES, -1, 'USD')).toThrow(RangeError);
    expect(() => rateMeter(MINUTES, Number.POSITIVE_INFINITY, 'USD')).toThrow(RangeError);
  });
});

describe('ratePeriod', () => {
  it('puts the base fee first, then every meter in plan order, zero usage included', () => {
    const rated = ratePeriod(
      plan({
        name: 'Premium',
        base_fee: '29.00',
        meters: [
          { metric: 'standard_tokens', aggregation: 'sum', pricing: { model: 'per_unit', unit_price: '0.001', included: 1000 } },
          { metric: 'images', aggregation: 'count', pricing: { model: 'per_unit', unit_price: '0.04' } },
        ],
      }),
      { standard_tokens: '1200', unknown_metric: '99' },
    );
    expect(rated.lines.map((l) => [l.metric, l.quantity, l.amount])).toEqual([
      ['base_fee', '1', '29.00'],
      ['standard_tokens', '1200', '0.20'],
      ['images', '0', '0.00'],
    ]);
    expect(rated).toMatchObject({ subtotal: '29.20', total: '29.20', usage: '0.20', base_fee: '29.00', currency: 'USD' });
  });

  it('has no base fee line when the base fee is zero, and sums rounded lines', () => {
    const rated = ratePeriod(
      plan({
        meters: [
          { metric: 'a', aggregation: 'sum', pricing: { model: 'per_unit', unit_price: '0.005' } },
          { metric: 'b', aggregation: 'sum', pricing: { model: 'per_unit', unit_price: '0.005' } },
        ],
      }),
      { a: '1', b: '1' },
    );
    // Each line rounds 0.005 up to 0.01; the total is the sum of rounded lines, not round(0.01).
    expect(rated.lines.map((l) => l.amount)).toEqual(['0.01', '0.01']);
    expect(rated).toMatchObject({ subtotal: '0.02', total: '0.02', usage: '0.02', base_fee: '0.00' });
  });

  it('keeps the tier breakdown on graduated lines', () => {
    const rated = ratePeriod(plan({ meters: [{ metric: 'minutes', aggregation: 'sum', pricing: MINUTES }] }), { minutes: '1310.5' });
    expect(rated.lines[0]?.tiers).toHaveLength(2);
    expect(rated.total).toBe('124.84');
  });

  it('renders JPY totals without decimals', () => {
    const rated = ratePeriod(
      plan({ currency: 'JPY', base_fee: '1000', meters: [{ metric: 'calls', aggregation: 'count', pricing: { model: 'per_unit', unit_price: '0.5' } }] }),
      { calls: '5' },
    );
    expect(rated).toMatchObject({ total: '1003', usage: '3', base_fee: '1000' });
  });
});

describe('estimateExtraCost and projectedCounter', () => {
  const minutes: Meter = { metric: 'minutes_analyzed', aggregation: 'sum', pricing: MINUTES };
  it('is what the bill would change by (callcov: 1250.5 minutes + 60 -> 4.80)', () => {
    expect(estimateExtraCost(minutes, '1250.5', 60, 'USD')).toBe('4.80');
    expect(estimateExtraCost(minutes, 0, 0, 'USD')).toBe('0.00');
  });

  it('knows the aggregation', () => {
    const gauge: Meter = { metric: 'storage_gb', aggregation: 'max', pricing: { model: 'per_unit', unit_price: '0.20' } };
    expect(estimateExtraCost(gauge, '15.2', 10, 'USD')).toBe('0.00');
    expect(estimateExtraCost(gauge, '15.2', 20, 'USD')).toBe('0.96');
    expect(estimateExtraCost({ ...gauge, aggregation: 'latest' }, '15.2', 10, 'USD')).toBe('-1.04');
    expect(estimateExtraCost({ ...gauge, aggregation: 'count' }, 3, 2, 'USD')).toBe('0.40');
    expect(projectedCounter('sum', '0.1', '0.2')).toBe('0.3');
    expect(projectedCounter('count', 3, 1)).toBe('4');
    expect(projectedCounter('max', '15.2', 9)).toBe('15.2');
    expect(projectedCounter('latest', '15.2', 9)).toBe('9');
  });
});

describe('pricingProblems', () => {
  it('accepts valid pricings', () => {
    expect(pricingProblems(MINUTES)).toEqual([]);
    expect(pricingProblems({ model: 'package', package_size: 1000, package_price: '0.06' })).toEqual([]);
    expect(pricingProblems({ model: 'per_unit', unit_price: '0', included: 10 })).toEqual([]);
  });
  it('reports bad tiers and prices', () => {
    expect(pricingProblems({ model: 'graduated', tiers: [] })).not.toEqual([]);
    expect(pricingProblems({ model: 'volume', tiers: [{ up_to: 10, unit_price: '1' }] })).not.toEqual([]);
    expect(pricingProblems({ model: 'volume', tiers: [{ up_to: null, unit_price: '1' }, { up_to: null, unit_price: '1' }] })).not.toEqual([]);
    expect(pricingProblems({ model: 'graduated', tiers: [{ up_to: 10, unit_price: '1' }, { up_to: 10, unit_price: '1' }, { up_to: null, unit_price: '1' }] })).not.toEqual([]);
    expect(pricingProblems({ model: 'per_unit', unit_price: '-1' })).not.toEqual([]);
    expect(pricingProblems({ model: 'per_unit', unit_price: 'abc' })).not.toEqual([]);
    expect(pricingProblems({ model: 'package', package_size: 0, package_price: '1' })).not.toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------
// Property: rating equals an independent reference in BigInt fixed-point arithmetic
// (quantities in micro-units, prices in 1e-10), to the last digit of the exact amount and
// to the minor unit of the rounded one.
// ---------------------------------------------------------------------------------------

const Q = 6; // quantity decimals
const P = 10; // price decimals
const A = Q + P; // amount decimals

function formatScaled(value: bigint, decimals: number): string {
  const negative = value < 0n;
  const digits = (negative ? -value : value).toString().padStart(decimals + 1, '0');
  const whole = digits.slice(0, digits.length - decimals);
  const fraction = digits.slice(digits.length - decimals).replace(/0+$/, '');
  return `${negative ? '-' : ''}${whole}${fraction ? `.${fraction}` : ''}`;
}

function scaled(text: string | number, decimals: number): bigint {
  const [whole, fraction = ''] = String(text).split('.');
  return BigInt(whole!) * 10n ** BigInt(decimals) + BigInt(fraction.padEnd(decimals, '0') || '0');
}

function refRound(amount: bigint, digits: number): string {
  const divisor = 10n ** BigInt(A - digits);
  const rounded = (amount + divisor / 2n) / divisor; // half-up for amount >= 0
  const text = formatScaled(rounded, digits);
  if (digits === 0) return text;
  const [whole, fraction = ''] = text.split('.');
  return `${whole}.${fraction.padEnd(digits, '0')}`;
}

function refRate(pricing: Pricing, q: bigint): bigint {
  const flat = (tier: Tier): bigint => scaled(tier.flat_fee ?? '0', P) * 10n ** BigInt(Q);
  switch (pricing.model) {
    case 'per_unit': {
      const billable = q - scaled(pricing.included ?? 0, Q);
      return (billable > 0n ? billable : 0n) * scaled(pricing.unit_price, P);
    }
    case 'package': {
      const billable = q - scaled(pricing.included ?? 0, Q);
      const size = scaled(pricing.package_size, Q);
      const packages = billable > 0n ? (billable + size - 1n) / size : 0n;
      return packages * scaled(pricing.package_price, P) * 10n ** BigInt(Q);
    }
    case 'graduated': {
      let total = 0n;
      let from = 0n;
      for (const tier of pricing.tiers) {
        if (q <= from) break;
        const upper = tier.up_to === null ? q : scaled(tier.up_to, Q) < q ? scaled(tier.up_to, Q) : q;
        total += (upper - from) * scaled(tier.unit_price, P) + flat(tier);
        if (tier.up_to === null) break;
        from = scaled(tier.up_to, Q);
      }
      return total;
    }
    case 'volume': {
      if (q === 0n) return 0n;
      const tier = pricing.tiers.find((t) => t.up_to === null || q <= scaled(t.up_to, Q))!;
      return q * scaled(tier.unit_price, P) + flat(tier);
    }
  }
}

const priceArb = fc.oneof(
  fc.bigInt({ min: 0n, max: 10n ** 12n }).map((p) => formatScaled(p, P)), // up to 100.0000000000
  fc.integer({ min: 0, max: 10_000 }).map((cents) => formatScaled(BigInt(cents), 2)),
);
const microArb = (max: bigint) => fc.bigInt({ min: 0n, max });
const boundArb = fc.oneof(fc.integer({ min: 1, max: 1_000_000 }), microArb(10n ** 12n).map((m) => Number(formatScaled(m + 1n, Q))));
const tiersArb: fc.Arbitrary<Tier[]> = fc
  .tuple(
    fc.uniqueArray(boundArb, { minLength: 0, maxLength: 4 }),
    fc.array(fc.record({ unit_price: priceArb, flat_fee: fc.option(priceArb, { nil: undefined }) }), { minLength: 5, maxLength: 5 }),
  )
  .map(([bounds, prices]) =>
    [...[...bounds].sort((a, b) => a - b), null].map((up_to, i) => {
      const { unit_price, flat_fee } = prices[i]!;
      return flat_fee === undefined ? { up_to, unit_price } : { up_to, unit_price, flat_fee };
    }),
  );
const includedArb = fc.option(fc.oneof(fc.integer({ min: 0, max: 100_000 }), microArb(10n ** 10n).map((m) => Number(formatScaled(m, Q)))), {
  nil: undefined,
});
const pricingArb: fc.Arbitrary<Pricing> = fc.oneof(
  fc.record({ model: fc.constant('per_unit' as const), unit_price: priceArb, included: includedArb }),
  fc.record({
    model: fc.constant('package' as const),
    package_size: fc.oneof(fc.integer({ min: 1, max: 10_000 }), microArb(10n ** 9n).map((m) => Number(formatScaled(m + 1n, Q)))),
    package_price: priceArb,
    included: includedArb,
  }),
  tiersArb.map((tiers) => ({ model: 'graduated' as const, tiers })),
  tiersArb.map((tiers) => ({ model: 'volume' as const, tiers })),
);
const quantityArb = fc.oneof(microArb(10n ** 13n), fc.integer({ min: 0, max: 2_000_000 }).map((n) => BigInt(n) * 10n ** BigInt(Q)));

/** Quantities where off-by-one bugs live: on a tier bound, a package edge or the included units, and one micro-unit either side. */
function edgesOf(pricing: Pricing): bigint[] {
  const points: bigint[] = [0n];
  if (pricing.model === 'graduated' || pricing.model === 'volume') {
    for (const tier of pricing.tiers) if (tier.up_to !== null) points.push(scaled(tier.up_to, Q));
  } else {
    const included = scaled(pricing.included ?? 0, Q);
    points.push(included);
    if (pricing.model === 'package') points.push(included + scaled(pricing.package_size, Q), included + 2n * scaled(pricing.package_size, Q));
  }
  return points.flatMap((p) => [p - 1n, p, p + 1n]).filter((p) => p >= 0n);
}

/** A pricing with a quantity that is random half of the time and on an edge otherwise. */
const pricedQuantityArb = pricingArb.chain((pricing) =>
  fc.tuple(fc.constant(pricing), fc.oneof(quantityArb, fc.constantFrom(...edgesOf(pricing)))),
);

describe('rating properties (reference: BigInt fixed point)', () => {
  it('matches the reference for all four models, random tiers and quantities', () => {
    fc.assert(
      fc.property(pricedQuantityArb, fc.constantFrom('USD', 'JPY', 'BHD'), fc.boolean(), ([pricing, micros], currency, asNumber) => {
        const text = formatScaled(micros, Q);
        const rated = rateMeter(pricing, asNumber ? Number(text) : text, currency);
        const expected = refRate(pricing, micros);
        const digits = currency === 'JPY' ? 0 : currency === 'BHD' ? 3 : 2;
        expect(rated.exact).toBe(formatScaled(expected, A));
        expect(rated.amount).toBe(refRound(expected, digits));
        expect(rated.quantity).toBe(text);
        if (pricing.model === 'graduated' && micros > 0n) {
          const units = rated.tiers!.reduce((sum, line) => sum + scaled(line.quantity, Q), 0n);
          expect(units).toBe(micros);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('never decreases when usage grows (sum meters)', () => {
    fc.assert(
      fc.property(pricingArb, quantityArb, quantityArb, (pricing, a, b) => {
        const low = a < b ? a : b;
        const high = a < b ? b : a;
        const lowAmount = scaled(rateMeter(pricing, formatScaled(low, Q), 'USD').exact, A);
        const highAmount = scaled(rateMeter(pricing, formatScaled(high, Q), 'USD').exact, A);
        // Volume pricing may drop at a tier boundary; every other model is monotonic.
        if (pricing.model !== 'volume') expect(highAmount >= lowAmount).toBe(true);
      }),
      { numRuns: 500 },
    );
  });
});
