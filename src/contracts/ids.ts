import { formatPeriodStamp } from '../domain/periods';

/**
 * Every id tally derives, in one place: the API, the workflows, the activities and the
 * repositories all name a tenant's workflow, invoice or alert the same way. Ids are
 * deterministic from what they identify, so a retried step can never create a second one.
 */

/** The tenant's billing workflow id: ops search for it in the Temporal UI. */
export function tenantWorkflowId(tenantId: string): string {
  return `billing-${tenantId}`;
}

/** One invoice workflow per period and version: `invoice-<tenant>-<YYYYMMDDTHHmmssZ>-v<n>`. */
export function invoiceWorkflowId(tenantId: string, periodStart: string, version: number): string {
  return `invoice-${tenantId}-${formatPeriodStamp(periodStart)}-v${version}`;
}

/** Invoice ids are deterministic from (tenant, period start, version): a retry cannot make a second one. */
export function invoiceId(tenantId: string, periodStart: string, version: number): string {
  return `in_${tenantId}_${formatPeriodStamp(periodStart)}_v${version}`;
}

/** The alert subject of a plan's cost limit; `$` keeps it apart from any metric name. */
export const COST_SUBJECT = '$cost';

/** Alert ids are deterministic from their unique key, so a retried activity finds the same row. */
export function alertId(tenantId: string, periodStart: string, subject: string, threshold: number): string {
  // `cost-limit` cannot collide with a metric: metric names have no hyphen.
  const name = subject === COST_SUBJECT ? 'cost-limit' : subject;
  return `al_${tenantId}_${formatPeriodStamp(periodStart)}_${name}_${threshold}`;
}

/** The subjects of balance alerts: `$`-free, dotted, so they never collide with a metric or the cost subject. */
export const BALANCE_LOW = 'balance.low';
export const BALANCE_DEPLETED = 'balance.depleted';

/** The n-th crossing of a balance alert (they re-arm, so each crossing is its own alert). */
export function balanceAlertId(tenantId: string, subject: typeof BALANCE_LOW | typeof BALANCE_DEPLETED, crossing: number): string {
  return `al_${tenantId}_${subject.replace('.', '-')}_${crossing}`;
}

/** One notified alert's delivery workflow: at most one per alert, ever. */
export function alertDeliveryWorkflowId(alertId: string): string {
  return `alert-${alertId}`;
}
