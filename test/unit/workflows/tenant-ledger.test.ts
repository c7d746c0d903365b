import fc from 'fast-check';
import type { PeriodCounter } from '../../../src/contracts/ledger';
import type { PlanVersion } from '../../../src/domain/plan';
import { KEPT_CLOSE_ANSWERS, TenantLedger, type LedgerSnapshot } from '../../../src/workflows/tenant-ledger';
import { openedLedgerSnapshot } from '../../support/ledger-snapshot';

/**
 * The tenant workflow's decisions, without Temporal: thresholds fire once per period and
 * subject, late events move their own closed period, authorize checks and consumes, and a
 * snapshot carried across continue-as-new decides exactly as the ledger it came from.
 */
const plan: PlanVersion = {
  id: 'growth',
  version: 1,
  name: 'Growth',
  currency: 'USD',
  interval: 'month',
  base_fee: '10.00',
  alert_thresholds: [80, 90, 100],
  grace_period_seconds: 3600,
  cost_limit: '100.00',
  meters: [
    { metric: 'tokens', aggregation: 'sum', limit: 1000, hard_limit: true, pricing: { model: 'per_unit', unit_price: '0.01' } },
    { metric: 'calls', aggregation: 'count', limit: 10, hard_limit: true, pricing: { model: 'per_unit', unit_price: '0' } },
    { metric: 'storage', aggregation: 'max', pricing: { model: 'per_unit', unit_price: '1' } },
  ],
};
const NOV = { start: '2026-11-01T00:00:00.000Z', end: '2026-12-01T00:00:00.000Z' };
const DEC = { start: '2026-12-01T00:00:00.000Z', end: '2027-01-01T00:00:00.000Z' };
const AT = '2026-11-20T12:00:00.000Z';

function snapshot(overrides: Partial<LedgerSnapshot> = {}): LedgerSnapshot {
  return openedLedgerSnapshot(plan, NOV, overrides);
}

function sum(metric: string, total: number, period = NOV.start): PeriodCounter {
  return { period_start: period, metric, total: String(total), events: 1, largest: String(total), latest: String(total) };
}

function fired(ledger: TenantLedger, counters: PeriodCounter[]) {
  return ledger.applyCounters(counters, AT).flatMap((d) => d.records.map((r) => `${d.period_start.slice(0, 7)} ${r.subject} ${r.threshold} ${r.status}`));
}

test('a jump past several thresholds notifies the highest and supersedes the rest, once', () => {
  const ledger = new TenantLedger(snapshot());
  expect(fired(ledger, [sum('tokens', 750)])).toEqual([]);
  expect(fired(ledger, [sum('tokens', 920)])).toEqual(['2026-11 tokens 80 superseded', '2026-11 tokens 90 notified']);
  // The same counters again (a retried claim's answer) decide nothing.
  expect(fired(ledger, [sum('tokens', 920)])).toEqual([]);
  expect(fired(ledger, [sum('tokens', 1000)])).toEqual(['2026-11 tokens 100 notified']);
  expect(ledger.alertLevel()).toBe('exceeded');
  const view = ledger.usageView(AT, 3);
  expect(view.metrics.tokens).toMatchObject({ used: 1000, percent: 100, amount: '10.00' });
  expect(view.alerts.map((a) => [a.threshold, a.status])).toEqual([
    [80, 'superseded'],
    [90, 'notified'],
    [100, 'notified'],
  ]);
  expect(view.pending_events).toBe(3);
});

test('the cost limit alerts on the running cost, base fee included', () => {
  const ledger = new TenantLedger(snapshot());
  // 10.00 base fee + 7,000 tokens at 0.01 = 80.00, 80 % of the 100.00 cost limit
  expect(fired(ledger, [sum('tokens', 7000)])).toContain('2026-11 $cost 80 notified');
});

test('late events move their closed period and fire its thresholds there, not in the current view', () => {
  const ledger = new TenantLedger(
    snapshot({
      current: { period: DEC, plan, counters: [], decided: [] },
      closing: [{ period: NOV, plan, grace_ends_at: '2026-12-01T01:00:00.000Z', counters: [sum('tokens', 850)], decided: [['tokens', [80]]] }],
    }),
  );
  expect(fired(ledger, [sum('tokens', 910)])).toEqual(['2026-11 tokens 90 notified']);
  expect(ledger.usageView(AT, 0).alerts).toEqual([]);
  // Counters of a period the ledger does not hold (invoiced, settled) fire nothing.
  expect(fired(ledger, [sum('tokens', 5000, '2026-10-01T00:00:00.000Z')])).toEqual([]);
  ledger.forgetSettled(Date.parse('2026-12-01T01:00:00.000Z'));
  expect(ledger.closingPeriods).toEqual([]);
  expect(fired(ledger, [sum('tokens', 1000)])).toEqual([]);
});

test('a rule added mid-period is judged against the usage so far', () => {
  const ledger = new TenantLedger(snapshot());
  fired(ledger, [sum('tokens', 600)]);
  const decisions = ledger.applyRulesChange({ upsert: [{ id: 'r1', subject: 'tokens', threshold: 50 }] }, AT);
  expect(decisions.flatMap((d) => d.records.map((r) => [r.threshold, r.status, r.rule_id]))).toEqual([[50, 'notified', 'r1']]);
});

test('the rules as stored replace those the ledger held: a rule no longer stored fires nothing, a new one is judged at once', () => {
  const ledger = new TenantLedger(snapshot({ alert_rules: [{ id: 'r1', subject: 'tokens', threshold: 50 }] }));
  expect(ledger.applyStoredRules([{ id: 'r2', subject: 'tokens', threshold: 60 }], AT)).toEqual([]);
  expect(fired(ledger, [sum('tokens', 550)])).toEqual([]);
  const decisions = ledger.applyStoredRules([{ id: 'r2', subject: 'tokens', threshold: 60 }, { id: 'r3', subject: 'tokens', threshold: 55 }], AT);
  expect(decisions.flatMap((d) => d.records.map((r) => [r.threshold, r.status, r.rule_id]))).toEqual([[55, 'notified', 'r3']]);
  expect(fired(ledger, [sum('tokens', 650)])).toEqual(['2026-11 tokens 60 notified']);
  expect(ledger.snapshot().alert_rules.map((r) => r.id)).toEqual(['r2', 'r3']);
});

test('authorize refuses past a hard limit, hands the rest back to be consumed, and answers an id once', () => {
  const ledger = new TenantLedger(snapshot());
  ledger.applyCounters([sum('tokens', 990)], AT);
  expect(ledger.authorize({ id: 'a1', metric: 'tokens', quantity: 20 }, AT)).toEqual({
    kind: 'answer',
    result: { allowed: false, reason: 'hard_limit', remaining: 10, options: ['upgrade_plan', 'buy_pack'] },
  });
  // The refused id keeps its answer even after room appears (idempotent on id).
  expect(ledger.authorize({ id: 'a1', metric: 'tokens', quantity: 1 }, AT)).toMatchObject({ kind: 'answer', result: { allowed: false } });
  const step = ledger.authorize({ id: 'a2', metric: 'tokens', quantity: 10 }, AT);
  expect(step).toEqual({ kind: 'consume', event: { id: 'a2', metric: 'tokens', quantity: '10', timestamp: AT, period_start: NOV.start } });
  ledger.applyCounters([sum('tokens', 1000)], AT);
  expect(ledger.consumed({ id: 'a2', metric: 'tokens', quantity: 10 })).toEqual({ allowed: true, remaining: 0 });
  expect(ledger.authorize({ id: 'a2', metric: 'tokens', quantity: 10 }, AT)).toEqual({ kind: 'answer', result: { allowed: true, remaining: 0 } });
  // A count meter consumes one event, whatever the quantity says.
  ledger.applyCounters([{ ...sum('calls', 0), events: 9 }], AT);
  expect(ledger.authorize({ id: 'c1', metric: 'calls', quantity: 5 }, AT).kind).toBe('consume');
});

test('keyed close answers travel with the snapshot, the most recent KEPT_CLOSE_ANSWERS of them', () => {
  const answer = (n: number) => ({
    closed_period: { start: NOV.start, end: `2026-11-20T12:00:00.${String(n).padStart(3, '0')}Z` },
    invoice_id: `in_${n}`,
    invoice_workflow_id: `invoice-${n}`,
    current_period: null,
  });
  const ledger = new TenantLedger(snapshot());
  expect(ledger.closeAnswer('k-0')).toBeUndefined();
  for (let n = 0; n <= KEPT_CLOSE_ANSWERS; n++) ledger.rememberCloseAnswer(`k-${n}`, answer(n));
  const next = new TenantLedger(ledger.snapshot());
  expect(next.closeAnswer('k-0')).toBeUndefined(); // the oldest gave way
  expect(next.closeAnswer('k-1')).toEqual(answer(1));
  expect(next.closeAnswer(`k-${KEPT_CLOSE_ANSWERS}`)).toEqual(answer(KEPT_CLOSE_ANSWERS));
  // A ledger that never answered a keyed close carries none.
  expect(new TenantLedger(snapshot()).snapshot()).not.toHaveProperty('close_answers');
});

test('a close ends the period at the instant it was asked, never at or before the start', () => {
  const ledger = new TenantLedger(snapshot());
  expect(ledger.closeInstant(Date.parse('2026-11-20T12:00:00.750Z'))).toBe('2026-11-20T12:00:00.750Z');
  expect(ledger.closeInstant(Date.parse('2026-11-01T00:00:00.000Z'))).toBe('2026-11-01T00:00:00.001Z');
  // A close made as the anniversary passes is the anniversary.
  expect(ledger.closeInstant(Date.parse('2026-12-01T00:00:05.000Z'))).toBe(NOV.end);
});

test('a rollover keeps the closed period until its grace settles; a cancellation ends the ledger', () => {
  const ledger = new TenantLedger(snapshot());
  ledger.applyCounters([sum('tokens', 850)], AT);
  expect(ledger.periodEnded(Date.parse(NOV.end))).toBe(true);
  ledger.rollOver({
    closed: { ...NOV, grace_ends_at: '2026-12-01T01:00:00.000Z' },
    closed_counters: [sum('tokens', 840)],
    invoice_id: 'in_nov',
    next: { period: DEC, plan: { ...plan, version: 2 }, alert_rules: [], counters: [sum('tokens', 10, DEC.start)] },
  });
  expect(ledger.period).toEqual(DEC);
  expect(ledger.plan.version).toBe(2);
  expect(ledger.usageView(AT, 0).metrics.tokens!.used).toBe(10);
  expect(ledger.alertLevel()).toBe('none');
  expect(ledger.nextDeadline()).toBe(Date.parse('2026-12-01T01:00:00.000Z'));
  expect(ledger.books()[1]!.counters).toEqual([sum('tokens', 840)]);

  ledger.rollOver({ closed: { start: DEC.start, end: '2026-12-05T00:00:00.000Z', grace_ends_at: '2026-12-05T00:00:00.000Z' }, closed_counters: [], invoice_id: 'in_dec', next: null });
  expect(ledger.cancelled).toEqual({ final_invoice_id: 'in_dec' });
  expect(ledger.finished()).toBe(false);
  ledger.forgetSettled(Date.parse('2026-12-05T00:00:00.000Z'));
  expect(ledger.finished()).toBe(true);
});

test('a snapshot decides exactly as the ledger it was taken from (continue-as-new)', () => {
  const step = fc.record({ tokens: fc.integer({ min: 0, max: 1_500 }), storage: fc.integer({ min: 0, max: 50 }) });
  fc.assert(
    fc.property(fc.array(step, { minLength: 1, maxLength: 12 }), fc.nat(12), (steps, cut) => {
      const straight = new TenantLedger(snapshot());
      let carried = new TenantLedger(snapshot());
      const a: string[] = [];
      const b: string[] = [];
      let tokens = 0;
      steps.forEach((s, i) => {
        tokens += s.tokens; // counters only grow for a sum meter
        const counters = [sum('tokens', tokens), sum('storage', s.storage)];
        a.push(...fired(straight, counters));
        if (i === cut) carried = new TenantLedger(JSON.parse(JSON.stringify(carried.snapshot())) as LedgerSnapshot);
        b.push(...fired(carried, counters));
      });
      expect(b).toEqual(a);
      expect(carried.snapshot()).toEqual(straight.snapshot());
      // Invariant 4: every crossed threshold decided exactly once, none twice.
      const decided = a.filter((line) => line.includes(' tokens '));
      expect(new Set(decided).size).toBe(decided.length);
      const crossed = [80, 90, 100].filter((t) => tokens >= (t / 100) * 1000);
      expect(decided.map((line) => Number(line.split(' ')[2])).sort((x, y) => x - y)).toEqual(crossed);
    }),
    { seed: 20261201, numRuns: 200 },
  );
});
