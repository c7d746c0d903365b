import { Router } from 'express';
import { z } from 'zod';
import { WorkflowExecutionAlreadyStartedError, WorkflowIdConflictPolicy, WorkflowIdReusePolicy, type Client } from '@temporalio/client';
import type { ApiContext } from '../context';
import { principalOf, requireAdmin } from '../auth';
import { idempotencyKeyOf, idempotencyKeySchema } from '../idempotency';
import { ApiError, notFound } from '../errors';
import { noQuery, resourceId } from '../schemas';
import { parseListQuery } from '../pagination';
import { presentInvoice } from '../../invoices/present';
import { findPlanVersion } from '../../db/plans';
import { findTenant } from '../../db/tenants';
import { findInvoice, findInvoiceWithLines, type InvoiceRow } from '../../db/invoices';
import { assertEventsKept, findInvoiceRerunRequest, forgetInvoiceRerunRequest, previewInvoiceRerun, storeInvoiceRerunRequest, type InvoiceRerunRequest, type RerunPreview } from '../../db/invoice-reruns';
import { periodPlanRef } from '../../db/periods';
import { EventsPurged, rerunRefusal } from '../../invoices/rerun';
import type { InvoiceLineChange } from '../../invoices/changes';
import { invoiceId, invoiceWorkflowId } from '../../workflows/messages';
import type { invoiceRerun } from '../../workflows/invoice-rerun';
import type { InvoiceRerunInput } from '../../activities/invoicing';
import { renderInvoicePdf, type PdfInvoice } from '../../invoices/pdf';
import { operation } from '../operation';
import { invoice as invoiceResponse, rerunStarted } from '../responses';

/** `POST /v1/invoices/{id}/rerun` body. A field it does not know is refused, never ignored: the rerun would be real. */
export const rerunInvoiceBody = z.strictObject({
  reason: z.string().trim().min(1, 'must say why the invoice is rerun').max(1000),
  plan_id: resourceId.optional(),
  dry_run: z.boolean().optional().describe('`true`: answer what the rerun would write (200), and write nothing'),
});

/** One side of a previewed line: its quantity and rounded amount. */
const previewSide = z.object({ quantity: z.number(), amount: z.string() }).nullable();

/** `"dry_run": true`: the version n+1 a rerun would write, and how each changed line would move. */
export const rerunPreview = z.object({
  invoice: invoiceResponse
    .omit({ credits_applied: true, amount_due: true })
    .describe('what version n+1 would be (its `number`, and prepaid credit, are given when it is written)'),
  changes: z.array(
    z.object({
      line: z.string().describe('the metric of the line (`base_fee` for the base fee)'),
      description: z.string(),
      before: previewSide.describe('null: a line only the new version has'),
      after: previewSide.describe('null: a line only the old version has'),
      delta: z.string().nullable().describe('amount after - amount before; null across currencies'),
    }),
  ).describe('only the lines whose quantity or amount would change'),
});


/** Where the router starts rerun workflows: the API's Temporal client and the worker's task queue. */
export interface InvoiceWorkflows {
  client: Client;
  taskQueue: string;
}

/**
 * Invoice reruns and PDFs. Reruns start the `invoiceRerun` workflow directly (the tenant
 * workflow is not involved: a rerun is about a period already closed); PDFs are rendered from
 * the invoice as `presentInvoice` shows it.
 */
export function invoicesRouter(ctx: ApiContext, workflows: InvoiceWorkflows): Router {
  const router = Router();

  /** Starts the rerun's workflow; `false` when its id already exists (running or done). */
  async function startRerun(input: InvoiceRerunInput, workflowId: string, key: string | undefined): Promise<boolean> {
    const reason = input.reason.length > 120 ? `${input.reason.slice(0, 117)}...` : input.reason;
    try {
      await workflows.client.workflow.start<typeof invoiceRerun>('invoiceRerun', {
        workflowId,
        taskQueue: workflows.taskQueue,
        args: [input],
        // One rerun of a version, ever: the id names version n+1. Only a failed (or terminated)
        // attempt may be started again.
        workflowIdConflictPolicy: WorkflowIdConflictPolicy.FAIL,
        workflowIdReusePolicy: WorkflowIdReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
        staticSummary: `Rerun v${input.version - 1} → v${input.version} of ${input.tenant_id}'s invoice: "${reason}" (asked by ${input.requested_by})`,
        staticDetails: [
          `Voids ${input.replaces} and writes ${invoiceId(input.tenant_id, input.period_start, input.version)} finalized.`,
          `Period ${input.period_start} → ${input.period_end}, rated from its stored events with plan ${input.plan.id} v${input.plan.version}.`,
          `Reason: ${input.reason}`,
          `Requested by: ${input.requested_by}`,
        ].join('\n\n'),
        ...(key ? { memo: { idempotency_key: key } } : {}),
      });
      return true;
    } catch (err) {
      if (err instanceof WorkflowExecutionAlreadyStartedError) return false;
      throw err;
    }
  }

  function inputOf(row: InvoiceRerunRequest, invoice: Pick<InvoiceRow, 'period_start' | 'period_end' | 'version'>): InvoiceRerunInput {
    return {
      tenant_id: row.tenant_id,
      period_start: new Date(invoice.period_start).toISOString(),
      period_end: new Date(invoice.period_end).toISOString(),
      replaces: row.invoice_id,
      version: invoice.version + 1,
      plan: { id: row.rerun_plan_id, version: row.rerun_plan_version },
      reason: row.reason,
      requested_by: row.requested_by,
    };
  }

  /** The same key answers the same 202, after making sure its workflow was started. */
  async function replay(row: InvoiceRerunRequest, invoiceParam: string, body: z.infer<typeof rerunInvoiceBody>): Promise<{ invoice_id: string; workflow_id: string }> {
    if (row.invoice_id !== invoiceParam || row.reason !== body.reason || (row.plan_id ?? undefined) !== body.plan_id) {
      throw new ApiError(
        409,
        'conflict',
        `Idempotency-Key "${row.idempotency_key}" was already used for another request (a rerun of ${row.invoice_id}); use a new key for a new request`,
      );
    }
    const invoice = (await findInvoice(ctx.db, row.invoice_id))!;
    // Started, running or done: the id exists and nothing happens. Only a crash between storing
    // the key and starting the workflow (or a failed run) makes this start anything.
    await startRerun(inputOf(row, invoice), row.workflow_id, row.idempotency_key);
    return { invoice_id: row.new_invoice_id, workflow_id: row.workflow_id };
  }

  /**
   * `POST /v1/invoices/{id}/rerun` (admin): recompute the period as version n+1 and void n, in a
   * workflow. 202 with the new version's id and the workflow id; the same `Idempotency-Key`
   * answers the same. Only the finalized version can be rerun (409 otherwise), and only once.
   */
  router.post(
    '/invoices/:invoiceId/rerun',
    operation({
      operationId: 'rerunInvoice',
      tag: 'Finance',
      summary: 'Re-rate a period as a new invoice version; the old one becomes void',
      description: 'Only the finalized version can be rerun, and only once. The same `Idempotency-Key` answers the same 202.',
      params: { invoiceId: z.string().describe('the finalized invoice version to rerun') },
      query: noQuery,
      headers: z.object({ 'Idempotency-Key': idempotencyKeySchema.optional() }),
      body: rerunInvoiceBody,
      responses: {
        202: {
          description: 'the rerun workflow started; `invoice_id` is the id the new version will have',
          schema: rerunStarted,
          headers: z.object({ Location: z.string().describe('`/v1/invoices/{invoice_id}` of the new version') }),
        },
        200: { description: 'with `"dry_run": true`: what the rerun would write; nothing is written', schema: rerunPreview },
      },
      problems: {
        409: 'not the finalized version, already rerun, a rerun in progress, or an `Idempotency-Key` used for another request (`conflict`); the period\'s raw events were purged by retention (`events_purged`)',
        422: 'validation failed: the body, the `Idempotency-Key` header, or an unknown `plan_id`',
      },
    }),
    requireAdmin,
    async (req, res) => {
      const invoiceParam = String(req.params.invoiceId);
      parseListQuery(noQuery, req);
      const body = rerunInvoiceBody.parse(req.body ?? {});
      const key = idempotencyKeyOf(req);
      const principal = principalOf(res);
      const requestedBy = principal.kind === 'admin' ? 'admin' : principal.keyId;
      const answer = (result: { invoice_id: string; workflow_id: string }) =>
        res.status(202).location(`/v1/invoices/${result.invoice_id}`).json(result);

      if (key && !body.dry_run) {
        const known = await findInvoiceRerunRequest(ctx.db, key);
        if (known) return answer(await replay(known, invoiceParam, body));
      }

      const invoice = await findInvoice(ctx.db, invoiceParam);
      if (!invoice) throw notFound(`invoice ${invoiceParam}`);
      const refusal = rerunRefusal(invoice);
      if (refusal) throw new ApiError(409, 'conflict', refusal);
      let plan: { id: string; version: number };
      if (body.plan_id) {
        const latest = await findPlanVersion(ctx.db, body.plan_id);
        if (!latest) throw new ApiError(422, 'validation_failed', 'the request is invalid', [{ path: 'plan_id', message: `plan ${body.plan_id} does not exist` }]);
        plan = { id: latest.id, version: latest.version };
      } else {
        plan = (await periodPlanRef(ctx.db, invoice.tenant_id, invoice.period_start)) ?? { id: invoice.plan_id, version: invoice.plan_version };
      }
      // A preview runs the rerun's own computation in one read-only snapshot: no key is stored,
      // no workflow is started. A purged period is refused alike, before anything starts.
      try {
        if (body.dry_run) return res.status(200).json(presentPreview(invoice, await previewInvoiceRerun(ctx.db, invoice, plan), body.reason, requestedBy));
        await assertEventsKept(ctx.db, invoice.tenant_id, new Date(invoice.period_start).toISOString());
      } catch (err) {
        if (err instanceof EventsPurged) throw new ApiError(409, 'events_purged', err.message);
        throw err;
      }

      const periodStart = new Date(invoice.period_start).toISOString();
      const row: InvoiceRerunRequest = {
        idempotency_key: key ?? '',
        tenant_id: invoice.tenant_id,
        invoice_id: invoice.id,
        new_invoice_id: invoiceId(invoice.tenant_id, periodStart, invoice.version + 1),
        workflow_id: invoiceWorkflowId(invoice.tenant_id, periodStart, invoice.version + 1),
        reason: body.reason,
        plan_id: body.plan_id ?? null,
        rerun_plan_id: plan.id,
        rerun_plan_version: plan.version,
        requested_by: requestedBy,
      };
      if (key) {
        // The same key, concurrently: whoever stored it first defines the answer.
        const winner = await storeInvoiceRerunRequest(ctx.db, row);
        if (winner) return answer(await replay(winner, invoiceParam, body));
      }
      if (!(await startRerun(inputOf(row, invoice), row.workflow_id, key))) {
        if (key) {
          const started = await workflows.client.workflow.getHandle(row.workflow_id).describe().catch(() => undefined);
          if (started?.memo?.idempotency_key === key) return answer({ invoice_id: row.new_invoice_id, workflow_id: row.workflow_id });
          await forgetInvoiceRerunRequest(ctx.db, key); // not this key's rerun
        }
        throw new ApiError(409, 'conflict', `invoice ${invoice.id} already has a rerun in progress (workflow ${row.workflow_id}); it will be void once it completes`);
      }
      req.log?.info({ invoice_id: invoice.id, new_invoice_id: row.new_invoice_id, workflow_id: row.workflow_id, requested_by: requestedBy }, 'invoice rerun started');
      return answer({ invoice_id: row.new_invoice_id, workflow_id: row.workflow_id });
    },
  );

  /**
   * `GET /v1/invoices/{id}/pdf` (admin or the tenant's own key; another tenant's invoice is a
   * 404 as if it did not exist): the invoice as a PDF, with a VOID watermark on void versions.
   */
  router.get(
    '/invoices/:invoiceId/pdf',
    operation({
      operationId: 'getInvoicePdf',
      tag: 'Finance',
      summary: 'The invoice as a PDF (a void version carries a VOID watermark)',
      params: { invoiceId: z.string().describe('the invoice id') },
      query: noQuery,
      responses: { 200: { description: 'the PDF', contentType: 'application/pdf', schema: z.string().meta({ format: 'binary' }) } },
    }),
    async (req, res) => {
      parseListQuery(noQuery, req);
      const invoiceParam = String(req.params.invoiceId);
      const found = await findInvoiceWithLines(ctx.db, invoiceParam);
      const principal = principalOf(res);
      if (!found || (principal.kind === 'tenant' && principal.tenantId !== found.invoice.tenant_id)) throw notFound(`invoice ${invoiceParam}`);
      const { invoice, lines } = found;
      const tenant = await findTenant(ctx.db, invoice.tenant_id);
      const pdf = await renderInvoicePdf(presentInvoice(invoice, lines) as PdfInvoice, { id: invoice.tenant_id, name: tenant?.name ?? invoice.tenant_id });
      res
        .status(200)
        .type('application/pdf')
        .set('Content-Disposition', `inline; filename="${invoice.id}.pdf"`)
        .set('Cache-Control', 'private, no-store')
        .send(pdf);
    },
  );

  return router;
}

/** A preview as the API answers it: the would-be version n+1 and its changed lines. */
function presentPreview(source: InvoiceRow, preview: RerunPreview, reason: string, requestedBy: string) {
  const invoice = presentInvoice(
    {
      ...source,
      id: preview.id,
      number: null,
      version: preview.version,
      status: 'finalized',
      plan_id: preview.plan.id,
      plan_version: preview.plan.version,
      currency: preview.plan.currency,
      subtotal: preview.rated.subtotal,
      total: preview.rated.total,
      ...preview.credit,
      replaces: source.id,
      replaced_by: null,
      reason,
      requested_by: requestedBy,
      changes: preview.changes,
      created_at: null,
      finalized_at: null,
      voided_at: null,
    },
    preview.rated.lines,
  );
  // Credit is taken when the version is written; the preview shows what it would take (`projectRerunCredit`).
  return { invoice, changes: preview.changes.map(previewChange) };
}

function previewChange(change: InvoiceLineChange) {
  const side = (quantity: number | null, amount: string | null) =>
    quantity === null || amount === null ? null : { quantity, amount };
  return {
    line: change.metric,
    description: change.description,
    before: side(change.quantity_before, change.amount_before),
    after: side(change.quantity_after, change.amount_after),
    delta: change.delta,
  };
}
