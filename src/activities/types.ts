import type { AlertRecord } from '../contracts/ledger';

/**
 * The inputs and outputs of every activity, in one place: the workflow imports these as types
 * only, so it never pulls I/O code into its deterministic sandbox.
 */

export type { AlertRecord } from '../contracts/ledger';

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

export type { InvoiceRef, InvoiceSummary } from '../contracts/invoices';
