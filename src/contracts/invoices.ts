/** The invoice shapes the invoice workflows, their activities and the invoice repository share. Types only. */

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
