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
  /**
   * Attempts made before this activity's own (the first, made inline by the tenant's run): they
   * count toward the same budget, so the delivery workflow retries `8 - earlier_attempts` times.
   */
  earlier_attempts?: number;
}

/**
 * The first attempt at an alert's delivery, made by the tenant's run itself as a local activity
 * (no delivery workflow unless it is needed): each send is bounded by `send_budget_ms`, and an
 * alert with an email channel is left whole to the delivery workflow.
 */
export interface DeliverAlertInlineInput extends DeliverAlertInput {
  /** A decision's alerts (this one among them), stored (idempotently) before the attempt, in place of a `recordAlerts` of their own. */
  records?: { period_start: string; alerts: AlertRecord[] };
  send_budget_ms: number;
  /** The whole delivery's attempt budget (the delivery workflow's retries included). */
  attempts_allowed: number;
}

/**
 * How the inline attempt ended: `delivered` (or recorded) on every channel; `failed` for good (it
 * was the last attempt allowed); or `handed_on` to the delivery workflow, after `attempts` sends.
 */
export type InlineDeliveryOutcome = { outcome: 'delivered' | 'failed' } | { outcome: 'handed_on'; attempts: number };

/** How a delivery attempt ended, per channel. */
export interface DeliveryOutcome {
  channel: string;
  target: string;
  status: 'delivered' | 'recorded' | 'skipped';
}

export type { AlertRuleInput } from '../contracts/ledger';

export type { InvoiceRef, InvoiceSummary } from '../contracts/invoices';
