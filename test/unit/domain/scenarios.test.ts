/**
 * Replays the billing scenarios of test/fixtures/scenarios through the pure domain only:
 * de-duplicated events feed the counters, then usage, alerts, estimates, authorizations and
 * the invoice are checked with the figures computed by hand in the scenario files. (The
 * API/workflow replay lives in the integration tests; this proves the arithmetic itself.)
 */
import {
  type CounterState,
  DEFAULT_ALERT_THRESHOLDS,
  DEFAULT_GRACE_PERIOD_SECONDS,
  Dec,
  type Meter,
  type PlanVersion,
  aggregateEvents,
  applyToCounter,
  decideThresholds,
  decimalToNumber,
  estimateExtraCost,
  findMeter,
  projectedCounter,
  ratePeriod,
  rateMeter,
  usagePercent,
} from '../../../src/domain';
import { applyLimitChange, meterLimit } from '../../../src/domain/limits';
import { allocateCredit, amountDue, buildBalanceView } from '../../../src/domain/credits';
import { groupLabel, groupOf, groupsAmount, isDimensioned, type MeterGroup } from '../../../src/domain/dimensions';
import { defaultPackExpiry, drawDown, drawnInPeriod, effectiveLimit, packCharges, rateWithPacks, type Pack } from '../../../src/domain/packs';

/** The one period the pure replay bills (its clock starts at 2027-01-01). */
const REPLAY_PERIOD = { start: '2027-01-01T00:00:00.000Z', end: '2027-02-01T00:00:00.000Z' };
import { roundMoney } from '../../../src/domain/decimal';
import { allScenarioFiles, loadScenarios } from '../../support/scenarios';

interface ScenarioEvent {
  id: string;
  metric: string;
  quantity?: number | string;
  properties?: Record<string, unknown>;
}
interface Step {
  events?: ScenarioEvent[];
  expect_usage?: Record<string, { used: number; limit?: number; percent?: number; amount?: string; packs?: Record<string, number>; groups?: Record<string, number> }>;
  pack?: { id: string; metric: string; units: number; price?: string; expires_at?: string };
  limits?: Record<string, number | null>;
  grant?: { id: string; amount: string };
  expect_balance?: { balance?: string; uncharged?: string; available?: string; total_charged?: string; estimated_units_remaining?: Record<string, number> };
  expect_alerts?: Array<{ metric: string; threshold: number; status: 'notified' | 'superseded' }>;
  estimate?: { metric: string; quantity: number };
  authorize?: { id: string; metric: string; quantity: number };
  expect?: { amount?: string; allowed?: boolean };
  close?: { finalize: boolean };
  expect_invoice?: {
    lines: Record<string, { quantity: number; amount: string; packs?: Array<{ pack_id: string; units: string }> }>;
    total: string;
    credits_applied?: string;
    amount_due?: string;
  };
}
interface Scenario {
  name: string;
  plan: Omit<PlanVersion, 'version' | 'alert_thresholds' | 'grace_period_seconds'> &
    Partial<Pick<PlanVersion, 'version' | 'alert_thresholds' | 'grace_period_seconds'>>;
  steps: Step[];
}

function planOf(scenario: Scenario): PlanVersion {
  return {
    version: 1,
    alert_thresholds: DEFAULT_ALERT_THRESHOLDS,
    grace_period_seconds: DEFAULT_GRACE_PERIOD_SECONDS,
    ...scenario.plan,
  };
}

/** An event as the replay stores it: stamped by the replay's clock. */
type StoredEvent = { id: string; metric: string; quantity: string | number; timestamp: string; properties?: Record<string, unknown> };

/** One period of one tenant, as the workflow would keep it. */
class PeriodReplay {
  readonly counters = new Map<string, CounterState>();
  readonly stored: StoredEvent[] = [];
  readonly alerts: Array<{ metric: string; threshold: number; status: 'notified' | 'superseded' }> = [];
  private readonly seen = new Set<string>();
  private clock = Date.UTC(2027, 0, 1);

  constructor(readonly plan: PlanVersion) {}

  record(event: ScenarioEvent): void {
    if (this.seen.has(event.id)) return; // idempotency key: counted at most once
    this.seen.add(event.id);
    const meter = findMeter(this.plan, event.metric);
    if (!meter) throw new Error(`unknown metric ${event.metric}`);
    const stored = { ...event, quantity: event.quantity ?? 1, timestamp: new Date((this.clock += 1000)).toISOString() };
    this.stored.push(stored);
    this.counters.set(meter.metric, applyToCounter(this.counters.get(meter.metric), meter.aggregation, stored));
  }

  used(metric: string): string {
    return this.counters.get(metric)?.value ?? '0';
  }

  /** Prepaid credit granted, and charged to finalized invoices (`grant`, `expect_invoice`). */
  granted = new Dec(0);
  charged = new Dec(0);
  /** Set once the period's invoice is finalized: its cost is charged, no longer uncharged. */
  invoiced = false;

  /** The tenant's own limits (a `limits` step). */
  overrides: Record<string, string> = {};

  /** Add-on packs bought (a `pack` step), with their draws for this period. */
  packs: Pack[] = [];

  now(): string {
    return new Date(this.clock).toISOString();
  }

  /** The effective limit: the limit (override or plan) plus the packs. */
  limit(meter: Meter): string | undefined {
    return effectiveLimit(meterLimit(meter, this.overrides), this.packs, meter.metric, REPLAY_PERIOD.start, this.now());
  }

  /** Draws from the packs what the usage needs beyond the limit, now. */
  draw(): void {
    for (const meter of this.plan.meters) this.packs = drawDown(this.packs, meter.metric, REPLAY_PERIOD.start, this.used(meter.metric), meterLimit(meter, this.overrides), this.now()).packs;
  }

  /** A dimensioned meter's groups, aggregated from the stored events. */
  groups(): Record<string, MeterGroup[]> {
    const groups: Record<string, MeterGroup[]> = {};
    for (const meter of this.plan.meters.filter(isDimensioned)) {
      const byGroup = new Map<string, { group: Record<string, string>; events: StoredEvent[] }>();
      for (const event of this.stored.filter((e) => e.metric === meter.metric)) {
        const group = groupOf(meter, event.properties);
        const key = JSON.stringify(group);
        byGroup.set(key, { group, events: [...(byGroup.get(key)?.events ?? []), event] });
      }
      groups[meter.metric] = [...byGroup.values()].map(({ group, events }) => ({ group, value: aggregateEvents(meter.aggregation, events) }));
    }
    return groups;
  }

  /** A meter's counter less the units drawn from packs: what its invoice line bills. */
  billable(meter: Meter): string {
    return Dec.max(0, new Dec(this.used(meter.metric)).minus(drawnInPeriod(this.packs, meter.metric, REPLAY_PERIOD.start))).toFixed();
  }

  /** After a batch: decide meter and cost alerts like the workflow would. */
  evaluateAlerts(): void {
    for (const meter of this.plan.meters) {
      const limit = this.limit(meter);
      if (limit === undefined) continue;
      this.decide(meter.metric, usagePercent(this.used(meter.metric), limit));
    }
    if (this.plan.cost_limit !== undefined) {
      const cost = ratePeriod(this.plan, this.snapshot()).total;
      this.decide('cost', usagePercent(cost, this.plan.cost_limit));
    }
  }

  snapshot(): Record<string, string> {
    return Object.fromEntries([...this.counters].map(([metric, counter]) => [metric, counter.value]));
  }

  private decide(metric: string, percent: string): void {
    const decided = this.alerts.filter((a) => a.metric === metric).map((a) => a.threshold);
    const decision = decideThresholds(this.plan.alert_thresholds, decided, percent);
    for (const threshold of decision.superseded) this.alerts.push({ metric, threshold, status: 'superseded' });
    if (decision.notify !== null) this.alerts.push({ metric, threshold: decision.notify, status: 'notified' });
  }
}

/** The step kinds this replay knows; `expect` only goes with `estimate` and `authorize`. */
const STEP_KINDS = ['events', 'expect_usage', 'expect_alerts', 'estimate', 'authorize', 'limits', 'pack', 'grant', 'expect_balance', 'close', 'expect_invoice'] as const;

const scenarios = loadScenarios<Scenario>('plan');

describe('the scenario fixtures', () => {
  it('has billing scenarios', () => {
    expect(scenarios.length).toBeGreaterThan(0);
  });

  it('holds only billing and period scenarios', () => {
    const unknown = allScenarioFiles().filter(({ scenario }) => !('plan' in scenario) && !('periods' in scenario));
    expect(unknown.map(({ file }) => file)).toEqual([]);
  });

  it('uses only step kinds the replays know', () => {
    const unknown = scenarios.flatMap(({ file, scenario }) =>
      scenario.steps.filter((step) => !STEP_KINDS.some((kind) => kind in step)).map((step) => `${file}: ${JSON.stringify(step)}`),
    );
    expect(unknown).toEqual([]);
  });
});

describe.each(scenarios.map(({ file, scenario }) => [file, scenario] as const))('scenario %s (pure replay)', (_file, scenario) => {
  const plan = planOf(scenario);

  it('replays every step', () => {
    const period = new PeriodReplay(plan);
    let checks = 0;
    for (const step of scenario.steps) {
      if (step.events) {
        step.events.forEach((event) => period.record(event));
        period.draw();
        period.evaluateAlerts();
      }
      if (step.expect_usage) {
        for (const [metric, expected] of Object.entries(step.expect_usage)) {
          const meter = findMeter(plan, metric) as Meter;
          const used = period.used(metric);
          expect(decimalToNumber(used)).toBe(expected.used);
          if (expected.limit !== undefined) expect(decimalToNumber(period.limit(meter)!)).toBe(expected.limit);
          if (expected.percent !== undefined) expect(usagePercent(used, period.limit(meter)!)).toBe(String(expected.percent));
          const groups = period.groups()[metric];
          const amount = groups ? groupsAmount(meter, groups, plan.currency) : rateMeter(meter, period.billable(meter), plan.currency).amount;
          if (expected.amount !== undefined) expect(amount).toBe(expected.amount);
          if (expected.groups !== undefined) expect(Object.fromEntries((groups ?? []).map((g) => [groupLabel(g.group), decimalToNumber(g.value)]))).toEqual(expected.groups);
          if (expected.packs !== undefined) {
            expect(Object.fromEntries(period.packs.filter((p) => p.metric === metric).map((p) => [p.id, decimalToNumber(p.draws[REPLAY_PERIOD.start] ?? 0)]))).toEqual(expected.packs);
          }
          checks += 1;
        }
      }
      if (step.expect_alerts) {
        const byThreshold = (a: { metric: string; threshold: number }, b: { metric: string; threshold: number }) =>
          a.metric.localeCompare(b.metric) || a.threshold - b.threshold;
        expect(period.alerts.filter((a) => a.metric !== 'cost').sort(byThreshold)).toEqual([...step.expect_alerts].sort(byThreshold));
        checks += 1;
      }
      if (step.estimate) {
        const meter = findMeter(plan, step.estimate.metric) as Meter;
        expect(estimateExtraCost(meter, period.used(meter.metric), step.estimate.quantity, plan.currency)).toBe(step.expect?.amount);
        checks += 1;
      }
      if (step.authorize) {
        // Hard limit: refuse any consumption that would take the counter above the limit.
        const meter = findMeter(plan, step.authorize.metric) as Meter;
        const after = projectedCounter(meter.aggregation, period.used(meter.metric), step.authorize.quantity);
        const limit = period.limit(meter);
        const allowed = !meter.hard_limit || limit === undefined || new Dec(after).lessThanOrEqualTo(limit);
        expect(allowed).toBe(step.expect?.allowed);
        if (allowed) {
          period.record({ id: step.authorize.id, metric: meter.metric, quantity: step.authorize.quantity });
          period.evaluateAlerts();
        }
        checks += 1;
      }
      if (step.limits) {
        // Applied at once: decided thresholds stay decided, newly crossed ones fire by the usual rule.
        period.overrides = applyLimitChange(period.overrides, step.limits);
        period.evaluateAlerts();
        checks += 1;
      }
      if (step.pack) {
        const bought = step.pack;
        const at = period.now();
        period.packs.push({
          id: bought.id,
          metric: bought.metric,
          units: String(bought.units),
          purchased_at: at,
          expires_at: bought.expires_at ? new Date(bought.expires_at).toISOString() : defaultPackExpiry(at, 'UTC'),
          ...(bought.price ? { price: bought.price } : {}),
          draws: {},
        });
        period.draw();
        period.evaluateAlerts();
        checks += 1;
      }
      if (step.grant) {
        period.granted = period.granted.plus(step.grant.amount);
        checks += 1;
      }
      if (step.expect_balance) {
        const balance = period.granted.minus(period.charged).toFixed();
        const view = buildBalanceView({
          currency: plan.currency,
          balance,
          total_charged: period.charged.toFixed(),
          unchargedTotals: period.invoiced ? [] : [ratePeriod(plan, period.snapshot()).total],
          lowBalanceThreshold: null,
          meters: plan.meters,
          values: period.invoiced ? {} : period.snapshot(),
          usageCost: '0',
          period: { start: '2027-01-01T00:00:00.000Z', end: '2027-02-01T00:00:00.000Z' },
          asOf: '2027-01-02T00:00:00.000Z',
        });
        expect(view).toMatchObject(step.expect_balance);
        checks += 1;
      }
      if (step.expect_invoice) {
        // The invoice is recomputed from the stored events, and must agree with the counters.
        const fromEvents = Object.fromEntries(
          plan.meters.map((m) => [m.metric, aggregateEvents(m.aggregation, period.stored.filter((e) => e.metric === m.metric))]),
        );
        expect(fromEvents).toEqual({ ...Object.fromEntries(plan.meters.map((m) => [m.metric, '0'])), ...period.snapshot() });
        const invoice = rateWithPacks(plan, fromEvents, period.packs, REPLAY_PERIOD.start, packCharges(period.packs, REPLAY_PERIOD), period.groups());
        for (const [metric, expected] of Object.entries(step.expect_invoice.lines)) {
          const line = invoice.lines.find((l) => l.metric === metric || l.description === metric);
          expect(line && { quantity: decimalToNumber(line.quantity), amount: line.amount, ...(expected.packs ? { packs: line.pack_draws } : {}) }).toEqual(expected);
        }
        expect(invoice.total).toBe(step.expect_invoice.total);
        // Credit is applied at finalization, never above the total.
        const credit = allocateCredit([{ id: 'g', remaining: period.granted.minus(period.charged).toFixed(), expires_at: null, created_at: '2027-01-01T00:00:00.000Z' }], invoice.total, '2027-01-02T00:00:00.000Z');
        period.charged = period.charged.plus(credit.applied);
        period.invoiced = true;
        if (step.expect_invoice.credits_applied !== undefined) expect(roundMoney(credit.applied, plan.currency)).toBe(step.expect_invoice.credits_applied);
        if (step.expect_invoice.amount_due !== undefined) expect(amountDue(invoice.total, credit.applied, plan.currency)).toBe(step.expect_invoice.amount_due);
        checks += 1;
      }
    }
    expect(checks).toBeGreaterThan(0);
  });
});
