import { Router } from 'express';
import { z } from 'zod';
import type { ApiContext } from '../context';
import { assertTenantAccess, principalOf, requireAdmin, tenantParam } from '../auth';
import { closePeriodBody, noQuery, resourceId } from '../schemas';
import { ApiError, notFound } from '../errors';
import { findTenant } from '../../db/tenants';
import { paginate, paginationQuery, parseListQuery } from '../pagination';
import { presentInvoice } from '../../invoices/present';
import { operation, tenantIdParam } from '../operation';
import { closedPeriod, invoice as invoiceResponse, pageOf } from '../responses';
import { idempotencyKeyOf, idempotencyKeySchema } from '../idempotency';
import { closeByIdempotencyKey } from '../../db/rollover';
import { invoiceWorkflowId } from '../../contracts/ids';

/** `GET /v1/tenants/{id}/invoices`: pagination only. */
export const listInvoicesQuery = paginationQuery.strict();

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type InvoiceRow = { id: string } & Record<string, any>;
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type LineRow = { invoice_id: string } & Record<string, any>;

/** Finance: closing periods and reading invoices. */
export function financeRouter(ctx: ApiContext): Router {
  const router = Router();

  router.post(
    '/tenants/:id/close-period',
    operation({
      operationId: 'closePeriod',
      tag: 'Finance',
      summary: 'Close the current period now and invoice it',
      description:
        'The period ends at the instant the close is made; events stamped at or after it belong to the next period. With an `Idempotency-Key`, a retry (after a timeout, say) answers the close that key made instead of closing again.',
      params: { id: tenantIdParam },
      query: noQuery,
      headers: z.object({ 'Idempotency-Key': idempotencyKeySchema.optional() }),
      body: closePeriodBody,
      bodyOptional: true,
      responses: { 200: { description: 'the closed period, its invoice id and the new current period', schema: closedPeriod } },
      problems: { 409: 'the tenant is cancelled (`conflict`)' },
    }),
    requireAdmin,
    async (req, res) => {
      const tenantId = tenantParam(req);
      parseListQuery(noQuery, req);
      const body = closePeriodBody.parse(req.body ?? {});
      const tenant = resourceId.safeParse(tenantId).success ? await ctx.tenants.get(tenantId) : undefined;
      if (!tenant) throw notFound(`tenant ${tenantId}`);
      if (tenant.status !== 'active') throw new ApiError(409, 'conflict', `tenant ${tenantId} is cancelled`);
      const key = idempotencyKeyOf(req);
      const earlier = key ? await closeByIdempotencyKey(ctx.db, tenantId, key) : undefined;
      if (earlier) {
        res.json({
          closed_period: { start: earlier.closed.start, end: earlier.closed.end },
          invoice_id: earlier.invoice_id,
          invoice_workflow_id: invoiceWorkflowId(tenantId, earlier.closed.start, 1),
          current_period: earlier.next?.period ?? null,
        });
        return;
      }
      const result = await ctx.billing.closePeriod(tenantId, body.finalize === true, key);
      ctx.tenants.invalidate(tenantId);
      res.json(result);
    },
  );

  router.get(
    '/invoices/:invoiceId',
    operation({
      operationId: 'getInvoice',
      tag: 'Finance',
      summary: 'Get an invoice with its lines',
      params: { invoiceId: z.string().describe('the invoice id') },
      query: noQuery,
      responses: { 200: { description: 'the invoice', schema: invoiceResponse } },
    }),
    async (req, res) => {
      parseListQuery(noQuery, req);
      // PostgreSQL text cannot hold NUL: such an id names no invoice (a 404, not a failed query).
      const invoice = req.params.invoiceId.includes('\u0000') ? undefined : await ctx.db('invoices').where({ id: req.params.invoiceId }).first();
      const principal = principalOf(res);
      if (!invoice || (principal.kind === 'tenant' && principal.tenantId !== invoice.tenant_id)) {
        throw notFound(`invoice ${req.params.invoiceId}`);
      }
      const lines = await ctx.db('invoice_lines').where({ invoice_id: invoice.id }).orderBy('position');
      res.json(presentInvoice(invoice, lines));
    },
  );

  router.get(
    '/tenants/:id/invoices',
    operation({
      operationId: 'listTenantInvoices',
      tag: 'Finance',
      summary: "The tenant's invoices, newest period first (within a period, the newest version first)",
      params: { id: tenantIdParam },
      query: listInvoicesQuery,
      responses: { 200: { description: 'a page of invoices', schema: pageOf(invoiceResponse) } },
    }),
    async (req, res) => {
      const tenantId = tenantParam(req);
      assertTenantAccess(res, tenantId);
      if (!resourceId.safeParse(tenantId).success || !(await findTenant(ctx.db, tenantId))) throw notFound(`tenant ${tenantId}`);
      const query = parseListQuery(listInvoicesQuery, req);
      // Newest period first, and within a period the newest version (a rerun) first.
      const page = await paginate<InvoiceRow>(ctx.db('invoices').where({ tenant_id: tenantId }).select('*'), query, {
        sort: ['period_start', 'version'],
        idColumn: 'id',
      });
      const ids = page.data.map((row) => row.id);
      const lines: LineRow[] = ids.length === 0 ? [] : await ctx.db('invoice_lines').whereIn('invoice_id', ids).orderBy(['invoice_id', 'position']);
      const byInvoice = new Map<string, LineRow[]>();
      for (const line of lines) {
        const list = byInvoice.get(line.invoice_id) ?? [];
        list.push(line);
        byInvoice.set(line.invoice_id, list);
      }
      res.json({ ...page, data: page.data.map((row) => presentInvoice(row, byInvoice.get(row.id) ?? [])) });
    },
  );

  return router;
}

/** Re-exported for the routes that render invoices (PDF, reruns). */
export { presentInvoice };
