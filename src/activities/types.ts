import type { AlertLevel } from '../domain/thresholds';

/**
 * The inputs and outputs of every activity, in one place: the workflow imports these as types
 * only, so it never pulls I/O code into its deterministic sandbox.
 */

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

export type { AlertRuleInput } from '../contracts/ledger';

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
