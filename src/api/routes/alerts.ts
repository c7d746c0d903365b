import { Router } from 'express';
import { z } from 'zod';
import type { ApiContext } from '../context';
import { assertTenantAccess, requireAdmin, tenantParam } from '../auth';
import { notFound } from '../errors';
import { noQuery, resourceId } from '../schemas';
import { paginationQuery, parseListQuery } from '../pagination';
import { operation, tenantIdParam } from '../operation';
import { pageOf } from '../responses';
import { acknowledgeAlert, listAlertsForTriage } from '../../db/alerts';
import { alertView, presentAlert } from './reads';

/** `GET /v1/alerts`: pagination, and `acknowledged=true|false` (absent: both). */
export const triageAlertsQuery = paginationQuery
  .extend({ acknowledged: z.enum(['true', 'false']).optional().describe('`false`: the open alerts only') })
  .strict();

/** `POST …/alerts/{alert_id}/acknowledge` takes no fields (the body may be omitted). */
export const acknowledgeAlertBody = z.strictObject({}).default({});

/**
 * Alert triage: the admin's list of every tenant's alerts, and marking an alert as seen. An
 * acknowledgement is triage state only: it neither stops nor starts an alert, which the tenant's
 * ledger decides once per period and threshold whatever happens here.
 */
export function alertsTriageRouter(ctx: ApiContext): Router {
  const router = Router();

  router.get(
    '/alerts',
    operation({
      operationId: 'listAlertsForTriage',
      tag: 'Alerts',
      summary: "Every tenant's alerts for triage, newest first",
      description: 'Notified and failed alerts of every tenant (superseded ones are covered by the notified alert of their claim). `acknowledged=false` lists the open ones.',
      query: triageAlertsQuery,
      responses: { 200: { description: 'a page of alerts', schema: pageOf(alertView) } },
    }),
    requireAdmin,
    async (req, res) => {
      const query = parseListQuery(triageAlertsQuery, req);
      const acknowledged = query.acknowledged === undefined ? undefined : query.acknowledged === 'true';
      const page = await listAlertsForTriage(ctx.db, acknowledged, query);
      res.json({ ...page, data: page.data.map(presentAlert) });
    },
  );

  router.post(
    '/tenants/:id/alerts/:alertId/acknowledge',
    operation({
      operationId: 'acknowledgeAlert',
      tag: 'Alerts',
      summary: 'Mark an alert as seen',
      description:
        'Idempotent: a repeat answers the alert with the first `acknowledged_at`. Triage state only: an alert never fires twice in its period, acknowledged or not.',
      params: { id: tenantIdParam, alertId: z.string().describe('the alert id') },
      query: noQuery,
      body: acknowledgeAlertBody,
      bodyOptional: true,
      responses: { 200: { description: 'the alert, with `acknowledged_at`', schema: alertView } },
    }),
    async (req, res) => {
      const tenantId = tenantParam(req);
      assertTenantAccess(res, tenantId);
      parseListQuery(noQuery, req);
      acknowledgeAlertBody.parse(req.body ?? {});
      const alertId = String(req.params.alertId);
      const usable = resourceId.safeParse(tenantId).success && !alertId.includes('\u0000');
      const row = usable ? await acknowledgeAlert(ctx.db, tenantId, alertId, new Date()) : undefined;
      // Another tenant's alert is absent for this tenant: 404, as for any id it does not have.
      if (!row) throw notFound(`alert ${alertId} of tenant ${tenantId}`);
      res.json(presentAlert(row));
    },
  );

  return router;
}
