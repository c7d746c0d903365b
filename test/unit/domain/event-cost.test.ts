import fc from 'fast-check';
import { Dec, estimateExtraCost, type Meter } from '../../../src/domain';
import { estimatedEventCost, marginalUnitPrice } from '../../../src/domain/event-cost';

const GRADUATED: Meter = {
  metric: 'calls',
  aggregation: 'sum',
  pricing: { model: 'graduated', tiers: [{ up_to: 100, unit_price: '0.10' }, { up_to: 1000, unit_price: '0.05' }, { up_to: null, unit_price: '0.01' }] },
};
const VOLUME: Meter = { ...GRADUATED, pricing: { model: 'volume', tiers: GRADUATED.pricing.model === 'graduated' ? GRADUATED.pricing.tiers : [] } };

describe('estimated cost of one event', () => {
  test('at the price of the tier the next unit falls in (graduated) or the counter falls in (volume)', () => {
    expect(marginalUnitPrice(GRADUATED, '0')).toBe('0.10');
    expect(marginalUnitPrice(GRADUATED, '99.5')).toBe('0.10');
    expect(marginalUnitPrice(GRADUATED, '100')).toBe('0.05'); // unit 101 is in tier 2
    expect(marginalUnitPrice(VOLUME, '100')).toBe('0.10'); // 100 units are all in tier 1
    expect(marginalUnitPrice(VOLUME, '5000')).toBe('0.01');
    expect(estimatedEventCost(GRADUATED, '150', '3')).toBe('0.15');
  });

  test('per unit and package, with included units free', () => {
    const perUnit: Meter = { metric: 'm', aggregation: 'sum', pricing: { model: 'per_unit', unit_price: '0.002', included: 10 } };
    expect(estimatedEventCost(perUnit, '9', '1')).toBe('0');
    expect(estimatedEventCost(perUnit, '10', '7')).toBe('0.014');
    const pack: Meter = { metric: 'm', aggregation: 'sum', pricing: { model: 'package', package_size: 1000, package_price: '2.50' } };
    expect(estimatedEventCost(pack, '0', '10')).toBe('0.025');
  });

  test('null for meters that are not sums', () => {
    for (const aggregation of ['count', 'max', 'latest'] as const) expect(estimatedEventCost({ ...GRADUATED, aggregation }, '5', '3')).toBeNull();
  });

  test('property: within one graduated tier, the estimate is what the invoice line moves by (before rounding)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 5000 }), fc.integer({ min: 1, max: 20 }), (counter, quantity) => {
        const crossesTier = [100, 1000].some((bound) => counter < bound && counter + quantity > bound);
        fc.pre(!crossesTier);
        const exact = new Dec(estimatedEventCost(GRADUATED, counter, quantity)!);
        const invoiceMove = new Dec(estimateExtraCost(GRADUATED, counter, quantity, 'USD'));
        expect(exact.minus(invoiceMove).abs().lessThanOrEqualTo('0.01')).toBe(true);
      }),
    );
  });
});
