import { dispatchEvent, type AttemptContext, type ChannelOutcome, type DispatchDeps, type WebhookEvent } from './dispatch';
import { presentInvoice } from '../invoices/present';
import { findInvoiceWithLines } from '../db/invoices';
import { findTenantWebhookUrl } from '../db/tenants';

/**
 * `invoice.finalized` and `invoice.voided` webhooks to the tenant's `webhook_url`. The event id is
 * derived from the invoice id and the type, so each invoice version is announced once per type.
 */

/** What the invoice workflow (finalized) or a rerun (voided) asks to announce. */
export interface InvoiceEventInput {
  tenant_id: string;
  invoice_id: string;
  type: 'invoice.finalized' | 'invoice.voided';
}

/** The event id of an invoice event: `ev_<invoice id>_finalized` or `ev_<invoice id>_voided`. */
export function invoiceEventId(invoiceId: string, type: InvoiceEventInput['type']): string {
  return `ev_${invoiceId}_${type === 'invoice.finalized' ? 'finalized' : 'voided'}`;
}

/**
 * Sends the invoice event to the tenant's webhook, at most once successfully. Without a
 * `webhook_url` there is nothing to send and nothing is recorded (invoices are read via the API).
 */
export async function deliverInvoiceEvent(deps: DispatchDeps, input: InvoiceEventInput, attempt: AttemptContext): Promise<ChannelOutcome[]> {
  const tenant = await findTenantWebhookUrl(deps.db, input.tenant_id);
  if (!tenant) throw new Error(`tenant ${input.tenant_id} not found`);
  if (!tenant.webhook_url) return [];
  const found = await findInvoiceWithLines(deps.db, input.invoice_id);
  if (!found || found.invoice.tenant_id !== input.tenant_id) throw new Error(`invoice ${input.invoice_id} not found`);
  const { invoice, lines } = found;

  const iso = (d: Date | null) => (d ? new Date(d).toISOString() : null);
  const happenedAt = input.type === 'invoice.finalized' ? invoice.finalized_at : invoice.voided_at;
  const id = invoiceEventId(invoice.id, input.type);
  // The receiver gets the invoice exactly as `GET /v1/invoices/{id}` shows it.
  const event: WebhookEvent = { id, type: input.type, created_at: iso(happenedAt) ?? new Date().toISOString(), data: presentInvoice(invoice, lines) };
  return dispatchEvent(deps, { id, type: input.type, tenant_id: input.tenant_id }, [{ channel: 'webhook', target: tenant.webhook_url, payload: event }], attempt);
}
