import { log, proxyActivities, upsertSearchAttributes, workflowInfo } from '@temporalio/workflow';
import type * as activities from '../activities';
import type { InvoiceRerunInput, InvoiceRerunResult } from '../activities/invoicing';
import { SEARCH_ATTRIBUTES, invoiceSearchAttributes } from './search-attributes';
import { invoiceWebhookSummary, rerunInvoiceSummary } from './summaries';

const acts = proxyActivities<ReturnType<typeof activities.createActivities>>({
  startToCloseTimeout: '2 minutes',
  retry: { initialInterval: '500 milliseconds', backoffCoefficient: 2, maximumInterval: '30 seconds', nonRetryableErrorTypes: ['InvoiceRerunRefused'] },
});

/** Webhook deliveries retry on their own schedule; a receiver that stays down fails them for good. */
const webhookOptions = {
  startToCloseTimeout: '30 seconds',
  retry: { maximumAttempts: 8, initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '1 minute' },
} as const;

/**
 * Finance's rerun of one period's invoice (`POST /v1/invoices/{id}/rerun`), as its own workflow
 * `invoice-<tenant>-<stamp>-v<n+1>`: the id can exist once, so only one rerun of a version ever
 * runs, and ops find it next to the period's other invoice workflows. It recomputes the period
 * from the stored events, voids version n and finalizes n+1 in one activity (one transaction),
 * then announces both (`invoice.voided`, `invoice.finalized`). The result lists what changed.
 */
export async function invoiceRerun(input: InvoiceRerunInput): Promise<InvoiceRerunResult> {
  // Every invoice workflow lists under its tenant and period (`TenantId = "acme"`). The API may
  // start a rerun without them: then the rerun sets them itself, before anything else.
  if (workflowInfo().typedSearchAttributes.get(SEARCH_ATTRIBUTES.TenantId) === undefined) {
    upsertSearchAttributes(invoiceSearchAttributes(input.tenant_id, input.period_start));
  }
  const result = await acts.rerunInvoice.executeWithOptions({ summary: rerunInvoiceSummary(input) }, [input]);
  for (const [invoiceId, type] of [
    [result.replaced.invoice_id, 'invoice.voided'],
    [result.invoice_id, 'invoice.finalized'],
  ] as const) {
    try {
      await acts.notifyInvoiceEvent.executeWithOptions({ ...webhookOptions, summary: invoiceWebhookSummary(type) }, [
        { tenant_id: input.tenant_id, invoice_id: invoiceId, type },
      ]);
    } catch (err) {
      // The delivery row says `failed`; the invoices themselves are written either way.
      log.error(`${type} webhook failed for good`, { invoiceId, error: String(err) });
    }
  }
  return result;
}
