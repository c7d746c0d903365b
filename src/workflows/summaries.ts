import type { AlertLevel } from '../domain/thresholds';
import type { Interval } from '../domain/plan';
import { invoiceId } from '../contracts/ids';

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
  /** Closed periods still in their grace: late events count there until it ends. */
  closing: Array<{ start: Instant; grace_ends_at: Instant }>;
}

/**
 * The current details (markdown) of a tenant run. Continue-as-new cannot carry a static summary
 * or details to the next run, so every run repeats them here, above the period's figures.
 */
export function tenantCurrentDetails(input: TenantDetailsInput): string {
  const meters = input.meters.map((m) => `${m.metric}: ${m.used}${m.limit ? ` / ${m.limit}` : ''}`);
  const closing = input.closing.map((c) => `closed period ${c.start}: late events until ${c.grace_ends_at}`);
  return [
    `**${tenantRunSummary(input.tenantId, input.tenantName)}**`,
    tenantRunDetails(input.plan, input.billingAnchor, input.timezone),
    `**Period** ${input.period.start} → ${input.period.end} (plan ${input.plan.id} v${input.plan.version})`,
    ...meters,
    `alert level: ${input.alertLevel}`,
    ...closing,
  ].join('\n\n');
}

/** Activity `restoreLedger`: a first run, or a run started again after one ended unexpectedly. */
export function restoreSummary(): string {
  return 'restore the ledger from PostgreSQL';
}

/** Activity `readEntitlements`: the tenant's limit overrides changed; the run reads what is stored. */
export function entitlementsSummary(): string {
  return 'read the tenant\'s entitlements';
}

/** Activity `readAlertRules`: a rule was created or deleted; the run reads those in force. */
export function alertRulesSummary(): string {
  return "read the tenant's alert rules";
}

/** Activity `recordPackDraws`: `draw from packs: pk_a 200, pk_b 150`. */
export function packDrawsSummary(periodStart: string, draws: ReadonlyArray<{ pack_id: string; units: string }>): string {
  return `draw from packs for ${periodStart}: ${draws.map((d) => `${d.pack_id} ${d.units}`).join(', ')}`;
}

/** Local activity `storeCloseKey`: a close that shared another's rollover keeps its key with that period. */
export function closeKeySummary(key: string, periodStart: string): string {
  return `store close key ${JSON.stringify(key)} with the period from ${periodStart}`;
}

/** Activity `claimUsage`: counts what waits in PostgreSQL (the count is in its result). */
export function claimSummary(): string {
  return 'count stored events';
}

/** Activity `consumeAuthorized`: `consume 10 tokens (authorize r1)`. */
export function consumeSummary(event: { id: string; metric: string; quantity: string }): string {
  return `consume ${event.quantity} ${event.metric} (authorize ${event.id})`;
}

/** Activity `rollOverPeriod`: closes the period, opens the next, writes the draft and starts its invoice. */
export function rolloverSummary(periodStart: Instant, closeAt: Instant, cancel: boolean): string {
  return cancel ? `cancel: close the final period ${periodStart} → ${closeAt}` : `roll over: close ${periodStart} → ${closeAt}, open the next period`;
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

/** The static summary of an alert's delivery workflow: `Alert acme: tokens 90%`. */
export function alertDeliverySummary(tenantId: string, subject: string, threshold: number): string {
  return `Alert ${tenantId}: ${alertSubjectLabel(subject)} ${threshold}%`;
}

/** Activity `deliverAlert`: `notify tokens 90%`, `notify cost limit 100%`. */
export function notifyAlertSummary(subject: string, threshold: number): string {
  return `notify ${alertSubjectLabel(subject)} ${threshold}%`;
}

/**
 * Local activity `deliverAlertInline` for a decision's first notified alert, which stores the
 * decision's alerts too: `record 2 alerts: tokens 80% (superseded), tokens 90%; notify tokens 90%`.
 */
export function recordAndNotifySummary(alerts: AlertSummaryItem[], notified: { subject: string; threshold: number }, latePeriodStart?: Instant): string {
  return `${recordAlertsSummary(alerts, latePeriodStart)}; ${notifyAlertSummary(notified.subject, notified.threshold)}`;
}

/** The tenant run's timer when the period's end comes first. */
export function periodEndTimerSummary(periodEnd: Instant): string {
  return `period end ${periodEnd}`;
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
    `Invoice ${invoiceId(input.tenant_id, input.period_start, input.version)} (a draft until it is finalized).`,
    `Late events count in the period until grace end ${input.grace_ends_at}; then the period is rated from its stored events and the invoice finalized (signal finalizeNow ends the wait early).`,
  ].join('\n\n');
}

/** The invoice's timer, and the tenant run's when a closed period's grace ends first: the real rest of the grace. */
export function graceEndTimerSummary(graceEndsAt: Instant): string {
  return `grace end ${graceEndsAt}`;
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

// ---- retention ------------------------------------------------------------------------------

/** The static summary of a retention run, started daily by the `retention-daily` schedule. */
export function retentionRunSummary(defaultRetentionDays: number): string {
  return `Purge raw events of invoiced periods past retention (default ${plural(defaultRetentionDays, 'day')})`;
}

/** One step of a retention run: an activity that purges for up to its time budget. */
export const PURGE_STEP_SUMMARY = 'purge a batch of expired raw events';
