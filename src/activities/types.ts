import type { UsageEventInput } from '../workflows/messages';
import type { Period } from '../domain/periods';
import type { PlanVersion } from '../domain/plan';
import type { AlertLevel } from '../domain/thresholds';

/**
 * The inputs and outputs of every activity, in one place: the workflow imports these as types
 * only, so it never pulls I/O code into its deterministic sandbox.
 */

/** An event the workflow decided to count, tagged with the period it belongs to. */
export interface CountableEvent extends UsageEventInput {
  period_start: string;
  received_at: string;
}

/** An event the workflow could not count (late, unknown metric): kept, never dropped silently. */
export interface RefusedEvent {
  event: UsageEventInput;
  received_at: string;
  reason: string;
}

/** One chunk of usage handed from the workflow to PostgreSQL. */
export interface RecordUsageInput {
  tenant_id: string;
  /** Deterministic per chunk: a retried activity tags the same rows and returns the same answer. */
  chunk_id: string;
  events: CountableEvent[];
  refused: RefusedEvent[];
}

/** Which of the chunk's events were not newly counted; every other event was counted now. */
export interface RecordUsageResult {
  /** Already stored by an earlier chunk (a resent event id): never counted twice. */
  duplicates: string[];
  /** Not stored because their period was invoiced while they were in flight. */
  refused: Array<{ id: string; reason: string }>;
}

/** An alert the workflow decided to fire (notified) or to record as superseded. */
export interface AlertRecord {
  id: string;
  subject: string;
  threshold: number;
  level: Exclude<AlertLevel, 'none'>;
  status: 'notified' | 'superseded';
  used: string;
  limit: string;
  covers: number[];
  fired_at: string;
  rule_id?: string;
}

/** Alerts decided by one batch of usage. */
export interface RecordAlertsInput {
  tenant_id: string;
  period_start: string;
  alerts: AlertRecord[];
}

/** Which alert to deliver, through which channels (the notifier looks up the targets). */
export interface DeliverAlertInput {
  tenant_id: string;
  alert_id: string;
  /**
   * The alert itself, stored (idempotently) before it is sent: the delivery then need not wait
   * for `recordAlerts` to complete first, which saves the alert a round trip through the server.
   */
  record?: { period_start: string; alert: AlertRecord };
}

/** How a delivery attempt ended, per channel. */
export interface DeliveryOutcome {
  channel: string;
  target: string;
  status: 'delivered' | 'recorded' | 'skipped';
}

/** The period that just ended, with its counters, so `GET /periods` can show it. */
export interface RecordPeriodClosedInput {
  tenant_id: string;
  period: Period;
  counters: Record<string, string>;
  grace_ends_at: string;
}

/** The next period to open; the activity reads the tenant's plan as it stands now. */
export interface StartPeriodInput {
  tenant_id: string;
  period: Period;
}

/** The plan version the new period runs on (a plan change takes effect here). */
export interface StartPeriodResult {
  plan: PlanVersion;
  alert_rules: AlertRuleInput[];
  /** The tenant's name as it stands now: the next run repeats it in its current details. */
  tenant_name?: string;
}

/** A tenant's own alert rule, applied like the plan's thresholds. */
export interface AlertRuleInput {
  id: string;
  subject: string;
  threshold: number;
}

/** Identifies one version of one period's invoice. */
export interface InvoiceRef {
  tenant_id: string;
  period_start: string;
  version: number;
}

/** What the invoice workflow reports back (and the UI shows as its result). */
export interface InvoiceSummary {
  invoice_id: string;
  number: number | null;
  status: 'draft' | 'finalized' | 'void';
  total: string;
  currency: string;
  lines: number;
  /** The tenant has a webhook: the invoice workflow sends `invoice.finalized` only then. */
  webhook?: boolean;
}

/** Starts a period's invoice workflow; a second start of the same id is a no-op. */
export interface StartInvoiceWorkflowInput {
  workflow_id: string;
  input: {
    tenant_id: string;
    period_start: string;
    period_end: string;
    grace_ends_at: string;
    version: number;
  };
  /**
   * Start it with the tenant's search attributes (`TenantId`, `BillingPeriodStart`). Off, like
   * the tenant workflow's own, on servers without them registered (the time-skipping test server).
   */
  search_attributes?: boolean;
}
