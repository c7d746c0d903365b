/**
 * Metrics labels and rendering, on a small Express app served on loopback (no Temporal, no
 * PostgreSQL). The route label must be the pattern, also when the handler fails.
 */
import http from 'node:http';
import express from 'express';
import { createApiMetrics } from '../../../src/api/metrics';

async function serve(app: express.Express): Promise<{ url: string; close: () => Promise<void> }> {
  const server = http.createServer(app);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as { port: number }).port;
  return { url: `http://127.0.0.1:${port}`, close: () => new Promise((r) => server.close(() => r())) };
}

test('HTTP metrics use the route pattern (mount path included), also for errors, and "unmatched" otherwise', async () => {
  const metrics = createApiMetrics({ processMetrics: false });
  const app = express();
  app.use(metrics.httpMiddleware(app));
  const v1 = express.Router();
  const tenants = express.Router();
  tenants.get('/:id/usage', (req, res) => {
    res.json({ id: req.params.id });
  });
  tenants.get('/:id/fail', () => {
    throw Object.assign(new Error('no'), { status: 409 });
  });
  tenants.get('/', (_req, res) => {
    res.json([]);
  });
  v1.use('/tenants', tenants);
  app.use('/v1', v1);
  app.use((err: { status?: number }, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
    res.status(err.status ?? 500).json({});
  });
  const { url, close } = await serve(app);
  try {
    await fetch(`${url}/v1/tenants/acme/usage`);
    await fetch(`${url}/v1/tenants/globex/usage`);
    await fetch(`${url}/v1/tenants/acme/fail`);
    await fetch(`${url}/v1/tenants`);
    await fetch(`${url}/nope/${Math.random()}`);
    const { body, contentType } = await metrics.render();
    expect(contentType).toMatch(/^text\/plain/);
    expect(body).toContain('tally_http_requests_total{method="GET",route="/v1/tenants/:id/usage",status="200"} 2');
    expect(body).toContain('tally_http_requests_total{method="GET",route="/v1/tenants/:id/fail",status="409"} 1');
    expect(body).toContain('tally_http_requests_total{method="GET",route="/v1/tenants",status="200"} 1');
    expect(body).toContain('tally_http_requests_total{method="GET",route="unmatched",status="404"} 1');
    expect(body).toMatch(/tally_http_request_duration_seconds_bucket\{le="0.005",method="GET",route="\/v1\/tenants\/:id\/usage",status="200"\} \d/);
    expect(body).not.toContain('acme');
    expect(body).toContain('tally_http_requests_in_flight 0');
  } finally {
    await close();
  }
});

test('ingest and rate-limit counters', async () => {
  const metrics = createApiMetrics({ processMetrics: false });
  metrics.recordIngest(4, 35);
  metrics.recordRateLimited('reads');
  const { body } = await metrics.render();
  expect(body).toContain('tally_ingest_requests_total 4');
  expect(body).toContain('tally_ingest_events_total 35');
  expect(body).toContain('tally_rate_limited_total{budget="reads"} 1');
});

test("the worker runtime's metrics are appended, and their absence is reported, not fatal", async () => {
  const worker = express();
  worker.get('/metrics', (_req, res) => {
    res.type('text/plain').send('# HELP temporal_worker_start worker starts\n# TYPE temporal_worker_start counter\ntemporal_worker_start 1\n');
  });
  const { url, close } = await serve(worker);
  try {
    const up = await createApiMetrics({ processMetrics: false, workerMetricsUrl: `${url}/metrics` }).render();
    expect(up.body).toContain('temporal_worker_start 1');
    expect(up.body).toContain('tally_worker_metrics_up 1');
  } finally {
    await close();
  }
  const down = await createApiMetrics({ processMetrics: false, workerMetricsUrl: `${url}/metrics` }).render();
  expect(down.body).toContain('tally_worker_metrics_up 0');
  expect(down.body).toMatch(/# worker metrics unavailable/);
});
