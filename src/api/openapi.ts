import { createHash } from 'node:crypto';
import type { Application } from 'express';
import { z } from 'zod';
import { OpenAPIRegistry, OpenApiGeneratorV3 } from '@asteasolutions/zod-to-openapi';
import * as apiSchemas from './schemas';
import * as pagination from './pagination';
import * as readsRoutes from './routes/reads';
import * as tenantsRoutes from './routes/tenants';
import * as financeRoutes from './routes/finance';
import * as alertRulesRoutes from './routes/alert-rules';
import * as invoicesRoutes from './routes/invoices';

/**
 * `GET /openapi.json` and `GET /docs`: the API reference, generated from the same zod schemas that
 * validate requests, so the document cannot drift from what the server accepts.
 *
 * The table below lists every route of API.md (and tally's additions) with its summary, who may
 * call it, its request schema and its answer. The document contains the routes the running app
 * actually serves: the table is filtered against the Express router, and a served route missing
 * from the table still appears (with a generic description), so `/openapi.json` always lists
 * every path the app answers. `/docs` renders the document as one static HTML page on the
 * server (no CDN, no script).
 */

type Method = 'get' | 'post' | 'patch' | 'delete';
type Access = 'public' | 'admin' | 'tenant_or_admin';

/** One documented route: what a client needs to call it. */
export interface RouteDoc {
  method: Method;
  /** OpenAPI style: `/v1/tenants/{id}/usage`. */
  path: string;
  tag: string;
  summary: string;
  description?: string;
  access: Access;
  body?: () => z.ZodType | undefined;
  /** Body may be omitted entirely (e.g. close-period). */
  bodyOptional?: boolean;
  query?: () => z.ZodObject | undefined;
  response: { status: number; description: string; schema?: () => z.ZodType | undefined; contentType?: string };
}

/** An exported zod schema of one of the API's modules, by name; undefined when absent. */
function exported(module: object, name: string): z.ZodType | undefined {
  const value = (module as Record<string, unknown>)[name];
  return value instanceof z.ZodType ? value : undefined;
}

function exportedObject(module: object, name: string): z.ZodObject | undefined {
  const value = exported(module, name);
  return value instanceof z.ZodObject ? value : undefined;
}

// ---- minimal response shapes (documentation only: the routes build these objects) ----------

const iso = z.string().describe('ISO-8601 UTC instant');
const money = z.string().describe('decimal string, e.g. "124.84"');
const period = z.object({ start: iso, end: iso });
const page = (item: z.ZodType) => {
  const pageOf = (readsRoutes as Record<string, unknown>).pageOf;
  return typeof pageOf === 'function'
    ? (pageOf as (i: z.ZodType) => z.ZodType)(item)
    : z.object({ data: z.array(item), has_more: z.boolean(), total_count: z.number().int() });
};
const plan = z.object({ id: z.string(), version: z.number().int(), name: z.string(), currency: z.string(), interval: z.enum(['day', 'month', 'year']), base_fee: money, meters: z.array(z.object({ metric: z.string() }).passthrough()) }).passthrough();
const tenant = z
  .object({
    id: z.string(),
    name: z.string(),
    plan_id: z.string(),
    email: z.string().nullable(),
    webhook_url: z.string().nullable(),
    timezone: z.string(),
    billing_anchor: iso,
    status: z.enum(['active', 'cancelled']),
    workflow_id: z.string(),
    created_at: iso,
    current_period: period.nullable().optional(),
  })
  .passthrough();
const usageView = z
  .object({
    tenant_id: z.string(),
    plan_id: z.string(),
    period: period.extend({ interval: z.string() }),
    metrics: z.record(z.string(), z.object({ used: z.number(), limit: z.number().nullable(), percent: z.number().nullable(), hard_limit: z.boolean(), amount: money })),
    costs: z.object({ base_fee: money, usage: money, total: money, currency: z.string() }),
    alerts: z.array(z.object({}).passthrough()),
    pending_events: z.number().int().describe('events acknowledged but not counted yet'),
    as_of: iso,
  })
  .passthrough();
const invoice = z
  .object({
    id: z.string(),
    number: z.number().int().nullable(),
    tenant_id: z.string(),
    status: z.enum(['draft', 'finalized', 'void']),
    version: z.number().int(),
    period_start: iso,
    period_end: iso,
    plan_id: z.string(),
    plan_version: z.number().int(),
    currency: z.string(),
    lines: z.array(z.object({ metric: z.string().nullable(), description: z.string(), quantity: z.number(), amount: money }).passthrough()),
    subtotal: money,
    total: money,
    created_at: iso,
    finalized_at: iso.nullable(),
  })
  .passthrough();
const closeResult = z.object({ closed_period: period, invoice_id: z.string(), invoice_workflow_id: z.string(), current_period: period.nullable() });
const problem = z
  .object({
    type: z.string(),
    title: z.string(),
    status: z.number().int(),
    detail: z.string(),
    code: z.string().describe('stable machine word: validation_failed, not_found, unauthorized, forbidden, rate_limited, ...'),
    errors: z.array(z.object({ path: z.string(), message: z.string() })).optional(),
    request_id: z.string().optional(),
  })
  .describe('RFC 9457 problem details (application/problem+json)');

/** The modules whose exported zod schemas describe requests, searched by export name. */
const SCHEMA_MODULES: readonly object[] = [apiSchemas, readsRoutes, tenantsRoutes, financeRoutes, alertRulesRoutes, invoicesRoutes, pagination];

/** Documentation-only fallbacks for request shapes whose schemas live in routes not built yet. */
const fallbackPagination = z.object({
  limit: z.string().optional().describe('1..100, default 25'),
  starting_after: z.string().optional().describe('the id of the last item of the previous page'),
});
const listQuery = (name: string) => () =>
  SCHEMA_MODULES.map((m) => exportedObject(m, name)).find(Boolean) ?? exportedObject(pagination, 'paginationQuery') ?? fallbackPagination;
/** A query schema only when a route module exports it (the route does not read one otherwise). */
const exportedQuery = (name: string) => () => SCHEMA_MODULES.map((m) => exportedObject(m, name)).find(Boolean);
const fromModules = (name: string, fallback?: z.ZodType) => () => SCHEMA_MODULES.map((m) => exported(m, name)).find(Boolean) ?? fallback;

/** Every route of API.md and tally's additions; only those the app serves are published. */
export const ROUTE_DOCS: readonly RouteDoc[] = [
  // Operations
  { method: 'get', path: '/healthz', tag: 'Operations', summary: 'Liveness: the process is up', access: 'public', response: { status: 200, description: '`{ "status": "ok" }`' } },
  { method: 'get', path: '/readyz', tag: 'Operations', summary: 'Readiness: Temporal and PostgreSQL reachable (503 otherwise)', access: 'public', response: { status: 200, description: '`{ "status": "ready", "postgres": true, "temporal": true }`; 503 with the same shape when a dependency is down' } },
  { method: 'get', path: '/metrics', tag: 'Operations', summary: 'Prometheus metrics (text exposition format)', access: 'public', response: { status: 200, description: 'Prometheus text', contentType: 'text/plain' } },
  { method: 'get', path: '/openapi.json', tag: 'Operations', summary: 'This document (OpenAPI 3)', access: 'public', response: { status: 200, description: 'the OpenAPI document' } },
  { method: 'get', path: '/docs', tag: 'Operations', summary: 'The API reference as HTML', access: 'public', response: { status: 200, description: 'HTML page', contentType: 'text/html' } },
  // Plans
  { method: 'post', path: '/v1/plans', tag: 'Plans', summary: 'Create a plan, or a new version of an existing plan id', access: 'admin', body: () => apiSchemas.createPlanBody, response: { status: 201, description: 'the stored plan version', schema: () => plan } },
  { method: 'get', path: '/v1/plans', tag: 'Plans', summary: 'List plans (latest version of each)', access: 'admin', query: exportedQuery('listPlansQuery'), response: { status: 200, description: 'a page of plans', schema: () => page(plan) } },
  { method: 'get', path: '/v1/plans/{id}', tag: 'Plans', summary: 'Get a plan (latest version, or `?version=n`)', access: 'admin', query: () => z.object({ version: z.string().optional().describe('a version number; default: the latest') }), response: { status: 200, description: 'the plan version', schema: () => plan } },
  // Tenants
  { method: 'post', path: '/v1/tenants', tag: 'Tenants', summary: "Create a tenant and start its billing workflow; answers the tenant's API key once", access: 'admin', body: () => apiSchemas.createTenantBody, response: { status: 201, description: 'the tenant, its current period, `workflow_id` and `api_key`', schema: () => tenant.extend({ api_key: z.string() }) } },
  { method: 'get', path: '/v1/tenants', tag: 'Tenants', summary: 'List tenants', access: 'admin', query: listQuery('listTenantsQuery'), response: { status: 200, description: 'a page of tenants', schema: () => page(tenant) } },
  { method: 'get', path: '/v1/tenants/{id}', tag: 'Tenants', summary: 'Get a tenant', access: 'tenant_or_admin', response: { status: 200, description: 'the tenant with its current period', schema: () => tenant } },
  { method: 'patch', path: '/v1/tenants/{id}', tag: 'Tenants', summary: 'Update a tenant (a plan change takes effect at the next period)', access: 'tenant_or_admin', body: () => apiSchemas.updateTenantBody, response: { status: 200, description: 'the updated tenant', schema: () => tenant } },
  { method: 'delete', path: '/v1/tenants/{id}', tag: 'Tenants', summary: 'Cancel the subscription: close the period now, write its final invoice, end the workflow', access: 'admin', response: { status: 200, description: 'the cancelled tenant with `final_invoice_id` and `closed_period`', schema: () => tenant } },
  { method: 'post', path: '/v1/tenants/{id}/api-keys', tag: 'Tenants', summary: "Rotate the tenant's API key (the new key is shown once; earlier keys stop working)", access: 'tenant_or_admin', response: { status: 201, description: 'the new key' } },
  // Usage
  { method: 'post', path: '/v1/events', tag: 'Usage', summary: 'Ingest usage events (1..1000, all-or-nothing); 202 means durable', description: 'Body at most 1 MiB (413 `payload_too_large`). With a tenant key `tenant_id` may be omitted; with the admin key it is required. Resending an event id is not an error: it is counted once. Concurrent requests for one tenant may share one workflow signal; each is answered only once its events are durable.', access: 'tenant_or_admin', body: () => apiSchemas.ingestBody, response: { status: 202, description: '`{ "received": n }`', schema: () => z.object({ received: z.number().int() }) } },
  { method: 'get', path: '/v1/tenants/{id}/usage', tag: 'Usage', summary: "The current period's usage, costs and alerts", description: 'Answered by a workflow query (immediate; `pending_events` says how many acknowledged events are not counted yet). `?consistent=true` waits until every acknowledged event is counted (read-your-writes).', access: 'tenant_or_admin', query: () => z.object({ consistent: z.enum(['true', 'false']).optional() }), response: { status: 200, description: 'the usage view', schema: () => usageView } },
  { method: 'post', path: '/v1/tenants/{id}/authorize', tag: 'Usage', summary: 'Check-and-consume against a hard limit (idempotent on `id`)', access: 'tenant_or_admin', body: () => apiSchemas.authorizeBody, response: { status: 200, description: '`{ "allowed": true, "remaining" }` or `{ "allowed": false, "reason": "hard_limit", "remaining" }`', schema: () => z.object({ allowed: z.boolean(), reason: z.literal('hard_limit').optional(), remaining: z.number().nullable() }) } },
  { method: 'post', path: '/v1/tenants/{id}/estimate', tag: 'Usage', summary: 'The cost of extra usage given where the tenant stands in its tiers', access: 'tenant_or_admin', body: () => apiSchemas.estimateBody, response: { status: 200, description: '`{ "amount", "currency" }`', schema: () => z.object({ amount: money, currency: z.string() }) } },
  { method: 'get', path: '/v1/tenants/{id}/events', tag: 'Usage', summary: 'Stored usage events, newest first', access: 'tenant_or_admin', query: listQuery('listEventsQuery'), response: { status: 200, description: 'a page of events', schema: () => page(exported(readsRoutes, 'usageEventView') ?? z.object({}).passthrough()) } },
  { method: 'get', path: '/v1/tenants/{id}/periods', tag: 'Usage', summary: 'Past and current periods with counters, totals and invoice ids', access: 'tenant_or_admin', query: listQuery('listPeriodsQuery'), response: { status: 200, description: 'a page of periods', schema: () => page(exported(readsRoutes, 'periodView') ?? z.object({}).passthrough()) } },
  // Alerts
  { method: 'get', path: '/v1/tenants/{id}/alerts', tag: 'Alerts', summary: 'Alerts fired for the tenant, newest first', access: 'tenant_or_admin', query: listQuery('listAlertsQuery'), response: { status: 200, description: 'a page of alerts', schema: () => page(exported(readsRoutes, 'alertView') ?? z.object({}).passthrough()) } },
  { method: 'post', path: '/v1/tenants/{id}/alert-rules', tag: 'Alerts', summary: 'Add an alert rule (a metric or the cost, a threshold, a channel)', access: 'tenant_or_admin', body: fromModules('createAlertRuleBody'), response: { status: 201, description: 'the rule' } },
  { method: 'get', path: '/v1/tenants/{id}/alert-rules', tag: 'Alerts', summary: "List the tenant's alert rules", access: 'tenant_or_admin', query: listQuery('listAlertRulesQuery'), response: { status: 200, description: 'the rules' } },
  { method: 'get', path: '/v1/tenants/{id}/alert-rules/{rule_id}', tag: 'Alerts', summary: 'Get an alert rule', access: 'tenant_or_admin', response: { status: 200, description: 'the rule' } },
  { method: 'delete', path: '/v1/tenants/{id}/alert-rules/{rule_id}', tag: 'Alerts', summary: 'Delete an alert rule', access: 'tenant_or_admin', response: { status: 200, description: 'deleted' } },
  { method: 'get', path: '/v1/tenants/{id}/deliveries', tag: 'Alerts', summary: 'Notification deliveries (emails, webhooks) and their status', access: 'tenant_or_admin', query: listQuery('listDeliveriesQuery'), response: { status: 200, description: 'a page of deliveries' } },
  { method: 'post', path: '/v1/tenants/{id}/webhook-secret', tag: 'Alerts', summary: 'Rotate the webhook signing secret (shown once)', access: 'tenant_or_admin', response: { status: 200, description: '`{ "tenant_id", "webhook_secret", "rotated_at" }`' } },
  // Finance
  { method: 'post', path: '/v1/tenants/{id}/close-period', tag: 'Finance', summary: 'Close the current period now and invoice it', access: 'admin', body: () => apiSchemas.closePeriodBody, bodyOptional: true, response: { status: 200, description: 'the closed period, its invoice id and the new current period', schema: () => closeResult } },
  { method: 'get', path: '/v1/tenants/{id}/invoices', tag: 'Finance', summary: "The tenant's invoices, newest period first", access: 'tenant_or_admin', query: listQuery('listInvoicesQuery'), response: { status: 200, description: 'a page of invoices', schema: () => page(invoice) } },
  { method: 'get', path: '/v1/invoices/{invoice_id}', tag: 'Finance', summary: 'Get an invoice with its lines', access: 'tenant_or_admin', response: { status: 200, description: 'the invoice', schema: () => invoice } },
  { method: 'get', path: '/v1/invoices/{invoice_id}/pdf', tag: 'Finance', summary: 'The invoice as a PDF', access: 'tenant_or_admin', response: { status: 200, description: 'the PDF', contentType: 'application/pdf' } },
  { method: 'post', path: '/v1/invoices/{invoice_id}/rerun', tag: 'Finance', summary: 'Re-rate a period as a new invoice version; the old one becomes void', access: 'admin', body: fromModules('rerunInvoiceBody', z.object({ reason: z.string().min(1), plan_id: z.string().optional() })), response: { status: 202, description: '`{ "invoice_id", "workflow_id" }`', schema: () => z.object({ invoice_id: z.string(), workflow_id: z.string() }) } },
];

/** One (method, Express path) the app answers. */
export interface ServedRoute {
  method: string;
  path: string;
}

/**
 * The routes an Express app serves, read from its router tree (mount paths plus route paths).
 * Relies on router 2's `layer.rawPath`; mounts without it are skipped rather than guessed.
 */
export function servedRoutes(app: Application): ServedRoute[] {
  const out: ServedRoute[] = [];
  type Layer = { route?: { path: unknown; methods: Record<string, boolean> }; handle?: { stack?: Layer[] }; rawPath?: unknown };
  const walk = (stack: Layer[], prefix: string) => {
    for (const layer of stack) {
      if (layer.route) {
        if (typeof layer.route.path !== 'string') continue;
        const path = joinPath(prefix, layer.route.path);
        for (const [method, on] of Object.entries(layer.route.methods)) if (on && method !== '_all') out.push({ method, path });
      } else if (Array.isArray(layer.handle?.stack)) {
        if (layer.rawPath === undefined || typeof layer.rawPath !== 'string') continue;
        walk(layer.handle.stack, joinPath(prefix, layer.rawPath));
      }
    }
  };
  walk(((app as unknown as { router: { stack: Layer[] } }).router?.stack ?? []) as Layer[], '');
  return out;
}

function joinPath(prefix: string, path: string): string {
  const joined = `${prefix === '/' ? '' : prefix}${path === '/' ? '' : path}`;
  return joined === '' ? '/' : joined;
}

/** `/v1/tenants/:id` and `/v1/tenants/{id}` both become `/v1/tenants/{}`. */
function shape(path: string): string {
  return path.replace(/:[A-Za-z0-9_]+/g, '{}').replace(/\{[^}]+\}/g, '{}');
}

/** The OpenAPI document (3.0.3) of the routes `app` serves (all of the table without an app). */
export function buildOpenApiDocument(app?: Application): Record<string, unknown> {
  const served = app ? servedRoutes(app) : undefined;
  const servedKeys = served ? new Set(served.map((r) => `${r.method} ${shape(r.path)}`)) : undefined;
  const docs = ROUTE_DOCS.filter((d) => !servedKeys || servedKeys.has(`${d.method} ${shape(d.path)}`));
  const documented = new Set(docs.map((d) => `${d.method} ${shape(d.path)}`));
  const extra: RouteDoc[] = [];
  for (const r of served ?? []) {
    const key = `${r.method} ${shape(r.path)}`;
    if (documented.has(key) || !isDocumentableMethod(r.method)) continue;
    documented.add(key);
    const path = r.path.replace(/:([A-Za-z0-9_]+)/g, '{$1}');
    extra.push({ method: r.method, path, tag: 'Other', summary: `${r.method.toUpperCase()} ${path}`, access: path.startsWith('/v1/') ? 'tenant_or_admin' : 'public', response: { status: 200, description: 'see the route' } });
  }

  const registry = new OpenAPIRegistry();
  registry.registerComponent('securitySchemes', 'ApiKey', { type: 'apiKey', in: 'header', name: 'X-API-Key', description: 'the admin key or a tenant key' });
  registry.registerComponent('securitySchemes', 'Bearer', { type: 'http', scheme: 'bearer', description: 'the same key as `Authorization: Bearer <key>`' });
  for (const d of [...docs, ...extra]) registerRoute(registry, d);
  const generator = new OpenApiGeneratorV3(registry.definitions);
  const document = generator.generateDocument({
    openapi: '3.0.3',
    info: {
      title: 'tally API',
      version: '1',
      description:
        'Usage billing on Temporal. Keys go in `X-API-Key` (or `Authorization: Bearer`). A tenant key acts only on its own tenant: any other tenant answers 404. Errors are `application/problem+json` with a stable `code`. List endpoints take `limit` (1..100, default 25) and `starting_after` and answer `{ data, has_more, total_count }`, newest first.',
    },
    security: [{ ApiKey: [] }, { Bearer: [] }],
    tags: [...new Set([...docs, ...extra].map((d) => d.tag))].map((name) => ({ name })),
  });
  return document as unknown as Record<string, unknown>;
}

function isDocumentableMethod(method: string): method is Method {
  return method === 'get' || method === 'post' || method === 'patch' || method === 'delete';
}

function registerRoute(registry: OpenAPIRegistry, d: RouteDoc): void {
  const params = [...d.path.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]!);
  const paramSchema = params.length
    ? z.object(Object.fromEntries(params.map((p) => [p, p === 'id' && d.path.startsWith('/v1/tenants') ? apiSchemas.resourceId.describe('tenant id') : z.string()])))
    : undefined;
  const body = d.body?.();
  const query = d.query?.();
  const problemContent = { 'application/problem+json': { schema: problem } };
  const errors: Record<number, { description: string; content: typeof problemContent }> = {};
  const add = (status: number, description: string) => (errors[status] = { description, content: problemContent });
  if (body || query) add(422, 'validation failed (`errors[].path` names each bad field)');
  if (body) add(400, 'malformed JSON');
  if (d.path === '/v1/events') add(413, 'body larger than 1 MiB');
  if (d.access !== 'public') {
    add(401, 'missing or unknown API key');
    if (d.access === 'admin') add(403, 'a tenant key on an admin-only route');
    if (params.length) add(404, "not found (also another tenant's resource with a tenant key)");
    add(429, 'rate limited: retry after `Retry-After` seconds');
  }
  const success = d.response.schema?.();
  const contentType = d.response.contentType ?? 'application/json';
  registry.registerPath({
    method: d.method,
    path: d.path,
    tags: [d.tag],
    summary: d.summary,
    description: [d.description, accessNote(d.access)].filter(Boolean).join('\n\n'),
    ...(d.access === 'public' ? { security: [] } : {}),
    request: {
      ...(paramSchema ? { params: paramSchema } : {}),
      ...(query ? { query } : {}),
      ...(body ? { body: { required: !d.bodyOptional, content: { 'application/json': { schema: body } } } } : {}),
    },
    responses: {
      [d.response.status]: {
        description: d.response.description,
        ...(success ? { content: { [contentType]: { schema: success } } } : contentType !== 'application/json' ? { content: { [contentType]: { schema: z.string() } } } : {}),
      },
      ...errors,
    },
  });
}

function accessNote(access: Access): string {
  if (access === 'public') return 'Public: no API key.';
  if (access === 'admin') return 'Admin key only (a tenant key gets 403).';
  return "Admin key, or the tenant's own key.";
}

// ---- /docs --------------------------------------------------------------------------------------

const STYLE = `body{font:15px/1.5 system-ui,sans-serif;margin:0 auto;max-width:980px;padding:1rem 2rem;color:#1d2330}
h1{margin-bottom:.2rem}h2{margin-top:2.2rem;border-bottom:1px solid #dde}code,pre{font:13px ui-monospace,monospace}
.op{border:1px solid #dde;border-radius:6px;margin:1rem 0;padding:.6rem 1rem}.op h3{margin:.2rem 0;font-size:16px}
.m{display:inline-block;min-width:4.2rem;text-align:center;border-radius:4px;color:#fff;font-size:12px;padding:2px 6px;margin-right:.5rem}
.get{background:#2f6fb3}.post{background:#2c8a4b}.patch{background:#b57a12}.delete{background:#b23b3b}
.access{color:#667;font-size:13px}table{border-collapse:collapse;margin:.4rem 0}td,th{border:1px solid #e3e3ea;padding:2px 8px;text-align:left;vertical-align:top;font-size:13px}
ul.s{margin:.2rem 0 .2rem 1rem;padding-left:1rem}ul.s li{font-size:13px}.req{color:#b23b3b}.t{color:#555}nav a{margin-right:.8rem}`;

/** The CSP hash of the page's only inline style, so `/docs` can forbid everything else. */
export const DOCS_STYLE_HASH = `'sha256-${createHash('sha256').update(STYLE).digest('base64')}'`;

type Schema = Record<string, unknown>;

/** Renders the OpenAPI document as one readable, self-contained HTML page. */
export function renderDocsHtml(doc: Record<string, unknown>): string {
  const info = (doc.info ?? {}) as { title?: string; version?: string; description?: string };
  const paths = (doc.paths ?? {}) as Record<string, Record<string, Schema>>;
  const byTag = new Map<string, Array<{ path: string; method: string; op: Schema }>>();
  for (const [path, ops] of Object.entries(paths)) {
    for (const [method, op] of Object.entries(ops)) {
      const tag = ((op.tags as string[] | undefined) ?? ['Other'])[0]!;
      const list = byTag.get(tag) ?? [];
      list.push({ path, method, op });
      byTag.set(tag, list);
    }
  }
  const parts: string[] = [];
  parts.push(`<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">`);
  parts.push(`<title>${esc(info.title ?? 'API')} reference</title><style>${STYLE}</style></head><body>`);
  parts.push(`<h1>${esc(info.title ?? 'API')} <small class="t">v${esc(info.version ?? '')}</small></h1>`);
  parts.push(`<p>${inline(info.description ?? '')}</p><p>Machine-readable: <a href="/openapi.json">/openapi.json</a></p>`);
  parts.push(`<nav>${[...byTag.keys()].map((t) => `<a href="#${anchor(t)}">${esc(t)}</a>`).join('')}</nav>`);
  for (const [tag, ops] of byTag) {
    parts.push(`<h2 id="${anchor(tag)}">${esc(tag)}</h2>`);
    for (const { path, method, op } of ops) {
      parts.push(`<div class="op" id="${anchor(`${method}-${path}`)}"><h3><span class="m ${esc(method)}">${esc(method.toUpperCase())}</span><code>${esc(path)}</code></h3>`);
      parts.push(`<div>${esc(String(op.summary ?? ''))}</div>`);
      if (op.description) parts.push(`<p class="access">${inline(String(op.description))}</p>`);
      const params = (op.parameters as Schema[] | undefined) ?? [];
      if (params.length) {
        parts.push('<table><tr><th>parameter</th><th>in</th><th>schema</th></tr>');
        for (const p of params) {
          parts.push(`<tr><td><code>${esc(String(p.name))}</code>${p.required ? ' <span class="req">required</span>' : ''}</td><td>${esc(String(p.in))}</td><td>${describe((p.schema ?? {}) as Schema)}</td></tr>`);
        }
        parts.push('</table>');
      }
      const body = op.requestBody as Schema | undefined;
      if (body) {
        const content = (body.content ?? {}) as Record<string, { schema?: Schema }>;
        const [type, media] = Object.entries(content)[0] ?? [];
        parts.push(`<div><b>Request body</b> <span class="t">${esc(type ?? '')}${body.required ? '' : ', optional'}</span>${renderSchema(media?.schema ?? {}, 0)}</div>`);
      }
      const responses = (op.responses ?? {}) as Record<string, Schema>;
      parts.push('<div><b>Responses</b><ul class="s">');
      for (const [status, r] of Object.entries(responses)) parts.push(`<li><code>${esc(status)}</code> ${inline(String(r.description ?? ''))}</li>`);
      parts.push('</ul></div></div>');
    }
  }
  parts.push('</body></html>');
  return parts.join('\n');
}

function renderSchema(schema: Schema, depth: number): string {
  if (depth > 8) return '';
  const properties = schema.properties as Record<string, Schema> | undefined;
  const variants = (schema.oneOf ?? schema.anyOf) as Schema[] | undefined;
  if (properties) {
    const required = new Set((schema.required as string[] | undefined) ?? []);
    const items = Object.entries(properties).map(
      ([name, s]) => `<li><code>${esc(name)}</code>${required.has(name) ? ' <span class="req">required</span>' : ''} ${describe(s)}${nested(s, depth)}</li>`,
    );
    return `<ul class="s">${items.join('')}</ul>`;
  }
  if (variants) return `<ul class="s">${variants.map((v, i) => `<li>variant ${i + 1}: ${describe(v)}${nested(v, depth)}</li>`).join('')}</ul>`;
  return '';
}

function nested(s: Schema, depth: number): string {
  if (s.type === 'array' && s.items) return renderSchema(s.items as Schema, depth + 1);
  return renderSchema(s, depth + 1);
}

/** One line about a schema: type and constraints. */
function describe(s: Schema): string {
  const facts: string[] = [];
  let type = String(s.type ?? (s.oneOf || s.anyOf ? 'one of' : 'any'));
  if (s.type === 'array') type = `array of ${String((s.items as Schema | undefined)?.type ?? 'any')}`;
  if (s.format) type += ` (${String(s.format)})`;
  if (s.nullable) type += ', nullable';
  if (s.enum) facts.push(`one of ${(s.enum as unknown[]).map((v) => JSON.stringify(v)).join(', ')}`);
  if (s.pattern) facts.push(`pattern <code>${esc(String(s.pattern))}</code>`);
  for (const [k, label] of [['minimum', 'min'], ['maximum', 'max'], ['minLength', 'min length'], ['maxLength', 'max length'], ['minItems', 'min items'], ['maxItems', 'max items']] as const) {
    if (s[k] !== undefined) facts.push(`${label} ${String(s[k])}${(k === 'minimum' && s.exclusiveMinimum) || (k === 'maximum' && s.exclusiveMaximum) ? ' (exclusive)' : ''}`);
  }
  if (s.default !== undefined) facts.push(`default <code>${esc(JSON.stringify(s.default))}</code>`);
  if (s.description) facts.push(esc(String(s.description)));
  return `<span class="t">${esc(type)}</span>${facts.length ? ` — ${facts.join('; ')}` : ''}`;
}

function esc(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/** Escapes, then renders `code` spans (the only markdown the summaries use). */
function inline(text: string): string {
  return esc(text)
    .replace(/`([^`]+)`/g, '<code>$1</code>')
    .replace(/\n\n/g, '<br>');
}

function anchor(text: string): string {
  return text.toLowerCase().replace(/[^a-z0-9]+/g, '-');
}
