import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { Client, Connection } from '@temporalio/client';
import pg from 'pg';
import { freePort } from '../../src/platform/free-port';
import { tenantWorkflowId, usageQuery } from '../../src/workflows/messages';
import { report } from '../support/report';

/**
 * Smoke test of the product as a user runs it: `npm start` on an empty DATA_DIR (Temporal dev
 * server + Web UI, embedded PostgreSQL, migrations, worker, API), a plan and a tenant through the
 * HTTP API, a stop, a restart on the same DATA_DIR (the tenant, its workflow, its usage and the
 * admin key survive) and a second stop. After each stop no process of the stack may be left.
 * Last, a start whose API port is taken must say why, stop what it launched and exit 1, so a
 * supervisor sees the failure.
 *
 * How the stack is stopped, and why:
 * - First run: `npm start`, stopped with SIGINT to its whole process group, which is exactly what
 *   Ctrl+C in a terminal does. A SIGINT/SIGTERM to the npm PID alone does NOT work: npm forwards it
 *   to `sh -c "tsx src/main.ts"` (dash), which does not pass it on, so on SIGINT nothing stops and
 *   on SIGTERM npm and sh exit while tsx, the app, the Temporal dev server and PostgreSQL keep
 *   running as orphans. That is a defect of the `start` script, not something a test can work around.
 * - Second run: `tsx src/main.ts` spawned directly (the Temporal binaries were resolved by the
 *   first run's `prestart`), stopped with SIGTERM to that one PID only, as `kill <pid>`,
 *   `docker stop` or a supervisor would. Nothing else receives the signal here, so this run checks
 *   that the app itself stops the Temporal dev server and PostgreSQL it launched.
 */

const ROOT = path.resolve(__dirname, '../..');
const READY_TIMEOUT_MS = 90_000;
const STOP_TIMEOUT_MS = 30_000;
const LEFTOVER_GRACE_MS = 10_000;
const LOG_LIMIT = 2_000_000;

jest.setTimeout(240_000);

interface Ports {
  api: number;
  temporal: number;
  ui: number;
  postgres: number;
}

/** One launch of the whole stack as a child process group. */
interface Launch {
  label: string;
  child: ChildProcess;
  /** The process group (= the child's PID: `detached` makes it a session and group leader). */
  pgid: number;
  ports: Ports;
  startedAt: number;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  log: () => string;
}

let dataDir: string | undefined;
const launches: Launch[] = [];
let connection: Connection | undefined;

async function pickPorts(): Promise<Ports> {
  const ports: number[] = [];
  while (ports.length < 4) {
    const port = await freePort();
    if (!ports.includes(port)) ports.push(port);
  }
  const [api, temporal, ui, postgres] = ports as [number, number, number, number];
  return { api, temporal, ui, postgres };
}

function launch(label: string, command: string, args: string[], dir: string, ports: Ports): Launch {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    PORT: String(ports.api),
    TEMPORAL_PORT: String(ports.temporal),
    TEMPORAL_UI_PORT: String(ports.ui),
    POSTGRES_PORT: String(ports.postgres),
    DATA_DIR: dir,
  };
  // Embedded mode: no external servers, the default host, and the admin key generated under DATA_DIR.
  for (const name of ['TEMPORAL_ADDRESS', 'DATABASE_URL', 'BILLING_ADMIN_KEY', 'HOST']) delete env[name];

  const startedAt = Date.now();
  const child = spawn(command, args, { cwd: ROOT, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const append = (chunk: Buffer) => {
    output += chunk.toString('utf8');
    if (output.length > LOG_LIMIT) output = output.slice(-LOG_LIMIT / 2);
  };
  child.stdout?.on('data', append);
  child.stderr?.on('data', append);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
    child.once('error', (err) => {
      append(Buffer.from(`\n[smoke] spawn error: ${err.message}\n`));
      resolve({ code: null, signal: null });
    });
  });
  if (child.pid === undefined) throw new Error(`${label}: could not spawn ${command}`);
  const started: Launch = { label, child, pgid: child.pid, ports, startedAt, exited, log: () => output };
  launches.push(started);
  return started;
}

function isRunning(l: Launch): boolean {
  return l.child.exitCode === null && l.child.signalCode === null;
}

/** An assertion failure carrying the tail of the stack's output, which is what one needs to debug it. */
function failure(l: Launch, message: string): Error {
  const tail = l.log().slice(-6_000);
  return new Error(`${l.label}: ${message}\n--- last output of the stack ---\n${tail}\n--- end ---`);
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function httpStatus(url: string): Promise<number | string> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(5_000) });
    await res.arrayBuffer();
    return res.status;
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  }
}

/** Waits for `GET /readyz` to answer 200 and the banner to be printed; returns the admin key. */
async function waitUntilReady(l: Launch): Promise<{ adminKey: string; readyMs: number }> {
  const deadline = l.startedAt + READY_TIMEOUT_MS;
  let last: number | string = 'not tried';
  let readyMs: number | undefined;
  for (;;) {
    if (!isRunning(l)) throw failure(l, `exited before it was ready (exit code ${l.child.exitCode}, signal ${l.child.signalCode})`);
    if (readyMs === undefined) {
      last = await httpStatus(`http://127.0.0.1:${l.ports.api}/readyz`);
      if (last === 200) readyMs = Date.now() - l.startedAt;
    }
    // The banner is printed just after the API starts listening: give it the same deadline.
    const key = /tally is running[\s\S]*?Admin key:\s+(\S+)/.exec(l.log())?.[1];
    if (readyMs !== undefined && key) return { adminKey: key, readyMs };
    if (Date.now() > deadline) {
      throw failure(l, `not ready within ${READY_TIMEOUT_MS} ms (last /readyz: ${last}; banner ${key ? 'seen' : 'not seen'})`);
    }
    await sleep(250);
  }
}

interface ApiResponse {
  status: number;
  body: any;
}

async function api(l: Launch, key: string, method: string, urlPath: string, body?: unknown): Promise<ApiResponse> {
  const headers: Record<string, string> = { 'x-api-key': key };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(`http://127.0.0.1:${l.ports.api}${urlPath}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(15_000),
  });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    // not JSON: keep the text for the failure message
  }
  return { status: res.status, body: parsed };
}

async function expectStatus(l: Launch, res: ApiResponse, status: number, what: string): Promise<any> {
  if (res.status !== status) throw failure(l, `${what}: expected HTTP ${status}, got ${res.status} ${JSON.stringify(res.body)}`);
  return res.body;
}

/** Polls until `check` returns a value, or fails with `what` after `timeoutMs`. */
async function eventually<T>(l: Launch, what: string, timeoutMs: number, check: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      const why = lastError instanceof Error ? ` (last error: ${lastError.message})` : '';
      throw failure(l, `${what}: not within ${timeoutMs} ms${why}`);
    }
    await sleep(250);
  }
}

interface ProcInfo {
  pid: number;
  state: string;
  pgrp: number;
  cmd: string;
}

/** Every process on the machine, read from /proc (no pgrep/ps needed). */
function listProcesses(): ProcInfo[] {
  const result: ProcInfo[] = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${name}/stat`, 'utf8');
      // "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses, so split after the last ')'.
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const cmdline = fs.readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0').join(' ').trim();
      const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      result.push({ pid: Number(name), state: fields[0] ?? '?', pgrp: Number(fields[2]), cmd: cmdline || `[${comm}]` });
    } catch {
      // the process ended while we looked
    }
  }
  return result;
}

/**
 * The processes of a stack that are still alive: anything in the launch's process group, or whose
 * command line names the DATA_DIR (the Temporal dev server and postgres have it in their
 * arguments, and would keep it if they escaped the group). Zombies have already exited and only
 * wait to be reaped by init, so they do not count.
 */
function stackProcesses(pgids: number[], dir: string): ProcInfo[] {
  return listProcesses().filter(
    (p) => p.pid !== process.pid && (pgids.includes(p.pgrp) || p.cmd.includes(dir)) && p.state !== 'Z' && p.state !== 'X',
  );
}

function describeProcesses(list: ProcInfo[]): string {
  return list.map((p) => `  pid ${p.pid} pgrp ${p.pgrp} state ${p.state}: ${p.cmd.slice(0, 200)}`).join('\n');
}

/** Sends `signal` (to the group or to the one PID), waits for the exit, then for every process of the stack to be gone. */
async function stopAndCheck(l: Launch, dir: string, signal: NodeJS.Signals, target: 'group' | 'pid'): Promise<void> {
  const sentAt = Date.now();
  process.kill(target === 'group' ? -l.pgid : l.pgid, signal);
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), STOP_TIMEOUT_MS);
  });
  const exit = await Promise.race([l.exited, timeout]);
  clearTimeout(timer);
  if (!exit) {
    throw failure(l, `still running ${STOP_TIMEOUT_MS} ms after ${signal} to the ${target}:\n${describeProcesses(stackProcesses([l.pgid], dir))}`);
  }
  let left = stackProcesses([l.pgid], dir);
  const graceUntil = Date.now() + LEFTOVER_GRACE_MS;
  while (left.length > 0 && Date.now() < graceUntil) {
    await sleep(200);
    left = stackProcesses([l.pgid], dir);
  }
  report(`${l.label}: ${signal} to the ${target} -> exit code ${exit.code}, signal ${exit.signal}, stopped in ${Date.now() - sentAt} ms`);
  if (left.length > 0) {
    throw failure(l, `processes left ${LEFTOVER_GRACE_MS} ms after the stack exited:\n${describeProcesses(left)}`);
  }
}

afterAll(async () => {
  await connection?.close().catch(() => undefined);
  // Last resort after a failed step: kill every group we started, and anything still using DATA_DIR.
  const pgids = launches.map((l) => l.pgid);
  if (dataDir) {
    const left = stackProcesses(pgids, dataDir);
    for (const l of launches) {
      try {
        process.kill(-l.pgid, 'SIGKILL');
      } catch {
        // the group is already gone
      }
    }
    for (const p of left) {
      try {
        process.kill(p.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    if (left.length > 0) await sleep(500);
    fs.rmSync(dataDir, { recursive: true, force: true, maxRetries: 3 });
  }
});

test('npm start: cold start, a tenant, stop, restart on the same DATA_DIR, stop; nothing left behind', async () => {
  const testStartedAt = Date.now();
  // mkdtemp makes the directory 0700; as root, src/platform/postgres.ts opens it to 0755 for the
  // `postgres` user (os.tmpdir() itself is world-traversable).
  dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tally-smoke-'));
  const dir = dataDir;

  // ---- 1. first start: an empty DATA_DIR, exactly `npm start` --------------------------------
  const first = launch('first npm start', 'npm', ['start'], dir, await pickPorts());
  const ready1 = await waitUntilReady(first);
  report(`cold start to /readyz: ${ready1.readyMs} ms`);
  const adminKey = ready1.adminKey;
  expect(adminKey).toMatch(/^ak_/);
  expect(fs.readFileSync(path.join(dir, 'admin-key'), 'utf8').trim()).toBe(adminKey);

  // The Temporal CLI prints a `Temporal UI:` line of its own: read tally's banner.
  const uiUrl = /tally is running[\s\S]*?Temporal UI:\s+(\S+)/.exec(first.log())?.[1];
  expect(uiUrl).toBe(`http://127.0.0.1:${first.ports.ui}`);
  await eventually(first, 'Temporal Web UI answers 200', 30_000, async () =>
    (await httpStatus(`http://127.0.0.1:${first.ports.ui}/`)) === 200 ? true : undefined,
  );

  // ---- 2. a plan and a tenant through the API ------------------------------------------------
  const suffix = randomBytes(4).toString('hex');
  const planId = `smoke_plan_${suffix}`;
  const tenantId = `smoke_tenant_${suffix}`;
  const plan = await expectStatus(
    first,
    await api(first, adminKey, 'POST', '/v1/plans', {
      id: planId,
      name: 'Smoke plan',
      currency: 'USD',
      interval: 'month',
      base_fee: '10.00',
      meters: [{ metric: 'api_calls', aggregation: 'sum', limit: 1000, pricing: { model: 'per_unit', unit_price: '0.01' } }],
    }),
    201,
    'POST /v1/plans',
  );
  expect(plan.id).toBe(planId);
  const tenant = await expectStatus(
    first,
    await api(first, adminKey, 'POST', '/v1/tenants', { id: tenantId, name: 'Smoke Tenant', plan_id: planId }),
    201,
    'POST /v1/tenants',
  );
  expect(tenant).toMatchObject({ id: tenantId, plan_id: planId, workflow_id: tenantWorkflowId(tenantId) });
  const got = await expectStatus(first, await api(first, adminKey, 'GET', `/v1/tenants/${tenantId}`), 200, 'GET /v1/tenants/{id}');
  expect(got).toMatchObject({ id: tenantId, plan_id: planId });

  // Some usage, so the restart has state to keep; wait until the workflow has counted it.
  await expectStatus(
    first,
    await api(first, adminKey, 'POST', '/v1/events', { events: [{ id: `ev_${suffix}`, tenant_id: tenantId, metric: 'api_calls', quantity: 7 }] }),
    202,
    'POST /v1/events',
  );
  await eventually(first, 'usage counts the event', 30_000, async () => {
    const res = await api(first, adminKey, 'GET', `/v1/tenants/${tenantId}/usage?consistent=true`);
    return res.status === 200 && res.body.metrics?.api_calls?.used === 7 ? true : undefined;
  });

  // PostgreSQL answers on 127.0.0.1 for other tools; tally's own connections come through its
  // Unix socket (no client address), the cheaper round trip (src/platform/postgres.ts).
  const outside = new pg.Client({ connectionString: `postgres://tally:tally@127.0.0.1:${first.ports.postgres}/tally` });
  await outside.connect();
  try {
    const { rows } = await outside.query<{ socket: number; tcp: number }>(
      `SELECT count(*) FILTER (WHERE client_addr IS NULL)::int AS socket, count(*) FILTER (WHERE client_addr IS NOT NULL)::int AS tcp
         FROM pg_stat_activity WHERE datname = 'tally' AND backend_type = 'client backend' AND pid <> pg_backend_pid()`,
    );
    expect(rows[0]!.socket).toBeGreaterThan(0);
    expect(rows[0]!.tcp).toBe(0);
  } finally {
    await outside.end();
  }

  connection = await Connection.connect({ address: `127.0.0.1:${first.ports.temporal}` });
  const handle1 = new Client({ connection, namespace: 'default' }).workflow.getHandle(tenantWorkflowId(tenantId));
  expect((await handle1.describe()).status.name).toBe('RUNNING');
  await connection.close();
  connection = undefined;

  // ---- 3. stop with Ctrl+C (SIGINT to the process group): nothing may be left -----------------
  await stopAndCheck(first, dir, 'SIGINT', 'group');

  // ---- 4. restart on the same DATA_DIR, app process launched directly (see the header) --------
  const second = launch('restart (tsx src/main.ts)', path.join(ROOT, 'node_modules/.bin/tsx'), ['src/main.ts'], dir, await pickPorts());
  const ready2 = await waitUntilReady(second);
  report(`restart on the same DATA_DIR to /readyz: ${ready2.readyMs} ms`);
  expect(ready2.adminKey).toBe(adminKey);

  const again = await expectStatus(second, await api(second, adminKey, 'GET', `/v1/tenants/${tenantId}`), 200, 'GET /v1/tenants/{id} after restart');
  expect(again).toMatchObject({ id: tenantId, plan_id: planId });

  connection = await Connection.connect({ address: `127.0.0.1:${second.ports.temporal}` });
  const handle2 = new Client({ connection, namespace: 'default' }).workflow.getHandle(tenantWorkflowId(tenantId));
  expect((await handle2.describe()).status.name).toBe('RUNNING');
  // The query needs the restarted worker to replay the workflow: allow it a few attempts.
  const usage = await eventually(second, 'the usage query answers', 30_000, () => handle2.query(usageQuery));
  expect(usage.tenant_id).toBe(tenantId);
  expect(usage.plan_id).toBe(planId);
  expect(usage.metrics.api_calls?.used).toBe(7);
  await connection.close();
  connection = undefined;

  // ---- 5. stop with SIGTERM to the app's PID only: nothing may be left ------------------------
  await stopAndCheck(second, dir, 'SIGTERM', 'pid');
  expect(stackProcesses([first.pgid, second.pgid], dir)).toEqual([]);

  // ---- 6. the API's port taken: tally says why, stops what it started, and exits 1 ----------
  const taken = net.createServer();
  const ports = await pickPorts();
  await new Promise<void>((resolve) => taken.listen(ports.api, '0.0.0.0', resolve));
  try {
    const third = launch('start with the API port taken', path.join(ROOT, 'node_modules/.bin/tsx'), ['src/main.ts'], dir, ports);
    const exit = await third.exited;
    expect(exit).toEqual({ code: 1, signal: null });
    expect(third.log()).toContain('EADDRINUSE');
    await eventually(third, 'nothing left running', LEFTOVER_GRACE_MS, async () => (stackProcesses([third.pgid], dir).length === 0 ? true : undefined));
  } finally {
    await new Promise((resolve) => taken.close(resolve));
  }

  report(`smoke test (two starts, two stops) took ${Date.now() - testStartedAt} ms`);
});
