import { Router } from 'express';
import { z } from 'zod';
import type { ApiContext } from '../context';
import { assertTenantAccess, principalOf, requireAdmin, tenantParam } from '../auth';
import { closePeriodBody, noQuery, resourceId } from '../schemas';
import { ApiError, notFound } from '../errors';
import { findTenant } from '../../db/tenants';
import { paginationQuery, parseListQuery } from '../pagination';
import { presentInvoice } from '../../invoices/present';
import { operation, tenantIdParam } from '../operation';
import { closedPeriod, invoice as invoiceResponse, pageOf } from '../responses';
import { idempotencyKeyOf, idempotencyKeySchema } from '../idempotency';
import { closeByIdempotencyKey } from '../../db/rollover';
import { findInvoiceWithLines, listTenantInvoices } from '../../db/invoices';
import { invoiceWorkflowId } from '../../contracts/ids';

/** `GET /v1/tenants/{id}/invoices`: pagination only. */
export const listInvoicesQuery = paginationQuery.strict();

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
        'The period ends at the instant the close is made; events stamped at or after it belong to the next period. With an `Idempotency-Key`, a retry (after a timeout, say) answers the close that key made instead of closing again. Without one, the API chooses a key, and a 503 names it in an `Idempotency-Key` response header to retry with.',
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
      const found = req.params.invoiceId.includes('\u0000') ? undefined : await findInvoiceWithLines(ctx.db, req.params.invoiceId);
      const principal = principalOf(res);
      if (!found || (principal.kind === 'tenant' && principal.tenantId !== found.invoice.tenant_id)) {
        throw notFound(`invoice ${req.params.invoiceId}`);
      }
      res.json(presentInvoice(found.invoice, found.lines));
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
      const page = await listTenantInvoices(ctx.db, tenantId, query);
      res.json({ ...page, data: page.data.map(({ invoice, lines }) => presentInvoice(invoice, lines)) });
    },
  );

  return router;
}

/** Re-exported for the routes that render invoices (PDF, reruns). */
export { presentInvoice };
