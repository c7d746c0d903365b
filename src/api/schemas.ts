import { z } from 'zod';
import { Dec } from '../domain/decimal';
import { DEFAULT_ALERT_THRESHOLDS, DEFAULT_GRACE_PERIOD_SECONDS, METRIC_NAME_PATTERN, pricingProblems } from '../domain/plan';
import { isValidTimeZone } from '../domain/periods';
import { matchKeyProblems } from '../domain/dimensions';

/**
 * Request shapes of API v1, written once as zod schemas: validation, types and the OpenAPI
 * document all come from here.
 *
 * Every object is strict: a field the API does not know answers 422 naming it
 * (`events.0.colour`), never silently dropped. A misspelled optional field (`finalise`) or one
 * the API does not have yet (`dry_run` on a rerun) would otherwise be accepted and ignored, and
 * the request would do something other than what the client asked for. Only event `properties`
 * are free-form.
 */

const idPattern = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

/**
 * Names every plain JavaScript object already answers (`constructor`, `toString`, `__proto__`...).
 * The tenant workflow keeps counters by metric and authorize answers by id in plain objects, so
 * such a name reads an inherited member instead of an absent entry: a meter named `constructor`
 * fails every workflow task that counts it, an authorize id `constructor` answers a function.
 * Refused at the API until the workflow keys those objects safely (see SECURITY.md).
 */
const OBJECT_MEMBER_NAMES = new Set(Object.getOwnPropertyNames(Object.prototype));
const notObjectMember = (name: string) => !OBJECT_MEMBER_NAMES.has(name);
const OBJECT_MEMBER_MESSAGE = 'is reserved (a name every JavaScript object has)';

/** Ids of plans and tenants: they appear in Temporal workflow ids, so they stay URL- and log-safe. */
export const resourceId = z.string().regex(idPattern, 'must be 1-64 characters: letters, digits, _ . - (starting with a letter or digit)');

/**
 * A webhook target: http(s) only, and without credentials in the URL, which every failed attempt
 * would copy into the delivery's `last_error` and the worker's logs. Where a target may point
 * (https, public addresses) is the deployment's policy: `src/api/webhook-target.ts` checks it next.
 */
export const webhookUrl = z
  .string()
  .url()
  .regex(/^https?:\/\//, 'must be an http(s) URL')
  .refine((url) => {
    try {
      const parsed = new URL(url);
      return parsed.username === '' && parsed.password === '';
    } catch {
      return false;
    }
  }, 'must not contain credentials (user:password@)');

/** A money or price amount as a decimal string (up to 10 decimal places, BILLING.md). */
export const decimalString = z.string().regex(/^\d{1,18}(\.\d{1,10})?$/, 'must be a decimal string such as "29.00"');

/** The largest quantity of one event (and of one authorize or estimate request). */
export const MAX_QUANTITY = 1e15;

const atMostSixDecimals = (q: number) => new Dec(q).decimalPlaces() <= 6;

/** A quantity: a finite JSON number >= 0 with at most 6 decimal places. */
export const quantity = z.number().finite().min(0).max(MAX_QUANTITY).refine(atMostSixDecimals, 'must have at most 6 decimal places');

/**
 * A package's size: a quantity above 0. At least 0.000001, so a period's packages stay within
 * the 60 significant digits rating is exact to (a size of 5e-324 would make 10^339 packages).
 */
const packageSize = z.number().finite().positive().max(MAX_QUANTITY).refine(atMostSixDecimals, 'must have at most 6 decimal places');

/** A threshold percent, of a plan or an alert rule: above 0, at most 1000, at most 4 decimal places (as alerts store it). */
export const thresholdPercent = z
  .number()
  .positive()
  .max(1000)
  .refine((t) => new Dec(t).decimalPlaces() <= 4, 'must have at most 4 decimal places');

const tier = z.strictObject({
  up_to: z.number().positive().finite().nullable(),
  unit_price: decimalString,
  flat_fee: decimalString.optional(),
});

const pricing = z.discriminatedUnion('model', [
  z.strictObject({ model: z.literal('per_unit'), unit_price: decimalString, included: quantity.optional() }),
  z.strictObject({ model: z.literal('graduated'), tiers: z.array(tier).min(1).max(50) }),
  z.strictObject({ model: z.literal('volume'), tiers: z.array(tier).min(1).max(50) }),
  z.strictObject({
    model: z.literal('package'),
    package_size: packageSize,
    package_price: decimalString,
    included: quantity.optional(),
  }),
]);

const meter = z
  .strictObject({
    metric: z.string().regex(METRIC_NAME_PATTERN, 'must match ^[a-z][a-z0-9_]{0,63}$').refine(notObjectMember, OBJECT_MEMBER_MESSAGE),
    aggregation: z.enum(['sum', 'count', 'max', 'latest']),
    limit: z.number().positive().finite().optional(),
    hard_limit: z.boolean().optional(),
    pricing,
    group_by: z
      .array(z.string().min(1).max(64))
      .min(1)
      .max(5)
      .optional()
      .describe('price by these event properties: each group is counted, priced and invoiced on its own; limits stay on the total'),
    prices: z
      .array(z.strictObject({ match: z.record(z.string().min(1).max(64), z.string().max(256)), pricing }))
      .max(100)
      .optional()
      .describe('per-group pricing: the first entry whose `match` equals the group\'s properties, else `pricing`'),
  })
  .superRefine((m, ctx) => {
    for (const problem of pricingProblems(m.pricing)) ctx.addIssue({ code: 'custom', path: ['pricing'], message: problem });
    if (m.prices !== undefined && m.group_by === undefined) ctx.addIssue({ code: 'custom', path: ['prices'], message: 'prices need group_by' });
    for (const path of matchKeyProblems(m)) ctx.addIssue({ code: 'custom', path: path.split('.').map((p) => (/^\d+$/.test(p) ? Number(p) : p)), message: 'a match key must be one of group_by' });
    m.prices?.forEach((p, i) => {
      for (const problem of pricingProblems(p.pricing)) ctx.addIssue({ code: 'custom', path: ['prices', i, 'pricing'], message: problem });
    });
    if (m.hard_limit && m.limit === undefined) ctx.addIssue({ code: 'custom', path: ['hard_limit'], message: 'a hard limit needs a limit' });
  });

/** `POST /v1/plans`. */
export const createPlanBody = z
  .strictObject({
    id: resourceId,
    name: z.string().min(1).max(200),
    currency: z.string().regex(/^[A-Z]{3}$/, 'must be an ISO 4217 code such as USD'),
    interval: z.enum(['day', 'month', 'year']),
    base_fee: decimalString,
    alert_thresholds: z.array(thresholdPercent).max(20).default(DEFAULT_ALERT_THRESHOLDS),
    cost_limit: decimalString.optional(),
    grace_period_seconds: z.number().int().min(0).max(90 * 86400).default(DEFAULT_GRACE_PERIOD_SECONDS),
    retention_days: z
      .number()
      .int()
      .min(0)
      .max(36_500)
      .optional()
      .describe("days an invoiced period's raw events are kept after its end (absent: the server's RETENTION_DAYS; 0: purged at the next daily run)"),
    prepaid: z.boolean().optional().describe('prepaid only: authorize refuses consumption the available balance cannot pay for (`insufficient_balance`)'),
    low_balance_threshold: decimalString.optional().describe('`balance.low` fires when available credit falls to or below it (a tenant may set its own)'),
    meters: z.array(meter).min(1).max(100),
  })
  .superRefine((p, ctx) => {
    const seen = new Set<string>();
    p.meters.forEach((m, i) => {
      if (seen.has(m.metric)) ctx.addIssue({ code: 'custom', path: ['meters', i, 'metric'], message: 'duplicate metric' });
      seen.add(m.metric);
    });
  });

/** `POST /v1/tenants`. */
export const createTenantBody = z.strictObject({
  id: resourceId,
  name: z.string().min(1).max(200),
  plan_id: resourceId,
  email: z.string().email().optional(),
  webhook_url: webhookUrl.optional(),
  timezone: z.string().refine(isValidTimeZone, 'must be an IANA time zone such as Europe/Paris').default('UTC'),
  billing_anchor: z.string().datetime({ offset: true }).optional(),
});

/** `PATCH /v1/tenants/{id}`: a plan change takes effect at the next period. */
export const updateTenantBody = z.strictObject({
  plan_id: resourceId.optional(),
  name: z.string().min(1).max(200).optional(),
  email: z.string().email().nullable().optional(),
  webhook_url: webhookUrl.nullable().optional(),
  limits: z
    .record(z.string().max(64), z.number().finite().nullable())
    .optional()
    .describe('admin only: `{ "<metric>" | "$cost": limit > 0 | null }`; the limit replaces the plan\'s at once, in the current period; null removes the override'),
  low_balance_threshold: decimalString.nullable().optional().describe("admin only: the tenant's own `balance.low` threshold; null: the plan's"),
});

/** One usage event of `POST /v1/events`. */
export const usageEvent = z.strictObject({
  id: z.string().min(1).max(128),
  tenant_id: resourceId.optional(),
  metric: z.string().regex(METRIC_NAME_PATTERN, 'must match ^[a-z][a-z0-9_]{0,63}$'),
  quantity: quantity.default(1),
  timestamp: z.string().datetime({ offset: true }).optional(),
  properties: z.record(z.string(), z.unknown()).optional(),
});

/** `POST /v1/events`: 1..1000 events, validated all-or-nothing. */
export const ingestBody = z.strictObject({ events: z.array(usageEvent).min(1).max(1000) });

/** `POST /v1/tenants/{id}/authorize`. */
export const authorizeBody = z.strictObject({ id: z.string().min(1).max(128).refine(notObjectMember, OBJECT_MEMBER_MESSAGE), metric: z.string().regex(METRIC_NAME_PATTERN), quantity });

/** `POST /v1/tenants/{id}/estimate`. */
export const estimateBody = z.strictObject({ metric: z.string().regex(METRIC_NAME_PATTERN), quantity });

/** `POST /v1/tenants/{id}/close-period`. */
export const closePeriodBody = z.strictObject({ finalize: z.boolean().optional() }).default({});

/** Routes that take no body: an empty object (or nothing), so a field sent there is not ignored. */
export const emptyBody = z.strictObject({});

/** Routes that take no query parameters: any parameter is unknown, and refused by name. */
export const noQuery = z.strictObject({});
