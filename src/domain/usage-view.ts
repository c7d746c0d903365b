/**
 * The current period as a tenant sees it (`GET /v1/tenants/{id}/usage`): each meter's counter
 * against its limit with its rated amount, the running costs and the period's alerts. One
 * builder for the read model the API serves and the `usage` query ops read in the Temporal UI,
 * so the two can never disagree on a figure.
 */
import { decimalToNumber } from './decimal';
import type { Period } from './periods';
import type { PlanVersion } from './plan';
import { rateMeter, ratePeriod } from './rating';
import { highestLevel, usagePercent, type AlertLevel } from './thresholds';

/** One meter in the usage view. */
export interface MeterUsage {
  /** The counter as a JSON number: a double, which rounds counters of more than 15-17 significant digits. */
  used: number;
  /** The counter exactly, as a decimal string. */
  used_decimal: string;
  limit: number | null;
  percent: number | null;
  hard_limit: boolean;
  amount: string;
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
  plan_version: number;
  period: Period & { interval: PlanVersion['interval'] };
  metrics: Record<string, MeterUsage>;
  costs: { base_fee: string; usage: string; total: string; currency: string };
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
  alerts: AlertView[];
  pendingEvents: number;
  asOf: string;
}

export function buildUsageView(input: UsageViewInput): UsageView {
  const { plan } = input;
  const rated = ratePeriod(plan, input.values);
  const metrics: UsageView['metrics'] = {};
  for (const meter of plan.meters) {
    const used = input.values[meter.metric] ?? '0';
    metrics[meter.metric] = {
      used: decimalToNumber(used),
      used_decimal: used,
      limit: meter.limit ?? null,
      percent: meter.limit ? decimalToNumber(usagePercent(used, meter.limit)) : null,
      hard_limit: meter.hard_limit === true,
      amount: rateMeter(meter, used, plan.currency).amount,
    };
  }
  return {
    tenant_id: input.tenantId,
    plan_id: plan.id,
    plan_version: plan.version,
    period: { start: input.period.start, end: input.period.end, interval: plan.interval },
    metrics,
    costs: { base_fee: rated.base_fee, usage: rated.usage, total: rated.total, currency: plan.currency },
    alerts: input.alerts,
    alert_level: highestLevel(input.alerts.map((a) => a.level)),
    pending_events: input.pendingEvents,
    as_of: input.asOf,
  };
}
