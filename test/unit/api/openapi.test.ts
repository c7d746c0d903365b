/**
 * The OpenAPI document and the /docs page, built from the real app (its router is read, nothing
 * is called: the database pool and the Temporal connection are lazy and never used).
 */
import fs from 'node:fs';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { createApp } from '../../../src/api/app';
import { createDb } from '../../../src/db/knex';
import { logger } from '../../../src/logger';
import { ROUTE_DOCS, buildOpenApiDocument, renderDocsHtml, servedRoutes } from '../../../src/api/openapi';

const API_MD = path.resolve(__dirname, '../../../../shared/spec/API.md');

/** Every `METHOD /path` API.md names, with `{param}` normalised to `{}`. */
function apiMdRoutes(): Array<{ method: string; path: string }> {
  const text = fs.readFileSync(API_MD, 'utf8');
  const out = new Map<string, { method: string; path: string }>();
  for (const line of text.split('\n')) {
    // "`GET` and `DELETE /v1/.../{rule_id}`" names two methods for one path.
    for (const m of line.matchAll(/`((?:(?:GET|POST|PATCH|DELETE)`? and `?)*(?:GET|POST|PATCH|DELETE)) (\/[^`?\s]*)/g)) {
      for (const method of m[1]!.match(/GET|POST|PATCH|DELETE/g)!) {
        const p = m[2]!;
        out.set(`${method} ${p}`, { method: method.toLowerCase(), path: p });
      }
    }
  }
  return [...out.values()];
}

const shape = (p: string) => p.replace(/:[A-Za-z0-9_]+/g, '{}').replace(/\{[^}]+\}/g, '{}');

const db = createDb('postgres://nobody@127.0.0.1:1/nothing');
const app = createApp({
  db,
  temporal: new Client({ connection: Connection.lazy({ address: '127.0.0.1:1' }) }),
  taskQueue: 'billing',
  namespace: 'default',
  adminKey: 'unit-test-admin-key-0123456789',
  logger,
});
afterAll(() => db.destroy());

test('API.md is parsed: every endpoint family is found', () => {
  const routes = apiMdRoutes().map((r) => `${r.method} ${r.path}`);
  expect(routes).toEqual(expect.arrayContaining(['post /v1/plans', 'post /v1/events', 'get /v1/tenants/{id}/usage', 'get /v1/invoices/{invoice_id}/pdf', 'get /healthz', 'get /openapi.json']));
  expect(routes.length).toBeGreaterThanOrEqual(27);
});

test('the route table documents every route of API.md', () => {
  const documented = new Set(ROUTE_DOCS.map((d) => `${d.method} ${shape(d.path)}`));
  for (const r of apiMdRoutes()) expect(`${r.method} ${r.path}: ${documented.has(`${r.method} ${shape(r.path)}`)}`).toBe(`${r.method} ${r.path}: true`);
});

test('the document lists exactly the routes the app serves', () => {
  const doc = buildOpenApiDocument(app) as { openapi: string; paths: Record<string, Record<string, unknown>> };
  expect(doc.openapi).toMatch(/^3\./);
  const inDoc = new Set(Object.entries(doc.paths).flatMap(([p, ops]) => Object.keys(ops).map((m) => `${m} ${shape(p)}`)));
  const served = servedRoutes(app).map((r) => `${r.method} ${shape(r.path)}`);
  expect(served).toEqual(expect.arrayContaining(['get /healthz', 'post /v1/events', 'get /v1/tenants/{}/usage']));
  for (const r of served) expect(`${r}: ${inDoc.has(r)}`).toBe(`${r}: true`);
  for (const r of inDoc) expect(`${r}: ${served.includes(r)}`).toBe(`${r}: true`);
});

test('request bodies and queries come from the zod schemas that validate them', () => {
  const doc = buildOpenApiDocument(app) as any;
  const events = doc.paths['/v1/events'].post;
  const body = events.requestBody.content['application/json'].schema;
  expect(body.properties.events).toMatchObject({ type: 'array', minItems: 1, maxItems: 1000 });
  expect(body.properties.events.items.required).toEqual(expect.arrayContaining(['id', 'metric']));
  expect(Object.keys(events.responses)).toEqual(expect.arrayContaining(['202', '401', '413', '422', '429']));
  const plans = doc.paths['/v1/plans'].post.requestBody.content['application/json'].schema;
  expect(plans.properties.interval.enum).toEqual(['day', 'month', 'year']);
  expect(doc.paths['/healthz'].get.security).toEqual([]);
  expect(doc.components.securitySchemes.ApiKey).toMatchObject({ type: 'apiKey', in: 'header', name: 'X-API-Key' });
  const tenantsList = doc.paths['/v1/tenants']?.get;
  if (tenantsList) expect(tenantsList.parameters.map((p: any) => p.name)).toEqual(expect.arrayContaining(['limit', 'starting_after']));
});

test('the HTML reference lists every operation and escapes what it prints', () => {
  const doc = buildOpenApiDocument(app) as any;
  const html = renderDocsHtml(doc);
  expect(html).toMatch(/^<!doctype html>/);
  for (const [p, ops] of Object.entries(doc.paths as Record<string, object>)) {
    for (const m of Object.keys(ops)) expect(html).toContain(`<span class="m ${m}">${m.toUpperCase()}</span><code>${p}</code>`);
  }
  expect(html).not.toMatch(/<script/i);
  const hostile = renderDocsHtml({ info: { title: '<script>alert(1)</script>' }, paths: { '/x': { get: { summary: '<img src=x>', tags: ['T'] } } } });
  expect(hostile).not.toContain('<script>alert');
  expect(hostile).toContain('&lt;img src=x&gt;');
});
