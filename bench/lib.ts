import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort, freePorts } from '../src/platform/free-port';
import { embeddedDatabaseUrl } from '../src/platform/postgres';

export { freePort };

/** The project root, whatever the current directory. */
export const ROOT = path.resolve(__dirname, '..');

/** A running tally stack (`src/main.ts` as a child process), as a user would run it. */
export interface BenchStack {
  apiUrl: string;
  adminKey: string;
  temporalAddress: string;
  databaseUrl: string;
  pid: number;
  dataDir: string;
  stop(): Promise<void>;
}

/** Starts the whole system on free ports and a fresh data directory; resolves when /readyz is 200. */
export async function startStack(extraEnv: Record<string, string> = {}, nodeArgs: string[] = []): Promise<BenchStack> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tally-bench-'));
  const [port, temporalPort, uiPort, pgPort, metricsPort] = await freePorts(5);
  const adminKey = 'bench-admin-key-0123456789abcdef';
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    DATA_DIR: dataDir,
    PORT: String(port),
    HOST: '127.0.0.1',
    TEMPORAL_PORT: String(temporalPort),
    TEMPORAL_UI_PORT: String(uiPort),
    POSTGRES_PORT: String(pgPort),
    // The worker's metrics, which the bench reads to know the worker has settled: on the default
    // port they would be off whenever another stack on the machine holds it.
    TEMPORAL_METRICS_PORT: String(metricsPort),
    BILLING_ADMIN_KEY: adminKey,
    LOG_LEVEL: 'warn',
    RATE_LIMIT_INGEST_PER_SECOND: '0',
    RATE_LIMIT_READS_PER_SECOND: '0',
    // The alert scenario's receiver listens on 127.0.0.1 over http.
    WEBHOOK_ALLOW_PRIVATE_TARGETS: 'true',
    WEBHOOK_HTTP_ALLOWED_HOSTS: '127.0.0.1',
    ...extraEnv,
  };
  delete env.TEMPORAL_ADDRESS;
  delete env.DATABASE_URL;
  // `node --import tsx` rather than the tsx binary: one process to measure, and room for node flags
  // such as --cpu-prof (not allowed in NODE_OPTIONS).
  const child: ChildProcess = spawn(process.execPath, [...startScriptNodeFlags(), ...nodeArgs, '--import', 'tsx', 'src/main.ts'], {
    cwd: ROOT,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let output = '';
  // All of it, too, in bench/results/stack.log (not committed): a stack that dies while the bench
  // itself fails on the broken connection leaves its reason there.
  const log = fs.createWriteStream(path.join(ROOT, 'bench', 'results', 'stack.log'));
  const keep = (d: Buffer) => {
    output = (output + String(d)).slice(-20_000);
    log.write(d);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  child.once('exit', () => log.end());
  const apiUrl = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 120_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`the stack exited early:\n${output}`);
    try {
      const res = await fetch(`${apiUrl}/readyz`);
      if (res.status === 200) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`the stack did not become ready:\n${output}`);
    await sleep(250);
  }
  const pid = child.pid!;
  // A stack that dies under load is a finding, not a mystery: say how it ended and what it said last.
  let stopping = false;
  child.once('exit', (code, signal) => {
    if (!stopping) process.stderr.write(`\n[bench] the tally stack exited unexpectedly (code ${code}, signal ${signal}); its last output:\n${output}\n`);
  });
  return {
    apiUrl,
    adminKey,
    temporalAddress: `127.0.0.1:${temporalPort}`,
    // The way tally's own processes reach it, so the bench's ceilings are measured on the same path.
    databaseUrl: embeddedDatabaseUrl(path.join(dataDir, 'postgres'), pgPort),
    pid,
    dataDir,
    async stop() {
      // Only tally is asked to stop: it stops the embedded Temporal server and PostgreSQL itself,
      // after its worker. Signalling the whole group would stop them under a worker still using them.
      stopping = true;
      try {
        process.kill(child.pid!, 'SIGTERM');
      } catch {
        // already gone
      }
      // The timer is cleared once the stack exits: a pending one would keep the bench alive for 30 s.
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        new Promise((r) => (child.exitCode !== null ? r(true) : child.once('exit', () => r(true)))),
        new Promise((r) => (timer = setTimeout(() => r(false), 30_000))),
      ]);
      clearTimeout(timer);
      // Whatever of the group is left (all of it, if tally did not stop in time) goes now.
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        // nothing left
      }
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** The Node flags `npm start` runs tally with (package.json), so the bench measures that process. */
export function startScriptNodeFlags(): string[] {
  const scripts = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).scripts as Record<string, string>;
  return scripts.start!.split(/\s+/).filter((word) => word.startsWith('--'));
}

/**
 * CPU ticks per process name since boot, of the stack's process tree (tally, and the Temporal
 * server and PostgreSQL it started) and of this process (`selfName`: the load generator, or the
 * bench's rollover floor): other work on the machine is left out.
 */
export function cpuTicks(stackPid: number, selfName = 'load generator'): Map<string, number> {
  const procs = new Map<number, { comm: string; ppid: number; ticks: number }>();
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue; // the process ended meanwhile
    }
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // Its own user and system time, and that of its children that ended: a PostgreSQL backend
    // that exits within a measurement (a pool closing an idle connection) moves its CPU to the
    // postmaster's, where it would otherwise vanish and make the difference negative. Not for
    // this load generator, whose child is the stack itself.
    const [utime, stime, cutime, cstime] = fields.slice(11, 15).map(Number) as [number, number, number, number];
    const ticks = Number(entry) === process.pid ? utime + stime : utime + stime + cutime + cstime;
    procs.set(Number(entry), { comm: stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')), ppid: Number(fields[1]), ticks });
  }
  const inStack = (pid: number): boolean => {
    for (let at = pid; at > 1; at = procs.get(at)?.ppid ?? 0) if (at === stackPid) return true;
    return false;
  };
  const ticks = new Map<string, number>();
  for (const [pid, p] of procs) {
    const name = pid === stackPid ? 'tally (API + worker)' : pid === process.pid ? selfName : inStack(pid) ? p.comm : undefined;
    if (name !== undefined) ticks.set(name, (ticks.get(name) ?? 0) + p.ticks);
  }
  return ticks;
}

/** CPU milliseconds the whole machine has been busy since boot, on all its cores (/proc/stat; a tick is 10 ms). */
export function machineBusyMs(): number {
  const [user, nice, system, , , irq, softirq] = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number) as number[];
  return (user! + nice! + system! + irq! + softirq!) * 10;
}

/** The share of every core's time, 0 to 1 (to a thousandth), that `busyMs` of CPU took over `wallMs`. */
export function busyShareOfCores(busyMs: number, wallMs: number): number {
  return Math.round((busyMs / (Math.max(1e-9, wallMs) * os.cpus().length)) * 1000) / 1000;
}

/** CPU milliseconds each process of {@link cpuTicks} used between two readings (a tick is 10 ms). */
export function cpuMsBetween(before: ReadonlyMap<string, number>, after: ReadonlyMap<string, number>): Map<string, number> {
  return new Map([...after].map(([name, ticks]) => [name, (ticks - (before.get(name) ?? 0)) * 10]));
}

/** What some events cost the machine: each process's CPU per 1,000 of them, and the rate its cores could carry at that cost. */
export interface EventsCpuCost {
  /** CPU ms per 1,000 events, by process (those that used at least 2 % of a core). */
  ms_per_1000_events: Record<string, number>;
  /** Every process's, the load generator's included: it shares the cores. */
  total_ms_per_1000_events: number;
  /** How busy the cores were meanwhile, 0 to 1. */
  busy_share_of_cores: number;
  /** The events per second that would keep every core busy at this cost: the CPU ceiling. */
  ceiling_events_per_s: number;
}

/** {@link EventsCpuCost} of `events` from the CPU each process used over `wallMs` ({@link cpuMsBetween}). */
export function eventsCpuCost(used: ReadonlyMap<string, number>, events: number, wallMs: number): EventsCpuCost {
  const cost = cpuCostPer(used, events / 1000, wallMs);
  return {
    ms_per_1000_events: cost.by_process,
    total_ms_per_1000_events: cost.total,
    busy_share_of_cores: cost.busy_share_of_cores,
    // Each core gives 1,000 CPU ms a second.
    ceiling_events_per_s: Math.round((os.cpus().length * 1000 * events) / Math.max(1, cost.total_ms)),
  };
}

/** What the burst's rollovers cost the machine: each process's CPU per rollover, and the least time the cores need for all of them at that cost. */
export interface RolloversCpuCost {
  /** CPU ms per rollover, by process (those that used at least 2 % of a core). */
  ms_per_rollover: Record<string, number>;
  /** Every process's, the load generator's (its usage reads) included. */
  total_ms_per_rollover: number;
  /** How busy the cores were meanwhile, 0 to 1. */
  busy_share_of_cores: number;
  /** The rollovers' CPU spread over every core: no schedule finishes them sooner at this cost. */
  ceiling_seconds: number;
}

/** {@link RolloversCpuCost} of `rollovers` from the CPU each process used over `wallMs` ({@link cpuMsBetween}). */
export function rolloversCpuCost(used: ReadonlyMap<string, number>, rollovers: number, wallMs: number): RolloversCpuCost {
  const cost = cpuCostPer(used, rollovers, wallMs);
  return {
    ms_per_rollover: cost.by_process,
    total_ms_per_rollover: cost.total,
    busy_share_of_cores: cost.busy_share_of_cores,
    ceiling_seconds: Math.round(cost.total_ms / (os.cpus().length * 1000) * 10) / 10,
  };
}

/** CPU ms per unit of work, by process and in all, rounded to a tenth; and how busy the cores were. */
function cpuCostPer(used: ReadonlyMap<string, number>, units: number, wallMs: number) {
  const per = (ms: number) => Math.round((ms / Math.max(1e-9, units)) * 10) / 10;
  const totalMs = [...used.values()].reduce((a, b) => a + b, 0);
  return {
    by_process: Object.fromEntries([...used].filter(([, ms]) => ms / wallMs > 0.02).sort((a, b) => b[1] - a[1]).map(([name, ms]) => [name, per(ms)])),
    total: per(totalMs),
    total_ms: totalMs,
    busy_share_of_cores: busyShareOfCores(totalMs, wallMs),
  };
}

/** Resident memory of a process in MB. */
export function rssMb(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
  return Math.round((kb / 1024) * 10) / 10;
}

/** Resident memory of a process by kind, in MB: anonymous (heaps, native allocations) and file-backed (code, mapped files). */
export function rssKindsMb(pid: number): { anonymous_mb: number; file_mb: number } {
  const rollup = fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+)`, 'm').exec(rollup)?.[1] ?? 0);
  const mb = (k: number) => Math.round((k / 1024) * 10) / 10;
  return { anonymous_mb: mb(kb('Anonymous')), file_mb: mb(kb('Rss') - kb('Anonymous')) };
}

/**
 * The value of one Prometheus sample line (`name{labels} value` or `name value`), summed over the
 * label sets that contain `labelFilter` (all by default); NaN when absent.
 */
export function metricValue(metrics: string, name: string, labelFilter = ''): number {
  let total = NaN;
  for (const line of metrics.split('\n')) {
    if (!line.startsWith(`${name} `) && !line.startsWith(`${name}{`)) continue;
    if (labelFilter && !line.includes(labelFilter)) continue;
    total = (Number.isNaN(total) ? 0 : total) + Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return total;
}

/** Sleeps `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** The value at quantile `q` (0..1) of a list of numbers. */
export function quantile(values: number[], q: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return Math.round(sorted[index]! * 100) / 100;
}

/** The median of a list. */
export function median(values: number[]): number {
  return quantile(values, 0.5);
}

/** Runs `worker` on `concurrency` loops until `until()` is false. */
export async function runLoops(concurrency: number, until: () => boolean, worker: (loop: number) => Promise<void>): Promise<void> {
  await Promise.all(
    Array.from({ length: concurrency }, async (_, loop) => {
      while (until()) await worker(loop);
    }),
  );
}

/**
 * A quantile of a Prometheus histogram, summed over every label set whose labels contain
 * `labelFilter`, over the samples taken between two scrapes (`before` may be ''). The worker's
 * Temporal metrics show where a slow request waited: task schedule-to-start is time queued,
 * execution is time working. Buckets are upper bounds: the answer is the first bound reaching
 * the quantile.
 */
export function histogramQuantile(before: string, after: string, name: string, q: number, labelFilter = ''): number | null {
  const counts = (metrics: string) => {
    const buckets = new Map<number, number>();
    for (const line of metrics.split('\n')) {
      if (!line.startsWith(`${name}_bucket{`) || !line.includes(labelFilter)) continue;
      const le = /le="([^"]+)"/.exec(line)?.[1];
      const value = Number(line.slice(line.lastIndexOf(' ') + 1));
      if (le === undefined || !Number.isFinite(value)) continue;
      const bound = le === '+Inf' ? Infinity : Number(le);
      buckets.set(bound, (buckets.get(bound) ?? 0) + value);
    }
    return buckets;
  };
  const start = counts(before);
  const sorted = [...counts(after)].map(([bound, n]) => [bound, n - (start.get(bound) ?? 0)] as const).sort((a, b) => a[0] - b[0]);
  const total = sorted.at(-1)?.[1] ?? 0;
  if (total <= 0) return null;
  return sorted.find(([, cumulative]) => cumulative >= q * total)![0];
}

/**
 * Waits until the worker has started no task for a second, so a measurement starts on a settled
 * system rather than behind the workflow starts and rings of what came before (creating a
 * thousand tenants leaves a thousand first runs to start). The worker's own counters, which the
 * API's `/metrics` appends, say it: with tasks queued at the server and slots free, it would be
 * starting them. (The server's task-queue statistics would say it too, but it caches them for
 * about 5 s.) Answers how long it waited, in ms.
 */
export async function waitSettled(apiUrl: string, timeoutMs = 180_000): Promise<number> {
  const scrape = async () => tasksStarted(await (await fetch(`${apiUrl}/metrics`)).text());
  const start = Date.now();
  let before = await scrape();
  for (;;) {
    await sleep(1000);
    const now = await scrape();
    if (now === before || Date.now() - start > timeoutMs) break;
    before = now;
  }
  return Date.now() - start;
}

/** Workflow and activity tasks the worker has started since it began (its schedule-to-start histograms' +Inf buckets). */
function tasksStarted(metrics: string): number {
  let total = 0;
  for (const line of metrics.split('\n')) {
    const histogram = line.startsWith('temporal_workflow_task_schedule_to_start_latency_bucket{') || line.startsWith('temporal_activity_schedule_to_start_latency_bucket{');
    if (histogram && line.includes('le="+Inf"')) total += Number(line.slice(line.lastIndexOf(' ') + 1)) || 0;
  }
  return total;
}
