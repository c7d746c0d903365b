import type { Client } from '@temporalio/client';
import type { Db } from '../db/knex';
import type { Logger } from '../logger';
import { writePeriodInvoice } from '../db/invoices';
import { insertAlerts } from '../db/alerts';
import { findTenantWebhookUrl } from '../db/tenants';
import type { Notifier } from '../notifications/notifier';
import { deliverAlertEvent } from '../notifications/alerts';
import { deliverInvoiceEvent, type InvoiceEventInput } from '../notifications/invoices';
import { currentAttempt, deliveryFailure } from '../notifications/activity-attempts';
import { DeliveryIncompleteError, InlineAttemptDeclined, type ChannelOutcome } from '../notifications/dispatch';
import { createInvoicingActivities } from './invoicing';
import { createLedgerActivities } from './ledger';
import { createRetentionActivities } from './retention';
import type { DeliverAlertInlineInput, DeliverAlertInput, InlineDeliveryOutcome, InvoiceRef, InvoiceSummary, RecordAlertsInput } from './types';

/** What activities need from the outside world; tests pass real ones pointed at test servers. */
export interface ActivityDeps {
  db: Db;
  notifier: Notifier;
  logger: Logger;
  /** Starts invoice workflows (they are not children of any tenant run). */
  temporal: Client;
}

/**
 * The billing activities: every side effect of the workflows, each idempotent so Temporal can
 * retry it freely (unique keys in PostgreSQL, deterministic ids from the workflow).
 */
export function createActivities({ db, notifier, logger, temporal }: ActivityDeps) {
  return {
    ...createInvoicingActivities({ db, logger }),
    ...createLedgerActivities({ db, logger, temporal }),
    ...createRetentionActivities({ db, logger }),
    /** Records fired and superseded alerts under their unique (tenant, period, subject, threshold). */
    async recordAlerts(input: RecordAlertsInput): Promise<void> {
      await insertAlerts(db, input.tenant_id, input.period_start, input.alerts);
    },

    /**
     * Sends one notified alert through its channels (the tenant's email and webhook for the plan's
     * thresholds, a rule's own channel for its threshold), at most once successfully per channel
     * and target. Fails while a channel is pending, so Temporal retries with back-off; the last
     * attempt marks what still fails as `failed`.
     */
    async deliverAlert(input: DeliverAlertInput): Promise<ChannelOutcome[]> {
      if (input.record) await insertAlerts(db, input.tenant_id, input.record.period_start, [input.record.alert]);
      try {
        return await deliverAlertEvent({ db, notifier, logger }, input.alert_id, currentAttempt(notifier.maxAttempts, { earlier: input.earlier_attempts }));
      } catch (err) {
        throw deliveryFailure(err);
      }
    },

    /**
     * The first attempt at an alert's delivery, run by the tenant's run as a local activity, so a
     * receiver that answers at once gets its alert without a delivery workflow's round trips
     * through the server. Webhooks wait at most `send_budget_ms`; what this attempt does not
     * complete it hands on to the delivery workflow, which goes on from the attempts made here.
     */
    async deliverAlertInline(input: DeliverAlertInlineInput): Promise<InlineDeliveryOutcome> {
      if (input.records) await insertAlerts(db, input.tenant_id, input.records.period_start, input.records.alerts);
      if (input.record) await insertAlerts(db, input.tenant_id, input.record.period_start, [input.record.alert]);
      const attempt = { ...currentAttempt(notifier.maxAttempts, { allowed: input.attempts_allowed }), inlineSendBudgetMs: input.send_budget_ms };
      try {
        await deliverAlertEvent({ db, notifier, logger }, input.alert_id, attempt);
        return { outcome: 'delivered' };
      } catch (err) {
        if (err instanceof InlineAttemptDeclined) return { outcome: 'handed_on', attempts: 0 };
        if (err instanceof DeliveryIncompleteError) return err.final ? { outcome: 'failed' } : { outcome: 'handed_on', attempts: 1 };
        throw err;
      }
    },

    /**
     * Sends `invoice.finalized` (after finalization) or `invoice.voided` (when a rerun voids an
     * invoice) to the tenant's webhook, at most once successfully per invoice and type.
     */
    async notifyInvoiceEvent(input: InvoiceEventInput): Promise<ChannelOutcome[]> {
      try {
        return await deliverInvoiceEvent({ db, notifier, logger }, input, currentAttempt(notifier.maxAttempts));
      } catch (err) {
        throw deliveryFailure(err);
      }
    },

    /** Rates the period from its stored events and finalizes its invoice, exactly once. */
    async finalizeInvoice(ref: InvoiceRef): Promise<InvoiceSummary> {
      const summary = await writePeriodInvoice(db, ref, true);
      const tenant = await findTenantWebhookUrl(db, ref.tenant_id);
      summary.webhook = Boolean(tenant?.webhook_url);
      logger.info({ tenant_id: ref.tenant_id, invoice: summary }, 'invoice finalized');
      return summary;
    },
  };
}

/** The activity functions as the worker registers them. */
export type BillingActivities = ReturnType<typeof createActivities>;
