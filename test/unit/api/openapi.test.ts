/**
 * The OpenAPI document, built from the real app: its paths are the routes Express serves, each
 * described by the `operation()` it was registered with. Probed over HTTP on loopback; PostgreSQL
 * and Temporal are never reached (see offline-app.ts).
 */
import fs from 'node:fs';
import path from 'node:path';
import express from 'express';
import { buildOpenApiDocument, openApiPath, servedRoutes } from '../../../src/api/openapi';
import { operation } from '../../../src/api/operation';
import { ADMIN_KEY, serveOffline } from './offline-app';

let served: Awaited<ReturnType<typeof serveOffline>>;
let doc: any;

beforeAll(async () => {
  served = await serveOffline();
  doc = buildOpenApiDocument(served.app);
});
afterAll(() => served?.close());

/** `get /v1/tenants/{id}` for every operation of the document. */
function documentedOperations(): Array<{ method: string; path: string; op: any }> {
  return Object.entries(doc.paths as Record<string, Record<string, any>>).flatMap(([p, ops]) => Object.entries(ops).map(([method, op]) => ({ method, path: p, op })));
}

/** The operationIds are the names generated clients give to calls: changing one breaks them. */
const OPERATION_IDS = [
  'checkLiveness', 'checkReadiness', 'getMetrics', 'getOpenApiDocument', 'getApiReference',
  'createPlan', 'listPlans', 'getPlan',
  'createTenant', 'listTenants', 'getTenant', 'updateTenant', 'cancelTenant', 'rotateTenantApiKey', 'rotateWebhookSecret',
  'ingestUsageEvents', 'getCurrentUsage', 'authorizeUsage', 'estimateUsageCost', 'listUsageEvents', 'listPeriods',
  'listAlerts', 'createAlertRule', 'listAlertRules', 'getAlertRule', 'deleteAlertRule', 'listNotificationDeliveries',
  'closePeriod', 'listTenantInvoices', 'getInvoice', 'getInvoicePdf', 'rerunInvoice',
  'createCreditGrant', 'listCreditGrants', 'getBalance', 'createPack', 'listPacks',
  'listAlertsForTriage', 'acknowledgeAlert', 'listMonthlySummaries',
  'getDashboard', 'signInToDashboard', 'getDashboardSession', 'signOutOfDashboard', 'getDashboardConfig',
];

test('the document lists exactly the routes the app serves, with stable operationIds', () => {
  expect(doc.openapi).toBe('3.1.0');
  const inDoc = documentedOperations().map((o) => `${o.method} ${o.path}`).sort();
  const routes = servedRoutes(served.app).map((r) => `${r.method} ${openApiPath(r.path).path}`).sort();
  expect(inDoc).toEqual(routes);
  expect(routes).toEqual(expect.arrayContaining(['get /healthz', 'post /v1/events', 'get /v1/tenants/{id}/usage', 'delete /v1/tenants/{id}/alert-rules/{rule_id}', 'get /v1/invoices/{invoice_id}/pdf']));
  expect(documentedOperations().map((o) => o.op.operationId).sort()).toEqual([...OPERATION_IDS].sort());
});

test('every documented operation is routed by Express (an unknown route answers "no route")', async () => {
  const answers: string[] = [];
  for (const { method, path: p } of documentedOperations()) {
    const url = p.replace(/\{[^}]+\}/g, 'zz_missing');
    const withBody = method === 'post' || method === 'patch';
    const res = await fetch(`${served.url}${url}`, {
      method: method.toUpperCase(),
      headers: { 'x-api-key': ADMIN_KEY, ...(withBody ? { 'content-type': 'application/json' } : {}) },
      body: withBody ? '{}' : undefined,
    });
    const text = await res.text();
    answers.push(`${method} ${p}: ${res.status === 404 && text.includes('no route') ? 'no route' : 'routed'}`);
  }
  expect(answers).toEqual(documentedOperations().map(({ method, path: p }) => `${method} ${p}: routed`));
  const unknown = await fetch(`${served.url}/v1/tenants/zz_missing/nothing-here`, { headers: { 'x-api-key': ADMIN_KEY } });
  expect(unknown.status).toBe(404);
  expect(await unknown.text()).toContain('no route');
});

test('a route registered without operation() cannot be served undocumented: building the document fails', () => {
  const app = express();
  const router = express.Router();
  router.get('/documented', operation({ operationId: 'documented', tag: 'Operations', summary: 's', public: true, responses: { 200: { description: 'ok' } } }), (_req, res) => {
    res.end();
  });
  router.post('/forgotten', (_req, res) => {
    res.end();
  });
  app.use('/v1', router);
  expect(() => buildOpenApiDocument(app)).toThrow('POST /v1/forgotten has no OpenAPI operation');
});

test('paths name parameters in snake_case, the way the API names its fields', () => {
  expect(openApiPath('/v1/tenants/:id/alert-rules/:ruleId')).toEqual({
    path: '/v1/tenants/{id}/alert-rules/{rule_id}',
    params: [
      { express: 'id', documented: 'id' },
      { express: 'ruleId', documented: 'rule_id' },
    ],
  });
  expect(() => openApiPath('/files/*rest')).toThrow(/only literal segments/);
});

test('document-level metadata: license of package.json, a relative server, described tags', () => {
  const pkg = JSON.parse(fs.readFileSync(path.resolve(__dirname, '../../../package.json'), 'utf8')) as { license: string };
  expect(doc.info.license).toEqual({ name: pkg.license, identifier: pkg.license });
  expect(doc.servers).toEqual([expect.objectContaining({ url: '/' })]);
  expect(doc.tags.map((t: any) => t.name)).toEqual(['Plans', 'Tenants', 'Usage', 'Alerts', 'Finance', 'Operations', 'Dashboard']);
  for (const tag of doc.tags) expect(tag.description).toEqual(expect.any(String));
  // OpenAPI 3.1 spells "or null" as a type; 3.0's `nullable` must not appear.
  expect(JSON.stringify(doc)).not.toContain('"nullable"');
});

test('every operation has a 4xx answer, and every 4xx or 5xx answer is problem+json', () => {
  for (const { method, path: p, op } of documentedOperations()) {
    const statuses = Object.keys(op.responses);
    expect({ operation: `${method} ${p}`, has4xx: statuses.some((s) => s.startsWith('4')) }).toEqual({ operation: `${method} ${p}`, has4xx: true });
    for (const status of statuses.filter((s) => Number(s) >= 400 && !(p === '/readyz' && s === '503'))) {
      expect(op.responses[status].content['application/problem+json'].schema).toEqual({ $ref: '#/components/schemas/Problem' });
    }
  }
});

test('who may call a route comes from its middleware: public, admin only (403), or any key', () => {
  const op = (method: string, p: string) => doc.paths[p][method];
  expect(op('get', '/healthz').security).toEqual([]);
  expect(op('get', '/healthz').responses['401']).toBeUndefined();
  for (const [method, p] of [['post', '/v1/plans'], ['get', '/v1/plans/{plan_id}'], ['delete', '/v1/tenants/{id}'], ['post', '/v1/tenants/{id}/close-period'], ['post', '/v1/invoices/{invoice_id}/rerun']]) {
    expect({ route: `${method} ${p}`, forbidden: op(method!, p!).responses['403']?.description }).toEqual({ route: `${method} ${p}`, forbidden: expect.stringContaining('admin-only') });
    expect(op(method!, p!).description).toContain('Admin key only');
  }
  expect(op('get', '/v1/tenants/{id}').responses['403']).toBeUndefined();
  expect(op('get', '/v1/tenants/{id}').responses['401']).toBeDefined();
  expect(op('get', '/v1/tenants/{id}').description).toContain('a tenant key on its own tenant');
  expect(doc.security).toEqual([{ ApiKey: [] }, { Bearer: [] }]);
  expect(doc.components.securitySchemes.ApiKey).toMatchObject({ type: 'apiKey', in: 'header', name: 'X-API-Key' });
});

test('request bodies and queries come from the zod schemas that validate them', () => {
  const events = doc.paths['/v1/events'].post;
  const body = events.requestBody.content['application/json'].schema;
  expect(body.properties.events).toMatchObject({ type: 'array', minItems: 1, maxItems: 1000 });
  expect(body.properties.events.items.required).toEqual(expect.arrayContaining(['id', 'metric']));
  expect(Object.keys(events.responses)).toEqual(expect.arrayContaining(['202', '400', '401', '413', '422', '429']));
  const plans = doc.paths['/v1/plans'].post.requestBody.content['application/json'].schema;
  expect(plans.properties.interval.enum).toEqual(['day', 'month', 'year']);
  const tenants = doc.paths['/v1/tenants'].get.parameters.map((p: any) => p.name);
  expect(tenants).toEqual(expect.arrayContaining(['limit', 'starting_after']));
  const eventsQuery = doc.paths['/v1/tenants/{id}/events'].get.parameters.map((p: any) => `${p.in} ${p.name}`);
  expect(eventsQuery).toEqual(expect.arrayContaining(['path id', 'query metric', 'query from', 'query to']));
  expect(doc.paths['/v1/tenants/{id}/close-period'].post.requestBody.required).toBe(false);
  expect(doc.paths['/v1/invoices/{invoice_id}/rerun'].post.parameters.map((p: any) => `${p.in} ${p.name}`)).toEqual(['path invoice_id', 'header Idempotency-Key']);
  expect(doc.paths['/v1/tenants/{id}/alert-rules/{rule_id}'].delete.responses['204']).toEqual({ description: 'deleted' });
  expect(doc.paths['/v1/tenants/{id}'].get.responses['200'].content['application/json'].schema).toEqual({ $ref: '#/components/schemas/TenantWithPeriod' });
});

test('/openapi.json serves the same document', async () => {
  const res = await fetch(`${served.url}/openapi.json`);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/^application\/json/);
  expect(await res.json()).toEqual(doc);
});
