/**
 * Insight scenarios (`npm run bench -- --only insight [--quick]`), against the bench's running stack:
 *
 * - `summaries`: `GET /v1/summaries` for a month of 10,000 tenants (two invoiced months, so the
 *   change is computed too), sorted by total, by a metric, and by a metric no row holds: p50 /
 *   p99 (target p99 < 50 ms); and the current month, whose periods are not invoiced yet (an open
 *   period per tenant with its counters and running figure), by total and by a metric; and the
 *   dashboard's tenants list over those tenants (`GET /v1/tenants?include=usage`, pages of 25 and
 *   100), p50 / p99.
 * - `events_filter`: `GET /v1/tenants/{id}/events?property.<key>=<value>` for one tenant with many
 *   events (10 million; 200,000 in quick mode): a common value (1 event in 5), a rare one (1 in
 *   1,000), both together, and no filter, p50 / p99.
 * - `purge_ingest`: ingest throughput (closed loop, 100-event batches) alone, then while the daily
 *   retention schedule, triggered by hand, purges an invoiced period of a million events (200,000
 *   in quick mode); the ratio says whether ingest keeps its speed.
 *
 * The stored history these reads and the purge work on (invoices, invoice lines, events) is
 * written straight into PostgreSQL with `generate_series`: building 10 million events or 20,000
 * invoices through the API would take the bench most of an hour and measure ingest, not these
 * reads. What is measured goes through the real API, worker and Temporal schedule.
 */
import type { Client } from '@temporalio/client';
import type pg from 'pg';
import type { HttpClient } from './http';
import { median, quantile, runLoops, sleep } from './lib';
import { createDb } from '../src/db/knex';
import { backfillPeriodFigures, refreshMonthlySummary } from '../src/db/summaries';

export interface InsightBenchContext {
  api: HttpClient;
  apiUrl: string;
  adminKey: string;
  db: pg.Pool;
  temporal: Client;
  quick: boolean;
  log(message: string): void;
  problem(message: string): void;
}

const SUMMARY_TENANTS = 10_000;
const SUMMARY_MONTH = '2026-10';
/** The target for `GET /v1/summaries` at 10,000 tenants. */
const SUMMARY_P99_TARGET_MS = 50;

/** Runs the three scenarios; returns their figures for bench/results. */
export async function insightScenarios(ctx: InsightBenchContext): Promise<Record<string, unknown>> {
  const mode = ctx.quick
    ? { requests: 100, bigTenantEvents: 200_000, purgeEvents: 200_000, seconds: 4 }
    : { requests: 500, bigTenantEvents: 10_000_000, purgeEvents: 1_000_000, seconds: 10 };
  return {
    summaries: await summaries(ctx, mode.requests),
    events_filter: await eventsFilter(ctx, mode.bigTenantEvents, Math.max(20, mode.requests / 2)),
    purge_ingest: await purgeIngest(ctx, mode.purgeEvents, mode.seconds),
  };
}

/** p50 / p99 (ms) of `n` sequential GETs after a short warm-up; fails the run on a non-200. */
async function latencies(ctx: InsightBenchContext, path: string, n: number): Promise<{ p50_ms: number; p99_ms: number; n: number }> {
  for (let i = 0; i < 5; i++) await ctx.api.request('GET', path);
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const started = performance.now();
    const res = await ctx.api.request('GET', path);
    times.push(performance.now() - started);
    if (res.status !== 200) ctx.problem(`GET ${path} answered ${res.status} ${JSON.stringify(res.body).slice(0, 200)}`);
  }
  const round = (x: number) => Math.round(x * 10) / 10;
  return { p50_ms: round(median(times)), p99_ms: round(quantile(times, 0.99)), n };
}

// ---- summaries -----------------------------------------------------------------------------------

async function summaries(ctx: InsightBenchContext, requests: number) {
  ctx.log(`insight: storing two invoiced months for ${SUMMARY_TENANTS.toLocaleString('en-US')} tenants`);
  await ctx.db.query(
    `INSERT INTO tenants (id, name, plan_id, billing_anchor) SELECT 'sum_' || i, 'sum_' || i, 'bench_sum', '2026-09-01' FROM generate_series(1, $1) i`,
    [SUMMARY_TENANTS],
  );
  for (const [n, start, end] of [
    [1, '2026-09-01', '2026-10-01'],
    [2, '2026-10-01', '2026-11-01'],
  ] as const) {
    await ctx.db.query(
      `WITH t AS (SELECT i, 'sum_' || i AS tenant, ((i * 7919) % 100000)::numeric AS tokens FROM generate_series(1, $1) i)
       , p AS (INSERT INTO periods (tenant_id, start, "end", plan_id, plan_version, status) SELECT tenant, $2, $3, 'bench_sum', 1, 'invoiced' FROM t)
       , inv AS (
         INSERT INTO invoices (id, tenant_id, number, version, status, period_start, period_end, plan_id, plan_version, currency, subtotal, total, finalized_at)
         SELECT 'in_' || tenant || '_' || $4 || '_v1', tenant, $4::int, 1, 'finalized', $2, $3, 'bench_sum', 1, 'USD', 1 + tokens * 0.0001, 1 + tokens * 0.0001, $3 FROM t
       )
       INSERT INTO invoice_lines (invoice_id, position, metric, description, quantity, amount)
       SELECT 'in_' || tenant || '_' || $4 || '_v1', 0, 'base_fee', 'base fee', 1, 1 FROM t
       UNION ALL
       SELECT 'in_' || tenant || '_' || $4 || '_v1', 1, 'tokens', 'tokens', tokens, round(tokens * 0.0001, 2) FROM t`,
      [SUMMARY_TENANTS, start, end, n],
    );
  }
  // The current month, not invoiced yet: an open period per tenant with the counters its claims
  // would have left.
  const now = new Date();
  const currentMonth = now.toISOString().slice(0, 7);
  await ctx.db.query(
    `WITH t AS (SELECT 'sum_' || i AS tenant, ((i * 104729) % 100000)::numeric AS tokens FROM generate_series(1, $1) i)
     , p AS (INSERT INTO periods (tenant_id, start, "end", plan_id, plan_version, status) SELECT tenant, $2, $3, 'bench_sum', 1, 'open' FROM t)
     INSERT INTO period_counters (tenant_id, period_start, metric, total, events, largest, latest, latest_at, latest_seq)
     SELECT tenant, $2, 'tokens', tokens, tokens, 1, 1, $2, 0 FROM t WHERE tokens > 0`,
    [SUMMARY_TENANTS, new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1)), new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1))],
  );
  // The summary rows (and their usage rows) are written by the code the application runs: for the
  // invoices, what their finalizing transactions do; the open periods are rated into running
  // figures as a claim rates them.
  const knex = createDb(ctx.db.options.connectionString!, { max: 4 });
  try {
    const tenants = Array.from({ length: SUMMARY_TENANTS }, (_, i) => `sum_${i + 1}`);
    const chunks = Array.from({ length: Math.ceil(tenants.length / 500) }, (_, i) => tenants.slice(i * 500, (i + 1) * 500));
    await runLoops(4, () => chunks.length > 0, async () => {
      const chunk = chunks.pop()!;
      await knex.transaction(async (trx) => {
        for (const tenant of chunk) {
          for (const start of ['2026-09-01', '2026-10-01']) await refreshMonthlySummary(trx, tenant, start);
        }
      });
    });
    await backfillPeriodFigures(knex);
  } finally {
    await knex.destroy();
  }
  await ctx.db.query('ANALYZE tenants, periods, invoices, invoice_lines, monthly_summaries, monthly_summary_usage, period_counters, period_figures');
  const byTotal = await latencies(ctx, `/v1/summaries?month=${SUMMARY_MONTH}&sort=-total&limit=25`, requests);
  const byMetric = await latencies(ctx, `/v1/summaries?month=${SUMMARY_MONTH}&sort=-tokens&limit=25`, requests);
  // A metric no row holds: every row sorts as 0, read by id from the rows without it.
  const byAbsentMetric = await latencies(ctx, `/v1/summaries?month=${SUMMARY_MONTH}&sort=-seats&limit=25`, requests);
  const current = {
    month: currentMonth,
    by_total: await latencies(ctx, `/v1/summaries?month=${currentMonth}&sort=-total&limit=25`, requests),
    by_metric: await latencies(ctx, `/v1/summaries?month=${currentMonth}&sort=-tokens&limit=25`, requests),
  };
  // The dashboard's tenants list: a page of tenants, each with its open period's figures.
  const tenantsList = {
    page_25: await latencies(ctx, '/v1/tenants?include=usage&limit=25', requests),
    page_100: await latencies(ctx, '/v1/tenants?include=usage&limit=100', requests),
  };
  const currentPage = await ctx.api.request('GET', `/v1/summaries?month=${currentMonth}&limit=1`);
  if (currentPage.body?.total_count < SUMMARY_TENANTS) ctx.problem(`the current month has ${currentPage.body?.total_count} summaries, expected at least ${SUMMARY_TENANTS}`);
  const csvStarted = performance.now();
  const csv = await fetch(`${ctx.apiUrl}/v1/summaries?month=${SUMMARY_MONTH}`, { headers: { 'x-api-key': ctx.adminKey, accept: 'text/csv' } });
  const rows = (await csv.text()).trim().split('\r\n').length - 1;
  const csvMs = Math.round(performance.now() - csvStarted);
  if (rows < SUMMARY_TENANTS) ctx.problem(`summaries CSV has ${rows} rows, expected at least ${SUMMARY_TENANTS}`);
  const result = {
    tenants: SUMMARY_TENANTS,
    by_total: byTotal,
    by_metric: byMetric,
    by_absent_metric: byAbsentMetric,
    csv_ms: csvMs,
    csv_rows: rows,
    current_month: current,
    tenants_list: tenantsList,
    target_p99_ms: SUMMARY_P99_TARGET_MS,
  };
  ctx.log(`insight: summaries ${JSON.stringify(result)}`);
  return result;
}

/**
 * Events written here stand for usage counted long ago (their periods' counters are not what
 * is measured): the tenant's watermark moves past them, so no claim counts them now.
 */
async function markCounted(ctx: InsightBenchContext, tenant: string): Promise<void> {
  await ctx.db.query(
    `INSERT INTO tenant_event_totals (tenant_id, claimed_through_seq)
     SELECT $1, coalesce(max(seq), 0) FROM usage_events WHERE tenant_id = $1
     ON CONFLICT (tenant_id) DO UPDATE SET claimed_through_seq = EXCLUDED.claimed_through_seq`,
    [tenant],
  );
}

// ---- events listing with a property filter ------------------------------------------------------

async function eventsFilter(ctx: InsightBenchContext, events: number, requests: number) {
  const tenant = 'events_big';
  const created = await ctx.api.request('POST', '/v1/tenants', { id: tenant, name: tenant, plan_id: 'bench_sum' });
  if (created.status !== 201) throw new Error(`tenant ${tenant}: ${created.status}`);
  const start = created.body.current_period.start as string;
  ctx.log(`insight: storing ${events.toLocaleString('en-US')} events with properties for ${tenant}`);
  const chunk = 500_000;
  for (let from = 0; from < events; from += chunk) {
    await ctx.db.query(
      `INSERT INTO usage_events (tenant_id, event_id, metric, quantity, "timestamp", period_start, properties, batch_id, received_at)
       SELECT $1, 'e' || i, 'tokens', 1, $2::timestamptz + (i % 3600000) * interval '1 millisecond', $2,
              jsonb_build_object('region', (ARRAY['eu', 'us', 'apac', 'latam', 'mea'])[1 + i % 5], 'customer', 'c' || (i % 1000)),
              'bench', now()
         FROM generate_series($3::bigint, $4::bigint) i`,
      [tenant, start, from, Math.min(from + chunk, events) - 1],
    );
  }
  await markCounted(ctx, tenant);
  await ctx.db.query('ANALYZE usage_events');
  const base = `/v1/tenants/${tenant}/events?limit=25`;
  const result = {
    events,
    no_filter: await latencies(ctx, base, requests),
    common_value: await latencies(ctx, `${base}&property.region=eu`, requests), // 1 in 5
    rare_value: await latencies(ctx, `${base}&property.customer=c42`, requests), // 1 in 1,000
    two_filters: await latencies(ctx, `${base}&property.region=apac&property.customer=c42`, requests),
  };
  ctx.log(`insight: events filter ${JSON.stringify(result)}`);
  return result;
}

// ---- ingest while retention purges --------------------------------------------------------------

async function purgeIngest(ctx: InsightBenchContext, purgeEvents: number, seconds: number) {
  const plan = await ctx.api.request('POST', '/v1/plans', {
    id: 'bench_purge',
    name: 'bench_purge',
    currency: 'USD',
    interval: 'month',
    base_fee: '0.00',
    grace_period_seconds: 0,
    retention_days: 0,
    meters: [{ metric: 'tokens', aggregation: 'sum', pricing: { model: 'per_unit', unit_price: '0.0001' } }],
  });
  if (plan.status !== 201) throw new Error(`plan bench_purge: ${plan.status}`);
  const doomed = 'purge_big';
  if ((await ctx.api.request('POST', '/v1/tenants', { id: doomed, name: doomed, plan_id: 'bench_purge' })).status !== 201) throw new Error('tenant purge_big');
  // An invoiced period from January, retention 0: due at the next retention run.
  await ctx.db.query(
    `INSERT INTO periods (tenant_id, start, "end", plan_id, plan_version, status) VALUES ($1, '2026-01-01', '2026-02-01', 'bench_purge', 1, 'invoiced')`,
    [doomed],
  );
  ctx.log(`insight: storing ${purgeEvents.toLocaleString('en-US')} events to purge`);
  await ctx.db.query(
    `INSERT INTO usage_events (tenant_id, event_id, metric, quantity, "timestamp", period_start, batch_id, received_at)
     SELECT $1, 'p' || i, 'tokens', 1, '2026-01-01'::timestamptz + (i % 86400000) * interval '1 millisecond', '2026-01-01', 'bench', now()
       FROM generate_series(1, $2) i`,
    [doomed, purgeEvents],
  );
  await markCounted(ctx, doomed);
  const senders = Array.from({ length: 16 }, (_, i) => `purge_ingest_${i}`);
  for (const id of senders) {
    const res = await ctx.api.request('POST', '/v1/tenants', { id, name: id, plan_id: 'bench_sum' });
    if (res.status !== 201) throw new Error(`tenant ${id}: ${res.status}`);
  }

  let seq = 0;
  const ingestFor = async (ms: number): Promise<number> => {
    let acknowledged = 0;
    const until = Date.now() + ms;
    await runLoops(senders.length, () => Date.now() < until, async (loop) => {
      const tenant = senders[loop % senders.length]!;
      const events = Array.from({ length: 100 }, () => ({ id: `pi-${seq++}`, tenant_id: tenant, metric: 'tokens', quantity: 1 }));
      const res = await ctx.api.request('POST', '/v1/events', { events });
      if (res.status === 202) acknowledged += events.length;
      else if (res.status === 503) await sleep(1000);
      else ctx.problem(`ingest during purge answered ${res.status}`);
    });
    return Math.round(acknowledged / (ms / 1000));
  };
  const remaining = async () => Number((await ctx.db.query(`SELECT count(*) FROM usage_events WHERE tenant_id = $1`, [doomed])).rows[0].count);

  ctx.log('insight: ingest alone');
  const alone = await ingestFor(seconds * 1000);
  ctx.log('insight: triggering the retention schedule, then ingest while it purges');
  const triggeredAt = Date.now();
  await ctx.temporal.schedule.getHandle('retention-daily').trigger();
  // After the full run's scenarios the worker may still be busy with their tenants (a full run once
  // took longer than 30 s here): the wait is reported, and only a run that never starts fails.
  const deadline = triggeredAt + 180_000;
  while ((await ctx.db.query(`SELECT 1 FROM periods WHERE tenant_id = $1 AND events_purged_at IS NOT NULL`, [doomed])).rowCount === 0) {
    if (Date.now() > deadline) throw new Error('the triggered retention run did not start purging within 180 s');
    await sleep(100);
  }
  const purgeStartedAfterMs = Date.now() - triggeredAt;
  const before = await remaining();
  const during = await ingestFor(seconds * 1000);
  const after = await remaining();
  const result = {
    purge_events: purgeEvents,
    purge_started_after_ms: purgeStartedAfterMs,
    ingest_alone_events_per_s: alone,
    ingest_during_purge_events_per_s: during,
    ratio: Math.round((during / alone) * 100) / 100,
    purged_during_window: before - after,
    purge_events_per_s: Math.round((before - after) / seconds),
  };
  ctx.log(`insight: purge and ingest ${JSON.stringify(result)}`);
  return result;
}
