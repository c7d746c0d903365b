import { z } from 'zod';

/**
 * What the API answers, for the OpenAPI document only: the routes build these objects with their
 * presenters, and nothing here validates them. Shapes with an `id` in their metadata become
 * named schemas (`#/components/schemas/...`) that every operation answering them references.
 */

const iso = z.string().describe('ISO-8601 UTC instant');
const money = z.string().describe('decimal string at the currency\'s minor unit, e.g. "124.84"');
const period = z.object({ start: iso, end: iso }).describe('a half-open billing period: start inclusive, end exclusive');

/** RFC 9457 problem details: the body of every 4xx and 5xx answer. */
export const problem = z
  .object({
    type: z.string().describe('`https://tally.dev/problems/<code>`'),
    title: z.string(),
    status: z.number().int(),
    detail: z.string(),
    code: z.string().describe('stable machine word to branch on: validation_failed, not_found, unauthorized, forbidden, late_event, future_event, unknown_metric, subscription_cancelled, conflict, payload_too_large, unsupported_media_type, rate_limited, unavailable, internal'),
    errors: z.array(z.object({ path: z.string().describe('dotted path of the field, e.g. `events.3.quantity`'), message: z.string() })).optional(),
    request_id: z.string().optional().describe('the `X-Request-Id` of the request'),
  })
  .meta({ id: 'Problem', description: 'RFC 9457 problem details (`application/problem+json`)' });

export const plan = z
  .object({
    id: z.string(),
    version: z.number().int().describe('1 for the first post of an id, then +1 per post'),
    name: z.string(),
    currency: z.string().describe('ISO 4217'),
    interval: z.enum(['day', 'month', 'year']),
    base_fee: z.string(),
    alert_thresholds: z.array(z.number()),
    cost_limit: z.string().optional(),
    grace_period_seconds: z.number().int(),
    retention_days: z.number().int().optional().describe("days an invoiced period's raw events are kept; absent: the server's default"),
    meters: z.array(
      z.object({
        metric: z.string(),
        aggregation: z.enum(['sum', 'count', 'max', 'latest']),
        limit: z.number().optional(),
        hard_limit: z.boolean().optional(),
        pricing: z
          .object({ model: z.enum(['per_unit', 'graduated', 'volume', 'package']) })
          .catchall(z.unknown())
          .describe('as posted: `unit_price`, `tiers`, `package_size`... by model'),
      }),
    ),
  })
  .meta({ id: 'Plan', description: 'one stored version of a plan' });

const tenantFields = {
  id: z.string(),
  name: z.string(),
  plan_id: z.string().describe('the plan the next period opens on'),
  email: z.string().nullable(),
  webhook_url: z.string().nullable(),
  timezone: z.string().describe('IANA time zone of the billing anniversaries'),
  billing_anchor: iso,
  status: z.enum(['active', 'cancelled']),
  workflow_id: z.string().describe("the tenant's billing workflow in Temporal"),
  limits: z
    .record(z.string(), z.number())
    .describe("the tenant's own limits (admin overrides): a metric or `$cost` to the limit that replaces the plan's"),
  low_balance_threshold: z.string().nullable().describe("the tenant's own `balance.low` threshold; null: the plan's"),
  created_at: iso,
};

export const tenant = z.object(tenantFields).meta({ id: 'Tenant' });

export const tenantWithPeriod = z
  .object({ ...tenantFields, current_period: period.nullable().describe('the latest period; null before the first one is stored') })
  .meta({ id: 'TenantWithPeriod' });

export const createdTenant = z
  .object({
    ...tenantFields,
    current_period: period,
    api_key: z.string().describe("the tenant's API key: shown once"),
    webhook_secret: z.string().optional().describe('the webhook signing secret, when `webhook_url` was given: shown once'),
  })
  .meta({ id: 'CreatedTenant' });

export const updatedTenant = z
  .object({ ...tenantFields, webhook_secret: z.string().optional().describe('issued when a webhook is set on a tenant without a secret: shown once') })
  .meta({ id: 'UpdatedTenant' });

export const cancelledTenant = z
  .object({ ...tenantFields, final_invoice_id: z.string(), closed_period: period })
  .meta({ id: 'CancelledTenant' });

export const issuedApiKey = z.object({
  id: z.string(),
  tenant_id: z.string(),
  api_key: z.string().describe('the new key: shown once'),
  prefix: z.string(),
  created_at: iso,
  revoked_keys: z.number().int().describe('how many earlier keys stopped working'),
});

export const rotatedWebhookSecret = z.object({ tenant_id: z.string(), webhook_secret: z.string().describe('shown once'), rotated_at: iso });

export const ingested = z.object({ received: z.number().int().describe('events acknowledged (durable)') });

/** A quantity exactly as tally counts it, beside its JSON number. */
const exactQuantity = z.string().describe('the same quantity exactly, as a decimal string (up to 6 decimal places), never rounded');

export const usageView = z
  .object({
    tenant_id: z.string(),
    plan_id: z.string(),
    plan_name: z.string().describe("the plan's display name"),
    plan_version: z.number().int(),
    period: period.extend({ interval: z.enum(['day', 'month', 'year']) }),
    metrics: z.record(
      z.string(),
      z.object({
        used: z.number().describe('the counter as a JSON number (a double: may round a counter with more than 15-17 significant digits)'),
        used_decimal: exactQuantity,
        limit: z.number().nullable().describe("the effective limit: the tenant's override, else the plan's; null: unlimited"),
        plan_limit: z.number().nullable().describe("the plan's own limit"),
        packs: z
          .array(
            z.object({
              id: z.string(),
              metric: z.string(),
              units: z.number(),
              drawn_this_period: z.number(),
              remaining: z.number(),
              lost: z.number().describe('units left when the pack expired (lost)'),
              purchased_at: iso,
              expires_at: iso,
              status: z.enum(['active', 'exhausted', 'expired']),
            }),
          )
          .describe("the metric's add-on packs"),
        groups: z
          .array(z.object({ group: z.record(z.string(), z.string()), used: z.number(), used_decimal: exactQuantity, amount: money }))
          .optional()
          .describe('a dimensioned meter (`group_by`): each group counted and priced on its own; `amount` is their sum'),
        effective_limit: z.number().nullable().describe('the limit percent, alerts and authorize judge against (equal to `limit`)'),
        percent: z.number().nullable(),
        hard_limit: z.boolean(),
        amount: money,
        forecast: z
          .object({
            projected_used: z.number().nullable().describe('the counter at period end at the rate so far (a reading for `max`/`latest` meters)'),
            projected_amount: money.nullable().describe('the projected usage rated like the invoice line'),
            exhausts_at: iso.nullable().describe('when the limit is reached at that rate, if inside the period'),
          })
          .describe('null fields until 1 % of the period has elapsed'),
      }),
    ),
    costs: z.object({
      base_fee: money,
      usage: money,
      total: money,
      currency: z.string(),
      projected_total: money.nullable().describe('the invoice total at period end at the rate so far; null until 1 % of the period has elapsed'),
      cost_limit: money.nullable().describe("the running-cost limit in force: the tenant's `$cost` override, else the plan's `cost_limit`"),
    }),
    alerts: z.array(
      z.object({
        id: z.string(),
        metric: z.string(),
        threshold: z.number(),
        level: z.enum(['warning', 'critical', 'exceeded']),
        status: z.enum(['notified', 'superseded']),
        used: z.number(),
        limit: z.number(),
        period_start: iso,
        fired_at: iso,
      }),
    ),
    alert_level: z.enum(['none', 'warning', 'critical', 'exceeded']),
    pending_events: z.number().int().describe('events acknowledged but not counted yet'),
    as_of: iso,
  })
  .meta({ id: 'UsageView', description: "the current period's counters, costs and alerts" });

export const authorization = z.object({
  allowed: z.boolean(),
  reason: z.enum(['hard_limit', 'insufficient_balance']).optional(),
  remaining: z.number().nullable().describe('what the effective limit still allows (refused for balance: the units the available credit still buys); null without a limit'),
  options: z.array(z.enum(['upgrade_plan', 'buy_pack'])).optional().describe('refused at a hard limit: what the tenant can do about it'),
});

export const estimate = z.object({ amount: money, currency: z.string() });

export const invoice = z
  .object({
    id: z.string(),
    number: z.number().int().nullable().describe('sequential number, set when finalized'),
    tenant_id: z.string(),
    status: z.enum(['draft', 'finalized', 'void']),
    version: z.number().int(),
    period_start: iso,
    period_end: iso,
    plan_id: z.string(),
    plan_version: z.number().int(),
    currency: z.string(),
    lines: z.array(
      z.object({
        kind: z.enum(['usage', 'base_fee', 'pack']).describe("what the line bills: a meter's usage, the plan's base fee, or an add-on pack"),
        metric: z.string().nullable().describe('null for the base fee'),
        description: z.string(),
        quantity: z.number(),
        quantity_decimal: exactQuantity,
        amount: money,
        tiers: z.array(z.object({}).catchall(z.unknown())).optional().describe('how a tiered price split the quantity'),
        packs: z
          .array(z.object({ pack_id: z.string(), units: z.string() }))
          .optional()
          .describe('a usage line: the units drawn from each add-on pack, which `quantity` leaves out'),
        group: z.record(z.string(), z.string()).optional().describe("a dimensioned meter's line: the group's properties (`group_by` key to value)"),
      }),
    ),
    subtotal: money,
    total: money,
    credits_applied: money.describe('prepaid credit applied at finalization (never above `total`; "0.00" on drafts)'),
    amount_due: money.describe('`total - credits_applied`, never below 0'),
    created_at: iso,
    finalized_at: iso.nullable(),
    replaces: z.string().optional().describe('the version this rerun replaced'),
    replaced_by: z.string().optional().describe('the rerun that voided this version'),
    voided_at: iso.optional(),
    reason: z.string().optional().describe("the rerun's reason"),
    requested_by: z.string().optional(),
    changes: z
      .array(
        z.object({
          metric: z.string(),
          description: z.string(),
          quantity_before: z.number().nullable(),
          quantity_after: z.number().nullable(),
          amount_before: z.string().nullable(),
          amount_after: z.string().nullable(),
          delta: z.string().nullable(),
        }),
      )
      .optional()
      .describe('per line, what a rerun changed from the version it replaces'),
  })
  .meta({ id: 'Invoice' });

export const closedPeriod = z.object({
  closed_period: period,
  invoice_id: z.string(),
  invoice_workflow_id: z.string(),
  current_period: period.nullable().describe('null once the subscription has ended'),
});

export const rerunStarted = z.object({ invoice_id: z.string().describe('the id version n+1 will have'), workflow_id: z.string() });

const channel = z.union([z.object({ type: z.literal('email'), to: z.string() }), z.object({ type: z.literal('webhook'), url: z.string() })]);

export const alertRule = z
  .object({
    id: z.string(),
    tenant_id: z.string(),
    metric: z.string().optional().describe('the watched meter; absent for a cost rule'),
    cost: z.literal(true).optional().describe("present for a rule on the plan's cost limit"),
    threshold: z.number().describe('percent of the limit'),
    channel,
    created_at: iso,
  })
  .meta({ id: 'AlertRule' });

export const createdAlertRule = z
  .object({ ...alertRule.shape, webhook_secret: z.string().optional().describe("the tenant's webhook signing secret, issued with its first webhook rule: shown once") })
  .meta({ id: 'CreatedAlertRule' });

export const delivery = z
  .object({
    id: z.string(),
    event_id: z.string(),
    event_type: z.string().nullable(),
    channel: z.string(),
    target: z.string(),
    status: z.enum(['pending', 'delivered', 'failed', 'recorded']),
    attempts: z.number().int(),
    last_error: z.string().nullable(),
    created_at: iso,
    last_attempt_at: iso.nullable(),
    delivered_at: iso.nullable(),
  })
  .meta({ id: 'Delivery', description: 'one notification (an email or a webhook call) and how it went' });

export const liveness = z.object({ status: z.literal('ok') });

export const readiness = z.object({ status: z.enum(['ready', 'draining', 'unavailable']), postgres: z.boolean(), temporal: z.boolean() });

/** A page of a list endpoint: `limit` items at most, newest first. */
export function pageOf(item: z.ZodType) {
  return z.object({ data: z.array(item), has_more: z.boolean(), total_count: z.number().int() });
}
