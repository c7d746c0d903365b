import { findPlanVersion } from '../db/plans';
import { findAlertToDeliver, recordAlertChannels, type AlertRow, type AlertToDeliver } from '../db/alerts';
import { decimalToNumber } from '../domain/decimal';
import { BALANCE_DEPLETED, BALANCE_LOW, COST_SUBJECT } from '../contracts/ids';
import { dispatchEvent, DeliveryIncompleteError, type AttemptContext, type ChannelOutcome, type DeliveryPlan, type DispatchDeps, type WebhookEvent } from './dispatch';

/**
 * `alert.triggered`: who gets a notified alert, and what they get. The plan's thresholds go to
 * the tenant's own `email` and `webhook_url`; a tenant alert rule's threshold goes to that rule's
 * channel. A notification covers several thresholds when one batch jumped over them (BILLING.md),
 * so it goes to the channels of every threshold it covers. The alert id is the event id.
 */

/** A rule's channel as stored in `alert_rules.channel` (and as the API spells it). */
export type RuleChannel = { type: 'email'; to: string } | { type: 'webhook'; url: string };

/**
 * Delivers one notified alert through each of its channels, at most once successfully per
 * channel and target. After every attempt the alert's `channels` shows where each stands; when
 * the last attempt fails a channel, the alert's status becomes `failed`.
 */
export async function deliverAlertEvent(deps: DispatchDeps, alertId: string, attempt: AttemptContext): Promise<ChannelOutcome[]> {
  const { db } = deps;
  const found = await findAlertToDeliver(db, alertId);
  if (!found) throw new Error(`alert ${alertId} not recorded`);
  const { alert, tenant, covers, rules } = found;
  const threshold = Number(alert.threshold);
  const plan = found.plan ? await findPlanVersion(db, found.plan.id, found.plan.version) : undefined;

  if (alert.subject === BALANCE_LOW || alert.subject === BALANCE_DEPLETED) return deliverBalanceAlert(deps, alert, tenant, attempt);
  const event: WebhookEvent = {
    id: alert.id,
    type: 'alert.triggered',
    created_at: new Date(alert.fired_at).toISOString(),
    data: {
      id: alert.id,
      tenant_id: alert.tenant_id,
      kind: alert.subject === COST_SUBJECT ? 'cost' : 'meter',
      metric: alert.subject === COST_SUBJECT ? null : alert.subject,
      threshold,
      level: alert.level,
      used: decimalToNumber(alert.used),
      limit: decimalToNumber(alert.limit),
      covers,
      period_start: new Date(alert.period_start).toISOString(),
      fired_at: new Date(alert.fired_at).toISOString(),
      rule_ids: rules.map((r) => r.id),
    },
  };
  const email = alertEmail(alert, tenant, covers);

  const plans: DeliveryPlan[] = [];
  const byPlan = !plan || covers.some((t) => plan.alert_thresholds.includes(t));
  if (byPlan && tenant.email) plans.push({ channel: 'email', target: tenant.email, payload: email });
  if (byPlan && tenant.webhook_url) plans.push({ channel: 'webhook', target: tenant.webhook_url, payload: event });
  for (const rule of rules) {
    if (rule.channel.type === 'email') plans.push({ channel: 'email', target: rule.channel.to, payload: email });
    else plans.push({ channel: 'webhook', target: rule.channel.url, payload: event });
  }
  // Nowhere to send it: kept as a `recorded` delivery and logged, never dropped silently.
  if (plans.length === 0) plans.push({ channel: 'log', target: 'log', payload: event.data });

  try {
    const outcomes = await dispatchEvent(deps, { id: alert.id, type: 'alert.triggered', tenant_id: alert.tenant_id, webhook_secret: tenant.webhook_secret }, plans, attempt);
    await showOnAlert(deps, alert.id, outcomes);
    return outcomes;
  } catch (err) {
    if (err instanceof DeliveryIncompleteError) await showOnAlert(deps, alert.id, err.outcomes);
    throw err;
  }
}

/**
 * `balance.low` / `balance.depleted`: to the tenant's own email and webhook. `used` is the credit
 * available when it fired, `limit` the threshold it fell to (0 for depleted); the alert's
 * `threshold` column numbers the crossing (they re-arm after a grant).
 */
async function deliverBalanceAlert(
  deps: DispatchDeps,
  alert: AlertRow,
  tenant: AlertToDeliver['tenant'],
  attempt: AttemptContext,
): Promise<ChannelOutcome[]> {
  const type = alert.subject as typeof BALANCE_LOW | typeof BALANCE_DEPLETED;
  const event: WebhookEvent = {
    id: alert.id,
    type,
    created_at: new Date(alert.fired_at).toISOString(),
    data: {
      id: alert.id,
      tenant_id: alert.tenant_id,
      available: alert.used,
      threshold: alert.limit,
      crossing: Number(alert.threshold),
      fired_at: new Date(alert.fired_at).toISOString(),
    },
  };
  const words = type === BALANCE_LOW ? `is low: ${alert.used} available (threshold ${alert.limit})` : `is used up: ${alert.used} available`;
  const email = { subject: `[tally] ${tenant.name}: prepaid balance ${type === BALANCE_LOW ? 'low' : 'depleted'}`, text: `Prepaid balance of ${tenant.name} (${tenant.id}) ${words}.\nAlert id: ${alert.id}\n` };
  const plans: DeliveryPlan[] = [];
  if (tenant.email) plans.push({ channel: 'email', target: tenant.email, payload: email });
  if (tenant.webhook_url) plans.push({ channel: 'webhook', target: tenant.webhook_url, payload: event });
  if (plans.length === 0) plans.push({ channel: 'log', target: 'log', payload: event.data });
  try {
    const outcomes = await dispatchEvent(deps, { id: alert.id, type, tenant_id: alert.tenant_id, webhook_secret: tenant.webhook_secret }, plans, attempt);
    await showOnAlert(deps, alert.id, outcomes);
    return outcomes;
  } catch (err) {
    if (err instanceof DeliveryIncompleteError) await showOnAlert(deps, alert.id, err.outcomes);
    throw err;
  }
}

/**
 * Shows on the alert which channel types it went through, and makes it `failed` when a channel
 * was given up; per-target detail is in `GET …/deliveries`.
 */
async function showOnAlert(deps: DispatchDeps, alertId: string, outcomes: ChannelOutcome[]): Promise<void> {
  const channels = [...new Set(outcomes.map((o) => o.channel))];
  await recordAlertChannels(deps.db, alertId, channels, outcomes.some((o) => o.status === 'failed'));
}

/** The alert email: subject and a plain-text body naming metric, threshold, used and limit. */
function alertEmail(alert: AlertRow, tenant: { id: string; name: string }, covers: number[]): { subject: string; text: string } {
  const metric = alert.subject === COST_SUBJECT ? 'cost' : alert.subject;
  const threshold = Number(alert.threshold);
  const used = String(decimalToNumber(alert.used));
  const limit = String(decimalToNumber(alert.limit));
  const percent = Number(alert.limit) > 0 ? ((Number(alert.used) / Number(alert.limit)) * 100).toFixed(1) : 'n/a';
  return {
    subject: `[tally] ${tenant.name}: ${metric} reached ${threshold}% of its limit (${alert.level})`,
    text: [
      `Usage alert for ${tenant.name} (${tenant.id})`,
      '',
      `Metric: ${metric}`,
      `Threshold: ${threshold}% (${alert.level})`,
      `Used: ${used}`,
      `Limit: ${limit}`,
      `Percent: ${percent}%`,
      ...(covers.length > 1 ? [`Covers thresholds: ${covers.map((t) => `${t}%`).join(', ')}`] : []),
      `Period start: ${new Date(alert.period_start).toISOString()}`,
      `Fired at: ${new Date(alert.fired_at).toISOString()}`,
      `Alert id: ${alert.id}`,
      '',
    ].join('\n'),
  };
}
