import type { PeriodCounter } from '../../../src/contracts/ledger';
import type { PlanVersion } from '../../../src/domain/plan';
import { TenantLedger, type LedgerSnapshot } from '../../../src/workflows/tenant-ledger';
import { openedLedgerSnapshot } from '../../support/ledger-snapshot';

/**
 * The ledger's entitlement decisions: a tenant's limit overrides apply at once to the current
 * period, never re-fire a decided threshold, fire what a lowered limit crosses by the usual rule,
 * bind authorize, and travel with the ledger across continue-as-new and a rollover.
 */
const plan: PlanVersion = {
  id: 'api',
  version: 1,
  name: 'API',
  currency: 'USD',
  interval: 'month',
  base_fee: '0',
  alert_thresholds: [80, 90, 100],
  grace_period_seconds: 3600,
  cost_limit: '100.00',
  meters: [
    { metric: 'tokens', aggregation: 'sum', limit: 1000, hard_limit: true, pricing: { model: 'per_unit', unit_price: '0.01' } },
    { metric: 'storage', aggregation: 'max', pricing: { model: 'per_unit', unit_price: '1' } },
  ],
};
const NOV = { start: '2026-11-01T00:00:00.000Z', end: '2026-12-01T00:00:00.000Z' };
const DEC = { start: '2026-12-01T00:00:00.000Z', end: '2027-01-01T00:00:00.000Z' };
const AT = '2026-11-20T12:00:00.000Z';

function ledgerWith(overrides: Partial<LedgerSnapshot> = {}): TenantLedger {
  return new TenantLedger(openedLedgerSnapshot(plan, NOV, overrides));
}

function sum(metric: string, total: number): PeriodCounter {
  return { period_start: NOV.start, metric, total: String(total), events: 1, largest: String(total), latest: String(total) };
}

const decided = (decisions: ReturnType<TenantLedger['applyCounters']>) => decisions.flatMap((d) => d.records.map((r) => `${r.subject} ${r.threshold} ${r.status} of ${r.limit}`));

test('raising a limit fires nothing and never re-fires what was decided; the view shows both limits', () => {
  const ledger = ledgerWith();
  expect(decided(ledger.applyCounters([sum('tokens', 850)], AT))).toEqual(['tokens 80 notified of 1000']);
  expect(decided(ledger.applyLimitOverrides({ tokens: '1000000' }, AT))).toEqual([]);
  const view = ledger.usageView(AT, 0).metrics.tokens!;
  expect(view).toMatchObject({ limit: 1e6, plan_limit: 1000, effective_limit: 1e6, percent: 0.085 });
  // Back to the plan's limit: 80 % was decided already, nothing new is crossed.
  expect(decided(ledger.applyLimitOverrides({}, AT))).toEqual([]);
  expect(ledger.usageView(AT, 0).alerts.map((a) => a.threshold)).toEqual([80]);
});

test('lowering a limit fires the highest newly crossed threshold and supersedes the lower ones', () => {
  const ledger = ledgerWith();
  ledger.applyCounters([sum('tokens', 500)], AT);
  // 500 of 520 is 96 %: 80 superseded, 90 notified; never again in the period.
  expect(decided(ledger.applyLimitOverrides({ tokens: '520' }, AT))).toEqual(['tokens 80 superseded of 520', 'tokens 90 notified of 520']);
  expect(decided(ledger.applyLimitOverrides({ tokens: '400' }, AT))).toEqual(['tokens 100 notified of 400']);
  expect(decided(ledger.applyLimitOverrides({ tokens: '300' }, AT))).toEqual([]);
});

test('an override gives a meter without a plan limit one, and the cost subject its own limit', () => {
  const ledger = ledgerWith();
  ledger.applyCounters([sum('storage', 45), sum('tokens', 100)], AT);
  // storage 45 of 50 is 90 %; the running cost 45.00 + 1.00 = 46.00 of 50 is 92 %.
  expect(decided(ledger.applyLimitOverrides({ storage: '50', $cost: '50' }, AT))).toEqual([
    'storage 80 superseded of 50',
    'storage 90 notified of 50',
    '$cost 80 superseded of 50',
    '$cost 90 notified of 50',
  ]);
});

test('authorize judges the effective limit, and refuses past it with what remains', () => {
  const ledger = ledgerWith();
  ledger.applyCounters([sum('tokens', 900)], AT);
  expect(ledger.authorize({ id: 'a1', metric: 'tokens', quantity: 200 }, AT)).toEqual({ kind: 'answer', result: { allowed: false, reason: 'hard_limit', remaining: 100, options: ['upgrade_plan', 'buy_pack'] } });
  ledger.applyLimitOverrides({ tokens: '2000' }, AT);
  expect(ledger.authorize({ id: 'a2', metric: 'tokens', quantity: 200 }, AT)).toMatchObject({ kind: 'consume' });
  ledger.applyLimitOverrides({ tokens: '950' }, AT);
  expect(ledger.authorize({ id: 'a3', metric: 'tokens', quantity: 51 }, AT)).toEqual({ kind: 'answer', result: { allowed: false, reason: 'hard_limit', remaining: 50, options: ['upgrade_plan', 'buy_pack'] } });
});

test('overrides survive continue-as-new and carry into the next period; the closed period keeps its own', () => {
  const ledger = ledgerWith();
  ledger.applyLimitOverrides({ tokens: '2000' }, AT);
  const carried = new TenantLedger(ledger.snapshot());
  expect(carried.limitOverrides).toEqual({ tokens: '2000' });
  carried.rollOver({
    closed: { ...NOV, grace_ends_at: '2026-12-01T01:00:00.000Z' },
    closed_counters: [],
    invoice_id: 'in_1',
    next: { period: DEC, plan, alert_rules: [], counters: [], limit_overrides: { tokens: '3000' } },
  });
  expect(carried.limitOverrides).toEqual({ tokens: '3000' });
  expect(carried.books().map((b) => b.limit_overrides)).toEqual([{ tokens: '3000' }, { tokens: '2000' }]);
  // A late event for November is judged against November's limit (2000): 1700 is 85 %.
  const late = carried.applyCounters([sum('tokens', 1700)], AT);
  expect(decided(late)).toEqual(['tokens 80 notified of 2000']);
});

test('a cancelled ledger applies no override', () => {
  const ledger = ledgerWith({ cancelled: { final_invoice_id: 'in_x' } });
  expect(ledger.applyLimitOverrides({ tokens: '1' }, AT)).toEqual([]);
});

// ---- prepaid credit -----------------------------------------------------------------------------

const prepaid: PlanVersion = { ...plan, prepaid: true, low_balance_threshold: '5.00', cost_limit: undefined, meters: [{ metric: 'tokens', aggregation: 'sum', pricing: { model: 'per_unit', unit_price: '0.01' } }] };
const facts = (balance: string, uncharged = [NOV.start]) => ({ balance, uncharged_periods: uncharged, low_balance_threshold: null });

test('available counts the current period and the closed ones not charged yet; alerts fire once per crossing', () => {
  const ledger = ledgerWith({ current: { period: NOV, plan: prepaid, counters: [], decided: [] } });
  expect(ledger.watchesBalance()).toBe(true);
  expect(decided(ledger.applyBalance(facts('20'), AT))).toEqual([]);
  ledger.applyCounters([sum('tokens', 1500)], AT); // 15.00 owed: 5.00 available
  expect(ledger.available()!.toFixed()).toBe('5');
  expect(decided(ledger.applyBalance(facts('20'), AT))).toEqual(['balance.low 1 notified of 5.00']);
  expect(decided(ledger.applyBalance(facts('20'), AT))).toEqual([]);
  ledger.applyCounters([sum('tokens', 2100)], AT);
  expect(decided(ledger.applyBalance(facts('20'), AT))).toEqual(['balance.depleted 1 notified of 0']);
  // Credit given back (not a grant) lifts available: nothing re-arms.
  expect(decided(ledger.applyBalance(facts('40'), AT))).toEqual([]);
  expect(decided(ledger.applyBalance(facts('0'), AT))).toEqual([]);
  // A grant that lifts it above the threshold re-arms both; the next fall fires both, numbered 2.
  expect(decided(ledger.applyBalance(facts('40'), AT, true))).toEqual([]);
  expect(decided(ledger.applyBalance(facts('21'), AT))).toEqual(['balance.low 2 notified of 5.00', 'balance.depleted 2 notified of 0']);
  const carried = new TenantLedger(ledger.snapshot());
  expect(decided(carried.applyBalance(facts('15'), AT))).toEqual([]);
});

test('prepaid authorize refuses what available cannot pay, with the units it still buys', () => {
  const ledger = ledgerWith({ current: { period: NOV, plan: prepaid, counters: [], decided: [] } });
  ledger.applyBalance(facts('10'), AT);
  expect(ledger.authorize({ id: 'a1', metric: 'tokens', quantity: 1001 }, AT)).toEqual({ kind: 'answer', result: { allowed: false, reason: 'insufficient_balance', remaining: 1000 } });
  expect(ledger.authorize({ id: 'a2', metric: 'tokens', quantity: 1000 }, AT)).toMatchObject({ kind: 'consume' });
  // A plan that is not prepaid never refuses for balance.
  const postpaid = ledgerWith();
  postpaid.applyBalance(facts('0'), AT);
  expect(postpaid.watchesBalance()).toBe(false);
  expect(postpaid.authorize({ id: 'a3', metric: 'storage', quantity: 5 }, AT)).toMatchObject({ kind: 'consume' });
});

test('a closed period counts as uncharged until its invoice is finalized', () => {
  const ledger = ledgerWith({
    current: { period: DEC, plan: prepaid, counters: [], decided: [] },
    closing: [{ period: NOV, plan: prepaid, grace_ends_at: '2026-12-01T01:00:00.000Z', counters: [sum('tokens', 300)], decided: [] }],
  });
  ledger.applyBalance(facts('10', [NOV.start, DEC.start]), AT);
  expect(ledger.available()!.toFixed()).toBe('7');
  ledger.applyBalance(facts('7', [DEC.start]), AT); // November finalized: 3.00 charged
  expect(ledger.available()!.toFixed()).toBe('7');
});

// ---- add-on packs -------------------------------------------------------------------------------

const pack = (id: string, units: number, expires_at: string) => ({ id, metric: 'tokens', units: String(units), purchased_at: '2026-11-10T00:00:00.000Z', expires_at, draws: {} });

test('a pack bought at 95 % raises the effective limit at once and re-fires nothing; usage draws earliest expiry first', () => {
  const ledger = ledgerWith();
  expect(decided(ledger.applyCounters([sum('tokens', 950)], AT))).toEqual(['tokens 80 superseded of 1000', 'tokens 90 notified of 1000']);
  ledger.applyPacks([pack('late', 500, '2027-02-01T00:00:00.000Z'), pack('soon', 200, '2026-12-15T00:00:00.000Z')], AT);
  expect(ledger.usageView(AT, 0).metrics.tokens).toMatchObject({ limit: 1700, plan_limit: 1000 });
  expect(ledger.takeDraws()).toEqual([]);
  expect(decided(ledger.applyCounters([sum('tokens', 1350)], AT))).toEqual([]);
  expect(ledger.takeDraws()).toEqual([{ period_start: NOV.start, draws: [{ pack_id: 'soon', units: '200' }, { pack_id: 'late', units: '150' }] }]);
  expect(ledger.takeDraws()).toEqual([]);
  // 1,700 of 1,700: 100 % of the effective limit, and the hard limit blocks with the options.
  expect(decided(ledger.applyCounters([sum('tokens', 1700)], AT))).toEqual(['tokens 100 notified of 1700']);
  expect(ledger.authorize({ id: 'a1', metric: 'tokens', quantity: 1 }, AT)).toEqual({
    kind: 'answer',
    result: { allowed: false, reason: 'hard_limit', remaining: 0, options: ['upgrade_plan', 'buy_pack'] },
  });
  // The running cost leaves the drawn units out: 1,000 billable tokens at 0.01.
  expect(ledger.usageView(AT, 0).costs.total).toBe('10.00');
  // The packs and their draws travel with the ledger.
  expect(new TenantLedger(ledger.snapshot()).usageView(AT, 0).metrics.tokens!.limit).toBe(1700);
});

// ---- dimensions ---------------------------------------------------------------------------------

test('a dimensioned meter is rated per group in the running cost; groups travel with the ledger', () => {
  const byModel: PlanVersion = {
    ...plan,
    cost_limit: '4.00',
    meters: [
      {
        metric: 'tokens',
        aggregation: 'sum',
        pricing: { model: 'per_unit', unit_price: '0.00001' },
        group_by: ['model'],
        prices: [{ match: { model: 'gpt-4' }, pricing: { model: 'per_unit', unit_price: '0.00003' } }],
      },
    ],
  };
  const ledger = ledgerWith({ current: { period: NOV, plan: byModel, counters: [], decided: [] } });
  expect(ledger.pricesByGroup()).toBe(true);
  const groups = [{ period_start: NOV.start, groups: { tokens: [{ group: { model: 'gpt-4' }, value: '120000' }] } }];
  // 3.60 of 4.00 is 90 %; the meter's own price would have made it 1.20 (30 %).
  expect(decided(ledger.applyCounters([sum('tokens', 120000)], AT, groups))).toEqual(['$cost 80 superseded of 4.00', '$cost 90 notified of 4.00']);
  const carried = new TenantLedger(ledger.snapshot());
  expect(carried.usageView(AT, 0).metrics.tokens!.groups).toEqual([{ group: { model: 'gpt-4' }, used: 120000, used_decimal: '120000', amount: '3.60' }]);
  expect(carried.usageView(AT, 0).costs.total).toBe('3.60');
});
