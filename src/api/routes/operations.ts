import { Router, type Application } from 'express';
import helmet from 'helmet';
import type { ApiContext } from '../context';
import { pingDb } from '../../db/knex';
import type { ApiMetrics } from '../metrics';
import { DOCS_STYLE_HASH, buildOpenApiDocument, renderDocsHtml } from '../openapi';

/** How long readiness waits for each dependency before calling it down. */
const READY_TIMEOUT_MS = 2_000;

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
  router.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });
  router.get('/readyz', async (_req, res) => {
    const [postgres, temporal] = await Promise.all([withTimeout(pingDb(ctx.db)), withTimeout(ctx.temporalReady())]);
    const draining = options.draining?.() === true;
    const ready = postgres && temporal && !draining;
    res.status(ready ? 200 : 503).json({ status: ready ? 'ready' : draining ? 'draining' : 'unavailable', postgres, temporal });
  });

  if (options.metrics) {
    const metrics = options.metrics;
    router.get('/metrics', async (_req, res) => {
      const { contentType, body } = await metrics.render();
      res.setHeader('Cache-Control', 'no-store');
      res.type(contentType).send(body);
    });
  }

  // Built on first request, once every router is mounted, and kept: routes do not change at run time.
  const documents = new WeakMap<Application, { json: string; html: string }>();
  const documentOf = (app: Application) => {
    let doc = documents.get(app);
    if (!doc) {
      const openapi = buildOpenApiDocument(app);
      doc = { json: JSON.stringify(openapi), html: renderDocsHtml(openapi) };
      documents.set(app, doc);
    }
    return doc;
  };
  router.get('/openapi.json', (req, res) => {
    res.type('application/json').send(documentOf(req.app).json);
  });
  router.get(
    '/docs',
    helmet.contentSecurityPolicy({
      useDefaults: false,
      directives: {
        defaultSrc: ["'none'"],
        styleSrc: [DOCS_STYLE_HASH],
        baseUri: ["'none'"],
        formAction: ["'none'"],
        frameAncestors: ["'none'"],
      },
    }),
    (req, res) => {
      res.type('html').send(documentOf(req.app).html);
    },
  );
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
