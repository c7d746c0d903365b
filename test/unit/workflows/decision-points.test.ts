import fc from 'fast-check';
import type { PeriodCounter } from '../../../src/contracts/ledger';
import type { PlanVersion } from '../../../src/domain/plan';
import { TenantLedger } from '../../../src/workflows/tenant-ledger';
import { RingSchedule } from '../../../src/workers/bulk-counter';
import { openedLedgerSnapshot } from '../../support/ledger-snapshot';

/**
 * The decision points a tenant's ledger publishes for bulk counting (docs/design/core-v2.md,
 * "Bulk counting"): below them counting decides nothing, at them it does. The worker's counter
 * relies on exactly that, so it is checked against the ledger's own decisions.
 */
const NOV = { start: '2026-11-01T00:00:00.000Z', end: '2026-12-01T00:00:00.000Z' };
const AT = '2026-11-20T12:00:00.000Z';

function planWith(meters: PlanVersion['meters'], extra: Partial<PlanVersion> = {}): PlanVersion {
  return { id: 'p', version: 1, name: 'P', currency: 'USD', interval: 'month', base_fee: '10.00', alert_thresholds: [80, 90, 100], grace_period_seconds: 3600, meters, ...extra };
}

const plan = planWith([
  { metric: 'tokens', aggregation: 'sum', limit: 1000, pricing: { model: 'per_unit', unit_price: '0.01' } },
  { metric: 'calls', aggregation: 'count', limit: 10, pricing: { model: 'per_unit', unit_price: '0' } },
  { metric: 'storage', aggregation: 'max', pricing: { model: 'per_unit', unit_price: '1' } },
]);

function counter(metric: string, value: string): PeriodCounter {
  return { period_start: NOV.start, metric, total: value, events: Number(value), largest: value, latest: value };
}

test('each meter with a limit stops at its lowest undecided threshold; one without a limit never stops', () => {
  const ledger = new TenantLedger(openedLedgerSnapshot(plan, NOV));
  expect(ledger.decisionPoints()).toEqual({
    period_start: NOV.start,
    meters: { tokens: { aggregation: 'sum', below: '800' }, calls: { aggregation: 'count', below: '8' }, storage: { aggregation: 'max', below: null } },
  });
  ledger.applyCounters([counter('tokens', '850')], AT);
  expect(ledger.decisionPoints()!.meters.tokens!.below).toBe('900');
  ledger.applyCounters([counter('tokens', '1000')], AT);
  expect(ledger.decisionPoints()!.meters.tokens!.below).toBeNull();
});

test('a rule or a lower limit moves the point down at once', () => {
  const ledger = new TenantLedger(openedLedgerSnapshot(plan, NOV));
  ledger.applyRulesChange({ upsert: [{ id: 'r1', subject: 'tokens', threshold: 25.5 }] }, AT);
  expect(ledger.decisionPoints()!.meters.tokens!.below).toBe('255');
  ledger.applyLimitOverrides({ tokens: '200' }, AT);
  expect(ledger.decisionPoints()!.meters.tokens!.below).toBe('51');
});

test.each([
  ['a cost limit', planWith(plan.meters, { cost_limit: '100.00' }), {}],
  ['a prepaid plan', planWith(plan.meters, { prepaid: true }), {}],
  ['a low-balance threshold', planWith(plan.meters, { low_balance_threshold: '5.00' }), {}],
  ['a pack', plan, { packs: [{ id: 'pk', metric: 'tokens', units: '100', purchased_at: NOV.start, expires_at: '2027-02-01T00:00:00.000Z', draws: {} }] }],
  ['prices by group', planWith([{ metric: 'tokens', aggregation: 'sum', group_by: ['model'], pricing: { model: 'per_unit', unit_price: '0.01' } }]), {}],
  ['a cancelled subscription', plan, { cancelled: { final_invoice_id: 'inv' } }],
])('with %s every event may decide something: no points', (_name, withPlan, overrides) => {
  expect(new TenantLedger(openedLedgerSnapshot(withPlan, NOV, overrides)).decisionPoints()).toBeNull();
});

test('below the points a claim decides nothing; at a point it decides (any limit, thresholds, rules and history)', () => {
  const arb = fc.record({
    limit: fc.integer({ min: 1, max: 100_000 }),
    thresholds: fc.uniqueArray(fc.constantFrom(10, 25.5, 50, 80, 90, 99.9, 100, 150), { minLength: 1, maxLength: 5 }),
    rule: fc.option(fc.constantFrom(5, 33.3, 85), { nil: undefined }),
    before: fc.integer({ min: 0, max: 200_000 }),
    step: fc.integer({ min: 0, max: 200_000 }),
  });
  fc.assert(
    fc.property(arb, ({ limit, thresholds, rule, before, step }) => {
      const ledger = new TenantLedger(
        openedLedgerSnapshot(planWith([{ metric: 'tokens', aggregation: 'sum', limit, pricing: { model: 'per_unit', unit_price: '0.01' } }], { alert_thresholds: thresholds }), NOV, {
          alert_rules: rule === undefined ? [] : [{ id: 'r', subject: 'tokens', threshold: rule }],
        }),
      );
      ledger.applyCounters([counter('tokens', String(before))], AT);
      const below = ledger.decisionPoints()!.meters.tokens!.below;
      const after = before + step;
      const decided = ledger.applyCounters([counter('tokens', String(after))], AT).length > 0;
      // Nothing left to decide: never decides. Below the point: never. At or past it: always.
      expect(decided).toBe(below !== null && after >= Number(below));
    }),
    { numRuns: 500 },
  );
});

describe('RingSchedule', () => {
  const waiting = (receipt: number, tenant = 'a') => [{ tenant_id: tenant, newest_receipt: String(receipt), countable: true }];

  test('a notice rings at once, once for its events: the round after it rings the tenant again only for newer events or after the interval', () => {
    const schedule = new RingSchedule(3_000);
    expect(schedule.noticed('a', '7', 0)).toBe(true);
    expect(schedule.noticed('a', '7', 100)).toBe(false); // the same events, told again (another listener's commit)
    expect(schedule.due(waiting(7), 200)).toEqual([]); // the round finds them still waiting: already rung
    expect(schedule.due(waiting(7), 3_000)).toEqual(['a']); // still waiting after the interval: rung again
    expect(schedule.noticed('a', '6', 3_100)).toBe(false); // older events than the last ring covered
    expect(schedule.noticed('a', '8', 3_200)).toBe(true); // newer events
    expect(schedule.due(waiting(9), 3_300)).toEqual(['a']); // a round that finds newer ones still
  });

  test('new events ring at once; the same events waiting ring again after intervals that double up to 30 s', () => {
    const schedule = new RingSchedule(3_000);
    const rungAt: number[] = [];
    for (let now = 0; now <= 120_000; now += 1_000) if (schedule.due(waiting(7), now).length > 0) rungAt.push(now);
    expect(rungAt).toEqual([0, 3_000, 9_000, 21_000, 45_000, 75_000, 105_000]);
    expect(schedule.due(waiting(8), 106_000)).toEqual(['a']); // a newer receipt: new events
    expect(schedule.due(waiting(8), 107_000)).toEqual([]);
    expect(schedule.due(waiting(8), 109_000)).toEqual(['a']); // back to the first interval
  });

  test('a tenant counted in bulk is rung once its workflow has not read its counters for a minute', () => {
    const schedule = new RingSchedule(3_000, 60_000);
    expect(schedule.staleBooks(['a'], 0)).toEqual([]); // first seen: its books count from now
    expect(schedule.staleBooks(['a'], 59_000)).toEqual([]);
    expect(schedule.staleBooks(['a'], 60_000)).toEqual(['a']);
    expect(schedule.staleBooks(['a'], 61_000)).toEqual([]);
    schedule.due(waiting(1), 100_000); // rung because its events decide something: its books are read
    expect(schedule.staleBooks(['a'], 150_000)).toEqual([]);
    expect(schedule.staleBooks(['a'], 160_000)).toEqual(['a']);
  });

  test('a tenant that stopped waiting is forgotten: when it waits again it is rung at once', () => {
    const schedule = new RingSchedule(3_000);
    expect(schedule.due([...waiting(1, 'a'), ...waiting(1, 'b')], 0)).toEqual(['a', 'b']);
    schedule.keepOnly(new Set(['b']));
    expect(schedule.due([...waiting(1, 'a'), ...waiting(1, 'b')], 1_000)).toEqual(['a']);
  });
});
