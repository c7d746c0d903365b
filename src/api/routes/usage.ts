import { Router } from 'express';
import { z } from 'zod';
import type { ApiContext } from '../context';
import { assertTenantAccess, principalOf, tenantParam } from '../auth';
import { authorizeBody, estimateBody, ingestBody } from '../schemas';
import { ApiError, notFound, type FieldError, type ProblemCode } from '../errors';
import type { TenantContext } from '../tenant-directory';
import { findMeter } from '../../domain/plan';
import type { UsageEventInput } from '../../workflows/messages';
import { operation, tenantIdParam } from '../operation';
import { authorization, estimate, ingested, usageView } from '../responses';

/** Events may be timestamped at most this far ahead of the server's clock (BILLING.md). */
const FUTURE_TOLERANCE_MS = 5 * 60_000;

/** Usage: ingest, the current period's counters, check-and-consume and estimates. */
export function usageRouter(ctx: ApiContext): Router {
  const router = Router();

  router.post(
    '/events',
    operation({
      operationId: 'ingestUsageEvents',
      tag: 'Usage',
      summary: 'Ingest usage events (1..1000, all-or-nothing); 202 means durable',
      description:
        'With a tenant key `tenant_id` may be omitted; with the admin key it is required. Resending an event id is not an error: it is counted once. Concurrent requests for one tenant may share one workflow signal; each is answered only once its events are durable.',
      body: ingestBody,
      responses: { 202: { description: 'every event is durable and will be counted', schema: ingested } },
      problems: {
        404: "a tenant key whose tenant is not active (`not_found`)",
        422: 'the batch was rejected and nothing was recorded: `late_event`, `future_event` or `unknown_metric` when every problem is of that kind, `validation_failed` otherwise; `errors[].path` names each event',
      },
    }),
    async (req, res) => {
      const body = ingestBody.parse(req.body);
      const principal = principalOf(res);
      const receivedAt = new Date();
      const byTenant = new Map<string, Array<{ index: number; event: UsageEventInput }>>();
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
        const event: UsageEventInput = {
          id: e.id,
          metric: e.metric,
          quantity: e.quantity,
          timestamp: e.timestamp ? new Date(e.timestamp).toISOString() : receivedAt.toISOString(),
          ...(e.properties ? { properties: e.properties } : {}),
        };
        const list = byTenant.get(tenantId) ?? [];
        list.push({ index, event });
        byTenant.set(tenantId, list);
      });
      if (errors.length > 0) throw new ApiError(422, 'validation_failed', 'the batch is invalid', errors);

      const codes = new Set<ProblemCode>();
      for (const [tenantId, events] of byTenant) {
        const tenant = await ctx.tenants.get(tenantId);
        if (!tenant || tenant.status !== 'active') {
          if (principal.kind === 'tenant') throw notFound(`tenant ${tenantId}`);
          for (const { index } of events) errors.push({ path: `events.${index}.tenant_id`, message: `no active tenant ${tenantId}` });
          codes.add('validation_failed');
          continue;
        }
        for (const { index, event } of events) {
          const problem = judgeEvent(tenant, event, receivedAt);
          if (problem) {
            errors.push({ path: `events.${index}.${problem.field}`, message: problem.message });
            codes.add(problem.code);
          }
        }
      }
      if (errors.length > 0) {
        // One kind of problem keeps its own code (late_event, ...); a mix is validation_failed.
        const code = codes.size === 1 ? [...codes][0]! : 'validation_failed';
        throw new ApiError(422, code, 'the batch was rejected: nothing was recorded', errors);
      }
      // Durable before acknowledged: the 202 is sent only after Temporal accepted every signal.
      await Promise.all(
        [...byTenant].map(([tenantId, events]) => ctx.billing.recordUsage(tenantId, events.map((e) => e.event), receivedAt)),
      );
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
        'Answered by a workflow query (immediate; `pending_events` says how many acknowledged events are not counted yet). `?consistent=true` waits until every acknowledged event is counted (read-your-writes).',
      params: { id: tenantIdParam },
      query: z.object({ consistent: z.enum(['true', 'false']).optional() }),
      responses: { 200: { description: 'the usage view', schema: usageView } },
      problems: { 409: 'the tenant is cancelled (`conflict`)', 422: false },
    }),
    async (req, res) => {
      const tenantId = tenantParam(req);
      assertTenantAccess(res, tenantId);
      await activeTenant(ctx, tenantId);
      res.json(await ctx.billing.usage(tenantId, req.query.consistent === 'true'));
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
      body: authorizeBody,
      responses: { 200: { description: '`{ "allowed": true, "remaining" }` or `{ "allowed": false, "reason": "hard_limit", "remaining" }`', schema: authorization } },
      problems: { 409: 'the tenant is cancelled (`conflict`)', 422: 'validation failed, or the metric is not in the plan (`unknown_metric`)' },
    }),
    async (req, res) => {
      const tenantId = tenantParam(req);
      assertTenantAccess(res, tenantId);
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
      body: estimateBody,
      responses: { 200: { description: 'what the extra usage would cost', schema: estimate } },
      problems: { 409: 'the tenant is cancelled (`conflict`)', 422: 'validation failed, or the metric is not in the plan (`unknown_metric`)' },
    }),
    async (req, res) => {
      const tenantId = tenantParam(req);
      assertTenantAccess(res, tenantId);
      const body = estimateBody.parse(req.body);
      const tenant = await activeTenant(ctx, tenantId);
      if (!findMeter(tenant.plan, body.metric)) {
        throw new ApiError(422, 'unknown_metric', `metric ${body.metric} is not in plan ${tenant.plan.id}`, [{ path: 'metric', message: 'unknown metric' }]);
      }
      res.json(await ctx.billing.estimate(tenantId, body.metric, body.quantity));
    },
  );

  return router;
}

async function activeTenant(ctx: ApiContext, tenantId: string): Promise<TenantContext> {
  const tenant = await ctx.tenants.get(tenantId);
  if (!tenant) throw notFound(`tenant ${tenantId}`);
  if (tenant.status !== 'active') throw new ApiError(409, 'conflict', `tenant ${tenantId} is cancelled`);
  return tenant;
}

/** Where an event stands against the tenant's periods, judged before it is acknowledged. */
function judgeEvent(
  tenant: TenantContext,
  event: UsageEventInput,
  receivedAt: Date,
): { field: string; message: string; code: 'unknown_metric' | 'late_event' | 'future_event' } | undefined {
  const at = Date.parse(event.timestamp);
  if (at > receivedAt.getTime() + FUTURE_TOLERANCE_MS) {
    return { field: 'timestamp', message: 'more than 5 minutes in the future', code: 'future_event' };
  }
  // The current period may have ended by the clock before its workflow rolled over (a backlog, a
  // Temporal outage) or before this cache saw the rollover: its events are then late events,
  // accepted only within its grace, as the workflow judges them (else acknowledged, then refused).
  const current = tenant.current;
  const currentGraceEndsAt = current.end.getTime() + tenant.plan.grace_period_seconds * 1000;
  if (at >= current.start.getTime() && at < current.end.getTime() && receivedAt.getTime() >= currentGraceEndsAt) {
    return { field: 'timestamp', message: `too late: belongs to period ${current.start.toISOString()} (grace ended)`, code: 'late_event' };
  }
  const inCurrentOrLater = at >= tenant.current.start.getTime();
  const previous = tenant.previous;
  const inGrace =
    previous !== null &&
    at >= previous.start.getTime() &&
    at < previous.end.getTime() &&
    previous.graceEndsAt !== null &&
    receivedAt.getTime() < previous.graceEndsAt.getTime();
  if (!inCurrentOrLater && !inGrace) {
    const where = previous && at >= previous.start.getTime() ? `period ${previous.start.toISOString()} (grace ended)` : 'a closed period';
    return { field: 'timestamp', message: `too late: belongs to ${where}`, code: 'late_event' };
  }
  if (!findMeter(tenant.plan, event.metric)) {
    return { field: 'metric', message: `unknown metric for plan ${tenant.plan.id}`, code: 'unknown_metric' };
  }
  return undefined;
}
