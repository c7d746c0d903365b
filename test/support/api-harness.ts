import { Worker } from '@temporalio/worker';
import type { Client, Connection } from '@temporalio/client';
import type { NativeConnection } from '@temporalio/worker';
import { closeGracefully, createApp } from '../../src/api/app';
import { listen, type RunningServer } from '../../src/api/server';
import { startTenantKeyCache } from '../../src/api/tenant-key-cache';
import { createActivities, type BillingActivities } from '../../src/activities';
import { createNotifier, type NotifierOptions } from '../../src/notifications/notifier';
import { createDb, type Db } from '../../src/db/knex';
import { startFiguresRefresher } from '../../src/workers/figures-refresher';
import { startBulkCounter } from '../../src/workers/bulk-counter';
import { LOCAL_WEBHOOK_TARGETS, connectToTestTemporal, createOwnTestDatabase, quietLogger, testDb, unique, workflowBundle } from './stack';

/** The whole system under test: real HTTP API, real worker, real Temporal, real PostgreSQL. */
export interface ApiHarness {
  baseUrl: string;
  adminKey: string;
  db: Db;
  client: Client;
  taskQueue: string;
  /** Calls the API; JSON in, JSON out. */
  call(method: string, path: string, options?: { key?: string | null; body?: unknown; raw?: string }): Promise<{ status: number; body: any; headers: Headers }>;
  stop(): Promise<void>;
}

/**
 * Starts a worker on its own task queue and the API on a free port, against the test stack. The
 * worker's notifier is the real one (webhooks over HTTP; emails recorded unless `smtpUrl`).
 * `ownDatabase`: on a migrated database of its own, for a file that reads whole tables.
 */
export async function startApiHarness(
  options: {
    notifier?: Omit<NotifierOptions, 'logger'>;
    countingIntervalMs?: number;
    ownDatabase?: boolean;
    /** Wraps the worker's real activities (a test that holds one back to open a race). */
    wrapActivities?: (activities: BillingActivities) => BillingActivities;
  } = {},
): Promise<ApiHarness> {
  const own = options.ownDatabase ? await createOwnTestDatabase('tally_own') : undefined;
  const db = own ? createDb(own.url, { max: 5 }) : testDb();
  const temporal: { client: Client; connection: Connection; nativeConnection: NativeConnection } = await connectToTestTemporal();
  const taskQueue = unique('billing');
  const worker = await Worker.create({
    connection: temporal.nativeConnection,
    taskQueue,
    workflowBundle: await workflowBundle(),
    activities: (options.wrapActivities ?? ((a) => a))(
      createActivities({ db, logger: quietLogger, notifier: createNotifier({ logger: quietLogger, webhookTargets: LOCAL_WEBHOOK_TARGETS, ...options.notifier }), temporal: temporal.client }),
    ),
  });
  const workerRun = worker.run();
  const stopRefresher = startFiguresRefresher({ db, logger: quietLogger, intervalMs: 200 });
  // Counts and rings only the tenants created through this harness: other test files' tenants
  // share the database, and some of them count by hand.
  const ownTenants = new Set<string>();
  const stopCounter = startBulkCounter({ db, temporal: temporal.client, taskQueue, logger: quietLogger, intervalMs: options.countingIntervalMs ?? 100, scope: (id) => ownTenants.has(id) });
  const adminKey = 'test-admin-key-0123456789abcdef';
  // As serveApi runs it: tenant keys cached, forgotten as they are revoked.
  const tenantKeys = startTenantKeyCache(db, quietLogger);
  const app = createApp({ db, temporal: temporal.client, taskQueue, namespace: 'default', adminKey, logger: quietLogger, webhookTargets: LOCAL_WEBHOOK_TARGETS, tenantKeys: tenantKeys.cache });
  const server: RunningServer = await listen(app, 0, '127.0.0.1');
  const baseUrl = `http://127.0.0.1:${server.port}`;

  return {
    baseUrl,
    adminKey,
    db,
    client: temporal.client,
    taskQueue,
    async call(method, path, options = {}) {
      const key = options.key === undefined ? adminKey : options.key;
      const headers: Record<string, string> = {};
      if (key) headers['x-api-key'] = key;
      let body: string | undefined;
      if (options.raw !== undefined) body = options.raw;
      else if (options.body !== undefined) body = JSON.stringify(options.body);
      if (body !== undefined) headers['content-type'] = 'application/json';
      const res = await fetch(`${baseUrl}${path}`, { method, headers, body });
      const text = await res.text();
      let parsed: unknown = text;
      try {
        parsed = text ? JSON.parse(text) : undefined;
      } catch {
        // not JSON (e.g. a PDF): keep the text
      }
      if (method === 'POST' && path === '/v1/tenants' && res.status === 201) ownTenants.add((parsed as { id: string }).id);
      return { status: res.status, body: parsed, headers: res.headers };
    },
    async stop() {
      // Graceful: requests in flight finish, then the counter's round and rings end.
      await closeGracefully(app, server);
      await tenantKeys.stop();
      await stopCounter();
      await stopRefresher();
      worker.shutdown();
      await workerRun;
      await temporal.connection.close();
      await temporal.nativeConnection.close();
      await db.destroy();
      await own?.drop();
    },
  };
}

/** One answer of `ApiHarness.call`. */
export type ApiAnswer = Awaited<ReturnType<ApiHarness['call']>>;

/** A problem answer (`application/problem+json`) with this status and stable `code`, every member present. */
export function expectProblem(res: ApiAnswer, status: number, code: string): void {
  expect({ status: res.status, code: res.body?.code }).toEqual({ status, code });
  expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
  expect(res.body).toMatchObject({ type: expect.any(String), title: expect.any(String), status, detail: expect.any(String), code });
}

/** Polls until `check` returns a value (not undefined) or the time is up. */
export async function eventually<T>(check: () => Promise<T | undefined>, timeoutMs = 20_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Every row of a paginated admin listing, page by page (`path` carries its own query). Keyset
 * pagination finds a row whose sort key holds still even while other files add rows beside it.
 */
export async function everyRow(api: Pick<ApiHarness, 'call'>, path: string): Promise<any[]> {
  const rows: any[] = [];
  let after: string | undefined;
  for (;;) {
    const res = await api.call('GET', `${path}${path.includes('?') ? '&' : '?'}limit=100${after ? `&starting_after=${encodeURIComponent(after)}` : ''}`);
    expect(res.status).toBe(200);
    rows.push(...res.body.data);
    if (!res.body.has_more) return rows;
    after = res.body.data[res.body.data.length - 1].id;
  }
}
