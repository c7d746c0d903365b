import type { AlertLevel } from '../domain/thresholds';
import type { Interval } from '../domain/plan';
import { invoiceId, tenantWorkflowId } from './messages';

/**
 * Every text the Temporal UI shows for tally's workflows: static summaries and details, current
 * details, and the summaries of activities and timers. Pure functions in one module, so the
 * workflows, the activity that starts invoice workflows, and the test that keeps
 * docs/operations.md true all build the same strings.
 */

/** An ISO-8601 instant, as periods carry them. */
type Instant = string;

/** `1 event`, `2 events`, `0 events`: a count with its noun in the right number. */
export function plural(count: number, noun: string, pluralNoun = `${noun}s`): string {
  return `${count} ${count === 1 ? noun : pluralNoun}`;
}

/** `daily`, `monthly`, `yearly`: how often a plan's periods recur. */
export function intervalAdverb(interval: Interval): string {
  return interval === 'day' ? 'daily' : `${interval}ly`;
}

/** The alert subject as people say it: a metric name, or `cost limit` for the plan's cost limit. */
export function alertSubjectLabel(subject: string): string {
  return subject === '$cost' ? 'cost limit' : subject;
}

// ---- tenant workflow ------------------------------------------------------------------------

/** The static summary of a tenant's first run: `Billing for Acme (acme)`, or `Billing for acme` without a name. */
export function tenantRunSummary(tenantId: string, tenantName?: string): string {
  return tenantName ? `Billing for ${tenantName} (${tenantId})` : `Billing for ${tenantId}`;
}

/** The static details of a tenant's first run: its plan and how its periods recur. */
export function tenantRunDetails(plan: { id: string; version: number; interval: Interval }, billingAnchor: string, timezone: string): string {
  return `Plan ${plan.id} v${plan.version}, ${intervalAdverb(plan.interval)} periods from ${billingAnchor} (${timezone}).`;
}

/** One meter's line in the current details. */
export interface MeterDetail {
  metric: string;
  used: string;
  limit?: number;
}

/** What the current details of a tenant run are made of. */
export interface TenantDetailsInput {
  tenantId: string;
  tenantName?: string;
  plan: { id: string; version: number; interval: Interval };
  billingAnchor: string;
  timezone: string;
  period: { start: Instant; end: Instant };
  meters: MeterDetail[];
  alertLevel: AlertLevel;
  /** Closed periods not sealed yet: late events count until their grace ends; they are sealed a little later. */
  closing: Array<{ start: Instant; grace_ends_at: Instant; seal_at: Instant }>;
}

/**
 * The current details (markdown) of a tenant run. Continue-as-new cannot carry a static summary
 * or details to the next run, so every run repeats them here, above the period's figures.
 */
export function tenantCurrentDetails(input: TenantDetailsInput): string {
  const meters = input.meters.map((m) => `${m.metric}: ${m.used}${m.limit ? ` / ${m.limit}` : ''}`);
  const closing = input.closing.map((c) => `closed period ${c.start}: late events until ${c.grace_ends_at}, sealed at ${c.seal_at}`);
  return [
    `**${tenantRunSummary(input.tenantId, input.tenantName)}**`,
    tenantRunDetails(input.plan, input.billingAnchor, input.timezone),
    `**Period** ${input.period.start} → ${input.period.end} (plan ${input.plan.id} v${input.plan.version})`,
    ...meters,
    `alert level: ${input.alertLevel}`,
    ...closing,
  ].join('\n\n');
}

/** Activity `recordUsage`: `count 1 event`, `count 3 events, 1 refused`. */
export function countEventsSummary(counted: number, refused = 0): string {
  return `count ${plural(counted, 'event')}${refused > 0 ? `, ${refused} refused` : ''}`;
}

/** An alert as the summaries name it. */
export interface AlertSummaryItem {
  subject: string;
  threshold: number;
  status: 'notified' | 'superseded';
}

/**
 * Activity `recordAlerts`: `record 1 alert: tokens 90%`, `record 2 alerts: tokens 80% (superseded),
 * tokens 90%`; for late events of a closed period, `… (late events, period <start>)`.
 */
export function recordAlertsSummary(alerts: AlertSummaryItem[], latePeriodStart?: Instant): string {
  const items = alerts.map((a) => `${alertSubjectLabel(a.subject)} ${a.threshold}%${a.status === 'superseded' ? ' (superseded)' : ''}`);
  const late = latePeriodStart ? ` (late events, period ${latePeriodStart})` : '';
  return `record ${plural(alerts.length, 'alert')}: ${items.join(', ')}${late}`;
}

/** Activity `deliverAlert`: `notify tokens 90%`, `notify cost limit 100%`. */
export function notifyAlertSummary(subject: string, threshold: number): string {
  return `notify ${alertSubjectLabel(subject)} ${threshold}%`;
}

/** Activity `recordPeriodClosed`. */
export function closePeriodSummary(period: { start: Instant; end: Instant }): string {
  return `close period ${period.start} → ${period.end}`;
}

/** Activity `startInvoiceWorkflow`. */
export function startInvoiceSummary(invoiceWorkflowId: string): string {
  return `start ${invoiceWorkflowId}`;
}

/** Activity `startPeriod`. */
export function openPeriodSummary(period: { start: Instant; end: Instant }): string {
  return `open period ${period.start} → ${period.end}`;
}

/** The timer of a `settledUsage` update: it answers once earlier events are counted, or after this long anyway. */
export function settledUsageTimerSummary(waitMs: number): string {
  return `settledUsage: until earlier events are counted (at most ${waitMs / 1000} s)`;
}

/** The tenant run's timer when the period's end comes first. */
export function periodEndTimerSummary(periodEnd: Instant): string {
  return `period end ${periodEnd}`;
}

/** The tenant run's timer when a closed period's seal comes first: its grace end plus the settle time. */
export function sealTimerSummary(closed: { start: Instant; grace_ends_at: Instant }, settleMs: number): string {
  return `seal period ${closed.start} (grace end ${closed.grace_ends_at} + ${settleMs / 1000} s)`;
}

// ---- invoice workflows ----------------------------------------------------------------------

/** What identifies a period's invoice workflow. */
interface InvoiceRunInput {
  tenant_id: string;
  period_start: Instant;
  period_end: Instant;
  grace_ends_at: Instant;
  version: number;
}

/** The static summary of a period's invoice workflow. */
export function invoiceRunSummary(input: InvoiceRunInput): string {
  return `Invoice v${input.version} for ${input.tenant_id}, period ${input.period_start} → ${input.period_end}`;
}

/** The static details of a period's invoice workflow: what it waits for, then what it does. */
export function invoiceRunDetails(input: InvoiceRunInput): string {
  return [
    `Invoice ${invoiceId(input.tenant_id, input.period_start, input.version)}.`,
    `Late events count until grace end ${input.grace_ends_at}; ${tenantWorkflowId(input.tenant_id)} then seals the period once every acknowledged event is counted.`,
    'Then the period is rated from its stored events and the invoice finalized (signal finalizeNow ends the wait early).',
  ].join('\n\n');
}

/** Local activity `draftInvoice`: while the grace runs late events still change the draft. */
export function draftInvoiceSummary(graceEndsAt: Instant, graceLeftMs: number): string {
  return graceLeftMs > 0 ? `draft invoice until grace end ${graceEndsAt}` : 'draft invoice';
}

/** The invoice's first timer: the real rest of the grace. */
export function graceEndTimerSummary(graceEndsAt: Instant): string {
  return `grace end ${graceEndsAt}`;
}

/**
 * The invoice's second timer: it waits for `finalizeNow` from the tenant's workflow, which seals
 * the period once every acknowledged event is counted; the timer itself is the fallback.
 */
export function sealWaitTimerSummary(tenantWorkflowId: string, fallbackAt: Instant): string {
  return `seal by ${tenantWorkflowId}, else finalize at ${fallbackAt}`;
}

/** Local activity `finalizeInvoice`. */
export const FINALIZE_INVOICE_SUMMARY = 'rate stored events and finalize';

/** Activity `notifyInvoiceEvent`. */
export function invoiceWebhookSummary(type: 'invoice.finalized' | 'invoice.voided'): string {
  return `webhook ${type}`;
}

/** Activity `rerunInvoice`. */
export function rerunInvoiceSummary(input: { version: number; plan: { id: string; version: number } }): string {
  return `void v${input.version - 1}, rate stored events with plan ${input.plan.id} v${input.plan.version}, finalize v${input.version}`;
}
