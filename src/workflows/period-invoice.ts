import { condition, log, patched, proxyActivities, proxyLocalActivities, setHandler } from '@temporalio/workflow';
import type * as activities from '../activities';
import type { InvoiceSummary } from '../activities/types';
import { finalizeInvoiceSignal } from './messages';

/** One closed period's invoice (version n), waiting out the grace for late events. */
export interface PeriodInvoiceInput {
  tenant_id: string;
  period_start: string;
  period_end: string;
  grace_ends_at: string;
  version: number;
  /** No grace to wait for (finance finalized at close, or the plan has none). */
  finalize_now?: boolean;
}

/** In-flight late events get this long after the grace ends to land before the invoice is final. */
const SETTLE_MS = 10_000;

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
 * Turns a closed period into its invoice: a draft during grace (late events still count in
 * their period), then rated from the stored events and finalized once, with a deterministic id.
 */
export async function periodInvoice(input: PeriodInvoiceInput): Promise<InvoiceSummary> {
  let finalizeNow = input.finalize_now === true;
  setHandler(finalizeInvoiceSignal, () => {
    finalizeNow = true;
  });
  const ref = { tenant_id: input.tenant_id, period_start: input.period_start, version: input.version };

  const waitMs = Date.parse(input.grace_ends_at) - Date.now();
  if (!finalizeNow && waitMs > 0) {
    await local.draftInvoice.executeWithOptions({ summary: 'draft invoice during grace' }, [ref]);
    await condition(() => finalizeNow, waitMs + SETTLE_MS, { summary: 'grace period for late events' });
  }
  const summary = await local.finalizeInvoice.executeWithOptions({ summary: 'rate stored events and finalize' }, [ref]);
  // `patched`: runs recorded before invoice webhooks existed replay without this activity.
  if (summary.status === 'finalized' && summary.webhook && patched('invoice-finalized-webhook')) {
    try {
      await acts.notifyInvoiceEvent.executeWithOptions(
        {
          summary: 'webhook invoice.finalized',
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
