import { Router } from 'express';
import type { ApiContext } from '../context';
import { assertTenantAccess, principalOf, requireAdmin, tenantParam } from '../auth';
import { createTenantBody, updateTenantBody } from '../schemas';
import { ApiError, notFound } from '../errors';
import { findPlanVersion } from '../../db/plans';
import { findTenant, insertTenant, type TenantRow } from '../../db/tenants';
import { generateApiKey } from '../../db/api-keys';
import { periodContaining } from '../../domain/periods';
import { tenantWorkflowId } from '../../workflows/messages';

/** Tenants: creating one issues its key and starts its billing workflow. */
export function tenantsRouter(ctx: ApiContext): Router {
  const router = Router();

  router.post('/', requireAdmin, async (req, res) => {
    const body = createTenantBody.parse(req.body);
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
    const created = await insertTenant(ctx.db, {
      tenant: {
        id: body.id,
        name: body.name,
        plan_id: plan.id,
        email: body.email ?? null,
        webhook_url: body.webhook_url ?? null,
        webhook_secret: null,
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
      await ctx.db.transaction(async (trx) => {
        await trx('api_keys').where({ tenant_id: body.id }).delete();
        await trx('periods').where({ tenant_id: body.id }).delete();
        await trx('tenants').where({ id: body.id }).delete();
      });
      throw new ApiError(503, 'unavailable', `could not start the billing workflow: ${(err as Error).message}`);
    }
    res.status(201).json({ ...presentTenant(await findTenantOrThrow(ctx, body.id)), current_period: period, api_key: key.key });
  });

  router.get('/', requireAdmin, async (_req, res) => {
    const rows = await ctx.db('tenants').orderBy('created_at', 'desc').limit(100).select<TenantRow[]>('*');
    const [{ count }] = (await ctx.db('tenants').count({ count: '*' })) as [{ count: string }];
    res.json({ data: rows.map(presentTenant), has_more: Number(count) > rows.length, total_count: Number(count) });
  });

  router.get('/:id', async (req, res) => {
    const tenantId = tenantParam(req);
    assertTenantAccess(res, tenantId);
    const tenant = await findTenantOrThrow(ctx, tenantId);
    const current = await ctx.db('periods').where({ tenant_id: tenantId }).orderBy('start', 'desc').first<{ start: Date; end: Date } | undefined>('start', 'end');
    res.json({ ...presentTenant(tenant), current_period: current ? { start: current.start.toISOString(), end: current.end.toISOString() } : null });
  });

  router.patch('/:id', async (req, res) => {
    const tenantId = tenantParam(req);
    assertTenantAccess(res, tenantId);
    const body = updateTenantBody.parse(req.body);
    if (body.plan_id !== undefined && principalOf(res).kind !== 'admin') {
      throw new ApiError(403, 'forbidden', 'only the admin key changes plans');
    }
    await findTenantOrThrow(ctx, tenantId);
    if (body.plan_id !== undefined && !(await findPlanVersion(ctx.db, body.plan_id))) {
      throw new ApiError(422, 'validation_failed', `plan ${body.plan_id} does not exist`, [{ path: 'plan_id', message: 'unknown plan' }]);
    }
    // The running period keeps its plan version; the next period opens on the tenant's plan as
    // stored here (the workflow's startPeriod activity reads it at the anniversary).
    await ctx.db('tenants').where({ id: tenantId }).update({ ...body, updated_at: new Date() });
    ctx.tenants.invalidate(tenantId);
    res.json(presentTenant(await findTenantOrThrow(ctx, tenantId)));
  });

  router.delete('/:id', requireAdmin, async (req, res) => {
    const tenantId = tenantParam(req);
    const tenant = await findTenantOrThrow(ctx, tenantId);
    if (tenant.status === 'cancelled') throw new ApiError(409, 'conflict', `tenant ${tenantId} is already cancelled`);
    // Stop new usage first, then close and invoice the period in the workflow, which then completes.
    await ctx.db('tenants').where({ id: tenantId }).update({ status: 'cancelled', cancelled_at: new Date(), updated_at: new Date() });
    ctx.tenants.invalidate(tenantId);
    const result = await ctx.billing.cancel(tenantId);
    res.json({ ...presentTenant(await findTenantOrThrow(ctx, tenantId)), final_invoice_id: result.invoice_id, closed_period: result.closed_period });
  });

  return router;
}

async function findTenantOrThrow(ctx: ApiContext, id: string): Promise<TenantRow> {
  const tenant = await findTenant(ctx.db, id);
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
    created_at: new Date(t.created_at).toISOString(),
  };
}
