import { Router } from 'express';
import { z } from 'zod';
import type { ApiContext } from '../context';
import { assertTenantAccess, principalOf, requireAdmin, tenantParam } from '../auth';
import { createTenantBody, emptyBody, noQuery, resourceId, updateTenantBody } from '../schemas';
import { ApiError, notFound } from '../errors';
import { findPlanVersion } from '../../db/plans';
import { deleteUnstartedTenant, findTenant, insertTenant, listTenants, updateTenant, type TenantRow } from '../../db/tenants';
import { latestPeriod, runningAndNextPlans } from '../../db/periods';
import { changeLimitOverrides, revertLimitOverrides } from '../../db/entitlements';
import { limitChangeProblems } from '../../domain/limits';
import { decimalToNumber } from '../../domain/decimal';
import { normalizeDecimal } from '../../db/numeric';
import { generateApiKey, rotateTenantApiKey } from '../../db/api-keys';
import { tenantStandings, usageViewOf } from '../../db/usage-read-model';
import { paginationQuery, parseListQuery } from '../pagination';
import { periodContaining } from '../../domain/periods';
import { tenantWorkflowId } from '../../workflows/messages';
import { generateWebhookSecret, issueWebhookSecretIfMissing, rotateWebhookSecret } from '../../notifications/secrets';
import { operation, tenantIdParam } from '../operation';
import { assertWebhookTargetAllowed } from '../webhook-target';
import { cancelledTenant, createdTenant, issuedApiKey, pageOf, rotatedWebhookSecret, tenant as tenantResponse, tenantWithPeriod, updatedTenant } from '../responses';

/**
 * `GET /v1/tenants` (admin): pagination, `q` (a case-insensitive part of the id or name), and
 * `include=usage`, which adds each tenant's current-period figures (the dashboard's tenants list
 * sorts by them).
 */
export const listTenantsQuery = paginationQuery
  .extend({
    q: z.string().min(1).max(200).optional(),
    include: z.enum(['usage']).optional(),
  })
  .strict();

/** A tenant in the list with `include=usage`: its fullest meter, running cost and alert level; null without an open period. */
const tenantListItem = tenantResponse.extend({
  usage: z
    .object({
      percent: z.number().nullable().describe('the highest percent of any meter with a limit; null when no meter has one'),
      total: z.string(),
      currency: z.string(),
      alert_level: z.string(),
    })
    .nullable()
    .optional(),
});

/** Tenants: creating one issues its key and starts its billing workflow. */
export function tenantsRouter(ctx: ApiContext): Router {
  const router = Router();

  router.post(
    '/',
    operation({
      operationId: 'createTenant',
      tag: 'Tenants',
      summary: "Create a tenant and start its billing workflow; answers the tenant's API key once",
      query: noQuery,
      body: createTenantBody,
      responses: { 201: { description: 'the tenant, its current period, `workflow_id` and `api_key`', schema: createdTenant } },
      problems: {
        409: 'a tenant with this id exists (`conflict`)',
        422: 'validation failed, or `webhook_url` is not https or names a private or metadata address (`webhook_target_refused`)',
      },
    }),
    requireAdmin,
    async (req, res) => {
      parseListQuery(noQuery, req);
      const body = createTenantBody.parse(req.body);
      if (body.webhook_url) await assertWebhookTargetAllowed(ctx, body.webhook_url, 'webhook_url');
      const plan = await findPlanVersion(ctx.db, body.plan_id);
      if (!plan) {
        throw new ApiError(422, 'validation_failed', `plan ${body.plan_id} does not exist`, [{ path: 'plan_id', message: 'unknown plan' }]);
      }
      // Anniversaries count from the anchor (default: now, to the second); billing starts with the
      // period that holds the present moment, so a past anchor does not invoice empty past periods.
      const now = new Date(Math.floor(Date.now() / 1000) * 1000).toISOString();
      const anchor = body.billing_anchor ? new Date(body.billing_anchor).toISOString() : now;
      const first = periodContaining(anchor, plan.interval, body.timezone, now);
      const period = { start: first.start, end: first.end };
      const key = generateApiKey(body.id);
      // A webhook gets its signing secret now; it is shown once, in this response.
      const webhookSecret = body.webhook_url ? generateWebhookSecret() : null;
      const created = await insertTenant(ctx.db, {
        tenant: {
          id: body.id,
          name: body.name,
          plan_id: plan.id,
          email: body.email ?? null,
          webhook_url: body.webhook_url ?? null,
          webhook_secret: webhookSecret,
          timezone: body.timezone,
          billing_anchor: new Date(anchor),
        },
        firstPeriod: period,
        planVersion: plan.version,
        apiKey: { id: key.id, key_hash: key.key_hash, prefix: key.prefix },
      });
      if (!created) throw new ApiError(409, 'conflict', `tenant ${body.id} already exists`);
      req.log?.info({ tenant_id: body.id, workflow_id: tenantWorkflowId(body.id) }, 'tenant created');
      try {
        await ctx.billing.startTenant({ tenantId: body.id, tenantName: body.name, timezone: body.timezone, billingAnchor: anchor, plan, period });
      } catch (err) {
        // Without its workflow the tenant cannot bill: undo, so the client can simply retry.
        await deleteUnstartedTenant(ctx.db, body.id);
        throw new ApiError(503, 'unavailable', `could not start the billing workflow: ${(err as Error).message}`);
      }
      res.status(201).json({
        ...presentTenant(await findTenantOrThrow(ctx, body.id)),
        current_period: period,
        api_key: key.key,
        ...(webhookSecret ? { webhook_secret: webhookSecret } : {}),
      });
    },
  );

  router.get(
    '/',
    operation({
      operationId: 'listTenants',
      tag: 'Tenants',
      summary: 'List tenants',
      query: listTenantsQuery,
      responses: { 200: { description: 'a page of tenants (with `include=usage`, each with its `usage`)', schema: pageOf(tenantListItem) } },
    }),
    requireAdmin,
    async (req, res) => {
      const query = parseListQuery(listTenantsQuery, req);
      const page = await listTenants(ctx.db, { q: query.q }, query);
      if (query.include !== 'usage') {
        res.json({ ...page, data: page.data.map(presentTenant) });
        return;
      }
      // One statement for the page's figures, not one per tenant.
      const standings = await tenantStandings(ctx.db, page.data.filter((t) => t.status === 'active').map((t) => t.id));
      const data = [];
      for (const tenant of page.data) {
        const figures = standings.get(tenant.id)?.figures;
        const usage = figures && usageViewOf(figures);
        const percents = Object.values(usage?.metrics ?? {}).flatMap((m) => (m.percent === null ? [] : [m.percent]));
        data.push({
          ...presentTenant(tenant),
          usage: usage
            ? { percent: percents.length > 0 ? Math.max(...percents) : null, total: usage.costs.total, currency: usage.costs.currency, alert_level: usage.alert_level }
            : null,
        });
      }
      res.json({ ...page, data });
    },
  );

  router.get(
    '/:id',
    operation({
      operationId: 'getTenant',
      tag: 'Tenants',
      summary: 'Get a tenant with its current period',
      params: { id: tenantIdParam },
      query: noQuery,
      responses: { 200: { description: 'the tenant', schema: tenantWithPeriod } },
    }),
    async (req, res) => {
      const tenantId = tenantParam(req);
      assertTenantAccess(res, tenantId);
      parseListQuery(noQuery, req);
      const tenant = await findTenantOrThrow(ctx, tenantId);
      const current = await latestPeriod(ctx.db, tenantId);
      res.json({ ...presentTenant(tenant), current_period: current ? { start: current.start.toISOString(), end: current.end.toISOString() } : null });
    },
  );

  router.patch(
    '/:id',
    operation({
      operationId: 'updateTenant',
      tag: 'Tenants',
      summary: 'Update a tenant (a plan change takes effect at the next period; limit overrides at once)',
      params: { id: tenantIdParam },
      query: noQuery,
      body: updateTenantBody,
      responses: { 200: { description: 'the updated tenant', schema: updatedTenant } },
      problems: {
        403: 'a tenant key changing `plan_id` or `limits`: only the admin key does (`forbidden`)',
        409: '`limits` for a cancelled tenant (`conflict`)',
        422: 'validation failed (an unknown plan; a limit for a metric the plan lacks, or <= 0: `errors[].path` names it, e.g. `limits.tokens`), or `webhook_url` is not https or names a private or metadata address (`webhook_target_refused`)',
      },
    }),
    async (req, res) => {
      const tenantId = tenantParam(req);
      assertTenantAccess(res, tenantId);
      parseListQuery(noQuery, req);
      const { limits, ...body } = updateTenantBody.parse(req.body);
      if (body.webhook_url) await assertWebhookTargetAllowed(ctx, body.webhook_url, 'webhook_url');
      const adminOnly = (['plan_id', 'limits', 'low_balance_threshold'] as const).filter((f) => (f === 'limits' ? limits : body[f]) !== undefined);
      if (adminOnly.length > 0 && principalOf(res).kind !== 'admin') {
        throw new ApiError(403, 'forbidden', `only the admin key changes ${adminOnly.join(', ')}`);
      }
      const tenant = await findTenantOrThrow(ctx, tenantId);
      if (body.plan_id !== undefined && !(await findPlanVersion(ctx.db, body.plan_id))) {
        throw new ApiError(422, 'validation_failed', `plan ${body.plan_id} does not exist`, [{ path: 'plan_id', message: 'unknown plan' }]);
      }
      if (limits !== undefined && Object.keys(limits).length > 0) {
        if (tenant.status !== 'active') throw new ApiError(409, 'conflict', `tenant ${tenantId} is cancelled`);
        const problems = limitChangeProblems(await runningAndNextPlans(ctx.db, tenant, body.plan_id), limits);
        if (problems.length > 0) {
          throw new ApiError(422, 'validation_failed', `limits: ${problems.map((p) => `${p.path} ${p.message}`).join('; ')}`, problems.map((p) => ({ path: `limits.${p.path}`, message: p.message })));
        }
        // Stored first, then applied by the running period (it reads them back from PostgreSQL).
        // Should the run not take them, the change is undone: the client retries a clean request.
        const change = await changeLimitOverrides(ctx.db, tenantId, limits);
        try {
          await ctx.billing.entitlementsChanged(tenantId);
        } catch (err) {
          await revertLimitOverrides(ctx.db, tenantId, change);
          ctx.billing.rereadAfterUndo(tenantId, 'entitlements', (e) => req.log?.warn({ err: e, tenant_id: tenantId }, 'undone limits not re-read by the run'));
          throw err;
        }
        req.log?.info({ tenant_id: tenantId, limits: change.after }, 'tenant limits changed');
      }
      // The running period keeps its plan version; the next period opens on the tenant's plan as
      // stored here (the workflow's rollover activity reads it when the period closes).
      await updateTenant(ctx.db, tenantId, body);
      // The running period watches the balance against the threshold now stored.
      if (body.low_balance_threshold !== undefined && tenant.status === 'active') await ctx.billing.entitlementsChanged(tenantId);
      ctx.tenants.invalidate(tenantId);
      // Setting a webhook issues the signing secret if the tenant has none yet (shown once, here);
      // an existing secret is kept: changing it is `POST /v1/tenants/{id}/webhook-secret`.
      const webhookSecret = body.webhook_url ? await issueWebhookSecretIfMissing(ctx.db, tenantId) : undefined;
      res.json({ ...presentTenant(await findTenantOrThrow(ctx, tenantId)), ...(webhookSecret ? { webhook_secret: webhookSecret } : {}) });
    },
  );

  router.delete(
    '/:id',
    operation({
      operationId: 'cancelTenant',
      tag: 'Tenants',
      summary: 'Cancel the subscription: close the period now, write its final invoice, end the workflow',
      params: { id: tenantIdParam },
      query: noQuery,
      responses: { 200: { description: 'the cancelled tenant with `final_invoice_id` and `closed_period`', schema: cancelledTenant } },
      problems: { 409: 'the tenant is already cancelled (`conflict`)', 422: 'a query parameter, or a body with fields: this route takes neither (`validation_failed`)' },
    }),
    requireAdmin,
    async (req, res) => {
      const tenantId = tenantParam(req);
      parseListQuery(noQuery, req);
      emptyBody.parse(req.body ?? {});
      const tenant = await findTenantOrThrow(ctx, tenantId);
      if (tenant.status === 'cancelled') throw new ApiError(409, 'conflict', `tenant ${tenantId} is already cancelled`);
      // One transaction in the workflow's rollover closes the final period and marks the tenant
      // cancelled, under the ledger lock ingest takes: every event stored before it is billed,
      // every one after it is refused. Should this request fail half-way, a retry finishes it.
      const result = await ctx.billing.cancel(tenantId);
      ctx.tenants.invalidate(tenantId);
      res.json({ ...presentTenant(await findTenantOrThrow(ctx, tenantId)), final_invoice_id: result.invoice_id, closed_period: result.closed_period });
    },
  );

  // Webhook secret rotation: the admin or the tenant itself. The new secret signs every delivery
  // from now on (retries included) and is shown once, in this response.
  router.post(
    '/:id/webhook-secret',
    operation({
      operationId: 'rotateWebhookSecret',
      tag: 'Alerts',
      summary: 'Rotate the webhook signing secret (shown once; it signs every delivery from now on, retries included)',
      params: { id: tenantIdParam },
      query: noQuery,
      responses: { 200: { description: 'the new secret', schema: rotatedWebhookSecret } },
      problems: { 422: 'a query parameter, or a body with fields: this route takes neither (`validation_failed`)' },
    }),
    async (req, res) => {
      const tenantId = tenantParam(req);
      assertTenantAccess(res, tenantId);
      parseListQuery(noQuery, req);
      emptyBody.parse(req.body ?? {});
      const secret = await rotateWebhookSecret(ctx.db, tenantId);
      if (!secret) throw notFound(`tenant ${tenantId}`);
      req.log?.info({ tenant_id: tenantId }, 'webhook secret rotated');
      res.json({ tenant_id: tenantId, webhook_secret: secret, rotated_at: new Date().toISOString() });
    },
  );

  // Key rotation: the admin, or the tenant itself (e.g. after a leak). The new key is shown once;
  // every earlier key of the tenant stops working with this response.
  router.post(
    '/:id/api-keys',
    operation({
      operationId: 'rotateTenantApiKey',
      tag: 'Tenants',
      summary: "Rotate the tenant's API key (the new key is shown once; earlier keys stop working)",
      params: { id: tenantIdParam },
      query: noQuery,
      responses: { 201: { description: 'the new key', schema: issuedApiKey } },
      problems: { 422: 'a query parameter, or a body with fields: this route takes neither (`validation_failed`)' },
    }),
    async (req, res) => {
      const tenantId = tenantParam(req);
      assertTenantAccess(res, tenantId);
      parseListQuery(noQuery, req);
      emptyBody.parse(req.body ?? {});
      const issued = resourceId.safeParse(tenantId).success ? await rotateTenantApiKey(ctx.db, tenantId) : undefined;
      if (!issued) throw notFound(`tenant ${tenantId}`);
      // The other API processes forget the old keys as the commit's notification reaches them.
      ctx.tenantKeys?.forgetTenant(tenantId);
      req.log?.info({ tenant_id: tenantId, key_id: issued.id, revoked: issued.revoked }, 'tenant api key rotated');
      res.status(201).json({
        id: issued.id,
        tenant_id: tenantId,
        api_key: issued.key,
        prefix: issued.prefix,
        created_at: issued.created_at.toISOString(),
        revoked_keys: issued.revoked,
      });
    },
  );

  return router;
}

async function findTenantOrThrow(ctx: ApiContext, id: string): Promise<TenantRow> {
  // An id no tenant can have (e.g. with a NUL byte, which PostgreSQL refuses) does not exist.
  const tenant = resourceId.safeParse(id).success ? await findTenant(ctx.db, id) : undefined;
  if (!tenant) throw notFound(`tenant ${id}`);
  return tenant;
}

/** The public shape of a tenant (never its secrets). */
export function presentTenant(t: TenantRow) {
  return {
    id: t.id,
    name: t.name,
    plan_id: t.plan_id,
    email: t.email,
    webhook_url: t.webhook_url,
    timezone: t.timezone,
    billing_anchor: new Date(t.billing_anchor).toISOString(),
    status: t.status,
    workflow_id: tenantWorkflowId(t.id),
    limits: Object.fromEntries(Object.entries(t.limit_overrides ?? {}).map(([subject, limit]) => [subject, decimalToNumber(limit)])),
    low_balance_threshold: t.low_balance_threshold == null ? null : normalizeDecimal(t.low_balance_threshold),
    created_at: new Date(t.created_at).toISOString(),
  };
}
