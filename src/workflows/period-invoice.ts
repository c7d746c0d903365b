import { condition, log, patched, proxyActivities, proxyLocalActivities, setHandler } from '@temporalio/workflow';
import type * as activities from '../activities';
import type { InvoiceSummary } from '../activities/types';
import { finalizeInvoiceSignal, tenantWorkflowId } from './messages';
import {
  FINALIZE_INVOICE_SUMMARY,
  draftInvoiceSummary,
  graceEndTimerSummary,
  invoiceWebhookSummary,
  sealWaitTimerSummary,
} from './summaries';

/** One closed period's invoice (version n), waiting out the grace for late events. */
export interface PeriodInvoiceInput {
  tenant_id: string;
  period_start: string;
  period_end: string;
  grace_ends_at: string;
  version: number;
}

/**
 * The tenant workflow seals the period (signal `finalizeNow`) once every acknowledged event for
 * it has been counted. Should that signal never come (the tenant workflow was terminated by hand),
 * the invoice finalizes this long after the grace anyway.
 */
const UNSEALED_FALLBACK_MS = 60 * 60_000;

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
  let sealed = false;
  setHandler(
    finalizeInvoiceSignal,
    () => {
      sealed = true;
    },
    { description: 'Seals the period: finalize now instead of waiting (the tenant workflow sends it once every late event is counted).' },
  );
  const ref = { tenant_id: input.tenant_id, period_start: input.period_start, version: input.version };
  const sealer = tenantWorkflowId(input.tenant_id);

  const graceLeftMs = Math.max(Date.parse(input.grace_ends_at) - Date.now(), 0);
  await local.draftInvoice.executeWithOptions({ summary: draftInvoiceSummary(input.grace_ends_at, graceLeftMs) }, [ref]);
  let sealedInTime: boolean;
  if (patched('invoice-grace-then-seal-timers')) {
    // Two timers, each named after what it waits for and lasting what it really lasts: the rest
    // of the grace, then the seal from the tenant workflow with a fallback an hour later.
    const left = Math.max(Date.parse(input.grace_ends_at) - Date.now(), 0);
    if (left > 0) await condition(() => sealed, left, { summary: graceEndTimerSummary(input.grace_ends_at) });
    const fallbackAt = new Date(Date.now() + UNSEALED_FALLBACK_MS).toISOString();
    sealedInTime = sealed || (await condition(() => sealed, UNSEALED_FALLBACK_MS, { summary: sealWaitTimerSummary(sealer, fallbackAt) }));
  } else {
    const waitMs = Math.max(Date.parse(input.grace_ends_at) - Date.now(), 0) + UNSEALED_FALLBACK_MS;
    const fallbackAt = new Date(Date.now() + waitMs).toISOString();
    sealedInTime = await condition(() => sealed, waitMs, { summary: sealWaitTimerSummary(sealer, fallbackAt) });
  }
  if (!sealedInTime) log.warn('period never sealed by its tenant workflow: finalizing on the fallback timer', { ...ref });
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
