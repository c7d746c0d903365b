import type { Express, Request, RequestHandler } from 'express';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { RateLimitBudget } from './rate-limit';

/**
 * `GET /metrics`: what ops graph and alert on, in the Prometheus text format.
 *
 * - HTTP: requests in flight (received, not yet answered: what a graceful stop waits for), and
 *   request count and latency by method, route pattern and status. The label is the Express
 *   route pattern (`/v1/tenants/:id/usage`), never the raw URL, so tenant ids do not multiply the
 *   series; requests that match no route share the label `unmatched`.
 * - Ingest: batches and events stored (acknowledged). Counting is the worker's (its counter and
 *   the tenant workflows), measured by the worker's own metrics.
 * - Rate limiting: refused requests per budget.
 * - Node.js process metrics, and when the worker runs in the same process (`npm start`), the
 *   Temporal SDK runtime's own metrics scraped from its local Prometheus exporter.
 *
 * Each app gets its own registry (not prom-client's global one), so tests can build many apps in
 * one process.
 */

/** What the app records into, and how `/metrics` renders. */
export interface ApiMetrics {
  readonly registry: Registry;
  /** Records every request of `app` (its count and latency) when its response ends. */
  httpMiddleware(app: Express): RequestHandler;
  /** One request's batches were stored in PostgreSQL (and acknowledged). */
  recordIngest(batches: number, events: number): void;
  /** One request was refused by a rate limit. */
  recordRateLimited(budget: RateLimitBudget): void;
  /** The exposition text: this process's metrics, then the worker runtime's when configured. */
  render(): Promise<{ contentType: string; body: string }>;
}

/** Options of {@link createApiMetrics}. */
export interface ApiMetricsOptions {
  /** The Temporal SDK runtime's Prometheus endpoint in this process (`http://127.0.0.1:9464/metrics`). */
  workerMetricsUrl?: string;
  /** Node.js process metrics (default true). */
  processMetrics?: boolean;
}

/** The route label of requests that matched no route (404s, and 401/429 refused before routing). */
export const UNMATCHED_ROUTE = 'unmatched';

const ROUTE_PATTERN = Symbol('tally.routePattern');

/** Builds a registry with tally's metrics. */
export function createApiMetrics(options: ApiMetricsOptions = {}): ApiMetrics {
  const registry = new Registry();
  if (options.processMetrics !== false) collectDefaultMetrics({ register: registry });
  const registers = [registry];

  const httpRequests = new Counter({
    name: 'tally_http_requests_total',
    help: 'HTTP requests answered, by method, route pattern and status.',
    labelNames: ['method', 'route', 'status'] as const,
    registers,
  });
  const httpDuration = new Histogram({
    name: 'tally_http_request_duration_seconds',
    help: 'HTTP request latency in seconds, by method, route pattern and status.',
    labelNames: ['method', 'route', 'status'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers,
  });
  const httpInFlight = new Gauge({
    name: 'tally_http_requests_in_flight',
    help: 'HTTP requests received (headers read) and not yet answered or abandoned; a graceful stop waits for them.',
    registers,
  });
  const ingestRequests = new Counter({
    name: 'tally_ingest_requests_total',
    help: 'Ingest batches (per tenant of a POST /v1/events) stored durably in PostgreSQL.',
    registers,
  });
  const ingestEvents = new Counter({ name: 'tally_ingest_events_total', help: 'Usage events stored durably (acknowledged).', registers });
  const rateLimited = new Counter({
    name: 'tally_rate_limited_total',
    help: 'Requests refused with 429 by a per-key rate limit, by budget (ingest, reads).',
    labelNames: ['budget'] as const,
    registers,
  });
  const workerUp = options.workerMetricsUrl
    ? new Gauge({ name: 'tally_worker_metrics_up', help: '1 if the in-process Temporal worker metrics could be scraped.', registers })
    : undefined;

  return {
    registry,
    httpMiddleware(app) {
      captureRoutePatterns(app);
      return (req, res, next) => {
        const started = process.hrtime.bigint();
        httpInFlight.inc();
        let recorded = false;
        const record = (status: string) => {
          if (recorded) return;
          recorded = true;
          httpInFlight.dec();
          const labels = { method: req.method, route: routePatternOf(req), status };
          httpRequests.inc(labels);
          httpDuration.observe(labels, Number(process.hrtime.bigint() - started) / 1e9);
        };
        res.once('finish', () => record(String(res.statusCode)));
        // The client went away before the answer: nginx's 499, so aborted requests stay visible.
        res.once('close', () => record(res.writableFinished ? String(res.statusCode) : '499'));
        next();
      };
    },
    recordIngest(batches, events) {
      ingestRequests.inc(batches);
      ingestEvents.inc(events);
    },
    recordRateLimited(budget) {
      rateLimited.inc({ budget });
    },
    async render() {
      let worker = '';
      if (options.workerMetricsUrl) {
        try {
          const res = await fetch(options.workerMetricsUrl, { signal: AbortSignal.timeout(2_000) });
          if (!res.ok) throw new Error(`HTTP ${res.status}`);
          worker = await res.text();
          workerUp?.set(1);
        } catch (err) {
          workerUp?.set(0);
          worker = `# worker metrics unavailable: ${String((err as Error).message ?? err).replace(/\s+/g, ' ')}\n`;
        }
      }
      const own = await registry.metrics();
      const body = worker ? `${own.endsWith('\n') ? own : `${own}\n`}${worker}` : own;
      return { contentType: registry.contentType, body };
    },
  };
}

const ROUTE = Symbol('tally.route');
type RoutedRequest = Request & { [ROUTE]?: unknown; [ROUTE_PATTERN]?: { baseUrl: string; path: string } };

/**
 * Express sets `req.route` when a route matches; at that moment `req.baseUrl` is the mount path
 * of the router holding it. Once an error leaves the router, `baseUrl` is restored, so the mount
 * path is kept at assignment time rather than read when the response ends: by an accessor on the
 * app's request prototype, defined once rather than on every request.
 */
function captureRoutePatterns(app: Express): void {
  Object.defineProperty(app.request, 'route', {
    configurable: true,
    enumerable: true,
    get(this: RoutedRequest) {
      return this[ROUTE];
    },
    set(this: RoutedRequest, value: unknown) {
      this[ROUTE] = value;
      const path = (value as { path?: unknown } | undefined)?.path;
      if (typeof path === 'string') this[ROUTE_PATTERN] = { baseUrl: this.baseUrl, path };
    },
  });
}

function routePatternOf(req: Request): string {
  const route = (req as RoutedRequest)[ROUTE_PATTERN];
  if (!route) return UNMATCHED_ROUTE;
  const full = `${route.baseUrl}${route.path}`;
  return full.length > 1 && full.endsWith('/') ? full.slice(0, -1) : full;
}
