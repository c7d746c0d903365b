import { Router } from 'express';
import type { ApiContext } from '../context';
import { assertTenantAccess, principalOf, requireAdmin, tenantParam } from '../auth';
import { closePeriodBody } from '../schemas';
import { ApiError, notFound } from '../errors';
import { roundMoney } from '../../domain/decimal';
import { normalizeDecimal } from '../../db/usage';

/** Finance: closing periods and reading invoices. */
export function financeRouter(ctx: ApiContext): Router {
  const router = Router();

  router.post('/tenants/:id/close-period', requireAdmin, async (req, res) => {
    const tenantId = tenantParam(req);
    const body = closePeriodBody.parse(req.body ?? {});
    const tenant = await ctx.tenants.get(tenantId);
    if (!tenant) throw notFound(`tenant ${tenantId}`);
    if (tenant.status !== 'active') throw new ApiError(409, 'conflict', `tenant ${tenantId} is cancelled`);
    const result = await ctx.billing.closePeriod(tenantId, body.finalize === true);
    ctx.tenants.invalidate(tenantId);
    res.json(result);
  });

  router.get('/invoices/:invoiceId', async (req, res) => {
    const invoice = await ctx.db('invoices').where({ id: req.params.invoiceId }).first();
    const principal = principalOf(res);
    if (!invoice || (principal.kind === 'tenant' && principal.tenantId !== invoice.tenant_id)) {
      throw notFound(`invoice ${req.params.invoiceId}`);
    }
    const lines = await ctx.db('invoice_lines').where({ invoice_id: invoice.id }).orderBy('position');
    res.json(presentInvoice(invoice, lines));
  });

  router.get('/tenants/:id/invoices', async (req, res) => {
    const tenantId = tenantParam(req);
    assertTenantAccess(res, tenantId);
    const rows = await ctx.db('invoices').where({ tenant_id: tenantId }).orderBy([{ column: 'period_start', order: 'desc' }, { column: 'version', order: 'desc' }]).limit(100);
    const data = [];
    for (const row of rows) data.push(presentInvoice(row, await ctx.db('invoice_lines').where({ invoice_id: row.id }).orderBy('position')));
    res.json({ data, has_more: false, total_count: data.length });
  });

  return router;
}

/** The public shape of an invoice: money as decimal strings at the currency's minor unit. */
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
      metric: l.metric,
      description: l.description,
      quantity: Number(normalizeDecimal(l.quantity)),
      amount: roundMoney(l.amount, invoice.currency),
      ...(l.tiers ? { tiers: l.tiers } : {}),
    })),
    subtotal: roundMoney(invoice.subtotal, invoice.currency),
    total: roundMoney(invoice.total, invoice.currency),
    created_at: iso(invoice.created_at),
    finalized_at: iso(invoice.finalized_at),
    replaces: invoice.replaces ?? undefined,
    replaced_by: invoice.replaced_by ?? undefined,
  };
}
