import { randomBytes } from 'node:crypto';
import { Router, type Request, type Response } from 'express';
import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import { z } from 'zod';
import type { ApiContext } from '../context';
import { assertTenantAccess, tenantParam } from '../auth';
import { ApiError, notFound } from '../errors';
import { paginationQuery, parseListQuery } from '../pagination';
import { findTenant, withdrawWebhookSecret, type TenantRow } from '../../db/tenants';
import {
  MAX_ALERT_RULES_PER_TENANT,
  findAlertRule,
  insertAlertRuleWithinCap,
  listAlertRules,
  reinstateAlertRule,
  removeAlertRule,
  retireAlertRule,
  type AlertRuleRow,
} from '../../db/alerts';
import { listNotificationDeliveries, type DeliveryListRow } from '../../db/deliveries';
import { runningAndNextPlans } from '../../db/periods';
import { METRIC_NAME_PATTERN, findMeter } from '../../domain/plan';
import { issueWebhookSecretIfMissing } from '../../notifications/secrets';
import { emptyBody, noQuery, thresholdPercent, webhookUrl } from '../schemas';
import { COST_SUBJECT, alertRulesChangedSignal, tenantWorkflowId, type AlertRulesChange } from '../../workflows/messages';
import { operation, tenantIdParam } from '../operation';
import { assertWebhookTargetAllowed } from '../webhook-target';
import { alertRule, createdAlertRule, delivery, pageOf } from '../responses';

/** A rule's channel: an email address, or an http(s) webhook signed with the tenant's secret. */
export const ruleChannel = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('email'), to: z.string().email() }),
  z.strictObject({ type: z.literal('webhook'), url: webhookUrl }),
]);

/**
 * `POST /v1/tenants/{id}/alert-rules`: `metric` (a meter with a limit) or `cost: true` (the plan's
 * cost limit), a threshold percent of that limit, and a channel.
 */
export const createAlertRuleBody = z
  .strictObject({
    metric: z.string().regex(METRIC_NAME_PATTERN, 'must be a metric of the plan').optional(),
    cost: z.literal(true).optional(),
    threshold: thresholdPercent,
    channel: ruleChannel,
  })
  .superRefine((b, ctx) => {
    if ((b.metric === undefined) === (b.cost === undefined)) {
      ctx.addIssue({ code: 'custom', path: ['metric'], message: 'give exactly one of metric or cost: true' });
    }
  });

/** `GET /v1/tenants/{id}/deliveries`: pagination, optionally one event's or one status's rows. */
export const listDeliveriesQuery = paginationQuery
  .extend({
    event_id: z.string().min(1).max(256).optional(),
    status: z.enum(['pending', 'delivered', 'failed', 'recorded']).optional(),
  })
  .strict();

/** `GET /v1/tenants/{id}/alert-rules`: pagination only. */
export const listAlertRulesQuery = paginationQuery.strict();

/**
 * A tenant's alert rules and its notification deliveries. Tenant key on its own tenant, or the
 * admin; another tenant's ids answer 404. A rule change is stored, then read back by the running
 * workflow (`alertRulesStored`) before the API answers, so it applies from now on; new periods load
 * rules from storage.
 */
export function alertRulesRouter(ctx: ApiContext, temporal: Client): Router {
  const router = Router();

  router.post(
    '/tenants/:id/alert-rules',
    operation({
      operationId: 'createAlertRule',
      tag: 'Alerts',
      summary: 'Add an alert rule: a metric with a limit (or the cost), a threshold percent, a channel',
      description: "Applies to the running period at once. A tenant's first webhook rule issues its webhook signing secret, shown once in this answer.",
      params: { id: tenantIdParam },
      query: noQuery,
      body: createAlertRuleBody,
      responses: { 201: { description: 'the rule', schema: createdAlertRule } },
      problems: {
        409: `the tenant is cancelled, or already holds ${MAX_ALERT_RULES_PER_TENANT} alert rules (\`conflict\`)`,
        422: "validation failed, the plan has no such meter with a limit (`unknown_metric`) or no `cost_limit`, or `channel.url` is not https or names a private or metadata address (`webhook_target_refused`)",
      },
    }),
    async (req, res) => {
      const tenant = await ownTenant(ctx, res, tenantParam(req));
      if (tenant.status !== 'active') throw new ApiError(409, 'conflict', `tenant ${tenant.id} is cancelled`);
      parseListQuery(noQuery, req);
      const body = createAlertRuleBody.parse(req.body);
      if (body.channel.type === 'webhook') await assertWebhookTargetAllowed(ctx, body.channel.url, 'channel.url');
      await assertWatchable(ctx, tenant, body);
      const row: AlertRuleRow = {
        id: `ar_${randomBytes(8).toString('hex')}`,
        tenant_id: tenant.id,
        metric: body.metric ?? null,
        threshold: String(body.threshold),
        channel: body.channel,
        created_at: new Date(),
        deleted_at: null,
      };
      if (!(await insertAlertRuleWithinCap(ctx.db, row))) {
        throw new ApiError(409, 'conflict', `tenant ${tenant.id} already has ${MAX_ALERT_RULES_PER_TENANT} alert rules, the most a tenant may hold; delete one first`);
      }
      // A webhook rule needs the tenant's signing secret: issued (and shown once) now if it has none,
      // before the workflow hears of the rule, which may fire at once.
      const secret = body.channel.type === 'webhook' ? await issueWebhookSecretIfMissing(ctx.db, tenant.id) : undefined;
      try {
        await ruleChangeApplied(ctx, temporal, tenant, { upsert: [{ id: row.id, subject: row.metric ?? COST_SUBJECT, threshold: body.threshold }] });
      } catch (err) {
        // The running period has not taken the rule: undo, so a retry is clean.
        await removeAlertRule(ctx.db, row.id);
        if (secret) await withdrawWebhookSecret(ctx.db, tenant.id, secret);
        rereadRules(ctx, tenant, req);
        throw unapplied(err);
      }
      req.log?.info({ tenant_id: tenant.id, rule_id: row.id }, 'alert rule created');
      res.status(201).json({ ...presentRule(row), ...(secret ? { webhook_secret: secret } : {}) });
    },
  );

  router.get(
    '/tenants/:id/alert-rules',
    operation({
      operationId: 'listAlertRules',
      tag: 'Alerts',
      summary: "List the tenant's alert rules",
      params: { id: tenantIdParam },
      query: listAlertRulesQuery,
      responses: { 200: { description: 'a page of rules', schema: pageOf(alertRule) } },
    }),
    async (req, res) => {
      const tenant = await ownTenant(ctx, res, tenantParam(req));
      const query = parseListQuery(listAlertRulesQuery, req);
      const page = await listAlertRules(ctx.db, tenant.id, query);
      res.json({ ...page, data: page.data.map(presentRule) });
    },
  );

  router.get(
    '/tenants/:id/alert-rules/:ruleId',
    operation({
      operationId: 'getAlertRule',
      tag: 'Alerts',
      summary: 'Get an alert rule',
      params: { id: tenantIdParam, ruleId: z.string().describe('the alert rule id') },
      query: noQuery,
      responses: { 200: { description: 'the rule', schema: alertRule } },
    }),
    async (req, res) => {
      const tenant = await ownTenant(ctx, res, tenantParam(req));
      parseListQuery(noQuery, req);
      res.json(presentRule(await findRule(ctx, tenant.id, String(req.params.ruleId))));
    },
  );

  router.delete(
    '/tenants/:id/alert-rules/:ruleId',
    operation({
      operationId: 'deleteAlertRule',
      tag: 'Alerts',
      summary: 'Delete an alert rule (the running period stops watching it at once)',
      params: { id: tenantIdParam, ruleId: z.string().describe('the alert rule id') },
      query: noQuery,
      responses: { 204: { description: 'deleted' } },
      problems: { 422: 'a query parameter, or a body with fields: this route takes neither (`validation_failed`)' },
    }),
    async (req, res) => {
      const tenant = await ownTenant(ctx, res, tenantParam(req));
      parseListQuery(noQuery, req);
      emptyBody.parse(req.body ?? {});
      const rule = await findRule(ctx, tenant.id, String(req.params.ruleId));
      const deletedAt = new Date();
      await retireAlertRule(ctx.db, rule.id, deletedAt);
      try {
        await ruleChangeApplied(ctx, temporal, tenant, { removed: [rule.id] });
      } catch (err) {
        await reinstateAlertRule(ctx.db, rule.id, deletedAt);
        rereadRules(ctx, tenant, req);
        throw unapplied(err);
      }
      req.log?.info({ tenant_id: tenant.id, rule_id: rule.id }, 'alert rule deleted');
      res.status(204).end();
    },
  );

  router.get(
    '/tenants/:id/deliveries',
    operation({
      operationId: 'listNotificationDeliveries',
      tag: 'Alerts',
      summary: 'Notification deliveries (emails, webhooks) and their status, newest first',
      params: { id: tenantIdParam },
      query: listDeliveriesQuery,
      responses: { 200: { description: 'a page of deliveries', schema: pageOf(delivery) } },
    }),
    async (req, res) => {
      const tenant = await ownTenant(ctx, res, tenantParam(req));
      const query = parseListQuery(listDeliveriesQuery, req);
      const page = await listNotificationDeliveries(ctx.db, tenant.id, { event_id: query.event_id, status: query.status }, query);
      res.json({ ...page, data: page.data.map(presentDelivery) });
    },
  );

  return router;
}

/** The tenant of the route, seen by its own key or the admin; anything else is 404. */
async function ownTenant(ctx: ApiContext, res: Response, tenantId: string): Promise<TenantRow> {
  assertTenantAccess(res, tenantId);
  const tenant = await findTenant(ctx.db, tenantId);
  if (!tenant) throw notFound(`tenant ${tenantId}`);
  return tenant;
}

async function findRule(ctx: ApiContext, tenantId: string, ruleId: string): Promise<AlertRuleRow> {
  const rule = await findAlertRule(ctx.db, tenantId, ruleId);
  if (!rule) throw notFound(`alert rule ${ruleId}`);
  return rule;
}

/**
 * A rule must be able to fire: its metric is a meter with a limit, or the plan has a cost limit,
 * on the plan of the running period or on the plan the next period will use.
 */
async function assertWatchable(ctx: ApiContext, tenant: TenantRow, body: z.infer<typeof createAlertRuleBody>): Promise<void> {
  const plans = await runningAndNextPlans(ctx.db, tenant);
  if (body.metric !== undefined) {
    const metric = body.metric;
    if (!plans.some((p) => findMeter(p, metric)?.limit !== undefined)) {
      throw new ApiError(422, 'unknown_metric', `the tenant's plan has no meter ${metric} with a limit`, [
        { path: 'metric', message: 'must be a metric of the plan that has a limit' },
      ]);
    }
  } else if (!plans.some((p) => p.cost_limit !== undefined)) {
    throw new ApiError(422, 'validation_failed', "the tenant's plan has no cost_limit", [{ path: 'cost', message: 'the plan has no cost_limit' }]);
  }
}

/**
 * Brings a stored rule change to the tenant's run. An active tenant's run reads the rules back
 * and judges them before the API answers (`alertRulesStored`): a claim already under way cannot
 * count an event sent after the answer without them. A cancelled tenant's run takes no new usage,
 * only its last period's late events: it is signalled, and one that has ended needs nothing.
 */
async function ruleChangeApplied(ctx: ApiContext, temporal: Client, tenant: TenantRow, change: AlertRulesChange): Promise<void> {
  if (tenant.status === 'active') return ctx.billing.alertRulesStored(tenant.id);
  try {
    await temporal.workflow.getHandle(tenantWorkflowId(tenant.id)).signal(alertRulesChangedSignal, change);
  } catch (err) {
    if (!(err instanceof WorkflowNotFoundError)) throw err;
  }
}

/** After an undo, an active tenant's run reads its rules once more (a signalled run needs nothing: the signal failed). */
function rereadRules(ctx: ApiContext, tenant: TenantRow, req: Request): void {
  if (tenant.status !== 'active') return;
  ctx.billing.rereadAfterUndo(tenant.id, 'alert rules', (err) => req.log?.warn({ err, tenant_id: tenant.id }, 'undone rule change not re-read by the run'));
}

/** Why a rule change was undone: the gateway's own answer (the period kept rolling over), else Temporal out of reach. */
function unapplied(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  return new ApiError(503, 'unavailable', `could not reach the billing workflow: ${(err as Error).message}`, undefined, { 'Retry-After': '1' });
}

/** The public shape of a rule: `metric` or `cost: true`, as it was created. */
function presentRule(row: AlertRuleRow) {
  return {
    id: row.id,
    tenant_id: row.tenant_id,
    ...(row.metric === null ? { cost: true as const } : { metric: row.metric }),
    threshold: Number(row.threshold),
    channel: row.channel,
    created_at: new Date(row.created_at).toISOString(),
  };
}

/** The public shape of a delivery: where an event went, how many attempts, and how it ended. */
function presentDelivery(row: DeliveryListRow) {
  const iso = (d: Date | null) => (d ? new Date(d).toISOString() : null);
  return {
    id: String(row.id),
    event_id: row.event_id,
    event_type: row.event_type,
    channel: row.channel,
    target: row.target,
    status: row.status,
    attempts: Number(row.attempts),
    last_error: row.last_error,
    created_at: iso(row.created_at),
    last_attempt_at: iso(row.last_attempt_at),
    delivered_at: iso(row.delivered_at),
  };
}
