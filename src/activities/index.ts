import { WorkflowExecutionAlreadyStartedError, WorkflowIdConflictPolicy, WorkflowIdReusePolicy, type Client } from '@temporalio/client';
import { activityInfo } from '@temporalio/activity';
import type { Db } from '../db/knex';
import type { Logger } from '../logger';
import { findPlanVersion } from '../db/plans';
import { insertRefusedEvents, insertUsageChunk } from '../db/usage';
import { writePeriodInvoice } from '../db/invoices';
import { insertAlerts } from '../db/alerts';
import type { Notifier } from './notifier';
import { deliverAlertEvent } from '../notifications/alerts';
import { deliverInvoiceEvent, type InvoiceEventInput } from '../notifications/invoices';
import { currentAttempt, deliveryFailure } from '../notifications/activity-attempts';
import type { ChannelOutcome } from '../notifications/dispatch';
import { createInvoicingActivities } from './invoicing';
import { invoiceRunDetails, invoiceRunSummary } from '../workflows/summaries';
import { invoiceSearchAttributes } from '../workflows/search-attributes';
import type {
  DeliverAlertInput,
  InvoiceRef,
  InvoiceSummary,
  RecordAlertsInput,
  RecordPeriodClosedInput,
  RecordUsageInput,
  RecordUsageResult,
  StartPeriodInput,
  StartPeriodResult,
  StartInvoiceWorkflowInput,
} from './types';

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
    /** Starts the invoice workflow of a closed period, idempotently (same id: the running one). */
    async startInvoiceWorkflow(input: StartInvoiceWorkflowInput): Promise<void> {
      try {
        await temporal.workflow.start('periodInvoice', {
          workflowId: input.workflow_id,
          taskQueue: activityInfo().taskQueue,
          args: [input.input],
          workflowIdConflictPolicy: WorkflowIdConflictPolicy.USE_EXISTING,
          workflowIdReusePolicy: WorkflowIdReusePolicy.REJECT_DUPLICATE,
          staticSummary: invoiceRunSummary(input.input),
          staticDetails: invoiceRunDetails(input.input),
          ...(input.search_attributes === false
            ? {}
            : { typedSearchAttributes: invoiceSearchAttributes(input.input.tenant_id, input.input.period_start) }),
        });
      } catch (err) {
        if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err; // already ran: nothing to do
      }
    },

    /** Stores a chunk of usage exactly once and says which events were not newly counted. */
    async recordUsage(input: RecordUsageInput): Promise<RecordUsageResult> {
      return db.transaction(async (trx) => {
        await insertRefusedEvents(trx, input.tenant_id, input.refused);
        // Late events may only land in a period that is not invoiced yet; the row lock orders
        // this against the invoice's finalization.
        const otherPeriods = [...new Set(input.events.map((e) => e.period_start))];
        const closedPeriods = new Set<string>();
        for (const start of otherPeriods) {
          const row = await trx('periods')
            .where({ tenant_id: input.tenant_id, start })
            .forShare()
            .first<{ status: string } | undefined>('status');
          if (row?.status === 'invoiced') closedPeriods.add(start);
        }
        const countable = input.events.filter((e) => !closedPeriods.has(e.period_start));
        const lateRefused = input.events.filter((e) => closedPeriods.has(e.period_start));
        await insertRefusedEvents(
          trx,
          input.tenant_id,
          lateRefused.map((e) => ({ event: e, received_at: e.received_at, reason: 'period_invoiced' })),
        );
        const counted = await insertUsageChunk(trx, input.tenant_id, input.chunk_id, countable);
        const duplicates = countable.filter((e) => !counted.has(e.id)).map((e) => e.id);
        if (duplicates.length > 0) logger.debug({ tenant_id: input.tenant_id, duplicates: duplicates.length }, 'duplicate events ignored');
        return { duplicates, refused: lateRefused.map((e) => ({ id: e.id, reason: 'period_invoiced' })) };
      });
    },

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
        return await deliverAlertEvent({ db, notifier, logger }, input.alert_id, currentAttempt(notifier.maxAttempts));
      } catch (err) {
        throw deliveryFailure(err);
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

    /** Marks the period closed at its real end (early on a finance close) with its counters. */
    async recordPeriodClosed(input: RecordPeriodClosedInput): Promise<void> {
      await db('periods')
        .where({ tenant_id: input.tenant_id, start: input.period.start })
        .whereNot({ status: 'invoiced' })
        .update({
          end: input.period.end,
          status: 'closed',
          counters: JSON.stringify(input.counters),
          grace_ends_at: input.grace_ends_at,
          closed_at: new Date(),
        });
    },

    /** Opens the next period on the tenant's plan as it stands now (plan changes apply here). */
    async startPeriod(input: StartPeriodInput): Promise<StartPeriodResult> {
      const tenant = await db('tenants').where({ id: input.tenant_id }).first<{ plan_id: string; name: string } | undefined>('plan_id', 'name');
      if (!tenant) throw new Error(`tenant ${input.tenant_id} not found`);
      const latest = await findPlanVersion(db, tenant.plan_id);
      if (!latest) throw new Error(`plan ${tenant.plan_id} not found`);
      await db('periods')
        .insert({
          tenant_id: input.tenant_id,
          start: input.period.start,
          end: input.period.end,
          plan_id: latest.id,
          plan_version: latest.version,
          status: 'open',
        })
        .onConflict(['tenant_id', 'start'])
        .ignore();
      // A retried attempt keeps the version the first attempt stored.
      const row = await db('periods')
        .where({ tenant_id: input.tenant_id, start: input.period.start })
        .first<{ plan_id: string; plan_version: number }>('plan_id', 'plan_version');
      const plan = (await findPlanVersion(db, row.plan_id, row.plan_version))!;
      const rules = await db('alert_rules')
        .where({ tenant_id: input.tenant_id })
        .whereNull('deleted_at')
        .select<Array<{ id: string; metric: string | null; threshold: string }>>('id', 'metric', 'threshold');
      return {
        plan,
        alert_rules: rules.map((r) => ({ id: r.id, subject: r.metric ?? '$cost', threshold: Number(r.threshold) })),
        tenant_name: tenant.name,
      };
    },

    /** Writes (or refreshes) the draft invoice of a period in grace. */
    async draftInvoice(ref: InvoiceRef): Promise<InvoiceSummary> {
      return writePeriodInvoice(db, ref, false);
    },

    /** Rates the period from its stored events and finalizes its invoice, exactly once. */
    async finalizeInvoice(ref: InvoiceRef): Promise<InvoiceSummary> {
      const summary = await writePeriodInvoice(db, ref, true);
      const tenant = await db('tenants').where({ id: ref.tenant_id }).first<{ webhook_url: string | null } | undefined>('webhook_url');
      summary.webhook = Boolean(tenant?.webhook_url);
      logger.info({ tenant_id: ref.tenant_id, invoice: summary }, 'invoice finalized');
      return summary;
    },
  };
}

/** The activity functions as the worker registers them. */
export type BillingActivities = ReturnType<typeof createActivities>;
