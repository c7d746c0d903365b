import type { Application } from 'express';
import { z } from 'zod';
import { OpenAPIRegistry, OpenApiGeneratorV31, type ResponseConfig, type RouteConfig } from '@asteasolutions/zod-to-openapi';
import { requireAdmin } from './auth';
import { TAGS, declaredOperation, type OperationSpec, type Tag } from './operation';
import { problem } from './responses';

/**
 * `GET /openapi.json`: the API reference, generated from the app itself. Paths and methods are
 * read from the Express router, and each route's operation from the `operation()` handler it was
 * registered with (see `operation.ts`); request shapes are the zod schemas that validate them.
 * OpenAPI 3.1: its schemas are JSON Schema, where `null` is a type, so `.nullable()` and
 * `z.unknown()` map as they are. 3.0 has only the `nullable` keyword, which needs a `type` beside
 * it that a schema for any value cannot have.
 */

/** One route the app serves, with the handlers that run before its answer. */
export interface ServedRoute {
  method: 'get' | 'post' | 'patch' | 'delete';
  /** Express pattern: `/v1/tenants/:id/usage`. */
  path: string;
  operation: OperationSpec;
  /** Middleware mounted at a router's root above the route, then the route's own handlers. */
  chain: readonly unknown[];
}

type RouteLayer = { method?: string; handle: unknown };
type Layer = {
  route?: { path: unknown; methods: Record<string, boolean | undefined>; stack: RouteLayer[] };
  handle?: { stack?: Layer[] };
  rawPath?: unknown;
};

const METHODS = new Set(['get', 'post', 'patch', 'delete']);

/**
 * Every route `app` serves, read from its router tree (router 2: mount paths are `layer.rawPath`).
 * Throws on a route the document could not describe: no `operation()`, or a pattern or method
 * outside what the document maps, so such a route fails the tests instead of going unlisted.
 */
export function servedRoutes(app: Application): ServedRoute[] {
  const out: ServedRoute[] = [];
  const walk = (stack: Layer[], prefix: string, inherited: readonly unknown[]) => {
    const chain = [...inherited];
    for (const layer of stack) {
      const route = layer.route;
      if (route) {
        if (typeof route.path !== 'string') throw new Error(`a route under ${prefix || '/'} has a non-string path; the OpenAPI document cannot list it`);
        const path = joinPath(prefix, route.path);
        for (const [method, on] of Object.entries(route.methods)) {
          if (!on) continue;
          if (!METHODS.has(method)) throw new Error(`${method.toUpperCase()} ${path}: the OpenAPI document maps GET, POST, PATCH and DELETE only`);
          const handlers = route.stack.filter((l) => l.method === undefined || l.method === method).map((l) => l.handle);
          const operation = handlers.map(declaredOperation).find((o) => o !== undefined);
          if (!operation) throw new Error(`${method.toUpperCase()} ${path} has no OpenAPI operation: register it with operation({ ... }) (src/api/operation.ts)`);
          out.push({ method: method as ServedRoute['method'], path, operation, chain: [...chain, ...handlers] });
        }
      } else if (typeof layer.rawPath === 'string') {
        const mount = joinPath(prefix, layer.rawPath);
        if (Array.isArray(layer.handle?.stack)) walk(layer.handle.stack, mount, chain);
        // Middleware at a router's root runs before every later route of that router.
        else if (layer.rawPath === '/') chain.push(layer.handle);
      }
    }
  };
  walk((app as unknown as { router: { stack: Layer[] } }).router.stack, '', []);
  return out;
}

function joinPath(prefix: string, path: string): string {
  const joined = `${prefix === '/' ? '' : prefix}${path === '/' ? '' : path}`;
  return joined === '' ? '/' : joined;
}

/** `:invoiceId` → `invoice_id`: the document names parameters the way the API names fields. */
function documentedName(expressName: string): string {
  return expressName.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

/** `/v1/invoices/:invoiceId/pdf` → `/v1/invoices/{invoice_id}/pdf`, with the parameter names. */
export function openApiPath(expressPath: string): { path: string; params: Array<{ express: string; documented: string }> } {
  if (/[{}*?()[\]]/.test(expressPath)) throw new Error(`${expressPath}: only literal segments and :params map to an OpenAPI path`);
  const params: Array<{ express: string; documented: string }> = [];
  const path = expressPath.replace(/:([A-Za-z0-9_]+)/g, (_, name: string) => {
    params.push({ express: name, documented: documentedName(name) });
    return `{${documentedName(name)}}`;
  });
  return { path, params };
}

/** The license of package.json, which this document shares. */
const LICENSE = { name: 'Apache-2.0', identifier: 'Apache-2.0' };

/** The OpenAPI document (3.1) of everything `app` serves. */
export function buildOpenApiDocument(app: Application): Record<string, unknown> {
  const routes = servedRoutes(app);
  const registry = new OpenAPIRegistry();
  registry.registerComponent('securitySchemes', 'ApiKey', { type: 'apiKey', in: 'header', name: 'X-API-Key', description: 'the admin key or a tenant key' });
  registry.registerComponent('securitySchemes', 'Bearer', { type: 'http', scheme: 'bearer', description: 'the same key as `Authorization: Bearer <key>`' });
  const ids = new Map<string, string>();
  for (const route of routes) {
    const where = `${route.method.toUpperCase()} ${route.path}`;
    const earlier = ids.get(route.operation.operationId);
    if (earlier) throw new Error(`operationId ${route.operation.operationId} is used by ${earlier} and ${where}`);
    ids.set(route.operation.operationId, where);
    registry.registerPath(routeConfig(route));
  }
  const used = new Set<Tag>(routes.map((r) => r.operation.tag));
  const document = new OpenApiGeneratorV31(registry.definitions).generateDocument({
    openapi: '3.1.0',
    info: {
      title: 'tally API',
      version: '1',
      description:
        'Usage billing on Temporal. Keys go in `X-API-Key` (or `Authorization: Bearer`). A tenant key acts only on its own tenant: any other tenant answers 404. Errors are `application/problem+json` with a stable `code`. List endpoints take `limit` (1..100, default 25) and `starting_after` and answer `{ data, has_more, total_count }`, newest first. Any request with a body that is not JSON (415), malformed or not UTF-8 (400), larger than 1 MiB (413) or holds text PostgreSQL cannot store (422) is refused before it reaches its route.',
      license: LICENSE,
    },
    servers: [{ url: '/', description: 'the server that serves this document' }],
    security: [{ ApiKey: [] }, { Bearer: [] }],
    tags: (Object.keys(TAGS) as Tag[]).filter((t) => used.has(t)).map((name) => ({ name, description: TAGS[name] })),
  });
  return document as unknown as Record<string, unknown>;
}

/** Problem answers (`application/problem+json`), with `Retry-After` where the client should wait. */
function problemResponse(description: string, retryAfter = false): ResponseConfig {
  return {
    description,
    ...(retryAfter ? { headers: z.object({ 'Retry-After': z.string().describe('seconds to wait before retrying') }) } : {}),
    content: { 'application/problem+json': { schema: problem } },
  };
}

function routeConfig(route: ServedRoute): RouteConfig {
  const op = route.operation;
  const { path, params } = openApiPath(route.path);
  const admin = route.chain.includes(requireAdmin);
  const access = op.public ? 'Public: no API key.' : admin ? 'Admin key only (a tenant key gets 403).' : "The admin key, or a tenant key on its own tenant's resources.";

  const problems: Record<number, ResponseConfig> = {};
  if (op.public) problems[400] = problemResponse('malformed JSON body (any route parses a JSON body it is sent)');
  if (op.body) {
    problems[400] = problemResponse('malformed JSON body');
    problems[413] = problemResponse('body larger than 1 MiB (`payload_too_large`)');
    problems[415] = problemResponse('a body that is not `application/json` in UTF-8 (`unsupported_media_type`)');
  }
  if (op.body || op.query || op.headers) problems[422] = problemResponse('validation failed (`validation_failed`; `errors[].path` names each bad field)');
  if (!op.public) {
    problems[401] = problemResponse('missing, unknown or revoked API key (`unauthorized`)');
    if (admin) problems[403] = problemResponse('a tenant key on an admin-only route (`forbidden`)');
    if (params.length > 0) problems[404] = problemResponse(admin ? 'not found (`not_found`)' : "not found (`not_found`), also another tenant's resource seen with a tenant key");
    problems[429] = problemResponse('rate limited (`rate_limited`): retry after `Retry-After` seconds', true);
    problems[503] = problemResponse("PostgreSQL or Temporal is unreachable, or the tenant's workflow did not answer within 10 seconds (`unavailable`): retry after `Retry-After` seconds", true);
  }
  for (const [status, when] of Object.entries(op.problems ?? {})) {
    if (when === false) delete problems[Number(status)];
    else problems[Number(status)] = problemResponse(when);
  }

  const responses: Record<string, ResponseConfig> = {};
  for (const [status, r] of Object.entries(op.responses)) {
    responses[status] = {
      description: r.description,
      ...(r.headers ? { headers: r.headers } : {}),
      ...(r.schema ? { content: { [r.contentType ?? 'application/json']: { schema: r.schema } } } : {}),
    };
  }
  for (const status of Object.keys(problems).map(Number).sort((a, b) => a - b)) responses[status] ??= problems[status]!;

  const paramSchemas = Object.fromEntries(params.map((p) => [p.documented, op.params?.[p.express] ?? z.string()]));
  return {
    method: route.method,
    path,
    operationId: op.operationId,
    tags: [op.tag],
    summary: op.summary,
    description: [op.description, access].filter(Boolean).join('\n\n'),
    ...(op.public ? { security: [] } : {}),
    request: {
      ...(params.length > 0 ? { params: z.object(paramSchemas) } : {}),
      ...(op.query ? { query: op.query } : {}),
      ...(op.headers ? { headers: op.headers } : {}),
      ...(op.body ? { body: { required: !op.bodyOptional, content: { 'application/json': { schema: op.body } } } } : {}),
    },
    responses,
  };
}
