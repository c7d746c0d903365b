import type { ServerResponse } from 'node:http';
import express, { type Express } from 'express';
import helmet from 'helmet';
import type { Client } from '@temporalio/client';
import type { Db } from '../db/knex';
import type { Logger } from '../logger';
import type { Config } from '../config';
import { BillingGateway } from './billing-gateway';
import { TenantDirectory } from './tenant-directory';
import { authenticate } from './auth';
import { ApiError, errorMiddleware, notFoundMiddleware } from './errors';
import type { ApiContext } from './context';
import { operationsRouter } from './routes/operations';
import { createApiMetrics, type ApiMetrics } from './metrics';
import { rateLimit } from './rate-limit';
import { requestLog } from './request-log';
import { IngestQueue } from './ingest-queue';
import { storeUsageRequests } from '../db/ingest';
import { PlacementContexts } from '../db/placement-contexts';
import { POOLS } from '../db/knex';
import { plansRouter } from './routes/plans';
import { tenantsRouter } from './routes/tenants';
import { usageRouter } from './routes/usage';
import { financeRouter } from './routes/finance';
import { readsRouter } from './routes/reads';
import { alertRulesRouter } from './routes/alert-rules';
import { invoicesRouter } from './routes/invoices';
import { alertsTriageRouter } from './routes/alerts';
import { summariesRouter } from './routes/summaries';
import { balanceRouter } from './routes/balance';
import { rejectUnsafeJson, verifyJsonBody } from './body-guard';
import { STRICT_WEBHOOK_TARGETS, webhookTargetPolicyFromConfig, type WebhookTargetPolicy } from '../notifications/webhook-targets';
import { createDashboard, type DashboardSettings } from './dashboard/router';
import type { TenantKeyCache } from './tenant-key-cache';

/**
 * Ids travel into SQL and Temporal ids: a path with control characters (`%00`) or broken
 * percent-encoding names nothing that can exist, so it is a 404 before any lookup can fail on it.
 */
const rejectUnusablePaths: express.RequestHandler = (req, _res, next) => {
  let decoded: string;
  try {
    decoded = decodeURIComponent(req.path);
  } catch {
    return next(new ApiError(404, 'not_found', 'no such resource'));
  }
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(decoded)) return next(new ApiError(404, 'not_found', 'no such resource'));
  next();
};

/** What the HTTP API is built from; `npm start`, `npm run api` and tests all pass real ones. */
export interface AppDeps {
  db: Db;
  /**
   * A pool for ingest transactions alone (default: `db`). Under load every ingest request holds
   * a connection until its batch commits; with a pool of their own, reads (`GET …/usage`) and
   * the rest of the API never queue behind them.
   */
  ingestDb?: Db;
  temporal: Client;
  taskQueue: string;
  namespace: string;
  adminKey: string;
  logger: Logger;
  /** False on servers without tally's search attributes (the time-skipping test server). */
  searchAttributes?: boolean;
  /** Per-key request rates (RATE_LIMIT_*); absent or 0: no limit (tests drive the API hard). */
  rateLimits?: { ingestPerSecond?: number; readsPerSecond?: number };
  /** Per-tenant back-pressure (INGEST_MAX_PENDING_EVENTS); absent or 0: none. */
  maxPendingEvents?: number;
  /** The in-process Temporal worker's Prometheus endpoint, appended to `/metrics` (`npm start`). */
  workerMetricsUrl?: string;
  /** A metrics registry to record into; one is created per app otherwise. */
  metrics?: ApiMetrics;
  /** Where webhook URLs may point (WEBHOOK_*); default: https to public addresses only. */
  webhookTargets?: WebhookTargetPolicy;
  /** The web app at /dashboard: its session secret and the Temporal UI it links to. */
  dashboard?: DashboardSettings;
  /** Tenant keys resolved recently, forgotten as they are revoked (`startTenantKeyCache`); absent: every key is read from PostgreSQL. */
  tenantKeys?: TenantKeyCache;
}

/** Requests in flight and whether the app is shutting down, per app (see {@link beginDrain}). */
const drains = new WeakMap<Express, { draining: boolean; open: Set<ServerResponse> }>();

/**
 * Starts a graceful shutdown of `app`: readiness answers 503, and every response from now on,
 * including those of requests already in flight, carries `Connection: close`. Without that a
 * keep-alive connection that was busy when the server closed would stay open (and hold the
 * server's close) until its keep-alive timeout; with it, each connection ends after its answer.
 */
export function beginDrain(app: Express): void {
  const state = drains.get(app);
  if (!state) return;
  state.draining = true;
  for (const res of state.open) if (!res.headersSent) res.setHeader('Connection', 'close');
}

/** The app's tuning from the process configuration, shared by `npm start` and `npm run api`. */
export function appOptionsFromConfig(config: Config): Pick<AppDeps, 'rateLimits' | 'maxPendingEvents' | 'dashboard' | 'webhookTargets'> {
  return {
    webhookTargets: webhookTargetPolicyFromConfig(config),
    dashboard: { sessionSecret: config.DASHBOARD_SESSION_SECRET, temporalUiUrl: config.TEMPORAL_UI_URL ?? null },
    rateLimits: { ingestPerSecond: config.RATE_LIMIT_INGEST_PER_SECOND, readsPerSecond: config.RATE_LIMIT_READS_PER_SECOND },
    maxPendingEvents: config.INGEST_MAX_PENDING_EVENTS,
  };
}

/**
 * Graceful stop of a listening app: stop accepting connections, let requests in flight finish
 * (each connection closes after its answer), then resolve. After `timeoutMs` it resolves anyway,
 * so a stuck request cannot keep the process from stopping; the caller then exits.
 */
export async function closeGracefully(app: Express, server: { close(): Promise<void> }, timeoutMs = 15_000): Promise<'closed' | 'timeout'> {
  beginDrain(app);
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), timeoutMs);
  });
  try {
    const closed = server.close().then(() => 'closed' as const);
    return await Promise.race([closed, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Events one ingest transaction takes from waiting requests at most: a request's own limit (1,000
 * events), so none ever goes alone for its size. Small requests still share a transaction by the
 * dozen. One tenant with 32 senders of 100-event batches was acknowledged 7 to 20 % faster with
 * 1,000 than with 5,000, in each of five alternating pairs (BENCHMARKS.md, session 23): with a
 * higher cap one transaction can take every waiting request while the others idle.
 */
const INGEST_EVENTS_PER_TRANSACTION = 1_000;

/** Builds the Express app of API v1: thin routes over the gateway and the repositories. */
export function createApp(deps: AppDeps): Express {
  const metrics = deps.metrics ?? createApiMetrics({ workerMetricsUrl: deps.workerMetricsUrl });
  // Tenants' placement contexts, kept so that a batch is stored in one statement (src/db/ingest.ts).
  const placementContexts = new PlacementContexts();
  const ctx: ApiContext = {
    db: deps.db,
    billing: new BillingGateway(deps.temporal, deps.taskQueue, { searchAttributes: deps.searchAttributes !== false }),
    metrics,
    ingest: new IngestQueue((requests) => storeUsageRequests(deps.ingestDb ?? deps.db, requests, { maxPending: deps.maxPendingEvents ?? 0, contexts: placementContexts }), {
      maxInFlight: POOLS.ingest,
      maxEvents: INGEST_EVENTS_PER_TRANSACTION,
    }),
    maxPendingEvents: deps.maxPendingEvents ?? 0,
    tenants: new TenantDirectory(deps.db),
    adminKey: deps.adminKey,
    ...(deps.tenantKeys ? { tenantKeys: deps.tenantKeys } : {}),
    webhookTargets: deps.webhookTargets ?? STRICT_WEBHOOK_TARGETS,
    config: { TEMPORAL_NAMESPACE: deps.namespace },
    temporalReady: async () => {
      try {
        // A deadline, so an unreachable server answers "not ready" instead of hanging the probe.
        await deps.temporal.connection.withDeadline(Date.now() + 2_000, () => deps.temporal.connection.workflowService.getSystemInfo({}));
        return true;
      } catch {
        return false;
      }
    },
  };

  const app = express();
  app.disable('x-powered-by');
  app.set('trust proxy', false);
  const drain = { draining: false, open: new Set<ServerResponse>() };
  drains.set(app, drain);
  app.use((_req, res, next) => {
    if (drain.draining) res.setHeader('Connection', 'close');
    drain.open.add(res);
    res.once('close', () => drain.open.delete(res));
    next();
  });
  app.use(metrics.httpMiddleware(app));
  app.use(requestLog(app, deps.logger));
  // JSON API: no CSP here (nothing renders the answers); /docs sets its own strict one.
  app.use(helmet({ contentSecurityPolicy: false }));
  // Every body is read: verifyJsonBody answers 415 for one that is not JSON, 400 for bytes that are not UTF-8.
  app.use(express.json({ limit: '1mb', strict: true, type: () => true, verify: verifyJsonBody }));
  // Text PostgreSQL cannot store and nesting JSON.stringify cannot write: 422 before any route.
  app.use(rejectUnsafeJson());

  const v1 = express.Router();
  v1.use(rejectUnusablePaths);
  const dashboard = createDashboard({ db: deps.db, adminKey: deps.adminKey, namespace: deps.namespace, tenantKeys: deps.tenantKeys, ...deps.dashboard });
  v1.use(authenticate(deps.db, deps.adminKey, dashboard.sessions, deps.tenantKeys));
  v1.use(
    rateLimit({
      ingestPerSecond: deps.rateLimits?.ingestPerSecond,
      readsPerSecond: deps.rateLimits?.readsPerSecond,
      onLimited: (budget) => metrics.recordRateLimited(budget),
    }),
  );
  v1.use('/plans', plansRouter(ctx));
  v1.use('/tenants', tenantsRouter(ctx));
  v1.use(usageRouter(ctx));
  v1.use(financeRouter(ctx));
  v1.use(readsRouter(ctx));
  v1.use(alertRulesRouter(ctx, deps.temporal));
  v1.use(invoicesRouter(ctx, { client: deps.temporal, taskQueue: deps.taskQueue }));
  v1.use(alertsTriageRouter(ctx));
  v1.use(summariesRouter(ctx));
  v1.use(balanceRouter(ctx));
  app.use('/v1', v1);
  // After /v1, whose requests are nearly all of them: none of them walks the operations routes.
  app.use(operationsRouter(ctx, { metrics, draining: () => drain.draining }));
  app.use('/dashboard', dashboard.router);

  app.use(notFoundMiddleware());
  app.use(errorMiddleware());
  return app;
}
