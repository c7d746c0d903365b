import fc from 'fast-check';
import { groupLabel, groupLines, groupOf, matchKeyProblems, pricingFor, withGroups } from '../../../src/domain/dimensions';
import type { Meter, Pricing } from '../../../src/domain/plan';

const perUnit = (unit_price: string): Pricing => ({ model: 'per_unit', unit_price });
const meter: Meter = {
  metric: 'input_tokens',
  aggregation: 'sum',
  limit: 1_000_000,
  pricing: perUnit('0.00001'),
  group_by: ['model', 'region'],
  prices: [
    { match: { model: 'gpt-4', region: 'eu' }, pricing: perUnit('0.00004') },
    { match: { model: 'gpt-4' }, pricing: perUnit('0.00003') },
    { match: { model: 'gpt-3.5' }, pricing: perUnit('0.0000005') },
  ],
};

test('an event is in the group of its group_by properties; other properties do not split it', () => {
  expect(groupOf(meter, { model: 'gpt-4', user: 'u1' })).toEqual({ model: 'gpt-4' });
  expect(groupOf(meter, { model: 'gpt-4', region: 'eu' })).toEqual({ model: 'gpt-4', region: 'eu' });
  expect(groupOf(meter, { model: 7, region: true })).toEqual({ model: '7', region: 'true' });
  expect(groupOf(meter, { model: { nested: 1 } })).toEqual({});
  expect(groupOf(meter, undefined)).toEqual({});
});

test('the first entry whose match equals the group prices it, else the meter pricing', () => {
  expect(pricingFor(meter, { model: 'gpt-4', region: 'eu' })).toEqual(perUnit('0.00004'));
  expect(pricingFor(meter, { model: 'gpt-4', region: 'us' })).toEqual(perUnit('0.00003'));
  expect(pricingFor(meter, { model: 'gpt-4' })).toEqual(perUnit('0.00003'));
  expect(pricingFor(meter, { model: 'claude' })).toEqual(perUnit('0.00001'));
  expect(pricingFor(meter, {})).toEqual(perUnit('0.00001'));
});

test('property: the pricing chosen is the first entry all of whose keys match, or the meter pricing when none does', () => {
  const value = fc.constantFrom('a', 'b', 'c');
  const match = fc.dictionary(fc.constantFrom('model', 'region'), value, { minKeys: 1 });
  fc.assert(
    fc.property(fc.array(match, { maxLength: 5 }), fc.dictionary(fc.constantFrom('model', 'region'), value), (matches, group) => {
      const m: Meter = { ...meter, prices: matches.map((mt, i) => ({ match: mt, pricing: perUnit(String(i + 1)) })) };
      const chosen = pricingFor(m, group);
      const first = matches.findIndex((mt) => Object.entries(mt).every(([k, v]) => group[k] === v));
      expect(chosen).toEqual(first === -1 ? m.pricing : perUnit(String(first + 1)));
    }),
  );
});

test('a match key that group_by lacks is named by its path', () => {
  expect(matchKeyProblems(meter)).toEqual([]);
  expect(matchKeyProblems({ group_by: ['model'], prices: [{ match: { model: 'x' }, pricing: perUnit('1') }, { match: { modle: 'x' }, pricing: perUnit('1') }] })).toEqual(['prices.1.match.modle']);
});

test('worked example (API usage guide): 120,000 GPT-4 tokens at 0.03 per 1,000 = 3.60; 500,000 GPT-3.5 at 0.0005 per 1,000 = 0.25', () => {
  const lines = groupLines(meter, [{ group: { model: 'gpt-4' }, value: '120000' }, { group: { model: 'gpt-3.5' }, value: '500000' }], 'USD');
  expect(lines.map((l) => [l.description, l.quantity, l.amount])).toEqual([
    ['input_tokens (model=gpt-3.5)', '500000', '0.25'],
    ['input_tokens (model=gpt-4)', '120000', '3.60'],
  ]);
  expect(groupLabel({})).toBe('(none)');
});

test('each group has its own tiers', () => {
  const tiered: Meter = { metric: 'm', aggregation: 'sum', pricing: { model: 'graduated', tiers: [{ up_to: 100, unit_price: '1' }, { up_to: null, unit_price: '0.5' }] }, group_by: ['k'] };
  // Together 300 units would reach the cheaper tier for 200; apart each group of 150 does for 50.
  const lines = groupLines(tiered, [{ group: { k: 'a' }, value: '150' }, { group: { k: 'b' }, value: '150' }], 'USD');
  expect(lines.map((l) => l.amount)).toEqual(['125.00', '125.00']);
  const view = withGroups({ metrics: { m: { amount: '200.00' } }, costs: { usage: '200.00', total: '229.00', currency: 'USD' } }, [tiered], { m: [{ group: { k: 'a' }, value: '150' }, { group: { k: 'b' }, value: '150' }] });
  expect(view.metrics.m!.amount).toBe('250.00');
  expect(view.costs).toEqual({ usage: '250.00', total: '279.00', currency: 'USD' });
});
