import fc from 'fast-check';
import { Dec } from '../../../src/domain/decimal';
import {
  ARMED_BALANCE_ALERTS,
  allocateCredit,
  amountDue,
  compareGrants,
  creditBalance,
  buildBalanceView,
  decideBalanceAlerts,
  unitsRemaining,
  type BalanceAlertsState,
  type CreditGrant,
} from '../../../src/domain/credits';
import type { Meter } from '../../../src/domain/plan';

const AT = '2026-12-01T00:00:00.000Z';
const grant = (id: string, remaining: string, expires_at: string | null, created_at = '2026-11-01T00:00:00.000Z'): CreditGrant => ({ id, remaining, expires_at, created_at });

test('credit is taken from the grant expiring first, then the oldest; never-expiring grants last', () => {
  const grants = [
    grant('forever-old', '100', null, '2026-01-01T00:00:00.000Z'),
    grant('late', '5', '2027-03-01T00:00:00.000Z'),
    grant('soon', '3', '2026-12-15T00:00:00.000Z'),
    grant('expired', '50', '2026-11-30T00:00:00.000Z'),
    grant('forever-new', '100', null, '2026-06-01T00:00:00.000Z'),
  ];
  expect(allocateCredit(grants, '10.50', AT)).toEqual({
    allocations: [
      { grant_id: 'soon', amount: '3' },
      { grant_id: 'late', amount: '5' },
      { grant_id: 'forever-old', amount: '2.5' },
    ],
    applied: '10.5',
  });
  expect(allocateCredit(grants, '0.00', AT)).toEqual({ allocations: [], applied: '0' });
  expect(creditBalance(grants, AT)).toBe('208');
  expect(amountDue('10.50', '10.5', 'USD')).toBe('0.00');
  expect(amountDue('300.00', '208', 'USD')).toBe('92.00');
});

const cents = fc.integer({ min: 0, max: 100_000 }).map((c) => new Dec(c).dividedBy(100).toFixed(2));
const arbGrant = fc.record({
  id: fc.uuid(),
  remaining: cents,
  expires_at: fc.option(fc.integer({ min: Date.parse('2026-11-01'), max: Date.parse('2027-12-01') }).map((ms) => new Date(ms).toISOString()), { nil: null }),
  created_at: fc.integer({ min: Date.parse('2026-01-01'), max: Date.parse('2026-11-30') }).map((ms) => new Date(ms).toISOString()),
});

test('property: applied credit never exceeds the total nor a grant, and follows the spending order', () => {
  fc.assert(
    fc.property(fc.uniqueArray(arbGrant, { maxLength: 8, selector: (g) => g.id }), cents, (grants, total) => {
      const { allocations, applied } = allocateCredit(grants, total, AT);
      const active = grants.filter((g) => g.expires_at === null || Date.parse(g.expires_at) > Date.parse(AT));
      const available = active.reduce((s, g) => s.plus(g.remaining), new Dec(0));
      // As much as possible, and no more than the total.
      expect(new Dec(applied).equals(Dec.min(total, available))).toBe(true);
      for (const a of allocations) {
        const g = grants.find((x) => x.id === a.grant_id)!;
        expect(new Dec(a.amount).lessThanOrEqualTo(g.remaining)).toBe(true);
        expect(new Dec(a.amount).greaterThan(0)).toBe(true);
      }
      // Every grant used but the last is spent whole, and they come in the order of compareGrants.
      const used = allocations.map((a) => grants.find((g) => g.id === a.grant_id)!);
      expect([...used].sort(compareGrants)).toEqual(used);
      used.slice(0, -1).forEach((g, i) => expect(new Dec(allocations[i]!.amount).equals(g.remaining)).toBe(true));
      // A grant skipped while a later one was used had nothing left.
      const order = [...active].sort(compareGrants);
      const lastUsed = used.length === 0 ? -1 : order.indexOf(used[used.length - 1]!);
      order.slice(0, Math.max(lastUsed, 0)).filter((g) => !used.includes(g)).forEach((g) => expect(new Dec(g.remaining).isZero()).toBe(true));
    }),
  );
});

const meter = (pricing: Meter['pricing']): Meter => ({ metric: 'm', aggregation: 'sum', pricing });

test('worked example (contentstats): balance 12.45, uncharged 0.75, 0.015 a unit: available 11.70 buys 780 units', () => {
  const available = new Dec('12.45').minus('0.75');
  expect(available.toFixed(2)).toBe('11.70');
  expect(unitsRemaining(available, '0.015')).toBe(780);
  expect(unitsRemaining('-1', '0.015')).toBe(0);
  expect(unitsRemaining('5', '0')).toBeNull();
});

test('the balance view: days remaining at the usage cost rate so far (base fee left out)', () => {
  const view = buildBalanceView({
    currency: 'USD',
    balance: '12.45',
    total_charged: '0',
    unchargedTotals: ['0.75'],
    lowBalanceThreshold: '5',
    meters: [meter({ model: 'per_unit', unit_price: '0.015' })],
    values: { m: '50' },
    usageCost: '0.75',
    period: { start: '2026-12-01T00:00:00.000Z', end: '2027-01-01T00:00:00.000Z' },
    asOf: '2026-12-02T12:00:00.000Z',
  });
  // 0.75 in 1.5 days is 0.50 a day: 11.70 lasts 23.4 days.
  expect(view).toEqual({
    currency: 'USD',
    balance: '12.45',
    uncharged: '0.75',
    available: '11.70',
    total_charged: '0.00',
    low_balance_threshold: '5.00',
    estimated_units_remaining: { m: 780 },
    days_remaining: 23.4,
  });
});

describe('balance alerts', () => {
  const step = (state: BalanceAlertsState, available: string, granted = false) => decideBalanceAlerts(state, available, '5.00', granted);

  test('low fires once at or below the threshold, depleted once at 0; a grant above re-arms them', () => {
    let r = step(ARMED_BALANCE_ALERTS, '5.01');
    expect(r.fire).toEqual([]);
    r = step(r.state, '5.00');
    expect(r.fire).toEqual([{ kind: 'low', crossing: 1 }]);
    r = step(r.state, '0');
    expect(r.fire).toEqual([{ kind: 'depleted', crossing: 1 }]);
    // Rising without a grant (credit given back by a voided invoice) re-arms nothing.
    r = step(r.state, '20');
    r = step(r.state, '-1');
    expect(r.fire).toEqual([]);
    // A grant that leaves available at the threshold re-arms depleted only.
    r = step(r.state, '5.00', true);
    expect(r.fire).toEqual([]);
    expect(r.state.depleted.armed).toBe(true);
    r = step(r.state, '12', true);
    expect(r.state.low.armed).toBe(true);
    r = step(r.state, '-3');
    expect(r.fire).toEqual([
      { kind: 'low', crossing: 2 },
      { kind: 'depleted', crossing: 2 },
    ]);
  });

  test('property: between two firings of a kind there is always a grant that lifted available above its level', () => {
    const move = fc.record({ available: fc.integer({ min: -1000, max: 2000 }).map((c) => new Dec(c).dividedBy(100).toFixed(2)), granted: fc.boolean() });
    fc.assert(
      fc.property(fc.array(move, { maxLength: 40 }), (moves) => {
        let state = ARMED_BALANCE_ALERTS;
        const liftedSince = { low: true, depleted: true };
        for (const m of moves) {
          if (m.granted && new Dec(m.available).greaterThan('5.00')) liftedSince.low = true;
          if (m.granted && new Dec(m.available).greaterThan(0)) liftedSince.depleted = true;
          const r = decideBalanceAlerts(state, m.available, '5.00', m.granted);
          for (const f of r.fire) {
            expect(liftedSince[f.kind]).toBe(true);
            liftedSince[f.kind] = false;
            expect(f.crossing).toBe(state[f.kind].fired + 1);
          }
          // A crossing while armed always fires.
          if (state.low.armed || (m.granted && new Dec(m.available).greaterThan('5.00'))) {
            if (new Dec(m.available).lessThanOrEqualTo('5.00')) expect(r.fire.some((f) => f.kind === 'low')).toBe(true);
          }
          state = r.state;
        }
      }),
    );
  });
});
