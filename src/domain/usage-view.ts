/**
 * The current period as a tenant sees it (`GET /v1/tenants/{id}/usage`): each meter's counter
 * against its limit with its rated amount, the running costs and the period's alerts. One
 * builder for the read model the API serves and the `usage` query ops read in the Temporal UI,
 * so the two can never disagree on a figure.
 */
import { Dec, decimalToNumber, roundMoney } from './decimal';
import { forecastMeter, NO_FORECAST, projectedTotal, type MeterForecast } from './forecast';
import type { Period } from './periods';
import type { PlanVersion } from './plan';
import { rateMeter } from './rating';
import { costLimit, meterLimit, type LimitOverrides } from './limits';
import { drawnInPeriod, effectiveLimit, packCharges, packView, rateWithPacks, type Pack, type PackView } from './packs';
import { withGroups, type GroupUsage, type MeterGroup } from './dimensions';
import { highestLevel, usagePercent, type AlertLevel } from './thresholds';

/** One meter in the usage view. */
export interface MeterUsage {
  /** The counter as a JSON number: a double, which rounds counters of more than 15-17 significant digits. */
  used: number;
  /** The counter exactly, as a decimal string. */
  used_decimal: string;
  /** The effective limit: the tenant's override, else the plan's. */
  limit: number | null;
  /** The plan's own limit, whatever the tenant's override says. */
  plan_limit: number | null;
  /** The limit percent and alerts are judged against (equal to `limit`): the limit plus the add-on packs. */
  effective_limit: number | null;
  /** The metric's add-on packs: drawn this period, left, expiry and status. */
  packs: PackView[];
  /** A dimensioned meter: each group counted and priced on its own (`amount` is their sum). */
  groups?: GroupUsage[];
  percent: number | null;
  hard_limit: boolean;
  amount: string;
  /** Usage and amount at period end at the rate so far, and when the limit runs out (`forecast.ts`). */
  forecast: MeterForecast;
}

/** An alert as the tenant sees it in the usage view. */
export interface AlertView {
  id: string;
  metric: string;
  threshold: number;
  level: Exclude<AlertLevel, 'none'>;
  status: 'notified' | 'superseded';
  used: number;
  limit: number;
  period_start: string;
  fired_at: string;
}

/** The current period's usage, costs and alerts. */
export interface UsageView {
  tenant_id: string;
  plan_id: string;
  /** The plan's display name (tenant keys cannot read plans: the usage page shows it from here). */
  plan_name: string;
  plan_version: number;
  period: Period & { interval: PlanVersion['interval'] };
  metrics: Record<string, MeterUsage>;
  /** `cost_limit`: the running-cost limit in force (the tenant's `$cost` override, else the plan's), or null. */
  costs: { base_fee: string; usage: string; total: string; currency: string; projected_total: string | null; cost_limit: string | null };
  alerts: AlertView[];
  alert_level: AlertLevel;
  pending_events: number;
  as_of: string;
}

/** What the view is built from: every meter's counter value ('0' when nothing was counted). */
export interface UsageViewInput {
  tenantId: string;
  plan: PlanVersion;
  period: Period;
  values: Readonly<Record<string, string>>;
  /** The tenant's own limits (`src/domain/limits.ts`); absent: the plan's. */
  limitOverrides?: LimitOverrides;
  /** The tenant's add-on packs with their draws (`src/domain/packs.ts`); absent: none. */
  packs?: readonly Pack[];
  /** Dimensioned meters' groups (`src/domain/dimensions.ts`); absent: no breakdown. */
  groups?: Readonly<Record<string, MeterGroup[]>>;
  alerts: AlertView[];
  pendingEvents: number;
  asOf: string;
}

export function buildUsageView(input: UsageViewInput): UsageView {
  const { plan } = input;
  const packs = input.packs ?? [];
  // Units drawn from packs are not billed again: costs are rated like the invoice, packs included.
  const rated = rateWithPacks(plan, input.values, packs, input.period.start, packCharges(packs, input.period));
  const metrics: UsageView['metrics'] = {};
  for (const meter of plan.meters) {
    const used = input.values[meter.metric] ?? '0';
    const limit = effectiveLimit(meterLimit(meter, input.limitOverrides), packs, meter.metric, input.period.start, input.asOf);
    const drawn = drawnInPeriod(packs, meter.metric, input.period.start);
    metrics[meter.metric] = {
      used: decimalToNumber(used),
      used_decimal: used,
      limit: limit === undefined ? null : decimalToNumber(limit),
      plan_limit: meter.limit ?? null,
      packs: packs.filter((p) => p.metric === meter.metric).map((p) => packView(p, input.period.start, input.asOf)),
      effective_limit: limit === undefined ? null : decimalToNumber(limit),
      percent: limit === undefined ? null : decimalToNumber(usagePercent(used, limit)),
      hard_limit: meter.hard_limit === true,
      amount: rateMeter(meter, Dec.max(0, new Dec(used).minus(drawn)), plan.currency).amount,
      forecast: NO_FORECAST,
    };
  }
  // A pass of its own, so the forecast judges the limit the view reports and rates like its amount.
  for (const meter of plan.meters) {
    const view = metrics[meter.metric] as MeterUsage;
    const drawn = drawnInPeriod(packs, meter.metric, input.period.start);
    const billed = (counter: Dec) => rateMeter(meter, Dec.max(0, counter.minus(drawn)), plan.currency).amount;
    view.forecast = forecastMeter({ meter, used: view.used_decimal, limit: view.limit, period: input.period, asOf: input.asOf, currency: plan.currency, billed });
  }
  const view: UsageView = {
    tenant_id: input.tenantId,
    plan_id: plan.id,
    plan_name: plan.name,
    plan_version: plan.version,
    period: { start: input.period.start, end: input.period.end, interval: plan.interval },
    metrics,
    costs: {
      base_fee: rated.base_fee,
      usage: rated.usage,
      total: rated.total,
      currency: plan.currency,
      projected_total: projectedTotal(rated.total, plan.currency, Object.values(metrics)),
      cost_limit: limitAsMoney(costLimit(plan, input.limitOverrides), plan.currency),
    },
    alerts: input.alerts,
    alert_level: highestLevel(input.alerts.map((a) => a.level)),
    pending_events: input.pendingEvents,
    as_of: input.asOf,
  };
  return input.groups ? withGroups(view, plan.meters, input.groups) : view;
}

/** A cost limit as money ("9.00"), or null when there is none. */
function limitAsMoney(limit: string | undefined, currency: string): string | null {
  return limit === undefined ? null : roundMoney(limit, currency);
}
