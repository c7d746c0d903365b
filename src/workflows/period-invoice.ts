import { condition, log, proxyActivities, proxyLocalActivities, setHandler } from '@temporalio/workflow';
import type * as activities from '../activities';
import type { InvoiceSummary } from '../activities/types';
import { finalizeInvoiceSignal } from './messages';
import { FINALIZE_INVOICE_SUMMARY, graceEndTimerSummary, invoiceWebhookSummary } from './summaries';

/** One closed period's invoice (version n), waiting out the grace for late events. */
export interface PeriodInvoiceInput {
  tenant_id: string;
  period_start: string;
  period_end: string;
  grace_ends_at: string;
  version: number;
}

/** The webhook goes to the outside world and retries for minutes: a regular activity. */
const acts = proxyActivities<ReturnType<typeof activities.createActivities>>({
  startToCloseTimeout: '2 minutes',
  retry: { initialInterval: '500 milliseconds', backoffCoefficient: 2, maximumInterval: '30 seconds' },
});

/** Rating and writing the invoice is one short transaction: a local activity (no server round trip). */
const local = proxyLocalActivities<ReturnType<typeof activities.createActivities>>({
  startToCloseTimeout: '2 minutes',
  localRetryThreshold: '10 seconds',
  retry: { initialInterval: '500 milliseconds', backoffCoefficient: 2, maximumInterval: '30 seconds' },
});

/**
 * Turns a closed period into its invoice. The rollover wrote the draft; late events are accepted
 * into the period until its grace ends (PostgreSQL judges them under the tenant's ledger lock),
 * so the invoice waits out exactly the rest of the grace, then rates the stored events and
 * finalizes once, under the same lock, with a deterministic id. A worker down past the grace
 * end delays the finalization and loses nothing: the period still refuses events from then on.
 */
export async function periodInvoice(input: PeriodInvoiceInput): Promise<InvoiceSummary> {
  let finalizeNow = false;
  setHandler(
    finalizeInvoiceSignal,
    () => {
      finalizeNow = true;
    },
    { description: 'Finalize now instead of at the grace end; late events sent after it are refused as late.' },
  );
  const ref = { tenant_id: input.tenant_id, period_start: input.period_start, version: input.version };
  const graceLeftMs = Date.parse(input.grace_ends_at) - Date.now();
  if (graceLeftMs > 0) await condition(() => finalizeNow, graceLeftMs, { summary: graceEndTimerSummary(input.grace_ends_at) });
  const summary = await local.finalizeInvoice.executeWithOptions({ summary: FINALIZE_INVOICE_SUMMARY }, [ref]);
  if (summary.status === 'finalized' && summary.webhook) {
    try {
      await acts.notifyInvoiceEvent.executeWithOptions(
        {
          summary: invoiceWebhookSummary('invoice.finalized'),
          startToCloseTimeout: '30 seconds',
          retry: { maximumAttempts: 8, initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '1 minute' },
        },
        [{ tenant_id: input.tenant_id, invoice_id: summary.invoice_id, type: 'invoice.finalized' }],
      );
    } catch (err) {
      // The delivery row says `failed`; the invoice itself is final either way.
      log.error('invoice.finalized webhook failed for good', { invoiceId: summary.invoice_id, error: String(err) });
    }
  }
  return summary;
}
