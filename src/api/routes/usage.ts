import { randomUUID } from 'node:crypto';
import { Router } from 'express';
import { z } from 'zod';
import type { ApiContext } from '../context';
import { assertTenantAccess, principalOf, tenantParam } from '../auth';
import { authorizeBody, estimateBody, ingestBody, noQuery } from '../schemas';
import { parseListQuery } from '../pagination';
import { ApiError, notFound, type FieldError, type ProblemCode } from '../errors';
import type { TenantContext } from '../tenant-directory';
import { findMeter } from '../../domain/plan';
import { estimateExtraCost } from '../../domain/rating';
import type { IncomingEvent } from '../../db/ingest';
import { tenantStanding, usageViewOf, type CurrentPeriodFigures, type TenantStanding } from '../../db/usage-read-model';
import { isDimensioned, withGroups } from '../../domain/dimensions';
import { aggregateStoredGroups } from '../../db/dimensions';
import { findPlanVersion } from '../../db/plans';
import { operation, tenantIdParam } from '../operation';
import { authorization, estimate, ingested, usageView } from '../responses';

/** Usage: ingest, the current period's counters, check-and-consume and estimates. */
/** `GET …/usage`: only `consistent` (read-your-writes). */
const usageQuery = z.strictObject({ consistent: z.enum(['true', 'false']).optional() });

export function usageRouter(ctx: ApiContext): Router {
  const router = Router();

  router.post(
    '/events',
    operation({
      operationId: 'ingestUsageEvents',
      tag: 'Usage',
      summary: 'Ingest usage events (1..1000, all-or-nothing); 202 means durable',
      description:
        'With a tenant key `tenant_id` may be omitted; with the admin key it is required. Resending an event id is not an error: it is counted once. The 202 is sent once the batch is committed to PostgreSQL; the tenant\'s workflow counts it moments later (`pending_events` until then).',
      query: noQuery,
      body: ingestBody,
      responses: { 202: { description: 'every event is durable and will be counted', schema: ingested } },
      problems: {
        404: 'a tenant key whose tenant does not exist (`not_found`)',
        409: 'the subscription is cancelled and the events fall after its last period (`subscription_cancelled`); nothing was recorded',
        503: "the tenant has more events waiting to be counted than INGEST_MAX_PENDING_EVENTS, or its periods changed at each of the store's five attempts (`unavailable`, with Retry-After); nothing was recorded",
        422: 'the batch was rejected and nothing was recorded: `late_event`, `future_event` or `unknown_metric` when every problem is of that kind, `validation_failed` otherwise; `errors[].path` names each event',
      },
    }),
    async (req, res) => {
      parseListQuery(noQuery, req);
      const body = ingestBody.parse(req.body);
      const principal = principalOf(res);
      const receivedAt = new Date();
      const byTenant = new Map<string, Array<{ index: number; event: IncomingEvent }>>();
      const errors: FieldError[] = [];
      body.events.forEach((e, index) => {
        let tenantId = e.tenant_id;
        if (principal.kind === 'tenant') {
          if (tenantId !== undefined && tenantId !== principal.tenantId) {
            errors.push({ path: `events.${index}.tenant_id`, message: 'does not match the API key' });
            return;
          }
          tenantId = principal.tenantId;
        } else if (tenantId === undefined) {
          errors.push({ path: `events.${index}.tenant_id`, message: 'required with the admin key' });
          return;
        }
        const event: IncomingEvent = {
          id: e.id,
          metric: e.metric,
          quantity: String(e.quantity),
          // No timestamp: stamped when the batch is placed, under the tenant's ledger lock.
          timestamp: e.timestamp ? new Date(e.timestamp).toISOString() : null,
          ...(e.properties ? { properties: e.properties } : {}),
        };
        const list = byTenant.get(tenantId) ?? [];
        list.push({ index, event });
        byTenant.set(tenantId, list);
      });
      if (errors.length > 0) throw new ApiError(422, 'validation_failed', 'the batch is invalid', errors);
      // Durable before acknowledged: the 202 is sent once the transaction holding every batch committed.
      const stored = await ctx.ingest.submit({
        batches: new Map([...byTenant].map(([tenantId, events]) => [tenantId, events.map((e) => e.event)])),
        receivedAt,
        batchId: `req-${String(req.id ?? randomUUID())}`,
      });
      if (stored.kind === 'backlogged') {
        throw new ApiError(503, 'unavailable', `tenant ${stored.tenantId} has more than ${ctx.maxPendingEvents} events waiting to be counted; nothing was recorded, retry later`, undefined, {
          'Retry-After': '1',
        });
      }
      const outcomes = stored.outcomes;
      const codes = new Set<ProblemCode>();
      for (const [tenantId, outcome] of outcomes) {
        const events = byTenant.get(tenantId)!;
        if (outcome.kind === 'no_tenant') {
          if (principal.kind === 'tenant') throw notFound(`tenant ${tenantId}`);
          for (const { index } of events) errors.push({ path: `events.${index}.tenant_id`, message: `no tenant ${tenantId}` });
          codes.add('validation_failed');
        } else if (outcome.kind === 'refused') {
          for (const refusal of outcome.refusals) {
            errors.push({ path: `events.${events[refusal.index]!.index}.${refusal.field}`, message: refusal.message });
            codes.add(refusal.code);
          }
        }
      }
      if (errors.length > 0) {
        // One kind of problem keeps its own code (late_event, ...); a mix is validation_failed.
        const code = codes.size === 1 ? [...codes][0]! : 'validation_failed';
        throw new ApiError(code === 'subscription_cancelled' ? 409 : 422, code, 'the batch was rejected: nothing was recorded', errors);
      }
      ctx.metrics.recordIngest(outcomes.size, body.events.length);
      res.status(202).json({ received: body.events.length });
    },
  );

  router.get(
    '/tenants/:id/usage',
    operation({
      operationId: 'getCurrentUsage',
      tag: 'Usage',
      summary: "The current period's usage, costs and alerts",
      description:
        'Answered from the read model in PostgreSQL (immediate; `pending_events` says how many acknowledged events are not counted yet). `?consistent=true` has the tenant\'s workflow count every acknowledged event first (read-your-writes), or answers 503 `unavailable` if it cannot within 10 s.',
      params: { id: tenantIdParam },
      query: usageQuery,
      responses: { 200: { description: 'the usage view', schema: usageView } },
      problems: { 409: 'the tenant is cancelled (`conflict`)', 422: false, 503: 'with `?consistent=true`: the usage could not be settled within 10 s (`unavailable`)' },
    }),
    async (req, res) => {
      const tenantId = tenantParam(req);
      assertTenantAccess(res, tenantId);
      const query = parseListQuery(usageQuery, req);
      if (query.consistent !== 'true') {
        res.json(usageViewOf(openPeriodFigures(tenantId, await tenantStanding(ctx.db, tenantId))));
        return;
      }
      await activeTenant(ctx, tenantId);
      const settled = await ctx.billing.settledUsage(tenantId);
      // The run counts meter totals; a dimensioned meter's groups come from the events it counted.
      const plan = await findPlanVersion(ctx.db, settled.plan_id, settled.plan_version);
      if (!plan?.meters.some(isDimensioned)) {
        res.json(settled);
        return;
      }
      res.json(withGroups(settled, plan.meters, await aggregateStoredGroups(ctx.db, tenantId, settled.period.start, plan.meters, { countedOnly: true })));
    },
  );

  router.post(
    '/tenants/:id/authorize',
    operation({
      operationId: 'authorizeUsage',
      tag: 'Usage',
      summary: 'Check-and-consume against a hard limit',
      description: 'Idempotent on `id`: a retry with the same id consumes once.',
      params: { id: tenantIdParam },
      query: noQuery,
      body: authorizeBody,
      responses: { 200: { description: '`{ "allowed": true, "remaining" }` or `{ "allowed": false, "reason": "hard_limit", "remaining" }`', schema: authorization } },
      problems: { 409: 'the tenant is cancelled (`conflict`)', 422: 'validation failed, or the metric is not in the plan (`unknown_metric`)' },
    }),
    async (req, res) => {
      const tenantId = tenantParam(req);
      assertTenantAccess(res, tenantId);
      parseListQuery(noQuery, req);
      const body = authorizeBody.parse(req.body);
      const tenant = await activeTenant(ctx, tenantId);
      if (!findMeter(tenant.plan, body.metric)) {
        throw new ApiError(422, 'unknown_metric', `metric ${body.metric} is not in plan ${tenant.plan.id}`, [{ path: 'metric', message: 'unknown metric' }]);
      }
      res.json(await ctx.billing.authorize(tenantId, body));
    },
  );

  router.post(
    '/tenants/:id/estimate',
    operation({
      operationId: 'estimateUsageCost',
      tag: 'Usage',
      summary: 'The cost of extra usage, given where the tenant stands in its tiers',
      params: { id: tenantIdParam },
      query: noQuery,
      body: estimateBody,
      responses: { 200: { description: 'what the extra usage would cost', schema: estimate } },
      problems: { 409: 'the tenant is cancelled (`conflict`)', 422: 'validation failed, or the metric is not in the plan (`unknown_metric`)' },
    }),
    async (req, res) => {
      const tenantId = tenantParam(req);
      assertTenantAccess(res, tenantId);
      parseListQuery(noQuery, req);
      const body = estimateBody.parse(req.body);
      const figures = openPeriodFigures(tenantId, await tenantStanding(ctx.db, tenantId));
      const meter = findMeter(figures.plan, body.metric);
      if (!meter) {
        throw new ApiError(422, 'unknown_metric', `metric ${body.metric} is not in plan ${figures.plan.id}`, [{ path: 'metric', message: 'unknown metric' }]);
      }
      res.json({ amount: estimateExtraCost(meter, figures.values[meter.metric] ?? '0', body.quantity, figures.plan.currency), currency: figures.plan.currency });
    },
  );

  return router;
}

/** An active tenant's open period, from one read of its standing: 404 or 409 as {@link assertActive} says, 409 without an open period. */
function openPeriodFigures(tenantId: string, standing: TenantStanding | undefined): CurrentPeriodFigures {
  assertActive(tenantId, standing);
  if (!standing.figures) throw new ApiError(409, 'conflict', `tenant ${tenantId} has no open period`);
  return standing.figures;
}

async function activeTenant(ctx: ApiContext, tenantId: string): Promise<TenantContext> {
  const tenant = await ctx.tenants.get(tenantId);
  assertActive(tenantId, tenant);
  return tenant;
}

/** 404 when there is no such tenant, 409 when it is cancelled. */
function assertActive<T extends { status: string }>(tenantId: string, tenant: T | undefined): asserts tenant is T {
  if (!tenant) throw notFound(`tenant ${tenantId}`);
  if (tenant.status !== 'active') throw new ApiError(409, 'conflict', `tenant ${tenantId} is cancelled`);
}
