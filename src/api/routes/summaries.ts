import { Router } from 'express';
import { z } from 'zod';
import type { ApiContext } from '../context';
import { requireAdmin } from '../auth';
import { unknownCursor } from '../errors';
import { paginationQuery, parseListQuery } from '../pagination';
import { operation } from '../operation';
import { pageOf } from '../responses';
import { METRIC_NAME_PATTERN } from '../../domain/plan';
import { monthlySummaries, type MonthlySummary, type SummaryOrder } from '../../db/summaries';

const METRIC_SORT = /^-?[a-z][a-z0-9_]{0,63}$/;

/** `GET /v1/summaries`: the month, the order, an optional metric, and pagination. */
export const listSummariesQuery = paginationQuery
  .extend({
    month: z.string().regex(/^\d{4}-(0[1-9]|1[0-2])$/, 'must be a calendar month such as 2026-11').describe('the UTC month whose periods started in it'),
    sort: z
      .string()
      .regex(METRIC_SORT, 'must be total, -total, <metric> or -<metric>')
      .default('-total')
      .describe('`total` or a metric (by its usage); `-` for descending'),
    metric: z.string().regex(METRIC_NAME_PATTERN, 'must match ^[a-z][a-z0-9_]{0,63}$').optional().describe('only this metric, and only the tenants that have it'),
  })
  .strict();

/** One row of `GET /v1/summaries`. */
export const monthlySummaryView = z
  .object({
    id: z.string().describe('`<tenant>/<currency>`: the cursor for `starting_after`'),
    tenant_id: z.string(),
    month: z.string(),
    metrics: z.record(z.string(), z.object({ used: z.string().describe('exact decimal'), amount: z.string() })),
    total: z.string(),
    currency: z.string(),
    change: z.object({
      total: z.string().describe('total minus the same tenant and currency the month before'),
      percent: z.number().nullable().describe('null when the month before was 0 or absent'),
    }),
    final: z.boolean().describe('every period of the row is invoiced: its figures no longer move'),
  })
  .meta({ id: 'MonthlySummary' });

function orderOf(sort: string): SummaryOrder {
  const descending = sort.startsWith('-');
  const name = descending ? sort.slice(1) : sort;
  return { by: name === 'total' ? 'total' : { metric: name }, descending };
}

/** The columns of the CSV: fixed ones, then `<metric>_used`, `<metric>_amount` per metric seen. */
function toCsv(rows: MonthlySummary[]): string {
  const metrics = [...new Set(rows.flatMap((r) => Object.keys(r.metrics)))].sort();
  const header = ['tenant_id', 'month', 'currency', 'total', 'change_total', 'change_percent', 'final', ...metrics.flatMap((m) => [`${m}_used`, `${m}_amount`])];
  const lines = rows.map((r) => [
    r.tenant_id,
    r.month,
    r.currency,
    r.total,
    r.change.total,
    r.change.percent === null ? '' : String(r.change.percent),
    String(r.final),
    ...metrics.flatMap((m) => [r.metrics[m]?.used ?? '', r.metrics[m]?.amount ?? '']),
  ]);
  // Ids are letters, digits and `_ . -`, and figures are decimals: nothing needs quoting.
  return [header, ...lines].map((cells) => cells.join(',')).join('\r\n') + '\r\n';
}

/** Monthly summaries for finance (admin). */
export function summariesRouter(ctx: ApiContext): Router {
  const router = Router();

  router.get(
    '/summaries',
    operation({
      operationId: 'listMonthlySummaries',
      tag: 'Finance',
      summary: 'Per tenant, the totals of the periods that started in a month, with the change against the month before',
      description:
        'From finalized invoices, and from the read model for periods not invoiced yet (`final: false`), never from raw events. With `Accept: text/csv` the whole month comes as CSV, in the same order (no pagination).',
      query: listSummariesQuery,
      responses: { 200: { description: 'a page of summaries (or the whole month as `text/csv`)', schema: pageOf(monthlySummaryView) } },
    }),
    requireAdmin,
    async (req, res) => {
      const query = parseListQuery(listSummariesQuery, req);
      const csv = req.accepts(['application/json', 'text/csv']) === 'text/csv';
      const page = await monthlySummaries(ctx.db, {
        month: query.month,
        order: orderOf(query.sort),
        metric: query.metric,
        // A spreadsheet wants the whole month: the CSV is not paginated.
        ...(csv ? {} : { limit: query.limit, startingAfter: query.starting_after }),
      });
      if (page.unknownCursor) {
        throw unknownCursor(query.starting_after);
      }
      if (csv) {
        res.status(200).type('text/csv; charset=utf-8').set('Content-Disposition', `attachment; filename="summaries-${query.month}.csv"`).send(toCsv(page.data));
        return;
      }
      res.json({ data: page.data, has_more: page.has_more, total_count: page.total_count });
    },
  );

  return router;
}
