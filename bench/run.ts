/**
 * `npm run bench [-- --quick]`: starts its own tally stack on free ports (Temporal dev server,
 * PostgreSQL, worker, API — all on this machine, beside the load generator), runs each scenario,
 * prints a table and writes its results with a chart: a full run bench/results/latest.json and
 * bench/results/throughput.svg (both committed), a quick run bench/results/quick.json and
 * bench/results/quick-throughput.svg (both git-ignored, so CI's quick run leaves the clone clean).
 * Figures are medians over the runs it makes; see BENCHMARKS.md for the method.
 *
 * "Counted" always means what a client can read: the `period_counters` read model holds the
 * event and nothing of its tenant waits unclaimed (bench/read-model.ts). The run also checks
 * exactly-once per tenant against what it had acknowledged; a disagreement, or a 5xx other than
 * the 503 a client is told to retry, is listed under `problems` and makes the run exit 1.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import http from 'node:http';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Client, Connection } from '@temporalio/client';
import pg from 'pg';
import { HttpClient } from './http';
import { ROOT, cpuMsBetween, cpuTicks, machineBusyMs, busyShareOfCores, eventsCpuCost, rolloversCpuCost, freePort, histogramQuantile, median, metricValue, quantile, rssKindsMb, rssMb, runLoops, sleep, startStack, waitSettled, type BenchStack, type EventsCpuCost } from './lib';
import { countedEvents, countingProblems, waitCounted, type Tally } from './read-model';
import { rolloverHistory, type RolloverHistory } from './history';
import { alertPath } from './alert-path';
import { LagProbe } from './lag';
import { recordUsageSignal, stateQuery, tenantWorkflowId } from '../src/workflows/messages';
import { renderChart } from './chart';
import { createDb, type Db } from '../src/db/knex';
import { currentUsage } from '../src/db/usage-read-model';
import { insightScenarios } from './insight';
import { rolloverFloor } from './rollover-floor';
import { startReadFloor } from './read-floor';

const quick = process.argv.includes('--quick');
/** `--only ingest,alerts,...`: run some scenarios (for tuning); results go to partial.json, not latest.json. */
const only = flagValue('--only')?.split(',');
/** Where a whole run writes, under bench/results/: only a full run replaces the committed figures. */
const OUTPUT = quick ? { results: 'quick.json', chart: 'quick-throughput.svg' } : { results: 'latest.json', chart: 'throughput.svg' };
/** `--seconds N`: how long each timed load runs except the hot tenant's (default 4 in quick mode, 10 in full). */
const secondsOverride = Number(flagValue('--seconds') ?? NaN);
/** `--hot-seconds N`: how long the hot tenant's sustained load runs (default 20 in quick mode, 300 in full). */
const hotSecondsOverride = Number(flagValue('--hot-seconds') ?? NaN);
const MODE = quick
  ? { sweep: [8, 32], seconds: 4, tenants: 100, fleetTenants: 1_000, hotSeconds: 20, naiveEvents: 1_000, alertTenants: 10, burstTenants: 200, scale: [1_500], ceilingSeconds: 2, repeats: 1 }
  : { sweep: [4, 8, 16, 32, 64], seconds: 10, tenants: 100, fleetTenants: 1_000, hotSeconds: 300, naiveEvents: 10_000, alertTenants: 50, burstTenants: 2_000, scale: [5_000, 10_000], ceilingSeconds: 5, repeats: 3 };

if (Number.isFinite(secondsOverride)) MODE.seconds = secondsOverride;
if (Number.isFinite(hotSecondsOverride)) MODE.hotSeconds = hotSecondsOverride;
const SCENARIOS = ['ceilings', 'ingest', 'hot', 'fleet', 'naive', 'alerts', 'burst', 'scale', 'insight'] as const;
for (const name of only ?? []) {
  if (!(SCENARIOS as readonly string[]).includes(name)) throw new Error(`--only: unknown scenario ${name} (${SCENARIOS.join(', ')})`);
}
const runs = (name: (typeof SCENARIOS)[number]) => !only || only.includes(name);

function flagValue(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const BATCH = 100;
/** The 1,000-tenant scenario's batch: many small clients rather than a few big ones. */
const FLEET_BATCH = 10;
/** Closed-loop senders of the 1,000-tenant and hot-tenant scenarios. */
const SENDERS = 32;
/** Temporal's default history-length warning (`limit.historyCount.warn`): a bounded run stays well under it. */
const HISTORY_WARNING_EVENTS = 10_240;
/** The 1,000-tenant scenario's target: every acknowledged event counted within this. */
const FLEET_COUNTED_WITHIN_MS = 5_000;

const results: Record<string, any> = { mode: quick ? 'quick' : 'full', machine: machine() };
/** Lost or double-counted events, 5xx answers: what the run found wrong in the system, for the report. */
const problems: string[] = [];

function machine() {
  return { nproc: os.cpus().length, cpu: os.cpus()[0]?.model, memory_gb: Math.round(os.totalmem() / 2 ** 30), node: process.version };
}

function log(message: string): void {
  process.stdout.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${message}\n`);
}

function problem(message: string): void {
  if (problems.length < 200) problems.push(message);
  log(`PROBLEM: ${message}`);
}

let stack: BenchStack;
let api: HttpClient;
/** The read floor's server (bench/read-floor.ts), read beside each usage read. */
let readFloor: HttpClient;
let temporal: Client;
let connection: Connection;
let db: pg.Pool;
/** The API's own read-model queries, run from here: the usage probe times its statement without the API. */
let readModel: Db;
let eventSeq = 0;

async function main(): Promise<void> {
  const started = Date.now();
  log(`mode ${results.mode}: starting the stack`);
  stack = await startStack();
  api = new HttpClient(stack.apiUrl, stack.adminKey);
  const floorServer = await startReadFloor();
  readFloor = new HttpClient(floorServer.url, '');
  connection = await Connection.connect({ address: stack.temporalAddress });
  temporal = new Client({ connection });
  db = new pg.Pool({ connectionString: stack.databaseUrl, max: 4 });
  readModel = createDb(stack.databaseUrl, { max: 4 });
  try {
    await createPlans();
    // First, on a quiet system: every scenario after reports its figures against these.
    if (runs('ceilings')) await ceilings();
    if (runs('ingest')) {
      const tenants = await createTenants('bench', MODE.tenants, 'bench_sum');
      await settled();
      await ingestSweep(tenants);
      await halfLoad(tenants);
    }
    // The hot tenant before the fleet: the fleet's tail of workflow tasks then drains while the
    // next scenario creates its tenants, instead of in a wait before the hot tenant's load.
    if (runs('hot')) await hotTenant();
    if (runs('fleet')) await fleet();
    if (runs('naive')) await naive();
    if (runs('alerts')) await settled().then(alerts);
    if (runs('burst')) await settled().then(burst);
    // Before the scale points: their touches are load for the memory figure, not usage to check.
    await verifyEverything();
    if (runs('scale')) await settled().then(scale);
    // Last: it stores 10,000 tenants' invoices and millions of events straight into PostgreSQL.
    if (runs('insight')) {
      results.insight = await insightScenarios({ api, apiUrl: stack.apiUrl, adminKey: stack.adminKey, db, temporal, quick, log, problem });
    }
  } finally {
    api.close();
    readFloor.close();
    floorServer.stop();
    await connection.close();
    await db.end();
    await readModel.destroy();
    const stopping = Date.now();
    await stack.stop();
    log(`stack stopped in ${Date.now() - stopping} ms`);
  }
  results.seconds = Math.round((Date.now() - started) / 1000);
  results.problems = problems;
  const dir = path.join(ROOT, 'bench/results');
  fs.mkdirSync(dir, { recursive: true });
  if (only) {
    fs.writeFileSync(path.join(dir, 'partial.json'), `${JSON.stringify(results, null, 2)}\n`);
    log(`partial run (${only.join(', ')}): ${JSON.stringify(results, null, 2)}`);
  } else {
    results.ingest.ratio_vs_naive = Math.round((results.ingest.events_per_s / results.naive.events_per_s) * 10) / 10;
    fs.writeFileSync(path.join(dir, OUTPUT.results), `${JSON.stringify(results, null, 2)}\n`);
    fs.writeFileSync(path.join(dir, OUTPUT.chart), renderChart(results.ingest.sweep, results.naive));
    printTable();
  }
  if (problems.length > 0) {
    process.stderr.write(`\nthe run found ${problems.length} problem(s) in the system under test:\n${problems.map((p) => `  - ${p}`).join('\n')}\n`);
    process.exitCode = 1;
  }
}

async function createPlans(): Promise<void> {
  const meter = (limit: number) => ({ metric: 'tokens', aggregation: 'sum', limit, pricing: { model: 'per_unit', unit_price: '0.0001' } });
  const plans = [
    { id: 'bench_sum', interval: 'month', grace_period_seconds: 0, meters: [meter(1e12)] },
    { id: 'bench_alert', interval: 'month', grace_period_seconds: 0, meters: [meter(300)] },
    { id: 'bench_burst', interval: 'month', grace_period_seconds: 0, meters: [meter(1e12)] },
  ];
  for (const p of plans) {
    const res = await api.request('POST', '/v1/plans', { name: p.id, currency: 'USD', base_fee: '1.00', ...p });
    if (res.status !== 201) throw new Error(`plan ${p.id}: ${res.status} ${JSON.stringify(res.body)}`);
  }
}

/** How long creating one tenant took at the last large creation (32 at once), for the burst's lead time. */
let msPerTenantCreated = 15;

async function createTenants(prefix: string, n: number, planId: string, extra: Record<string, unknown> = {}, concurrency = 16): Promise<string[]> {
  const ids = Array.from({ length: n }, (_, i) => `${prefix}_${i}`);
  let next = 0;
  const start = Date.now();
  await runLoops(concurrency, () => next < ids.length, async () => {
    const id = ids[next++]!;
    const res = await api.request('POST', '/v1/tenants', { id, name: id, plan_id: planId, ...extra });
    if (res.status !== 201) throw new Error(`tenant ${id}: ${res.status} ${JSON.stringify(res.body)}`);
    tenantKeys.set(id, res.body.api_key as string);
  });
  if (n >= 100 && concurrency === 32) msPerTenantCreated = (Date.now() - start) / n;
  return ids;
}

// ---- ingest and reads, as a client sees them -----------------------------------------------------

/** Requests the API answered 503 (overloaded: nothing recorded, retry): retried as a client would. */
let overloadRetries = 0;
/** Everything acknowledged per tenant: what the read model must end up counting, exactly. */
const tally = new Map<string, Tally>();

interface BenchEvent {
  id: string;
  tenant_id: string;
  metric: string;
  quantity: number;
}

/**
 * Sends one batch until it is acknowledged, as a well-behaved client does: a 503 means nothing was
 * recorded and asks for a retry after `Retry-After`. Anything but a 202 stops the run: every batch
 * the bench sends is valid. On the 202 the batch joins the tally.
 */
async function ingest(events: BenchEvent[]): Promise<void> {
  for (;;) {
    const res = await api.request('POST', '/v1/events', { events });
    if (res.status === 503) {
      overloadRetries += 1;
      await sleep(1000);
      continue;
    }
    if (res.status !== 202) throw new Error(`POST /v1/events answered ${res.status} ${JSON.stringify(res.body)}`);
    for (const e of events) {
      const t = tally.get(e.tenant_id) ?? { events: 0, quantity: 0 };
      t.events += 1;
      t.quantity += e.quantity;
      tally.set(e.tenant_id, t);
    }
    return;
  }
}

function batchFor(tenantId: string, size = BATCH, quantity = 1): BenchEvent[] {
  return Array.from({ length: size }, () => ({ id: `e${++eventSeq}`, tenant_id: tenantId, metric: 'tokens', quantity }));
}

/** Quantity acknowledged for a tenant so far. */
function ackedQuantity(tenantId: string): number {
  return tally.get(tenantId)?.quantity ?? 0;
}

/** Lag probes for `GET …/usage` (bench/lag.ts): what the tenant's meter shows. */
function lagProbe(options: { maxTenants: number; spacingMs: number }): LagProbe {
  return new LagProbe(async (tenantId) => (await getUsage(tenantId))?.metrics.tokens.used, options);
}

/** Each tenant's own key, as created: its reads go with it, as a tenant's dashboard reads. */
const tenantKeys = new Map<string, string>();

/** One `GET …/usage` with the tenant's own key; a 5xx is a problem of the system (the bench's reads are all valid). */
async function getUsage(tenantId: string): Promise<any | undefined> {
  const key = tenantKeys.get(tenantId);
  const res = await api.request('GET', `/v1/tenants/${tenantId}/usage`, undefined, key ? { 'x-api-key': key } : {});
  if (res.status === 200) return res.body;
  if (res.status >= 500) problem(`GET /v1/tenants/${tenantId}/usage answered ${res.status} ${JSON.stringify(res.body)}`);
  return undefined;
}

/** How often the `GET …/usage` probe reads during a load. */
const USAGE_PROBE_PER_SECOND = 50;

/**
 * What the usage probe measured: the reads through the API, and the read model's statement alone
 * (the `currentUsage` query the route runs, sent from here on a pool of the bench's own, for the
 * same tenant at the same moment). The two apart say how much of a slow read is PostgreSQL's under
 * the load, and how much the API's.
 */
interface UsageReads {
  p50_ms: number;
  p99_ms: number;
  samples: number;
  statement_p50_ms: number;
  statement_p99_ms: number;
  /** The read floor's answer, asked at the same moment as each read (bench/read-floor.ts): no read is faster. */
  floor_p50_ms: number;
  floor_p99_ms: number;
  /** How late this process's event loop ran its callbacks meanwhile: each read's answer waits for it too. */
  load_generator_loop_delay_p99_ms: number;
  /** How late the API's event loop (its thread's, under `npm start`) ran its callbacks meanwhile: a read crosses it twice. */
  api_loop_delay_p99_ms: number;
  /** How busy the machine's cores were while the probe read (all processes, /proc/stat), 0 to 1. */
  machine_busy_share: number;
}

/**
 * `GET …/usage` of `pick()`'s tenant while `until()` holds, as dashboards read during a load: one
 * read every 1/{@link USAGE_PROBE_PER_SECOND} s, started on schedule whether or not the ones before
 * have answered (a slot the bench's own event loop missed is skipped, not sent in a burst). A
 * closed loop would add more load the faster reads are, and read less often while they are slow,
 * which hides the slow spells from the p99.
 */
function readUsageDuring(pick: () => string, until: () => boolean): UsageProbe {
  let closeWindow!: () => void;
  const windowClosed = new Promise<void>((resolve) => (closeWindow = resolve));
  const probe = probeUsage(pick, until, closeWindow).finally(closeWindow);
  // A scenario that fails stops the stack under reads in flight and never awaits this: its
  // failure must not end the bench as an unhandled rejection before the stack is stopped.
  probe.catch(() => undefined);
  return Object.assign(probe, { windowClosed });
}

/**
 * The probe's reads; `windowClosed` resolves once it has read the API's event loop delay at the
 * end of its window. A scenario scrapes the API's metrics after that, since each scrape resets it.
 */
type UsageProbe = Promise<UsageReads> & { windowClosed: Promise<void> };

async function probeUsage(pick: () => string, until: () => boolean, closeWindow: () => void): Promise<UsageReads> {
  const latencies: number[] = [];
  const statements: number[] = [];
  const floors: number[] = [];
  const reads: Array<Promise<void>> = [];
  const intervalMs = 1000 / USAGE_PROBE_PER_SECOND;
  const start = performance.now();
  const busyBefore = machineBusyMs();
  const loopDelay = monitorEventLoopDelay({ resolution: 5 });
  loopDelay.enable();
  // The API's event loop delay (prom-client's, which each scrape resets): this scrape starts the window.
  await scrapeMetrics();
  for (let slot = 0; until(); ) {
    const wait = start + slot * intervalMs - performance.now();
    if (wait > 0) await sleep(wait);
    if (!until()) break;
    const tenant = pick();
    const t0 = performance.now();
    const read = getUsage(tenant).then(() => void latencies.push(performance.now() - t0));
    const statement = currentUsage(readModel, tenant).then(() => void statements.push(performance.now() - t0));
    const floor = readFloor.request('GET', '/').then(() => void floors.push(performance.now() - t0));
    for (const p of [read, statement, floor]) {
      p.catch(() => undefined); // awaited below with the others; a failure meanwhile is not unhandled
      reads.push(p);
    }
    slot = Math.max(slot + 1, Math.ceil((performance.now() - start) / intervalMs));
  }
  const busyShare = busyShareOfCores(machineBusyMs() - busyBefore, performance.now() - start);
  loopDelay.disable();
  const apiLoopDelayP99 = metricValue(await scrapeMetrics(), 'nodejs_eventloop_lag_p99_seconds');
  closeWindow();
  await Promise.all(reads);
  return {
    p50_ms: quantile(latencies, 0.5),
    p99_ms: quantile(latencies, 0.99),
    samples: latencies.length,
    statement_p50_ms: quantile(statements, 0.5),
    statement_p99_ms: quantile(statements, 0.99),
    floor_p50_ms: quantile(floors, 0.5),
    floor_p99_ms: quantile(floors, 0.99),
    load_generator_loop_delay_p99_ms: Math.round(loopDelay.percentile(99) / 1e4) / 100,
    api_loop_delay_p99_ms: Math.round(apiLoopDelayP99 * 1e5) / 100,
    machine_busy_share: busyShare,
  };
}

/** What a usage read's p99 stands beside, as the log and the table print it. */
function beside(q: UsageReads): string {
  return `its statement alone ${q.statement_p99_ms} ms, the read floor ${q.floor_p99_ms} ms, the load generator's loop delay ${q.load_generator_loop_delay_p99_ms} ms and the API's ${q.api_loop_delay_p99_ms} ms; the cores ${Math.round(q.machine_busy_share * 100)} % busy`;
}

/** Checks exactly-once counting for these tenants; a disagreement is reported, the run goes on. */
async function verifyCounted(scenario: string, tenants: readonly string[]): Promise<number> {
  const found = await countingProblems(db, tenants, tally);
  for (const p of found.slice(0, 20)) problem(`${scenario}: ${p}`);
  if (found.length > 20) problem(`${scenario}: ${found.length - 20} more tenants disagree`);
  return countedEvents(db, tenants);
}

/**
 * The workflow's own counters (its books, which alerts and authorizations read) must reach the
 * read model's once the run has claimed: a settled read (`?consistent=true`) makes it claim and
 * read the whole current period, the bulk-counted events included. They may trail it for a
 * while: a claim commits in PostgreSQL before the workflow has its answer. More than the read
 * model, or still less after 60 s, is a problem.
 */
async function verifyWorkflowBooks(scenario: string, tenants: readonly string[]): Promise<void> {
  const deadline = Date.now() + 60_000;
  for (const id of tenants) {
    const settledRead = await api.request('GET', `/v1/tenants/${id}/usage?consistent=true`);
    if (settledRead.status !== 200) problem(`${scenario}: ${id}'s settled usage read answered ${settledRead.status}`);
    for (;;) {
      const state = await temporal.workflow.getHandle(tenantWorkflowId(id)).query(stateQuery);
      const inBooks = state.books.reduce((n, book) => n + book.counters.reduce((m, c) => m + c.events, 0), 0);
      const inReadModel = await countedEvents(db, [id]);
      if (inBooks === inReadModel) break;
      if (inBooks > inReadModel || Date.now() > deadline) {
        problem(`${scenario}: ${id}'s workflow books count ${inBooks} events, the read model ${inReadModel}`);
        break;
      }
      await sleep(200);
    }
  }
}

/** Waits until the worker has started no task for a second (bench/lib.ts, `waitSettled`), and says so when that took a while. */
async function settled(timeoutMs = 180_000): Promise<void> {
  const waited = await waitSettled(stack.apiUrl, timeoutMs);
  if (waited > 1500) log(`settled: the worker started no task for 1 s after ${waited} ms`);
}

/** A figure of each process, as the log prints it: "tally (API + worker) 22.6, postgres 6.1". */
function byProcess(figures: Record<string, number>): string {
  return Object.entries(figures)
    .map(([name, value]) => `${name} ${value}`)
    .join(', ');
}

/** Every tenant the run sent usage to, whatever the scenario: all counted, exactly once. */
async function verifyEverything(): Promise<void> {
  const tenants = [...tally.keys()];
  const total = [...tally.values()].reduce((n, t) => n + t.events, 0);
  await waitCounted(db, tenants, total);
  const counted = await verifyCounted('all', tenants);
  results.verified = { tenants: tenants.length, events_acknowledged: total, events_counted: counted };
  log(`verified: ${counted} of ${total} acknowledged events counted, over ${tenants.length} tenants`);
}

// ---- scenarios -----------------------------------------------------------------------------------

/** The physical limits every design shares, measured first, on a quiet system. */
async function ceilings(): Promise<void> {
  await db.query(`CREATE TABLE IF NOT EXISTS bench_ceiling (LIKE usage_events INCLUDING DEFAULTS)`);
  const insert = (rowsPerStatement: number, loops: number, pool: pg.Pool) => {
    const ids = Array.from({ length: rowsPerStatement }, (_, i) => i);
    let rows = 0;
    let statements = 0;
    const start = Date.now();
    const stopAt = start + MODE.ceilingSeconds * 1000;
    return runLoops(loops, () => Date.now() < stopAt, async () => {
      const r = statements++;
      await pool.query(
        `INSERT INTO bench_ceiling (tenant_id, event_id, metric, quantity, "timestamp", period_start, batch_id, received_at)
         SELECT 't', 'c${rowsPerStatement}-' || $1::text || '-' || i, 'tokens', 1, now(), now(), 'b', now() FROM unnest($2::int[]) AS i`,
        [r, ids],
      );
      rows += ids.length;
    }).then(() => ({ rowsPerS: Math.round(rows / ((Date.now() - start) / 1000)), commitsPerS: Math.round(statements / ((Date.now() - start) / 1000)) }));
  };
  // Big statements: how fast PostgreSQL stores rows. Small ones, each its own commit, from 10
  // connections (the pool of tally's process): how fast it commits what one 10-event request stores.
  const big = await insert(1000, 2, db);
  const commitPool = new pg.Pool({ connectionString: stack.databaseUrl, max: 10 });
  let small: { rowsPerS: number; commitsPerS: number };
  try {
    small = await insert(FLEET_BATCH, 10, commitPool);
  } finally {
    await commitPool.end();
  }
  await db.query('DROP TABLE bench_ceiling');
  const roundTrips = await roundTripCosts();

  const targets = await createTenants('ceiling', 20, 'bench_sum');
  let signals = 0;
  const sigStop = Date.now() + MODE.ceilingSeconds * 1000;
  const sigStart = Date.now();
  await runLoops(64, () => Date.now() < sigStop, async () => {
    const n = signals++;
    await temporal.workflow.getHandle(tenantWorkflowId(targets[n % targets.length]!)).signal('benchPing');
  });
  const signalRate = Math.round(signals / ((Date.now() - sigStart) / 1000));
  for (const t of targets) await temporal.workflow.getHandle(tenantWorkflowId(t)).terminate('bench ceiling done');
  const rollovers = await rolloverFloor({ temporalAddress: stack.temporalAddress, stackPid: stack.pid, tenants: MODE.burstTenants });
  results.ceiling = { pg_rows_per_s: big.rowsPerS, pg_commits_per_s: small.commitsPerS, signals_per_s: signalRate, pg_round_trip: roundTrips, rollovers };
  log(`ceilings: PostgreSQL ${big.rowsPerS} rows/s (1,000-row statements), ${small.commitsPerS} commits/s (10-row statements), Temporal ${signalRate} signals/s`);
  log(
    `ceilings: the rollover floor, ${rollovers.tenants} anniversaries at one instant with nothing but their Temporal part, in ${rollovers.seconds} s; ` +
      `${rollovers.history_events_per_rollover} history events and ${rollovers.cpu.total_ms_per_rollover} CPU ms per rollover (${byProcess(rollovers.cpu.ms_per_rollover)})`,
  );
  log(
    `ceilings: a PostgreSQL round trip from 8 connections, machine CPU: ${roundTrips.socket.machine_cpu_us} µs through the Unix socket tally uses, ` +
      `${roundTrips.tcp.machine_cpu_us} µs through loopback TCP (${roundTrips.socket.per_s} / ${roundTrips.tcp.per_s} per second)`,
  );
}

/**
 * What one trivial query costs the whole machine (client, kernel and backend), through the Unix
 * socket tally's processes use and through loopback TCP: each way twice, alternating, best of two
 * (the stack is idle meanwhile, so the machine's busy time is the queries').
 */
async function roundTripCosts(): Promise<Record<'socket' | 'tcp', { per_s: number; machine_cpu_us: number; client_cpu_us: number }>> {
  const ways = { socket: stack.databaseUrl, tcp: stack.databaseUrl.replace(/\?host=.*$/, '') };
  const best: Partial<Record<keyof typeof ways, { per_s: number; machine_cpu_us: number; client_cpu_us: number }>> = {};
  for (let round = 0; round < 2; round++) {
    for (const [way, url] of Object.entries(ways) as Array<[keyof typeof ways, string]>) {
      const pool = new pg.Pool({ connectionString: url, max: 8 });
      try {
        await Promise.all(Array.from({ length: 8 }, () => pool.query('SELECT 1')));
        let queries = 0;
        const start = performance.now();
        const [machine0, client0] = [machineBusyMs(), process.cpuUsage()];
        const stopAt = Date.now() + (MODE.ceilingSeconds * 1000) / 2;
        await runLoops(8, () => Date.now() < stopAt, async () => {
          await pool.query('SELECT $1::int AS n', [queries++]);
        });
        const client = process.cpuUsage(client0);
        const measured = {
          per_s: Math.round(queries / ((performance.now() - start) / 1000)),
          machine_cpu_us: Math.round(((machineBusyMs() - machine0) * 1000) / queries),
          client_cpu_us: Math.round((client.user + client.system) / queries),
        };
        if (!best[way] || measured.machine_cpu_us < best[way]!.machine_cpu_us) best[way] = measured;
      } finally {
        await pool.end();
      }
    }
  }
  return best as Record<keyof typeof ways, { per_s: number; machine_cpu_us: number; client_cpu_us: number }>;
}

async function ingestSweep(tenants: string[]): Promise<void> {
  const sweep: Array<{ concurrency: number; events_per_s: number; p99_ms: number }> = [];
  for (const concurrency of MODE.sweep) {
    const rates: number[] = [];
    const p99s: number[] = [];
    for (let r = 0; r < MODE.repeats; r++) {
      const before = await countedEvents(db, tenants);
      let acked = 0;
      const latencies: number[] = [];
      const start = Date.now();
      const stopAt = start + MODE.seconds * 1000;
      let cursor = 0;
      await runLoops(concurrency, () => Date.now() < stopAt, async () => {
        const tenant = tenants[cursor++ % tenants.length]!;
        const t0 = performance.now();
        await ingest(batchFor(tenant));
        latencies.push(performance.now() - t0);
        acked += BATCH;
      });
      const done = await waitCounted(db, tenants, before + acked);
      const rate = Math.round(acked / ((done - start) / 1000));
      rates.push(rate);
      p99s.push(quantile(latencies, 0.99));
      log(`ingest c=${concurrency}: ${acked} events acknowledged and counted at ${rate}/s, p99 ${quantile(latencies, 0.99)} ms`);
    }
    sweep.push({ concurrency, events_per_s: median(rates), p99_ms: median(p99s) });
  }
  const best = sweep.reduce((a, b) => (b.events_per_s > a.events_per_s ? b : a));
  const counted = await verifyCounted('ingest', tenants);
  await verifyWorkflowBooks('ingest', tenants);
  results.ingest = {
    events_per_s: best.events_per_s,
    best_concurrency: best.concurrency,
    sweep,
    verified_counted: counted,
    overload_retries: overloadRetries,
    ceiling_pg_rows_per_s: results.ceiling?.pg_rows_per_s ?? null,
  };
}

/**
 * How the worker's workflow cache served a scenario's workflow tasks: a hit reuses a cached run,
 * a miss replays it from its full history (a run evicted to make room, or never cached).
 */
function workflowCacheUse(before: string, after: string): { hits: number; misses: number; forced_evictions: number } {
  const delta = (name: string) => {
    const value = (metrics: string) => {
      const total = metricValue(metrics, name);
      return Number.isNaN(total) ? metricValue(metrics, `${name}_total`) : total;
    };
    return (value(after) || 0) - (value(before) || 0);
  };
  return { hits: delta('temporal_sticky_cache_hit'), misses: delta('temporal_sticky_cache_miss'), forced_evictions: delta('temporal_sticky_cache_total_forced_eviction') };
}

async function scrapeMetrics(): Promise<string> {
  return (await fetch(`${stack.apiUrl}/metrics`)).text();
}

/** Where the worker's tasks waited and worked during a scenario (p99, ms; bucket bounds): for profiling. */
async function workerLatencies(before: string): Promise<Record<string, number | null>> {
  const after = await scrapeMetrics();
  const p99 = (name: string, filter = '') => histogramQuantile(before, after, name, 0.99, filter);
  return {
    workflow_task_schedule_to_start_p50_ms: histogramQuantile(before, after, 'temporal_workflow_task_schedule_to_start_latency', 0.5),
    workflow_task_schedule_to_start_p99_ms: p99('temporal_workflow_task_schedule_to_start_latency'),
    workflow_task_execution_p99_ms: p99('temporal_workflow_task_execution_latency'),
    activity_schedule_to_start_p99_ms: p99('temporal_activity_schedule_to_start_latency'),
    claim_usage_execution_p50_ms: histogramQuantile(before, after, 'temporal_activity_execution_latency', 0.5, 'activity_type="claimUsage"'),
    claim_usage_execution_p99_ms: p99('temporal_activity_execution_latency', 'activity_type="claimUsage"'),
  };
}

/** Latency, 202-to-visible lag and usage-read latency at half the best throughput. */
async function halfLoad(tenants: string[]): Promise<void> {
  const batchesPerSecond = results.ingest.events_per_s / 2 / BATCH;
  const intervalMs = 1000 / batchesPerSecond;
  const latencies: number[] = [];
  const lags = lagProbe({ maxTenants: 8, spacingMs: 100 });
  const metricsBefore = await scrapeMetrics();
  const start = Date.now();
  const stopAt = start + MODE.seconds * 1000;
  const inflight: Promise<void>[] = [];
  let i = 0;
  const reads = readUsageDuring(() => tenants[Math.floor(Math.random() * tenants.length)]!, () => Date.now() < stopAt);
  while (Date.now() < stopAt) {
    const due = start + i * intervalMs;
    if (due > Date.now()) await sleep(due - Date.now());
    const tenant = tenants[i % tenants.length]!;
    i++;
    inflight.push(
      (async () => {
        const t0 = performance.now();
        await ingest(batchFor(tenant));
        const ackedAt = performance.now();
        latencies.push(ackedAt - t0);
        lags.sample(tenant, ackedQuantity(tenant), ackedAt);
      })(),
    );
  }
  await Promise.all(inflight);
  await lags.done();
  results.query = await reads;
  Object.assign(results.ingest, {
    p50_ms: quantile(latencies, 0.5),
    p99_ms: quantile(latencies, 0.99),
    ...lags.summary(),
    half_load_events_per_s: Math.round(batchesPerSecond * BATCH),
  });
  results.worker = await workerLatencies(metricsBefore);
  log(`half load: p50 ${results.ingest.p50_ms} ms, p99 ${results.ingest.p99_ms} ms, lag p99 ${results.ingest.lag_p99_ms} ms, usage read p99 ${results.query.p99_ms} ms (${beside(results.query)})`);
}

/**
 * 1,000 tenants sending 10-event batches, closed loop: events acknowledged per second, and how
 * soon they are counted. The tenants stay far below their thresholds, so the worker's counter
 * counts them in bulk (hundreds of tenants per transaction) and rings none of them: storing is
 * bound by the commits PostgreSQL makes. Both ceilings (PostgreSQL's commits and Temporal's
 * signals, in events/s) are reported beside it; the signals one is what ringing every tenant's
 * workflow for its batches would allow.
 */
async function fleet(): Promise<void> {
  const tenants = await createTenants('fleet', MODE.fleetTenants, 'bench_sum', {}, 32);
  await settled();
  const runsOf: Array<{
    acked_per_s: number;
    counted_per_s: number;
    drain_ms: number;
    p99_ms: number;
    lags: LagProbe;
    query: UsageReads;
    cpu: EventsCpuCost;
  }> = [];
  for (let r = 0; r < MODE.repeats; r++) {
    // Counted is not done: each claim's answer still has a workflow task to run.
    if (r > 0) await settled();
    const before = await countedEvents(db, tenants);
    let acked = 0;
    const latencies: number[] = [];
    // A batch every 250 ms at most, 8 tenants at a time: the drain time below bounds the lag of the last batches.
    const lags = lagProbe({ maxTenants: 8, spacingMs: 250 });
    const ticksBefore = cpuTicks(stack!.pid);
    const start = Date.now();
    const stopAt = start + MODE.seconds * 1000;
    let cursor = 0;
    const reads = readUsageDuring(() => tenants[Math.floor(Math.random() * tenants.length)]!, () => Date.now() < stopAt);
    await runLoops(SENDERS, () => Date.now() < stopAt, async () => {
      const tenant = tenants[cursor++ % tenants.length]!;
      const t0 = performance.now();
      await ingest(batchFor(tenant, FLEET_BATCH));
      const ackedAt = performance.now();
      latencies.push(ackedAt - t0);
      acked += FLEET_BATCH;
      lags.sample(tenant, ackedQuantity(tenant), ackedAt);
    });
    const loadEnd = Date.now();
    const done = await waitCounted(db, tenants, before + acked);
    // Until every event is counted: counting's CPU is the events' too.
    const cpu = eventsCpuCost(cpuMsBetween(ticksBefore, cpuTicks(stack!.pid)), acked, done - start);
    await lags.done();
    const run = {
      acked_per_s: Math.round(acked / ((loadEnd - start) / 1000)),
      counted_per_s: Math.round(acked / ((done - start) / 1000)),
      drain_ms: done - loadEnd,
      p99_ms: quantile(latencies, 0.99),
      lags,
      query: await reads,
      cpu,
    };
    runsOf.push(run);
    log(
      `fleet: ${acked} events in ${FLEET_BATCH}-event batches to ${tenants.length} tenants: acknowledged ${run.acked_per_s}/s, all counted ${run.drain_ms} ms after the load ` +
        `(lag p99 ${lags.summary().lag_p99_ms} ms), usage read p99 ${run.query.p99_ms} ms (${beside(run.query)}); ` +
        `${cpu.total_ms_per_1000_events} CPU ms per 1,000 events (${byProcess(cpu.ms_per_1000_events)}), the cores ${Math.round(cpu.busy_share_of_cores * 100)} % busy: at that cost they carry ${cpu.ceiling_events_per_s}/s`,
    );
  }
  // The median run by acknowledged rate stands for the scenario, whole, so its figures belong together.
  const chosen = [...runsOf].sort((a, b) => a.acked_per_s - b.acked_per_s)[Math.floor((runsOf.length - 1) / 2)]!;
  const lag = chosen.lags.summary();
  await verifyCounted('fleet', tenants);
  results.fleet = {
    tenants: tenants.length,
    batch: FLEET_BATCH,
    senders: SENDERS,
    seconds: MODE.seconds,
    events_per_s: chosen.acked_per_s,
    counted_events_per_s: chosen.counted_per_s,
    p99_ms: chosen.p99_ms,
    ...lag,
    drain_ms: chosen.drain_ms,
    counted_within_5s: Math.max(lag.lag_max_ms, chosen.drain_ms) <= FLEET_COUNTED_WITHIN_MS,
    query: chosen.query,
    cpu: chosen.cpu,
    ceiling: {
      ...(results.ceiling ? { pg_commit_events_per_s: results.ceiling.pg_commits_per_s * FLEET_BATCH, ring_events_per_s: results.ceiling.signals_per_s * FLEET_BATCH } : {}),
      cpu_events_per_s: chosen.cpu.ceiling_events_per_s,
    },
  };
}

/**
 * One tenant, 32 senders of 100-event batches, sustained: does counting keep up, does the
 * workflow stay up, does its history stay bounded (continue-as-new) whatever the load? Sampled
 * every second: the read model's count, the backlog, the current run's history length. The
 * backlog is what the bench had acknowledged less what the read model counts: counting the
 * unclaimed rows instead would scan up to millions of them every second, loading what it measures.
 */
async function hotTenant(): Promise<void> {
  const [tenant] = await createTenants('hot', 1, 'bench_sum');
  await settled();
  const tenants = [tenant!];
  const workflowId = tenantWorkflowId(tenant!);
  const handle = temporal.workflow.getHandle(workflowId);
  const before = await countedEvents(db, tenants);
  let acked = 0;
  const latencies: number[] = [];
  // One tenant: one poller serves every batch, so each is sampled.
  const lags = lagProbe({ maxTenants: 1, spacingMs: 0 });
  let backlogMax = 0;
  let historyMax = 0;
  /** Every sample (1 s), kept every `keepEvery`th so a 5-minute run stays a readable series. */
  const series: Array<{ s: number; counted: number; backlog: number; history: number }> = [];
  const keepEvery = Math.max(1, Math.round(MODE.hotSeconds / 30));
  const start = Date.now();
  const stopAt = start + MODE.hotSeconds * 1000;
  const loading = () => Date.now() < stopAt;
  const sampler = (async () => {
    for (let i = 0; loading(); i++) {
      const [description, counted] = await Promise.all([handle.describe(), countedEvents(db, tenants)]);
      const backlog = Math.max(0, acked - (counted - before));
      historyMax = Math.max(historyMax, description.historyLength);
      backlogMax = Math.max(backlogMax, backlog);
      if (i % keepEvery === 0) series.push({ s: Math.round((Date.now() - start) / 1000), counted: counted - before, backlog, history: description.historyLength });
      await sleep(1000);
    }
  })();
  const reads = readUsageDuring(() => tenant!, loading);
  const metricsBefore = await scrapeMetrics();
  await runLoops(SENDERS, loading, async () => {
    const t0 = performance.now();
    await ingest(batchFor(tenant!));
    const ackedAt = performance.now();
    latencies.push(ackedAt - t0);
    acked += BATCH;
    lags.sample(tenant!, ackedQuantity(tenant!), ackedAt);
  });
  const loadEnd = Date.now();
  await reads.windowClosed;
  const worker = await workerLatencies(metricsBefore);
  const countedAtLoadEnd = (await countedEvents(db, tenants)) - before;
  const backlogAtLoadEnd = acked - countedAtLoadEnd;
  // Minutes of backlog may pile up in full mode: the drain gets as long again as the load, beyond the usual 5 minutes.
  const done = await waitCounted(db, tenants, before + acked, 300_000 + MODE.hotSeconds * 1000);
  await Promise.all([sampler, lags.done()]);
  const query = await reads;

  // Alive: the current run is running and answers. Bounded: every run ended in continue-as-new
  // (or still runs), none past Temporal's history warning, however long the load lasted.
  const description = await handle.describe();
  let answered = true;
  try {
    await handle.query(stateQuery);
  } catch (err) {
    answered = false;
    problem(`hot tenant: the state query failed after the load: ${String(err)}`);
  }
  const executions: Array<{ status: string; historyLength: number }> = [];
  for await (const execution of temporal.workflow.list({ query: `WorkflowId = '${workflowId}'` })) {
    executions.push({ status: execution.status.name, historyLength: execution.historyLength });
  }
  historyMax = Math.max(historyMax, description.historyLength, ...executions.map((e) => e.historyLength));
  const alive = description.status.name === 'RUNNING' && answered;
  if (!alive) problem(`hot tenant: the workflow is ${description.status.name} after the load`);
  const unexpected = executions.filter((e) => e.status !== 'RUNNING' && e.status !== 'CONTINUED_AS_NEW');
  if (unexpected.length > 0) problem(`hot tenant: runs ended ${unexpected.map((e) => e.status).join(', ')}, not by continue-as-new`);
  if (historyMax > HISTORY_WARNING_EVENTS) problem(`hot tenant: a run's history reached ${historyMax} events, past Temporal's warning at ${HISTORY_WARNING_EVENTS}`);
  await verifyCounted('hot', tenants);
  await verifyWorkflowBooks('hot', tenants);

  const seconds = (loadEnd - start) / 1000;
  results.hot_tenant = {
    senders: SENDERS,
    batch: BATCH,
    seconds: Math.round(seconds),
    acked_events_per_s: Math.round(acked / seconds),
    counted_events_per_s: Math.round(countedAtLoadEnd / seconds),
    events_per_s: Math.round(acked / ((done - start) / 1000)),
    backlog_max: backlogMax,
    backlog_at_load_end: backlogAtLoadEnd,
    drain_ms: done - loadEnd,
    // Counting alone, once ingest stopped competing for the machine: the one tenant's counting
    // capacity. None when counting kept up, and nothing was left to count once the load stopped.
    drain_events_per_s: done > loadEnd && acked > countedAtLoadEnd ? Math.round((acked - countedAtLoadEnd) / ((done - loadEnd) / 1000)) : null,
    p50_ms: quantile(latencies, 0.5),
    p99_ms: quantile(latencies, 0.99),
    ...lags.summary(),
    query,
    workflow: { alive, status: description.status.name, runs: executions.length, history_length_max: historyMax, history_length_now: description.historyLength },
    ceiling_pg_rows_per_s: results.ceiling?.pg_rows_per_s ?? null,
    worker,
    series,
  };
  log(
    `hot tenant: ${acked} events over ${Math.round(seconds)} s: acknowledged ${results.hot_tenant.acked_events_per_s}/s, counted ${results.hot_tenant.counted_events_per_s}/s ` +
      `(backlog max ${backlogMax}, drained ${done - loadEnd} ms after), ${executions.length} runs, history max ${historyMax} events, usage read p99 ${query.p99_ms} ms (${beside(query)})`,
  );
}

/**
 * The design most users write first: every event sent on its own and signalled to its tenant's
 * workflow. Here: one request per event through the same API (its own commit), then one
 * `recordUsage` signal for it to the tenant's workflow, as an integration that signals each
 * event would (64 clients). Counted when the read model holds every event.
 */
async function naive(): Promise<void> {
  const tenants = await createTenants('naive', MODE.tenants, 'bench_sum');
  await settled();
  const before = await countedEvents(db, tenants);
  let sent = 0;
  const start = Date.now();
  await runLoops(64, () => sent < MODE.naiveEvents, async () => {
    const n = sent++;
    const tenant = tenants[n % tenants.length]!;
    await ingest(batchFor(tenant, 1));
    await temporal.workflow.getHandle(tenantWorkflowId(tenant)).signal(recordUsageSignal, { events: 1, highest_seq: null });
  });
  const done = await waitCounted(db, tenants, before + MODE.naiveEvents);
  const rate = Math.round(MODE.naiveEvents / ((done - start) / 1000));
  await verifyCounted('naive', tenants);
  results.naive = { events_per_s: rate, concurrency: 64, design: 'one request and one signal per event' };
  log(`naive: ${MODE.naiveEvents} events, one request and one signal each, acknowledged and counted at ${rate}/s`);
}

/** How long the alert scenario samples the stack's CPU with nothing to do, before its steps. */
const ALERT_QUIET_SAMPLE_MS = 3_000;

/** From the 202 of the batch that crosses a threshold to the webhook at a local receiver. */
async function alerts(): Promise<void> {
  const arrivals = new Map<string, number>();
  // Wall clock (Temporal's histories use it) of each acknowledgement and arrival, and the alert id, for the path's stages.
  const arrivedAt = new Map<string, { at: number; alertId: string }>();
  // Crossings notified by a higher threshold's webhook (their step was claimed with the next one).
  const coveredBy = new Set<string>();
  const receiver = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      try {
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        if (body.type === 'alert.triggered') {
          const tenant = body.data?.tenant_id ?? body.data?.alert?.tenant_id;
          const threshold = body.data?.threshold ?? body.data?.alert?.threshold;
          const now = performance.now();
          arrivals.set(`${tenant}/${threshold}`, now);
          arrivedAt.set(`${tenant}/${threshold}`, { at: Date.now(), alertId: String(body.data?.id ?? body.id) });
          // A claim that jumped over lower thresholds notifies only the highest, listing the ones
          // it covers (BILLING.md): a covered crossing was told to the tenant by this webhook.
          const covers: unknown[] = Array.isArray(body.data?.covers) ? body.data.covers : [];
          for (const covered of covers) {
            const key = `${tenant}/${String(covered)}`;
            if (covered !== threshold && !arrivals.has(key)) {
              arrivals.set(key, now);
              coveredBy.add(key);
            }
          }
        }
      } catch {
        // not ours
      }
      res.writeHead(204).end();
    });
  });
  const port = await freePort();
  await new Promise<void>((r) => receiver.listen(port, '127.0.0.1', () => r()));
  try {
    const tenants = await createTenants('alert', MODE.alertTenants, 'bench_alert', { webhook_url: `http://127.0.0.1:${port}/hook` });
    // Settled, as before every scenario: the first alerts must not wait for these tenants' first runs.
    await settled();
    const metricsBefore = await scrapeMetrics();
    // What the stack spends with nothing to do (the counter's ticks, the refresher, the servers'
    // own timers), taken off the steps' CPU below so that what is left is the alerts'.
    const quietFrom = { at: performance.now(), ticks: cpuTicks(stack!.pid), busy: machineBusyMs() };
    await sleep(ALERT_QUIET_SAMPLE_MS);
    const quiet = { ms: performance.now() - quietFrom.at, used: cpuMsBetween(quietFrom.ticks, cpuTicks(stack!.pid)), busy: machineBusyMs() - quietFrom.busy };
    // Each open poll holds a workflow task slot: polls left open on the shared queue by earlier
    // scenarios' workflow starts leave fewer slots for the alerts' tasks on the sticky queue.
    const polls = await scrapeMetrics();
    const openPolls = {
      shared_queue: metricValue(polls, 'temporal_num_pollers', 'poller_type="workflow_task"'),
      sticky_queue: metricValue(polls, 'temporal_num_pollers', 'poller_type="sticky_workflow_task"'),
    };
    const stepsFrom = { at: performance.now(), ticks: cpuTicks(stack!.pid), busy: machineBusyMs() };
    const sent = new Map<string, number>();
    const acknowledgedAt = new Map<string, number>();
    // 300 is the limit: 250 crosses 80%, 30 more crosses 90%, 30 more crosses 100%.
    for (const [step, quantity, threshold] of [
      [0, 250, 80],
      [1, 30, 90],
      [2, 30, 100],
    ] as const) {
      await Promise.all(
        tenants.map(async (t) => {
          await ingest([{ id: `a${step}`, tenant_id: t, metric: 'tokens', quantity }]);
          sent.set(`${t}/${threshold}`, performance.now());
          acknowledgedAt.set(`${t}/${threshold}`, Date.now());
        }),
      );
      await sleep(1500);
    }
    const deadline = Date.now() + 30_000;
    while (arrivals.size < sent.size && Date.now() < deadline) await sleep(100);
    const stepsMs = performance.now() - stepsFrom.at;
    const stepsUsed = cpuMsBetween(stepsFrom.ticks, cpuTicks(stack!.pid));
    const stepsBusy = machineBusyMs() - stepsFrom.busy;
    const delays = [...sent].filter(([k]) => arrivals.has(k)).map(([k, t]) => arrivals.get(k)! - t);
    const cpuPerAlert = Object.fromEntries(
      [...stepsUsed].map(([name, ms]) => [name, Math.round(((ms - ((quiet.used.get(name) ?? 0) * stepsMs) / quiet.ms) / Math.max(1, delays.length)) * 10) / 10]),
    );
    const unnotified = [...sent.keys()].filter((k) => !arrivals.has(k));
    if (unnotified.length > 0) problem(`alerts: ${unnotified.length} of ${sent.size} threshold crossings had no webhook within 30 s (${unnotified.slice(0, 3).join(', ')})`);
    // Per step: the first step's alerts are the ones a fresh run's first claim decides.
    const byThreshold = Object.fromEntries(
      [80, 90, 100].map((threshold) => {
        const own = [...sent].filter(([k]) => k.endsWith(`/${threshold}`) && arrivals.has(k)).map(([k, t]) => arrivals.get(k)! - t);
        return [threshold, { p50_ms: quantile(own, 0.5), p99_ms: quantile(own, 0.99), delivered: own.length }];
      }),
    );
    const samples = [...arrivedAt].map(([k, a]) => ({ tenantId: k.split('/')[0]!, alertId: a.alertId, acknowledgedAt: acknowledgedAt.get(k)!, arrivedAt: a.at }));
    const stages = await alertPath(temporal, samples.filter((s) => s.acknowledgedAt !== undefined));
    const cpuTotal = Math.round(Object.values(cpuPerAlert).reduce((a, b) => a + b, 0) * 10) / 10;
    results.alert = {
      p50_ms: quantile(delays, 0.5),
      p99_ms: quantile(delays, 0.99),
      delivered: delays.length,
      expected: sent.size,
      covered: coveredBy.size,
      by_threshold: byThreshold,
      path: stages,
      worker: await workerLatencies(metricsBefore),
      cpu_ms_per_alert: cpuPerAlert,
      cpu_ms_total: cpuTotal,
      // A step's alerts all at once, spread over every core: the least its last alert can take.
      step_cpu_ms_per_core: Math.round((cpuTotal * MODE.alertTenants) / os.cpus().length),
      // How busy the cores were (every process, /proc/stat) before the first step, with nothing
      // sent, and during the steps: work the stack left from earlier scenarios competes with the
      // alerts without counting in their CPU above.
      machine_busy_share: { before: busyShareOfCores(quiet.busy, quiet.ms), steps: busyShareOfCores(stepsBusy, stepsMs) },
      workflow_task_polls_open_before_steps: openPolls,
    };
    log(
      `alerts: ${delays.length}/${sent.size} crossings notified (${coveredBy.size} by a higher threshold's webhook), p50 ${results.alert.p50_ms} ms, p99 ${results.alert.p99_ms} ms; ` +
        `CPU per alert ${Math.round(cpuTotal)} ms (${byProcess(cpuPerAlert)}): a step of ${MODE.alertTenants} needs ${results.alert.step_cpu_ms_per_core} ms of ${os.cpus().length} cores; ` +
        `the cores ${Math.round(results.alert.machine_busy_share.before * 100)} % busy before the first step, ${Math.round(results.alert.machine_busy_share.steps * 100)} % during the steps; ` +
        `workflow task polls open before it ${openPolls.shared_queue} on the shared queue, ${openPolls.sticky_queue} on the sticky one`,
    );
  } finally {
    receiver.close();
  }
}

/**
 * N tenants whose periods end at the same instant: time until every invoice is finalized, the
 * usage-read latency meanwhile, and the history one rollover writes (sampled tenants).
 */
async function burst(): Promise<void> {
  const n = MODE.burstTenants;
  // The anniversary is ahead by twice the time creating them took last (the machine is shared),
  // plus a margin for the 50 tenants' usage; waiting longer would only idle.
  const leadMs = n * Math.max(15, 2 * msPerTenantCreated) + 3_000;
  const anniversary = new Date(Math.ceil((Date.now() + leadMs) / 1000) * 1000);
  const ids = await createTenants('burst', n, 'bench_burst', { billing_anchor: anniversary.toISOString() }, 32);
  if (Date.now() > anniversary.getTime()) throw new Error(`creating ${n} tenants outran the anniversary ${Math.round(leadMs / 1000)} s ahead`);
  await Promise.all(ids.slice(0, 50).map((t) => ingest(batchFor(t, 10))));
  let finalized = false;
  await sleep(Math.max(0, anniversary.getTime() - Date.now()));
  const ticksBefore = cpuTicks(stack!.pid);
  const metricsBefore = await scrapeMetrics();
  const reads = readUsageDuring(() => ids[Math.floor(Math.random() * ids.length)]!, () => !finalized);
  // Ten times the target: a slow spell of the machine yields a figure, not a failed run (2,000
  // took 4.4 to 6.1 minutes here in sessions 14 and 15, BENCHMARKS.md).
  const deadline = anniversary.getTime() + 600_000;
  try {
    for (;;) {
      const { rows } = await db.query(`SELECT count(*)::int AS n FROM invoices WHERE tenant_id = ANY($1::text[]) AND status = 'finalized'`, [ids]);
      if (rows[0].n >= n) break;
      if (Date.now() > deadline) throw new Error(`only ${rows[0].n} of ${n} invoices finalized 600 s after the anniversary`);
      await sleep(200);
    }
  } finally {
    finalized = true;
  }
  const seconds = Math.round(((Date.now() - anniversary.getTime()) / 1000) * 10) / 10;
  const cpu = rolloversCpuCost(cpuMsBetween(ticksBefore, cpuTicks(stack!.pid)), n, seconds * 1000);
  await reads.windowClosed;
  const cache = workflowCacheUse(metricsBefore, await scrapeMetrics());
  const query = await reads;
  await verifyCounted('burst', ids);

  // The next runs' first workflow tasks may still be queued behind the burst: counted once they ran.
  await settled();
  // Every 1 in n/10 tenants, 10 in all (the first 50, which had usage, among them).
  const sampled = ids.filter((_, i) => i % Math.max(1, Math.floor(n / 10)) === 0);
  const { rows: invoices } = await db.query(`SELECT tenant_id, period_start FROM invoices WHERE tenant_id = ANY($1::text[]) AND version = 1`, [sampled]);
  const histories: RolloverHistory[] = [];
  for (const row of invoices) histories.push(await rolloverHistory(temporal, row.tenant_id, (row.period_start as Date).toISOString(), anniversary.getTime()));
  const medianOf = (key: 'total' | 'closing_run' | 'next_run' | 'invoice') => median(histories.map((h) => h[key]));
  results.burst = {
    tenants: n,
    seconds,
    query,
    cpu,
    workflow_cache: cache,
    history_events_per_rollover: {
      total: medianOf('total'),
      closing_run: medianOf('closing_run'),
      next_run: medianOf('next_run'),
      invoice: medianOf('invoice'),
      max_total: Math.max(...histories.map((h) => h.total)),
      sampled_tenants: histories.length,
      // A workflow task that waited on the worker's sticky queue past its schedule-to-start
      // timeout: the server times it out and schedules it again on the shared queue.
      sampled_with_sticky_timeout: histories.filter((h) => Object.values(h.types).some((types) => types.includes('workflow_task_timed_out'))).length,
      example: histories[0]?.types ?? null,
    },
  };
  log(
    `burst: ${n} anniversaries at one instant, all invoices finalized in ${seconds} s; ${results.burst.history_events_per_rollover.total} history events per rollover ` +
      `(median of ${histories.length}); usage read p99 ${query.p99_ms} ms (${beside(query)}); ` +
      `${cpu.total_ms_per_rollover} CPU ms per rollover (${byProcess(cpu.ms_per_rollover)}), the cores ${Math.round(cpu.busy_share_of_cores * 100)} % busy: at that cost they need ${cpu.ceiling_seconds} s`,
  );
}

/** Open tenant workflows and the worker's memory as tenants accumulate. */
async function scale(): Promise<void> {
  const points: Array<{ tenants: number; worker_rss_mb: number } & Record<string, number>> = [];
  const existing = Number((await db.query(`SELECT count(*)::int AS n FROM tenants WHERE status = 'active'`)).rows[0].n);
  let created = existing;
  for (const target of MODE.scale) {
    if (target > created) {
      await createTenants(`scale${target}`, target - created, 'bench_sum', {}, 32);
      created = target;
    }
    // touch every workflow once so it is cached by the worker, as under real traffic
    const { rows } = await db.query(`SELECT id FROM tenants WHERE status = 'active'`);
    let next = 0;
    await runLoops(32, () => next < rows.length, async () => {
      const t = rows[next++].id;
      await ingest(batchFor(t, 1));
    });
    await sleep(2000);
    const running = await temporal.workflow.count(`WorkflowType = 'tenantBilling' AND ExecutionStatus = 'Running'`);
    points.push({ tenants: running.count, worker_rss_mb: rssMb(stack.pid), ...(await memoryKinds()) });
    log(`scale: ${running.count} open tenant workflows, worker+API RSS ${points.at(-1)!.worker_rss_mb} MB (${JSON.stringify(points.at(-1))})`);
  }
  results.scale = { tenants: points.at(-1)!.tenants, worker_rss_mb: points.at(-1)!.worker_rss_mb, points };
}

/**
 * Where the tally process's resident memory is: the main thread's V8 heap (the API, activities
 * and the SDK's JavaScript side) and the memory outside V8 it accounts for (buffers), both from
 * the process's own metrics; anonymous against file-backed pages; and the workflows the worker
 * holds in its cache (their state lives in the workflow thread's heap and the SDK's core).
 */
async function memoryKinds(): Promise<Record<string, number>> {
  const metrics = await scrapeMetrics();
  const mb = (bytes: number) => Math.round((bytes / 1024 / 1024) * 10) / 10;
  return {
    ...rssKindsMb(stack.pid),
    main_heap_used_mb: mb(metricValue(metrics, 'nodejs_heap_size_used_bytes')),
    main_heap_total_mb: mb(metricValue(metrics, 'nodejs_heap_size_total_bytes')),
    external_mb: mb(metricValue(metrics, 'nodejs_external_memory_bytes')),
    cached_workflows: metricValue(metrics, 'temporal_sticky_cache_size'),
  };
}

/** A figure as a share of its ceiling, as the summary prints it. */
function percentOf(value: number, ceiling: number | undefined): string {
  return ceiling ? `${((value / ceiling) * 100).toFixed(1)} %` : 'no ceiling';
}

function printTable(): void {
  const r = results;
  const c = r.ceiling;
  const rows: Array<[string, string | number, string]> = [
    ['ingest.events_per_s', r.ingest.events_per_s, `>= 20,000 (ceiling: PostgreSQL ${c.pg_rows_per_s} rows/s; ${percentOf(r.ingest.events_per_s, c.pg_rows_per_s)})`],
    ['ingest.p50_ms / p99_ms (half load)', `${r.ingest.p50_ms} / ${r.ingest.p99_ms}`, ''],
    ['ingest.lag_p99_ms', r.ingest.lag_p99_ms, '<= 1,000'],
    ['query.p50_ms / p99_ms (half load)', `${r.query.p50_ms} / ${r.query.p99_ms}`, `p99 <= 25 (${beside(r.query)})`],
    ['naive.events_per_s (1 request/event)', r.naive.events_per_s, ''],
    ['ingest.ratio_vs_naive', r.ingest.ratio_vs_naive, '>= 50'],
    [
      `fleet: ${r.fleet.tenants} tenants, events/s acked`,
      r.fleet.events_per_s,
      `>= 10,000 (ceilings: ${r.fleet.ceiling.pg_commit_events_per_s} PG commits, ${r.fleet.ceiling.ring_events_per_s} rings, ` +
        `${r.fleet.ceiling.cpu_events_per_s} CPU at its ${r.fleet.cpu.total_ms_per_1000_events} ms per 1,000 events; ${percentOf(r.fleet.events_per_s, r.fleet.ceiling.cpu_events_per_s)} of the CPU's)`,
    ],
    ['fleet: all counted within (ms)', `${Math.max(r.fleet.lag_max_ms, r.fleet.drain_ms)}`, '<= 5,000'],
    ['fleet: query p99_ms', r.fleet.query.p99_ms, `p99 <= 25 (${beside(r.fleet.query)})`],
    [`hot tenant (${r.hot_tenant.seconds} s): counted/s`, `${r.hot_tenant.counted_events_per_s} of ${r.hot_tenant.acked_events_per_s}`, `>= 10,000 (ceilings: PostgreSQL ${c.pg_rows_per_s} rows/s, ${percentOf(r.hot_tenant.counted_events_per_s, c.pg_rows_per_s)}; counting alone ${r.hot_tenant.drain_events_per_s === null ? 'not reached (nothing left to count after the load)' : `${r.hot_tenant.drain_events_per_s}/s`})`],
    ['hot tenant: alive, runs, history max', `${r.hot_tenant.workflow.alive}, ${r.hot_tenant.workflow.runs}, ${r.hot_tenant.workflow.history_length_max}`, 'bounded'],
    ['hot tenant: query p99_ms', r.hot_tenant.query.p99_ms, `p99 <= 25 (${beside(r.hot_tenant.query)})`],
    ['ceiling.pg_rows_per_s', c.pg_rows_per_s, ''],
    ['ceiling.pg_commits_per_s (10 rows)', c.pg_commits_per_s, ''],
    ['ceiling.signals_per_s', c.signals_per_s, ''],
    [`ceiling: rollover floor, ${c.rollovers.tenants} at once (s)`, c.rollovers.seconds, `${c.rollovers.history_events_per_rollover} history events, ${c.rollovers.cpu.total_ms_per_rollover} CPU ms per rollover (Temporal ${c.rollovers.cpu.ms_per_rollover.temporal ?? 0})`],
    ['ceiling: PG round trip, machine CPU µs', `${c.pg_round_trip.socket.machine_cpu_us} / ${c.pg_round_trip.tcp.machine_cpu_us}`, 'through the Unix socket tally uses / loopback TCP'],
    ['alert.p50_ms / p99_ms', `${r.alert.p50_ms} / ${r.alert.p99_ms}`, 'p99 <= 1,000'],
    ['alert: CPU ms per alert, all processes', r.alert.cpu_ms_total, `a step of ${MODE.alertTenants} alerts: ${r.alert.step_cpu_ms_per_core} ms on ${os.cpus().length} cores`],
    [`burst: ${r.burst.tenants} tenants (s)`, r.burst.seconds, `<= 60 s at 2,000 (the rollover floor, Temporal's part alone: ${c.rollovers.seconds} s)`],
    ['burst: history events per rollover', r.burst.history_events_per_rollover.total, ''],
    ['burst: CPU ms per rollover', r.burst.cpu.total_ms_per_rollover, `the cores need ${r.burst.cpu.ceiling_seconds} s for all at this cost`],
    ['burst: query p99_ms', r.burst.query.p99_ms, `p99 <= 25 (${beside(r.burst.query)})`],
    [`scale: ${r.scale.tenants} tenants, RSS MB`, r.scale.worker_rss_mb, '<= 1,024 at 10,000'],
  ];
  const w = Math.max(...rows.map((x) => x[0].length));
  process.stdout.write(`\n${'figure'.padEnd(w)}  ${'measured'.padStart(16)}  target\n`);
  for (const [name, value, target] of rows) process.stdout.write(`${name.padEnd(w)}  ${String(value).padStart(16)}  ${target}\n`);
  process.stdout.write(`\n${r.seconds} s; written: bench/results/${OUTPUT.results}, bench/results/${OUTPUT.chart}\n`);
}

async function fail(err: unknown): Promise<never> {
  process.stderr.write(`bench failed: ${err instanceof Error ? err.stack : String(err)}\n`);
  if (problems.length > 0) process.stderr.write(`problems found before it failed:\n${problems.map((p) => `  - ${p}`).join('\n')}\n`);
  await stack?.stop().catch(() => undefined);
  process.exit(1);
}

// The stack runs in a process group of its own: a bench that died on a rejection nobody awaited
// would leave its Temporal server and PostgreSQL running, busy, under the next run.
process.once('uncaughtException', (err) => void fail(err));
process.once('unhandledRejection', (err) => void fail(err));
main().catch(fail);
