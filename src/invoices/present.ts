import { roundMoney } from '../domain/decimal';
import { normalizeDecimal } from '../db/usage';
import type { InvoiceLineChange } from './changes';
import { BASE_FEE_METRIC } from '../domain/rating';

/** What a line bills: the plan's base fee, or a meter's usage. */
export function lineKind(metric: string): 'base_fee' | 'usage' {
  return metric === BASE_FEE_METRIC ? 'base_fee' : 'usage';
}

/**
 * The public shape of an invoice, the same in the API, the PDF and `invoice.*` webhooks: money as
 * decimal strings at the currency's minor unit, quantities as numbers, times as ISO strings.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function presentInvoice(invoice: any, lines: any[]) {
  const iso = (d: Date | null) => (d ? new Date(d).toISOString() : null);
  return {
    id: invoice.id,
    number: invoice.number,
    tenant_id: invoice.tenant_id,
    status: invoice.status,
    version: invoice.version,
    period_start: iso(invoice.period_start),
    period_end: iso(invoice.period_end),
    plan_id: invoice.plan_id,
    plan_version: invoice.plan_version,
    currency: invoice.currency,
    lines: lines.map((l) => ({
      kind: l.kind ?? lineKind(l.metric),
      metric: l.metric,
      description: l.description,
      quantity: Number(normalizeDecimal(l.quantity)),
      quantity_decimal: normalizeDecimal(l.quantity),
      amount: roundMoney(l.amount, invoice.currency),
      ...(l.tiers ? { tiers: l.tiers } : {}),
      // Units drawn from add-on packs, which the quantity leaves out.
      ...(l.pack_draws ? { packs: l.pack_draws } : {}),
      // A dimensioned meter's line: the group it prices.
      ...(l.group_values ? { group: l.group_values } : {}),
    })),
    subtotal: roundMoney(invoice.subtotal, invoice.currency),
    total: roundMoney(invoice.total, invoice.currency),
    // Prepaid credit taken at finalization, and what is left to pay (drafts: none yet, the total).
    credits_applied: roundMoney(invoice.credits_applied ?? 0, invoice.currency),
    amount_due: roundMoney(invoice.amount_due ?? invoice.total, invoice.currency),
    created_at: iso(invoice.created_at),
    finalized_at: iso(invoice.finalized_at),
    replaces: invoice.replaces ?? undefined,
    replaced_by: invoice.replaced_by ?? undefined,
    // A rerun's audit trail: when a version was voided, why and by whom n+1 was made, and
    // per-line what changed from the version it replaces.
    ...(invoice.voided_at ? { voided_at: iso(invoice.voided_at) } : {}),
    ...(invoice.reason ? { reason: invoice.reason as string } : {}),
    ...(invoice.requested_by ? { requested_by: invoice.requested_by as string } : {}),
    ...(invoice.replaces && invoice.changes ? { changes: invoice.changes as InvoiceLineChange[] } : {}),
  };
}
