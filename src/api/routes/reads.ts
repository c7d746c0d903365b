import { Router, type Response } from 'express';
import { z } from 'zod';
import type { ApiContext } from '../context';
import { assertTenantAccess, tenantParam } from '../auth';
import { ApiError, fieldErrors, notFound } from '../errors';
import { resourceId } from '../schemas';
import { paginationQuery, parseListQuery } from '../pagination';
import { findTenant, type TenantRow } from '../../db/tenants';
import { findPlanVersion } from '../../db/plans';
import type { InvoiceTotals, PeriodRow } from '../../db/invoices';
import { listPeriods } from '../../db/periods';
import { listTenantAlerts, type ListedAlertRow } from '../../db/alerts';
import { normalizeDecimal } from '../../db/usage';
import type { PeriodCounter } from '../../contracts/ledger';
import { counterFromAggregates } from '../../domain/aggregation';
import { roundMoney } from '../../domain/decimal';
import { METRIC_NAME_PATTERN, findMeter, type PlanVersion } from '../../domain/plan';
import { estimatedEventCost } from '../../domain/event-cost';
import { currentTierPosition, listUsageEvents, retainedSince, type ListedEventRow } from '../../db/events';
import { formatPeriodStamp } from '../../domain/periods';
import { BALANCE_DEPLETED, BALANCE_LOW, COST_SUBJECT } from '../../contracts/ids';
import { operation, tenantIdParam } from '../operation';
import { pageOf } from '../responses';

// ---------------------------------------------------------------------------------------------
// Schemas. The routes' OpenAPI operations use the same definitions that validate requests;
// response schemas describe exactly what the presenters below return.
// ---------------------------------------------------------------------------------------------

const isoInstant = z.string().datetime({ offset: true, message: 'must be an ISO-8601 instant such as 2026-11-22T10:00:00Z' });

/**
 * `GET /v1/tenants/{id}/events`: pagination plus filters. `from` is inclusive and `to` exclusive
 * (half-open, like periods), both compared with the event's own timestamp. `property.<key>`
 * parameters are taken apart first (`propertyFilters`). Like every query here it is strict: a
 * filter the API does not have (`region`) is refused by name, rather than ignored into a list of
 * every event.
 */
export const listEventsQuery = paginationQuery
  .extend({
    metric: z.string().regex(METRIC_NAME_PATTERN, 'must match ^[a-z][a-z0-9_]{0,63}$').optional(),
    from: isoInstant.optional(),
    to: isoInstant.optional(),
  })
  .strict()
  .refine((q) => q.from === undefined || q.to === undefined || Date.parse(q.from) <= Date.parse(q.to), {
    path: ['to'],
    message: 'must not be before from',
  });

/** `GET /v1/tenants/{id}/periods`: pagination only. */
export const listPeriodsQuery = paginationQuery.strict();

/** `GET /v1/tenants/{id}/alerts`: pagination only. */
export const listAlertsQuery = paginationQuery.strict();

/** One stored usage event, as `GET /v1/tenants/{id}/events` lists it. */
export const usageEventView = z.object({
  id: z.string(),
  tenant_id: z.string(),
  metric: z.string(),
  quantity: z.number(),
  timestamp: z.string(),
  period_start: z.string(),
  properties: z.record(z.string(), z.unknown()).nullable(),
  received_at: z.string(),
  /** quantity × the meter's unit price at the tenant's current tier position (exact); null for non-sum meters. */
  cost: z.string().nullable(),
}).meta({ id: 'UsageEvent' });

/** `property.<key>=<value>`: a key of 1 to 64 characters, one value of up to 256. */
const PROPERTY_PARAM = /^property\.(.{1,64})$/s;

/**
 * Splits `property.<key>=<value>` parameters off a query: the filters, and the rest for the strict
 * schema. A key given twice, an empty or over-long value answer 422 naming the parameter.
 */
export function propertyFilters(query: Record<string, unknown>): { filters: Array<{ key: string; value: string }>; rest: Record<string, unknown> } {
  const filters: Array<{ key: string; value: string }> = [];
  const rest: Record<string, unknown> = {};
  const errors: Array<{ path: string; message: string }> = [];
  for (const [name, value] of Object.entries(query)) {
    const match = PROPERTY_PARAM.exec(name);
    if (!match) {
      rest[name] = value;
      continue;
    }
    if (typeof value !== 'string') errors.push({ path: name, message: 'must be given once' });
    else if (value.length === 0 || value.length > 256 || value.includes('\u0000')) errors.push({ path: name, message: 'must be 1 to 256 characters' });
    else filters.push({ key: match[1]!, value });
  }
  if (errors.length > 0) throw new ApiError(422, 'validation_failed', 'the query string is invalid', errors);
  return { filters, rest };
}

/** One billing period, as `GET /v1/tenants/{id}/periods` lists it. */
export const periodView = z.object({
  id: z.string(),
  tenant_id: z.string(),
  start: z.string(),
  end: z.string(),
  status: z.enum(['open', 'closed', 'invoiced']),
  plan_id: z.string(),
  plan_version: z.number().int(),
  counters: z.record(z.string(), z.number()),
  /** The same counters exactly, as decimal strings (a JSON number may round them). */
  counters_decimal: z.record(z.string(), z.string()),
  /** `live`: the open period's counters, still moving; `stored`: a closed period's. Both from the read model. */
  counters_source: z.enum(['live', 'stored']),
  totals: z.object({ invoice_id: z.string(), subtotal: z.string(), total: z.string(), currency: z.string() }).nullable(),
  invoice_ids: z.array(z.string()),
  grace_ends_at: z.string().nullable(),
  closed_at: z.string().nullable(),
}).meta({ id: 'Period' });

/** One alert, as `GET /v1/tenants/{id}/alerts` lists it (fields of API.md plus `kind`). */
export const alertView = z.object({
  id: z.string(),
  tenant_id: z.string(),
  kind: z.enum(['meter', 'cost', 'balance.low', 'balance.depleted']),
  /** The meter's metric; null for the plan's cost limit (`kind: "cost"`) and for balance alerts. */
  metric: z.string().nullable(),
  threshold: z.number(),
  level: z.string(),
  status: z.enum(['notified', 'superseded', 'failed']),
  used: z.number(),
  limit: z.number(),
  period_start: z.string(),
  fired_at: z.string(),
  /** The channel types the alert went to (`email`, `webhook`, `log`); per-target outcomes are deliveries. */
  channels: z.array(z.string()),
  covers: z.array(z.number()),
  /** When someone marked the alert as seen (triage state only); null while it is open. */
  acknowledged_at: z.string().nullable(),
}).meta({ id: 'Alert' });

type UsageEventView = z.infer<typeof usageEventView>;
type PeriodView = z.infer<typeof periodView>;
type AlertView = z.infer<typeof alertView>;

// ---------------------------------------------------------------------------------------------
// Routes
// ---------------------------------------------------------------------------------------------

/**
 * Read-only history of a tenant: stored events, periods and alerts, all paginated newest first.
 * Mounted at `/v1`; a tenant key reads only its own tenant (others answer 404, as if absent).
 */
export function readsRouter(ctx: ApiContext): Router {
  const router = Router();

  router.get(
    '/tenants/:id/events',
    operation({
      operationId: 'listUsageEvents',
      tag: 'Usage',
      summary: 'Stored usage events, newest first',
      description:
        'Filters: `metric`, the event timestamp from `from` (inclusive) to `to` (exclusive), and `property.<key>=<value>` (any number, all must hold; a number or boolean property matches its JSON text). `total_count` is exact up to 10,000 matching events (`total_count_exact: true`); beyond, it is an estimate by the query planner (`false`). `retained_since`: events before it were purged by retention (null: none was).',
      params: { id: tenantIdParam },
      query: listEventsQuery,
      responses: {
        200: {
          description: 'a page of events',
          schema: pageOf(usageEventView).extend({
            total_count_exact: z.boolean().describe('false when more than 10,000 events match: `total_count` is then an estimate'),
            retained_since: z.string().nullable().describe('events older than this were purged by retention'),
          }),
        },
      },
    }),
    async (req, res) => {
      const tenantId = tenantParam(req);
      await readableTenant(ctx, res, tenantId);
      const { filters, rest } = propertyFilters(req.query as Record<string, unknown>);
      const parsed = listEventsQuery.safeParse(rest);
      if (!parsed.success) throw new ApiError(422, 'validation_failed', 'the query string is invalid', fieldErrors(parsed.error));
      const query = parsed.data;
      const page = await listUsageEvents(
        ctx.db,
        tenantId,
        {
          metric: query.metric,
          from: query.from === undefined ? undefined : new Date(query.from),
          to: query.to === undefined ? undefined : new Date(query.to),
          properties: filters,
        },
        query,
      );
      const [position, since] = await Promise.all([currentTierPosition(ctx.db, tenantId), retainedSince(ctx.db, tenantId)]);
      res.json({ ...page, retained_since: since ? since.toISOString() : null, data: page.data.map((row) => presentEvent(row, position)) });
    },
  );

  router.get(
    '/tenants/:id/periods',
    operation({
      operationId: 'listPeriods',
      tag: 'Usage',
      summary: 'Past and current periods with counters, totals and invoice ids, newest first',
      params: { id: tenantIdParam },
      query: listPeriodsQuery,
      responses: { 200: { description: 'a page of periods', schema: pageOf(periodView) } },
    }),
    async (req, res) => {
      const tenantId = tenantParam(req);
      await readableTenant(ctx, res, tenantId);
      const query = parseListQuery(listPeriodsQuery, req);
      const { page, invoices, counters: counted } = await listPeriods(ctx.db, tenantId, query, (id) => parsePeriodId(tenantId, id));

      const data: PeriodView[] = [];
      for (const period of page.data) {
        const versions = invoices.filter((i) => i.period_start.getTime() === period.start.getTime());
        data.push(presentPeriod(period, versions, await periodCounters(ctx, period, counted)));
      }
      res.json({ ...page, data });
    },
  );

  router.get(
    '/tenants/:id/alerts',
    operation({
      operationId: 'listAlerts',
      tag: 'Alerts',
      summary: 'Alerts fired for the tenant, newest first',
      params: { id: tenantIdParam },
      query: listAlertsQuery,
      responses: { 200: { description: 'a page of alerts', schema: pageOf(alertView) } },
    }),
    async (req, res) => {
      const tenantId = tenantParam(req);
      await readableTenant(ctx, res, tenantId);
      const query = parseListQuery(listAlertsQuery, req);
      const page = await listTenantAlerts(ctx.db, tenantId, query);
      res.json({ ...page, data: page.data.map(presentAlert) });
    },
  );

  return router;
}

/** The tenant behind a read route: another tenant's key and an unknown id both answer 404. */
async function readableTenant(ctx: ApiContext, res: Response, tenantId: string): Promise<TenantRow> {
  assertTenantAccess(res, tenantId);
  // An id no tenant can have (e.g. with a NUL byte, which PostgreSQL refuses) does not exist.
  if (!resourceId.safeParse(tenantId).success) throw notFound(`tenant ${tenantId}`);
  // Straight from PostgreSQL, not the ingest cache: a tenant created a moment ago must be found.
  const tenant = await findTenant(ctx.db, tenantId);
  if (!tenant) throw notFound(`tenant ${tenantId}`);
  return tenant;
}

// ---------------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------------

function presentEvent(row: ListedEventRow, position: { plan: PlanVersion; values: Record<string, string> } | undefined): UsageEventView {
  const meter = position && findMeter(position.plan, row.metric);
  return {
    id: row.event_id,
    tenant_id: row.tenant_id,
    metric: row.metric,
    quantity: Number(normalizeDecimal(row.quantity)),
    timestamp: row.timestamp.toISOString(),
    period_start: row.period_start.toISOString(),
    properties: row.properties ?? null,
    received_at: row.received_at.toISOString(),
    cost: meter ? estimatedEventCost(meter, position.values[meter.metric] ?? '0', normalizeDecimal(row.quantity)) : null,
  };
}

// ---------------------------------------------------------------------------------------------
// Periods
// ---------------------------------------------------------------------------------------------

/**
 * A period's public id: `per_<tenant>_<start as YYYYMMDDTHHmmssZ>`, the stamp invoice ids use, so
 * a period and its invoices read alike. It is what `starting_after` takes on `/periods`.
 */
export function periodId(tenantId: string, start: Date | string): string {
  return `per_${tenantId}_${formatPeriodStamp(new Date(start).toISOString())}`;
}

/** The start instant a period id names, or undefined when it is not a period id of this tenant. */
function parsePeriodId(tenantId: string, id: string): string | undefined {
  const prefix = `per_${tenantId}_`;
  if (!id.startsWith(prefix)) return undefined;
  const match = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})(\.\d{3})?Z$/.exec(id.slice(prefix.length));
  if (!match) return undefined;
  const [, year, month, day, hour, minute, second, millis] = match;
  const iso = `${year}-${month}-${day}T${hour}:${minute}:${second}${millis ?? '.000'}Z`;
  // Round-trip, so 20260231T... (which Date would roll over into March) is refused, not sent to SQL.
  const at = new Date(iso);
  return !Number.isNaN(at.getTime()) && at.toISOString() === iso ? iso : undefined;
}

/**
 * A period's counters from the read model: every counted event, late events in a closed
 * period's grace included, as soon as they are counted. The open period's are `live` (they
 * still move); a closed period's are `stored`.
 */
async function periodCounters(
  ctx: ApiContext,
  period: PeriodRow,
  counted: PeriodCounter[],
): Promise<PeriodCounters> {
  const plan = await findPlanVersion(ctx.db, period.plan_id, period.plan_version);
  const values: Record<string, string> = {};
  for (const meter of plan?.meters ?? []) {
    const counter = counted.find((c) => c.metric === meter.metric && Date.parse(c.period_start) === period.start.getTime());
    values[meter.metric] = counterFromAggregates(counter, meter.aggregation);
  }
  return { values, source: period.status === 'open' ? 'live' : 'stored' };
}

/** A period's counters as exact decimal strings, and where they stand. */
interface PeriodCounters {
  values: Record<string, string>;
  source: 'live' | 'stored';
}

function presentPeriod(period: PeriodRow, invoices: InvoiceTotals[], counters: PeriodCounters): PeriodView {
  // The period's bill is its newest version that is not void (a rerun voids the one it replaces).
  const current = [...invoices].reverse().find((i) => i.status !== 'void') ?? invoices[invoices.length - 1];
  const iso = (d: Date | null) => (d ? d.toISOString() : null);
  return {
    id: periodId(period.tenant_id, period.start),
    tenant_id: period.tenant_id,
    start: period.start.toISOString(),
    end: period.end.toISOString(),
    status: period.status,
    plan_id: period.plan_id,
    plan_version: period.plan_version,
    counters: Object.fromEntries(Object.entries(counters.values).map(([metric, value]) => [metric, Number(value)])),
    counters_decimal: counters.values,
    counters_source: counters.source,
    totals: current
      ? {
          invoice_id: current.id,
          subtotal: roundMoney(current.subtotal, current.currency),
          total: roundMoney(current.total, current.currency),
          currency: current.currency,
        }
      : null,
    invoice_ids: invoices.map((i) => i.id),
    grace_ends_at: iso(period.grace_ends_at),
    closed_at: iso(period.closed_at),
  };
}

// ---------------------------------------------------------------------------------------------
// Alerts
// ---------------------------------------------------------------------------------------------

/** A stored alert as the alert lists and the acknowledgement show it. */
export function presentAlert(row: ListedAlertRow): AlertView {
  const cost = row.subject === COST_SUBJECT;
  // Balance alerts: `used` is the credit available when it fired, `limit` the threshold, `threshold` the crossing's number.
  const balance = row.subject === BALANCE_LOW || row.subject === BALANCE_DEPLETED ? (row.subject as typeof BALANCE_LOW | typeof BALANCE_DEPLETED) : undefined;
  return {
    id: row.id,
    tenant_id: row.tenant_id,
    kind: balance ?? (cost ? 'cost' : 'meter'),
    metric: cost || balance ? null : row.subject,
    threshold: Number(normalizeDecimal(row.threshold)),
    level: row.level,
    status: row.status,
    used: Number(normalizeDecimal(row.used)),
    limit: Number(normalizeDecimal(row.limit)),
    period_start: row.period_start.toISOString(),
    fired_at: row.fired_at.toISOString(),
    // Stored as channel names; tolerate `{ type, ... }` entries too, so the shape stays names only.
    channels: [...new Set((row.channels ?? []).map((c) => (typeof c === 'string' ? c : c.type)))],
    covers: row.covers ?? [],
    acknowledged_at: row.acknowledged_at ? row.acknowledged_at.toISOString() : null,
  };
}
