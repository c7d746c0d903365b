/**
 * The chaos stack: PostgreSQL, the Temporal dev server, the worker and the API as separate
 * processes on free ports, each of which can be killed and started again on its own.
 *
 * - PostgreSQL runs through `startEmbeddedPostgres` (data under DATA_DIR/postgres). A restart is
 *   either a fast shutdown (SIGINT, what `stop()` does) or an immediate shutdown (SIGQUIT to the
 *   postmaster: no checkpoint, WAL crash recovery on the next start), then a start on the same
 *   directory and port.
 * - The Temporal dev server is `temporal server start-dev` in its own process group, on a SQLite
 *   file under DATA_DIR, with the five search attributes of API.md; it restarts on the same file
 *   and port.
 * - The worker (`src/workers/main.ts`) and the API (`src/api/main.ts`) run as `node --import tsx`
 *   in their own process groups, so `kill -9` of one leaves everything else running.
 *
 * Every child's output goes to DATA_DIR/logs/<name>.log (appended across restarts).
 *
 * The worker, the API and the migrations run from a snapshot of the code taken when the run starts
 * (DATA_DIR/code: `src/`, `migrations/`, `package.json`, `tsconfig.json`, and a link to
 * `node_modules`), so every restart runs the same code even while someone edits the working tree.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { Connection } from '@temporalio/client';
import { freePorts } from '../src/platform/free-port';
import { startEmbeddedPostgres, type EmbeddedDatabase } from '../src/platform/postgres';
import { readTemporalBinaries } from '../src/platform/temporal-binaries';
import { DEV_SERVER_ARGS } from '../src/platform/temporal-server';
import { CONFIG_VARIABLES } from '../src/config';

/** The project root, whatever the current directory. */
export const ROOT = path.resolve(__dirname, '..');

/** The search attributes tally's workflows use (API.md, "Temporal conventions"). */
const SEARCH_ATTRIBUTES = ['TenantId=Keyword', 'PlanId=Keyword', 'BillingPeriodStart=Datetime', 'BillingPeriodEnd=Datetime', 'AlertLevel=Keyword'];

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A child process in its own process group, restartable with the same command line. */
/** The code a run tests: where its snapshot is, and which version it is. */
export interface CodeSnapshot {
  root: string;
  /** The commit, and for a working-tree snapshot the files that differ from it. */
  version: { commit: string; ref: string | null; dirty: string[] };
}

/**
 * Copies the code the stack runs into `dir`: the working tree, or with `ref` a commit read with
 * `git archive` (read-only). `node_modules` is linked, not copied.
 */
export function snapshotCode(dir: string, ref?: string): CodeSnapshot {
  const root = path.join(dir, 'code');
  fs.mkdirSync(root, { recursive: true });
  const entries = ['src', 'migrations', 'package.json', 'tsconfig.json'];
  const git = (...args: string[]) => execFileSync('git', args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
  let commit = 'unknown';
  let dirty: string[] = [];
  if (ref) {
    commit = git('rev-parse', '--verify', `${ref}^{commit}`);
    const archive = execFileSync('git', ['archive', '--format=tar', commit, ...entries], { cwd: ROOT, maxBuffer: 256 * 1024 * 1024 });
    execFileSync('tar', ['-x', '-C', root], { input: archive });
  } else {
    for (const entry of entries) fs.cpSync(path.join(ROOT, entry), path.join(root, entry), { recursive: true });
    try {
      commit = git('rev-parse', 'HEAD');
      // Not trimmed: each line starts with its two-letter status (` M path`).
      dirty = execFileSync('git', ['status', '--porcelain', '--', ...entries], { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
        .split('\n')
        .filter(Boolean)
        .map((line) => line.slice(3));
    } catch {
      // not a git checkout: the snapshot is still the working tree
    }
  }
  fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(root, 'node_modules'));
  return { root, version: { commit, ref: ref ?? null, dirty } };
}

class Managed {
  private child: ChildProcess | undefined;
  private exited: Promise<number | null> = Promise.resolve(null);
  private output = '';
  starts = 0;

  constructor(
    readonly name: string,
    private readonly command: string,
    private readonly args: string[],
    private readonly env: NodeJS.ProcessEnv,
    private readonly logFile: string,
    private readonly cwd: string = ROOT,
  ) {}

  get pid(): number | undefined {
    return this.child && this.child.exitCode === null && this.child.signalCode === null ? this.child.pid : undefined;
  }

  get running(): boolean {
    return this.pid !== undefined;
  }

  /** The recent output of the current incarnation (for readiness lines and error messages). */
  get recentOutput(): string {
    return this.output;
  }

  start(): void {
    if (this.running) throw new Error(`${this.name} is already running`);
    this.starts += 1;
    this.output = '';
    const log = fs.openSync(this.logFile, 'a');
    fs.writeSync(log, `\n===== ${new Date().toISOString()} start #${this.starts}: ${this.command} ${this.args.join(' ')}\n`);
    const child = spawn(this.command, this.args, { cwd: this.cwd, env: this.env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    const onData = (d: Buffer) => {
      fs.writeSync(log, d);
      this.output = (this.output + d.toString('utf8')).slice(-20_000);
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    this.exited = new Promise((resolve) =>
      child.once('exit', (code, signal) => {
        try {
          fs.writeSync(log, `===== ${new Date().toISOString()} exited code=${code} signal=${signal}\n`);
          fs.closeSync(log);
        } catch {
          // closed already
        }
        resolve(code);
      }),
    );
    this.child = child;
  }

  /** Signals the whole process group and waits for the exit (SIGKILL after `graceMs`). */
  async stop(signal: NodeJS.Signals, graceMs = 15_000): Promise<void> {
    const child = this.child;
    if (!child || child.pid === undefined) return;
    if (child.exitCode === null && child.signalCode === null) killGroup(child.pid, signal);
    const done = await Promise.race([this.exited.then(() => true), sleep(graceMs).then(() => false)]);
    if (!done) {
      killGroup(child.pid, 'SIGKILL');
      await this.exited;
    }
    // Anything left in the group (there should be nothing) goes too.
    killGroup(child.pid, 'SIGKILL');
  }

  async waitFor(pattern: RegExp, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!pattern.test(this.output)) {
      if (!this.running) throw new Error(`${this.name} exited while starting:\n${this.output.slice(-4000)}`);
      if (Date.now() > deadline) throw new Error(`${this.name} not ready after ${timeoutMs} ms:\n${this.output.slice(-4000)}`);
      await sleep(100);
    }
  }
}

function killGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // the group is gone
  }
}

/** Options of a chaos stack. */
export interface StackOptions {
  dataDir: string;
  /** Where the worker, the API and the migrations run from (see {@link snapshotCode}). */
  codeRoot: string;
  adminKey: string;
  /** Extra environment for the worker (e.g. LOG_LEVEL). */
  workerEnv?: Record<string, string>;
  /**
   * API processes and worker processes (default 1 each). With more than one, the API processes
   * sit behind a round-robin proxy ({@link RoundRobinProxy}) and `apiUrl` is the proxy's.
   */
  replicas?: number;
}

/**
 * A TCP round-robin proxy in front of several API processes, as a load balancer would be: each
 * new connection goes to the next backend, and to the one after it when that one refuses (a
 * killed process). A connection open to a backend that dies is cut, as it would be in production.
 */
export class RoundRobinProxy {
  /** Connections handed to each backend, and connections moved on because a backend refused. */
  readonly connections: number[];
  failovers = 0;
  private next = 0;
  private readonly open = new Set<net.Socket>();

  private constructor(
    private readonly server: net.Server,
    readonly port: number,
    private readonly backends: number[],
  ) {
    this.connections = backends.map(() => 0);
  }

  static async start(backends: number[], port: number): Promise<RoundRobinProxy> {
    const server = net.createServer();
    const proxy = new RoundRobinProxy(server, port, backends);
    server.on('connection', (client) => proxy.forward(client));
    await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
    return proxy;
  }

  private forward(client: net.Socket): void {
    this.open.add(client);
    client.pause();
    let upstream: net.Socket | undefined;
    const closeBoth = () => {
      client.destroy();
      upstream?.destroy();
      this.open.delete(client);
    };
    client.on('error', closeBoth).on('close', closeBoth);
    const attempt = (tried: number) => {
      if (tried >= this.backends.length || client.destroyed) return closeBoth();
      const index = this.next++ % this.backends.length;
      const socket = net.connect(this.backends[index]!, '127.0.0.1');
      let connected = false;
      socket.once('connect', () => {
        connected = true;
        upstream = socket;
        this.connections[index]! += 1;
        client.pipe(socket).pipe(client);
        client.resume();
      });
      socket.on('error', () => {
        if (connected) return closeBoth();
        this.failovers += 1;
        attempt(tried + 1);
      });
      socket.on('close', () => {
        if (connected) closeBoth();
      });
    };
    attempt(0);
  }

  async close(): Promise<void> {
    for (const socket of this.open) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** The running stack and its fault levers. */
export class ChaosStack {
  readonly apiUrl: string;
  readonly temporalAddress: string;
  readonly logDir: string;
  databaseUrl = '';
  private postgres: EmbeddedDatabase | undefined;
  private readonly temporal: Managed;
  private readonly workers: Managed[];
  private readonly apis: Managed[];
  /** With replicas: the round-robin proxy in front of the API processes. */
  proxy: RoundRobinProxy | undefined;

  private constructor(
    private readonly options: StackOptions,
    private readonly ports: { api: number; apis: number[]; temporal: number; temporalHttp: number; temporalMetrics: number; postgres: number },
  ) {
    this.apiUrl = `http://127.0.0.1:${ports.api}`;
    this.temporalAddress = `127.0.0.1:${ports.temporal}`;
    this.logDir = path.join(options.dataDir, 'logs');
    fs.mkdirSync(this.logDir, { recursive: true });
    const databaseUrl = `postgres://tally:tally@127.0.0.1:${ports.postgres}/tally`;
    const base = cleanEnv();
    const cli = readTemporalBinaries().cli.path;
    if (!cli) throw new Error('the Temporal CLI is not resolved locally: run `npm run temporal:binaries`');
    this.temporal = new Managed(
      'temporal',
      cli,
      [
        'server',
        'start-dev',
        '--db-filename',
        path.join(options.dataDir, 'temporal.sqlite'),
        '--ip',
        '127.0.0.1',
        '--port',
        String(ports.temporal),
        // Fixed, not left to the CLI: a restart would pick any port free at that instant, such as
        // that of a killed API process, which then could not listen again.
        '--http-port',
        String(ports.temporalHttp),
        '--metrics-port',
        String(ports.temporalMetrics),
        '--headless',
        '--log-level',
        'warn',
        ...DEV_SERVER_ARGS,
        ...SEARCH_ATTRIBUTES.flatMap((sa) => ['--search-attribute', sa]),
      ],
      base,
      path.join(this.logDir, 'temporal.log'),
    );
    // The chaos receiver listens on 127.0.0.1 over http: opted in, as for local development.
    const common = { ...base, TEMPORAL_ADDRESS: this.temporalAddress, DATABASE_URL: databaseUrl, HOST: '127.0.0.1', WEBHOOK_ALLOW_PRIVATE_TARGETS: 'true', WEBHOOK_HTTP_ALLOWED_HOSTS: '127.0.0.1' };
    const replicas = options.replicas ?? 1;
    const named = (service: string, i: number) => (replicas > 1 ? `${service}-${i + 1}` : service);
    this.workers = Array.from(
      { length: replicas },
      (_, i) =>
        new Managed(
          named('worker', i),
          process.execPath,
          ['--import', 'tsx', 'src/workers/main.ts'],
          { ...common, TEMPORAL_METRICS_PORT: '0', LOG_LEVEL: 'info', TALLY_SERVICE: named('worker', i), ...options.workerEnv },
          path.join(this.logDir, `${named('worker', i)}.log`),
          options.codeRoot,
        ),
    );
    this.apis = ports.apis.map(
      (apiPort, i) =>
        new Managed(
          named('api', i),
          process.execPath,
          ['--import', 'tsx', 'src/api/main.ts'],
          {
            ...common,
            PORT: String(apiPort),
        BILLING_ADMIN_KEY: options.adminKey,
        RATE_LIMIT_INGEST_PER_SECOND: '0',
        RATE_LIMIT_READS_PER_SECOND: '0',
            LOG_LEVEL: 'warn',
            TALLY_SERVICE: named('api', i),
          },
          path.join(this.logDir, `${named('api', i)}.log`),
          options.codeRoot,
        ),
    );
  }

  /** How many API processes and worker processes the stack runs. */
  get replicas(): number {
    return this.workers.length;
  }

  /** Allocates ports and starts PostgreSQL, Temporal, the migrations, the worker and the API. */
  static async start(options: StackOptions, log: (m: string) => void): Promise<ChaosStack> {
    const replicas = options.replicas ?? 1;
    const [temporal, temporalHttp, temporalMetrics, postgres, proxyPort, ...apis] = (await freePorts(replicas + 5)) as [number, number, number, number, number, ...number[]];
    const proxy = replicas > 1 ? await RoundRobinProxy.start(apis, proxyPort) : undefined;
    const ports = { api: proxy?.port ?? apis[0]!, apis, temporal, temporalHttp, temporalMetrics, postgres };
    const stack = new ChaosStack(options, ports);
    stack.proxy = proxy;
    activeStacks.add(stack);
    let t = Date.now();
    await Promise.all([stack.startPostgres(), stack.startTemporal()]);
    log(`PostgreSQL and Temporal up in ${elapsed(t)}`);
    t = Date.now();
    await stack.migrate();
    log(`migrations applied in ${elapsed(t)}`);
    t = Date.now();
    await Promise.all([...stack.workers.map((_, i) => stack.startWorker(i)), ...stack.apis.map((_, i) => stack.startApi(i))]);
    log(`${replicas > 1 ? `${replicas} workers and ${replicas} API processes (behind a round-robin proxy)` : 'worker and API'} up in ${elapsed(t)}`);
    return stack;
  }

  // ---- PostgreSQL --------------------------------------------------------------------------

  async startPostgres(): Promise<void> {
    // A start right after an immediate shutdown can race the last backends leaving: retry.
    for (let attempt = 1; ; attempt++) {
      try {
        this.postgres = await startEmbeddedPostgres({ dataDir: this.options.dataDir, port: this.ports.postgres });
        this.databaseUrl = this.postgres.url;
        return;
      } catch (err) {
        if (attempt >= 5) throw new Error(`PostgreSQL did not start: ${String(err)}`);
        await sleep(1000);
      }
    }
  }

  /** `fast`: SIGINT (what `stop()` sends); `immediate`: SIGQUIT, a crash as far as the data goes. */
  async stopPostgres(mode: 'fast' | 'immediate'): Promise<void> {
    const pg = this.postgres;
    this.postgres = undefined;
    if (mode === 'fast' && pg) {
      await Promise.race([pg.stop(), sleep(30_000)]);
    }
    const pid = this.postmasterPid();
    if (pid !== undefined) {
      signalPid(pid, mode === 'fast' ? 'SIGINT' : 'SIGQUIT');
      const deadline = Date.now() + 30_000;
      while (alive(pid) && Date.now() < deadline) await sleep(100);
      if (alive(pid)) signalPid(pid, 'SIGKILL');
      while (alive(pid)) await sleep(100);
    }
  }

  private postmasterPid(): number | undefined {
    try {
      const pid = Number(fs.readFileSync(path.join(this.options.dataDir, 'postgres', 'postmaster.pid'), 'utf8').split('\n')[0]);
      return pid > 0 && alive(pid) ? pid : undefined;
    } catch {
      return undefined;
    }
  }

  // ---- Temporal ----------------------------------------------------------------------------

  async startTemporal(): Promise<void> {
    this.temporal.start();
    const deadline = Date.now() + 60_000;
    for (;;) {
      if (!this.temporal.running) throw new Error(`the Temporal dev server exited:\n${this.temporal.recentOutput.slice(-4000)}`);
      if (await this.temporalAnswers()) return;
      if (Date.now() > deadline) throw new Error(`the Temporal dev server is not ready:\n${this.temporal.recentOutput.slice(-4000)}`);
      await sleep(250);
    }
  }

  async stopTemporal(signal: NodeJS.Signals): Promise<void> {
    await this.temporal.stop(signal);
  }

  private async temporalAnswers(): Promise<boolean> {
    if (!(await tcpOpen(this.ports.temporal))) return false;
    let connection: Connection | undefined;
    try {
      connection = await Connection.connect({ address: this.temporalAddress, connectTimeout: 2000 });
      await connection.workflowService.describeNamespace({ namespace: 'default' });
      return true;
    } catch {
      return false;
    } finally {
      await connection?.close().catch(() => undefined);
    }
  }

  // ---- migrations, worker, API ---------------------------------------------------------------

  async migrate(): Promise<void> {
    const env = { ...cleanEnv(), DATABASE_URL: this.databaseUrl, LOG_LEVEL: 'warn' };
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/db/migrate.ts'], { cwd: this.options.codeRoot, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d) => (output += String(d)));
    child.stderr.on('data', (d) => (output += String(d)));
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    if (code !== 0) throw new Error(`migrations failed (exit ${code}):\n${output}`);
  }

  async startWorker(index = 0): Promise<void> {
    const worker = this.workers[index]!;
    worker.start();
    await worker.waitFor(/worker started/, 120_000);
  }

  async killWorker(index = 0): Promise<void> {
    await this.workers[index]!.stop('SIGKILL');
  }

  async startApi(index = 0): Promise<void> {
    const api = this.apis[index]!;
    api.start();
    const deadline = Date.now() + 120_000;
    for (;;) {
      if (!api.running) throw new Error(`${api.name} exited:\n${api.recentOutput.slice(-4000)}`);
      try {
        // The process itself, not the proxy (which would answer through another replica).
        const res = await fetch(`http://127.0.0.1:${this.ports.apis[index]}/healthz`);
        if (res.status === 200) return;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) throw new Error(`${api.name} is not ready:\n${api.recentOutput.slice(-4000)}`);
      await sleep(100);
    }
  }

  async killApi(index = 0): Promise<void> {
    await this.apis[index]!.stop('SIGKILL');
  }

  /** Which processes are up (the end check requires all of them). */
  status(): Record<string, boolean> {
    const out: Record<string, boolean> = { postgres: this.postmasterPid() !== undefined, temporal: this.temporal.running };
    for (const m of [...this.workers, ...this.apis]) out[m.name] = m.running;
    return out;
  }

  /** Brings up whatever is down (after the faults, before the checks). */
  async ensureUp(): Promise<void> {
    if (this.postmasterPid() === undefined) await this.startPostgres();
    if (!this.temporal.running) await this.startTemporal();
    for (const [i, worker] of this.workers.entries()) if (!worker.running) await this.startWorker(i);
    for (const [i, api] of this.apis.entries()) if (!api.running) await this.startApi(i);
  }

  /** Stops everything, gently first (APIs, workers, Temporal, PostgreSQL), then by force. */
  async shutdown(): Promise<void> {
    activeStacks.delete(this);
    await Promise.all(this.apis.map((api) => api.stop('SIGTERM', 10_000).catch(() => undefined)));
    await this.proxy?.close().catch(() => undefined);
    await Promise.all(this.workers.map((worker) => worker.stop('SIGTERM', 10_000).catch(() => undefined)));
    await this.temporal.stop('SIGTERM', 10_000).catch(() => undefined);
    await this.stopPostgres('fast').catch(() => undefined);
  }

  /** Last resort on an abrupt exit: SIGKILL every group and the postmaster, synchronously. */
  killAllNow(): void {
    for (const m of [...this.apis, ...this.workers, this.temporal]) if (m.pid !== undefined) killGroup(m.pid, 'SIGKILL');
    const pid = this.postmasterPid();
    if (pid !== undefined) signalPid(pid, 'SIGQUIT');
  }
}

/** Stacks not shut down yet: killed synchronously if the process exits abruptly. */
export const activeStacks = new Set<ChaosStack>();

/** The parent's environment without any of tally's variables (each child gets exactly its own). */
function cleanEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const name of CONFIG_VARIABLES) delete env[name];
  delete env.NODE_OPTIONS;
  return env;
}

function elapsed(since: number): string {
  return `${((Date.now() - since) / 1000).toFixed(1)} s`;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function signalPid(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // gone
  }
}

function tcpOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
    socket.setTimeout(1000, () => {
      socket.destroy();
      resolve(false);
    });
  });
}
