import path from 'node:path';
import express, { Router, type Application, type RequestHandler } from 'express';
import { z } from 'zod';
import type { ApiContext } from '../context';
import { pingDb } from '../../db/knex';
import type { ApiMetrics } from '../metrics';
import { buildOpenApiDocument } from '../openapi';
import { operation } from '../operation';
import { pagePolicy } from '../page-policy';
import { liveness, readiness } from '../responses';

/** How long readiness waits for each dependency before calling it down. */
const READY_TIMEOUT_MS = 2_000;

/** The `/docs` page and its Swagger UI initializer (files, so the page's CSP needs no inline script). */
const DOCS_DIR = path.join(__dirname, '..', 'docs');

/**
 * Swagger UI's files, from the swagger-ui-dist package (served offline, no CDN). Resolved through
 * its package.json: the package's main module would load the whole browser bundle into the server.
 */
const SWAGGER_UI_DIR = path.dirname(require.resolve('swagger-ui-dist/package.json'));

/** What `/docs` loads from swagger-ui-dist; the package's own demo page and initializer stay unserved. */
const SWAGGER_UI_FILES = new Set(['/swagger-ui.css', '/swagger-ui-bundle.js', '/favicon-32x32.png', '/favicon-16x16.png']);


/** What the operations routes need beyond the API context. */
export interface OperationsOptions {
  metrics?: ApiMetrics;
  /** True once the process is shutting down: readiness answers 503 so balancers stop routing. */
  draining?: () => boolean;
}

/**
 * Liveness, readiness, metrics and the API reference: unauthenticated, so orchestrators,
 * Prometheus and people can reach them without a key.
 */
export function operationsRouter(ctx: ApiContext, options: OperationsOptions = {}): Router {
  const router = Router();
  router.get(
    '/healthz',
    operation({
      operationId: 'checkLiveness',
      tag: 'Operations',
      summary: 'Liveness: the process is up',
      public: true,
      responses: { 200: { description: 'the process answers', schema: liveness } },
    }),
    (_req, res) => {
      res.json({ status: 'ok' });
    },
  );
  router.get(
    '/readyz',
    operation({
      operationId: 'checkReadiness',
      tag: 'Operations',
      summary: 'Readiness: PostgreSQL and Temporal reachable, and not shutting down',
      public: true,
      responses: {
        200: { description: 'ready to serve', schema: readiness },
        503: { description: 'a dependency is down, or the process is draining: balancers should stop routing here', schema: readiness },
      },
    }),
    async (_req, res) => {
      const [postgres, temporal] = await Promise.all([withTimeout(pingDb(ctx.db)), withTimeout(ctx.temporalReady())]);
      const draining = options.draining?.() === true;
      const ready = postgres && temporal && !draining;
      res.status(ready ? 200 : 503).json({ status: ready ? 'ready' : draining ? 'draining' : 'unavailable', postgres, temporal });
    },
  );

  if (options.metrics) {
    const metrics = options.metrics;
    router.get(
      '/metrics',
      operation({
        operationId: 'getMetrics',
        tag: 'Operations',
        summary: 'Prometheus metrics',
        description: "HTTP, ingest, rate limits and the process; with `npm start`, the in-process worker's Temporal metrics too.",
        public: true,
        responses: { 200: { description: 'Prometheus text exposition format', contentType: 'text/plain', schema: z.string() } },
      }),
      async (_req, res) => {
        const { contentType, body } = await metrics.render();
        res.setHeader('Cache-Control', 'no-store');
        res.type(contentType).send(body);
      },
    );
  }

  // Built on first request, once every router is mounted, and kept: routes do not change at run time.
  const documents = new WeakMap<Application, string>();
  router.get(
    '/openapi.json',
    operation({
      operationId: 'getOpenApiDocument',
      tag: 'Operations',
      summary: 'This document: OpenAPI 3.1, generated from the routes the server serves',
      public: true,
      responses: { 200: { description: 'the OpenAPI document', schema: z.record(z.string(), z.unknown()) } },
    }),
    (req, res) => {
      let json = documents.get(req.app);
      if (json === undefined) {
        json = JSON.stringify(buildOpenApiDocument(req.app));
        documents.set(req.app, json);
      }
      res.type('application/json').send(json);
    },
  );

  router.get(
    '/docs',
    operation({
      operationId: 'getApiReference',
      tag: 'Operations',
      summary: 'The API reference as a web page (Swagger UI, served by this server: works offline)',
      public: true,
      responses: { 200: { description: 'HTML page', contentType: 'text/html', schema: z.string() } },
    }),
    // Swagger UI's script and our initializer from this origin; its icons are data: URIs, and
    // "Try it out" calls this same API.
    pagePolicy,
    (_req, res) => {
      res.sendFile(path.join(DOCS_DIR, 'index.html'));
    },
  );
  const swaggerUi = express.static(SWAGGER_UI_DIR, { index: false, redirect: false });
  const swaggerUiFiles: RequestHandler = (req, res, next) => (SWAGGER_UI_FILES.has(req.path) ? swaggerUi(req, res, next) : next());
  router.use('/docs/assets', swaggerUiFiles);
  router.use('/docs', express.static(DOCS_DIR, { index: false, redirect: false }));
  return router;
}

async function withTimeout(check: Promise<boolean>): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), READY_TIMEOUT_MS);
  });
  try {
    return await Promise.race([check.catch(() => false), timeout]);
  } finally {
    clearTimeout(timer);
  }
}
