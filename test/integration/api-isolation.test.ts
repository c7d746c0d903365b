import fs from 'node:fs';
import path from 'node:path';
import { startApiHarness, eventually, expectProblem, type ApiAnswer, type ApiHarness } from '../support/api-harness';
import { unique } from '../support/stack';

/**
 * Tenant isolation and authorization over EVERY route of API v1, table-driven (API.md, Auth):
 *
 * - no key, an unknown key: 401 `unauthorized`;
 * - tenant B's key on tenant A's resources: 404 `not_found`, exactly what B sees for a tenant
 *   that does not exist (and what the admin sees for one), with no side effect on A;
 * - a tenant key on an admin-only route, even on its own tenant: 403 `forbidden`;
 * - every one of these errors is `application/problem+json`.
 *
 * The last test reads the route declarations in `src/api/app.ts` and `src/api/routes/*.ts` and
 * fails when a `/v1` route is missing from ROUTES (or ROUTES names one that no longer exists), so
 * a new route cannot ship without its isolation check.
 */

/**
 * Who may call a route. `tenant`: the admin or the tenant named in the path (others get 404).
 * `admin`: the admin only (tenant keys get 403). `ingest`: any key; the tenant comes from the body.
 */
type Access = 'tenant' | 'admin' | 'ingest';

interface RouteCase {
  method: 'GET' | 'POST' | 'PATCH' | 'PUT' | 'DELETE';
  /** `{tenant}`, `{invoice}`, `{plan}`, `{rule}` are filled with tenant A's resources (or ghosts). */
  path: string;
  access: Access;
  body?: unknown;
}

const METER = 'api_calls';

/** Every `/v1` route. Keep it complete: the last test compares it with the route declarations. */
const ROUTES: RouteCase[] = [
  // Plans (admin)
  { method: 'POST', path: '/v1/plans', access: 'admin', body: { id: 'iso_never', name: 'x', currency: 'USD', interval: 'month', base_fee: '0', meters: [] } },
  { method: 'GET', path: '/v1/plans', access: 'admin' },
  { method: 'GET', path: '/v1/plans/{plan}', access: 'admin' },
  // Tenants
  { method: 'POST', path: '/v1/tenants', access: 'admin', body: { id: 'iso_never', name: 'x', plan_id: 'x' } },
  { method: 'GET', path: '/v1/tenants', access: 'admin' },
  { method: 'GET', path: '/v1/tenants/{tenant}', access: 'tenant' },
  { method: 'PATCH', path: '/v1/tenants/{tenant}', access: 'tenant', body: { email: 'intruder@example.com' } },
  { method: 'DELETE', path: '/v1/tenants/{tenant}', access: 'admin' },
  { method: 'POST', path: '/v1/tenants/{tenant}/api-keys', access: 'tenant' },
  { method: 'POST', path: '/v1/tenants/{tenant}/webhook-secret', access: 'tenant' },
  // Usage
  { method: 'POST', path: '/v1/events', access: 'ingest', body: { events: [{ id: 'iso_ingest', tenant_id: '{tenant}', metric: METER, quantity: 1 }] } },
  { method: 'GET', path: '/v1/tenants/{tenant}/usage', access: 'tenant' },
  { method: 'POST', path: '/v1/tenants/{tenant}/authorize', access: 'tenant', body: { id: 'iso_authorize', metric: METER, quantity: 1 } },
  { method: 'POST', path: '/v1/tenants/{tenant}/estimate', access: 'tenant', body: { metric: METER, quantity: 1 } },
  // Reads
  { method: 'GET', path: '/v1/tenants/{tenant}/events', access: 'tenant' },
  { method: 'GET', path: '/v1/tenants/{tenant}/periods', access: 'tenant' },
  { method: 'GET', path: '/v1/tenants/{tenant}/alerts', access: 'tenant' },
  // Alert rules and notification deliveries
  { method: 'POST', path: '/v1/tenants/{tenant}/alert-rules', access: 'tenant', body: { metric: METER, threshold: 55, channel: { type: 'email', to: 'intruder@example.com' } } },
  { method: 'GET', path: '/v1/tenants/{tenant}/alert-rules', access: 'tenant' },
  { method: 'GET', path: '/v1/tenants/{tenant}/alert-rules/{rule}', access: 'tenant' },
  { method: 'DELETE', path: '/v1/tenants/{tenant}/alert-rules/{rule}', access: 'tenant' },
  { method: 'GET', path: '/v1/tenants/{tenant}/deliveries', access: 'tenant' },
  // Entitlements: prepaid credit and add-on packs
  { method: 'POST', path: '/v1/tenants/{tenant}/credits', access: 'admin', body: { id: 'iso_grant', amount: '1.00' } },
  { method: 'GET', path: '/v1/tenants/{tenant}/credits', access: 'tenant' },
  { method: 'GET', path: '/v1/tenants/{tenant}/balance', access: 'tenant' },
  { method: 'POST', path: '/v1/tenants/{tenant}/packs', access: 'admin', body: { id: 'iso_pack', metric: METER, units: 1 } },
  { method: 'GET', path: '/v1/tenants/{tenant}/packs', access: 'tenant' },
  // Alert triage
  { method: 'GET', path: '/v1/alerts', access: 'admin' },
  // Summaries
  { method: 'GET', path: '/v1/summaries', access: 'admin' },
  { method: 'POST', path: '/v1/tenants/{tenant}/alerts/{alert}/acknowledge', access: 'tenant' },
  // Finance
  { method: 'POST', path: '/v1/tenants/{tenant}/close-period', access: 'admin', body: { finalize: true } },
  { method: 'GET', path: '/v1/tenants/{tenant}/invoices', access: 'tenant' },
  { method: 'GET', path: '/v1/invoices/{invoice}', access: 'tenant' },
  { method: 'GET', path: '/v1/invoices/{invoice}/pdf', access: 'tenant' },
  { method: 'POST', path: '/v1/invoices/{invoice}/rerun', access: 'admin', body: { reason: 'isolation check' } },
];

let api: ApiHarness;
let planId: string;
const A = { id: '', key: '', invoice: '', rule: '', alert: '' };
const B = { id: '', key: '' };
type Ids = { tenant: string; invoice: string; plan: string; rule: string; alert: string };
const ghost: Ids = { tenant: unique('ghost'), invoice: `in_${unique('ghost')}_20260101T000000Z_v1`, plan: unique('ghost'), rule: `ar_${unique('ghost')}`, alert: `al_${unique('ghost')}` };

function fill(template: string, ids: Ids): string {
  return template.replace(/\{(tenant|invoice|plan|rule|alert)\}/g, (_, name: keyof Ids) => ids[name]);
}

function request(route: RouteCase, ids: Ids, key: string | null): Promise<ApiAnswer> {
  const body = route.body === undefined ? undefined : JSON.parse(fill(JSON.stringify(route.body), ids));
  return api.call(route.method, fill(route.path, ids), { key, body });
}

const ofA = (): Ids => ({ tenant: A.id, invoice: A.invoice, plan: planId, rule: A.rule, alert: A.alert });
const label = (r: RouteCase) => `${r.method} ${r.path}`;

beforeAll(async () => {
  api = await startApiHarness();
  planId = unique('iso');
  const plan = {
    id: planId,
    name: 'Isolation',
    currency: 'USD',
    interval: 'month',
    base_fee: '1.00',
    grace_period_seconds: 0,
    meters: [{ metric: METER, aggregation: 'sum', limit: 10, hard_limit: true, pricing: { model: 'per_unit', unit_price: '0.10' } }],
  };
  expect((await api.call('POST', '/v1/plans', { body: plan })).status).toBe(201);
  for (const t of [A, B]) {
    t.id = unique('iso');
    const res = await api.call('POST', '/v1/tenants', { body: { id: t.id, name: t.id, plan_id: planId, email: `${t.id}@example.com` } });
    expect(res.status).toBe(201);
    t.key = res.body.api_key;
  }
  // A has events, alerts (9 of 10: 80 % notified), and a finalized invoice.
  expect((await api.call('POST', '/v1/events', { key: A.key, body: { events: [{ id: 'a1', metric: METER, quantity: 9 }] } })).status).toBe(202);
  expect((await api.call('GET', `/v1/tenants/${A.id}/usage?consistent=true`, { key: A.key })).status).toBe(200);
  const close = await api.call('POST', `/v1/tenants/${A.id}/close-period`, { body: { finalize: true } });
  expect(close.status).toBe(200);
  A.invoice = close.body.invoice_id;
  await eventually(async () => {
    const res = await api.call('GET', `/v1/invoices/${A.invoice}`, { key: A.key });
    return res.body?.status === 'finalized' ? true : undefined;
  }, 40_000, 'A invoice finalized');
  const rule = await api.call('POST', `/v1/tenants/${A.id}/alert-rules`, { body: { metric: METER, threshold: 50, channel: { type: 'email', to: 'a@example.com' } } });
  expect(rule.status).toBe(201);
  A.rule = rule.body.id;
  A.alert = await eventually(async () => (await api.call('GET', `/v1/tenants/${A.id}/alerts`, { key: A.key })).body.data[0]?.id as string | undefined, 20_000, 'A alert');
});

afterAll(async () => {
  await api?.stop();
});

describe.each(ROUTES.map((r) => [label(r), r] as const))('%s', (_label, route) => {
  test('no key, an unknown key, an unknown Bearer token: 401 unauthorized', async () => {
    expectProblem(await request(route, ofA(), null), 401, 'unauthorized');
    expectProblem(await request(route, ofA(), 'tk_not_a_real_key'), 401, 'unauthorized');
    const res = await fetch(`${api.baseUrl}${fill(route.path, ofA())}`, { method: route.method, headers: { authorization: 'Bearer tk_not_a_real_key' } });
    expect(res.status).toBe(401);
    expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
  });

  if (route.access === 'tenant') {
    test("tenant B's key on tenant A's resource: 404 not_found, as if it did not exist", async () => {
      const res = await request(route, ofA(), B.key);
      expectProblem(res, 404, 'not_found');
      // The route exists (this is not the catch-all "no route" 404) ...
      expect(res.body.detail).not.toMatch(/^no route/);
      // ... and B learns nothing: a tenant that does not exist answers the same.
      const absent = await request(route, ghost, B.key);
      expectProblem(absent, 404, 'not_found');
      expect({ title: res.body.title, type: res.body.type }).toEqual({ title: absent.body.title, type: absent.body.type });
    });
  }

  if (route.access === 'tenant' && /\{tenant\}.*\{(invoice|rule|alert)\}/.test(route.path)) {
    test("tenant B's key on its own tenant path with tenant A's sub-resource id: 404 not_found", async () => {
      const res = await request(route, { ...ofA(), tenant: B.id }, B.key);
      expectProblem(res, 404, 'not_found');
      expect(res.body.detail).not.toMatch(/^no route/);
    });
  }

  if (route.access === 'admin') {
    test('a tenant key, even on its own tenant: 403 forbidden', async () => {
      expectProblem(await request(route, ofA(), A.key), 403, 'forbidden');
      expectProblem(await request(route, ofA(), B.key), 403, 'forbidden');
    });
  }

  if (route.access === 'ingest') {
    test("tenant B's key naming tenant A in the body: 422, nothing recorded", async () => {
      const res = await request(route, ofA(), B.key);
      expectProblem(res, 422, 'validation_failed');
      expect(res.body.errors).toEqual([{ path: 'events.0.tenant_id', message: expect.any(String) }]);
    });
  }

  if (/\{(tenant|invoice|plan|rule|alert)\}/.test(route.path)) {
    test('the admin key on a resource that does not exist: 404 not_found', async () => {
      const res = await request(route, ghost, api.adminKey);
      expectProblem(res, 404, 'not_found');
      expect(res.body.detail).not.toMatch(/^no route/);
    });
  }
});

test('the refused calls changed nothing of tenant A', async () => {
  const tenant = await api.call('GET', `/v1/tenants/${A.id}`, { key: A.key }); // A's key was not rotated
  expect(tenant.status).toBe(200);
  expect(tenant.body).toMatchObject({ status: 'active', email: `${A.id}@example.com` });
  const keys = await api.db('api_keys').where({ tenant_id: A.id }).whereNull('revoked_at');
  expect(keys).toHaveLength(1);
  const row = await api.db('tenants').where({ id: A.id }).first();
  expect(row.webhook_secret).toBeNull(); // no webhook-secret rotation went through
  const events = await api.call('GET', `/v1/tenants/${A.id}/events`, { key: A.key });
  expect(events.body.data.map((e: any) => e.id)).toEqual(['a1']);
  const usage = await api.call('GET', `/v1/tenants/${A.id}/usage?consistent=true`, { key: A.key });
  expect(usage.body.metrics[METER].used).toBe(0); // the current period (after the close) is empty
  const periods = await api.call('GET', `/v1/tenants/${A.id}/periods`, { key: A.key });
  expect(periods.body.total_count).toBe(2); // no refused close-period made a third
  const rules = await api.call('GET', `/v1/tenants/${A.id}/alert-rules`, { key: A.key });
  expect(rules.body.data.map((r: any) => [r.id, r.threshold])).toEqual([[A.rule, 50]]); // none added, none deleted
  const invoices = await api.call('GET', `/v1/tenants/${A.id}/invoices`, { key: A.key });
  expect(invoices.body.data.map((i: any) => [i.id, i.status])).toEqual([[A.invoice, 'finalized']]); // no rerun started
  expect(await api.db('alerts').where({ tenant_id: A.id }).whereNotNull('acknowledged_at')).toEqual([]); // no one else acknowledged A's alert
  expect((await api.db('plans').where({ id: 'iso_never' })).length).toBe(0);
  expect((await api.db('tenants').where({ id: 'iso_never' })).length).toBe(0);
});

test('tenant A reads its own resources on every tenant route that only reads', async () => {
  for (const route of ROUTES.filter((r) => r.access === 'tenant' && r.method === 'GET')) {
    const res = await request(route, ofA(), A.key);
    expect({ route: label(route), status: res.status }).toEqual({ route: label(route), status: 200 });
  }
});

/**
 * The `/v1` routes as declared in the source: `v1.use([prefix,] xRouter(ctx))` in app.ts, and
 * `router.<method>('/path', ...)` in the router's file. Parameters become `{}`.
 */
function declaredRoutes(): string[] {
  const root = path.resolve(__dirname, '../../src/api');
  const app = fs.readFileSync(path.join(root, 'app.ts'), 'utf8');
  const files = new Map<string, string>();
  for (const m of app.matchAll(/import\s*\{([^}]+)\}\s*from\s*'\.\/routes\/([\w.-]+)'/g)) {
    for (const name of m[1]!.split(',')) files.set(name.replace(/\btype\b/, '').trim(), m[2]!);
  }
  const routes: string[] = [];
  const mounted = new Set<string>();
  for (const m of app.matchAll(/\bv1\.use\(\s*(?:'([^']*)'\s*,\s*)?(\w+)\(/g)) {
    const file = files.get(m[2]!);
    if (!file) continue; // middleware such as authenticate
    mounted.add(file);
    const source = fs.readFileSync(path.join(root, 'routes', `${file}.ts`), 'utf8');
    expect({ file, usesRouteChains: /\.route\(/.test(source) }).toEqual({ file, usesRouteChains: false }); // extend the scan if this fails
    for (const r of source.matchAll(/\.(get|post|put|patch|delete|all)\(\s*(['"`])(\/[^'"`]*)\2/g)) {
      const sub = r[3] === '/' ? '' : r[3]!;
      routes.push(`${r[1]!.toUpperCase()} /v1${m[1] ?? ''}${sub}`.replace(/:\w+/g, '{}'));
    }
  }
  // A routes file that app.ts does not mount under /v1 (operations: /healthz, /metrics, ...) is
  // public by design; any other is reported, so the scan cannot silently miss a router.
  const unmounted = fs
    .readdirSync(path.join(root, 'routes'))
    .map((f) => f.replace(/\.ts$/, ''))
    .filter((f) => !mounted.has(f) && f !== 'operations');
  expect({ unmountedRouteFiles: unmounted }).toEqual({ unmountedRouteFiles: [] });
  return [...new Set(routes)].sort();
}

test('ROUTES lists exactly the /v1 routes the API declares', () => {
  const table = [...new Set(ROUTES.map((r) => `${r.method} ${r.path}`.replace(/\{\w+\}/g, '{}')))].sort();
  expect(table).toEqual(declaredRoutes());
});
