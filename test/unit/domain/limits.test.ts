import fc from 'fast-check';
import { applyLimitChange, costLimit, limitChangeProblems, meterLimit } from '../../../src/domain/limits';
import type { PlanVersion } from '../../../src/domain/plan';

const plan: PlanVersion = {
  id: 'p',
  version: 1,
  name: 'P',
  currency: 'USD',
  interval: 'month',
  base_fee: '0',
  alert_thresholds: [80, 90, 100],
  cost_limit: '500.00',
  grace_period_seconds: 0,
  meters: [
    { metric: 'tokens', aggregation: 'sum', limit: 1000, pricing: { model: 'per_unit', unit_price: '0.01' } },
    { metric: 'storage', aggregation: 'max', pricing: { model: 'per_unit', unit_price: '1' } },
  ],
};

test("an override replaces the plan's limit; without one the plan's stands (none: unlimited)", () => {
  expect(meterLimit(plan.meters[0]!)).toBe('1000');
  expect(meterLimit(plan.meters[0]!, { tokens: '1000000' })).toBe('1000000');
  expect(meterLimit(plan.meters[1]!)).toBeUndefined();
  expect(meterLimit(plan.meters[1]!, { storage: '50' })).toBe('50');
  expect(costLimit(plan)).toBe('500.00');
  expect(costLimit(plan, { $cost: '250' })).toBe('250');
  expect(costLimit({ cost_limit: undefined })).toBeUndefined();
});

test('null removes an override, a number sets it exactly', () => {
  expect(applyLimitChange({ tokens: '5', $cost: '9' }, { tokens: null, storage: 0.1 + 0.2 })).toEqual({ $cost: '9', storage: '0.30000000000000004' });
  expect(applyLimitChange({}, { tokens: 1e6 })).toEqual({ tokens: '1000000' });
});

test('applying a change twice gives the same overrides as once (a retried PATCH)', () => {
  const subject = fc.constantFrom('tokens', 'storage', '$cost');
  const change = fc.dictionary(subject, fc.option(fc.integer({ min: 1, max: 1e9 }), { nil: null }));
  fc.assert(
    fc.property(fc.dictionary(subject, fc.integer({ min: 1, max: 1e9 }).map(String)), change, (start, c) => {
      const once = applyLimitChange(start, c);
      expect(applyLimitChange(once, c)).toEqual(once);
      for (const [key, value] of Object.entries(c)) expect(once[key]).toBe(value === null ? undefined : String(value));
    }),
  );
});

test('a limit must name a metric of the plan (or $cost) and be > 0', () => {
  expect(limitChangeProblems([plan], { tokens: 1e6, $cost: 500, storage: null })).toEqual([]);
  expect(limitChangeProblems([plan], { minutes: 10, tokens: 0, $cost: -1 })).toEqual([
    { path: 'minutes', message: expect.stringContaining('no metric minutes') },
    { path: 'tokens', message: 'must be a number > 0, or null to remove the override' },
    { path: '$cost', message: 'must be a number > 0, or null to remove the override' },
  ]);
});
