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
import { allScenarioFiles, loadScenarios } from '../../support/scenarios';

interface ScenarioEvent {
  id: string;
  metric: string;
  quantity?: number | string;
}
interface Step {
  events?: ScenarioEvent[];
  expect_usage?: Record<string, { used: number; percent?: number; amount?: string }>;
  expect_alerts?: Array<{ metric: string; threshold: number; status: 'notified' | 'superseded' }>;
  estimate?: { metric: string; quantity: number };
  authorize?: { id: string; metric: string; quantity: number };
  expect?: { amount?: string; allowed?: boolean };
  close?: { finalize: boolean };
  expect_invoice?: { lines: Record<string, { quantity: number; amount: string }>; total: string };
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

/** One period of one tenant, as the workflow would keep it. */
class PeriodReplay {
  readonly counters = new Map<string, CounterState>();
  readonly stored: Array<{ id: string; metric: string; quantity: string | number; timestamp: string }> = [];
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

  /** After a batch: decide meter and cost alerts like the workflow would. */
  evaluateAlerts(): void {
    for (const meter of this.plan.meters) {
      if (meter.limit === undefined) continue;
      this.decide(meter.metric, usagePercent(this.used(meter.metric), meter.limit));
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
const STEP_KINDS = ['events', 'expect_usage', 'expect_alerts', 'estimate', 'authorize', 'close', 'expect_invoice'] as const;

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
        period.evaluateAlerts();
      }
      if (step.expect_usage) {
        for (const [metric, expected] of Object.entries(step.expect_usage)) {
          const meter = findMeter(plan, metric) as Meter;
          const used = period.used(metric);
          expect(decimalToNumber(used)).toBe(expected.used);
          if (expected.percent !== undefined) expect(usagePercent(used, meter.limit!)).toBe(String(expected.percent));
          if (expected.amount !== undefined) expect(rateMeter(meter, used, plan.currency).amount).toBe(expected.amount);
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
        const allowed = !meter.hard_limit || meter.limit === undefined || new Dec(after).lessThanOrEqualTo(meter.limit);
        expect(allowed).toBe(step.expect?.allowed);
        if (allowed) {
          period.record({ id: step.authorize.id, metric: meter.metric, quantity: step.authorize.quantity });
          period.evaluateAlerts();
        }
        checks += 1;
      }
      if (step.expect_invoice) {
        // The invoice is recomputed from the stored events, and must agree with the counters.
        const fromEvents = Object.fromEntries(
          plan.meters.map((m) => [m.metric, aggregateEvents(m.aggregation, period.stored.filter((e) => e.metric === m.metric))]),
        );
        expect(fromEvents).toEqual({ ...Object.fromEntries(plan.meters.map((m) => [m.metric, '0'])), ...period.snapshot() });
        const invoice = ratePeriod(plan, fromEvents);
        for (const [metric, expected] of Object.entries(step.expect_invoice.lines)) {
          const line = invoice.lines.find((l) => l.metric === metric);
          expect(line && { quantity: decimalToNumber(line.quantity), amount: line.amount }).toEqual(expected);
        }
        expect(invoice.total).toBe(step.expect_invoice.total);
        checks += 1;
      }
    }
    expect(checks).toBeGreaterThan(0);
  });
});
