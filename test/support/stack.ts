import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import knex from 'knex';
import { Runtime, DefaultLogger, LogTimestamp, NativeConnection, type LogEntry, type WorkflowBundle } from '@temporalio/worker';
import { Client, Connection } from '@temporalio/client';
import { createDb, migrateLatest, type Db } from '../../src/db/knex';
import { logger as appLogger } from '../../src/logger';
import { freePort } from '../../src/platform/free-port';
import { VERBOSE } from './report';
import { buildWorkflowBundle } from './workflow-bundle';
import type { WebhookTargetPolicy } from '../../src/notifications/webhook-targets';

/** The PostgreSQL of this test run (started by the global set-up). */
export function testDatabaseUrl(): string {
  const url = process.env.TALLY_TEST_DATABASE_URL;
  if (!url) throw new Error('TALLY_TEST_DATABASE_URL is unset: run integration tests through jest (global set-up)');
  return url;
}

/** The Temporal dev server of this test run. */
export function testTemporalAddress(): string {
  const address = process.env.TALLY_TEST_TEMPORAL_ADDRESS;
  if (!address) throw new Error('TALLY_TEST_TEMPORAL_ADDRESS is unset: run integration tests through jest (global set-up)');
  return address;
}

/** A pool on the test database. */
export function testDb(): Db {
  return createDb(testDatabaseUrl(), { max: 5 });
}

/**
 * A test file's own pool on the test database, closed after its last test. Knex connects lazily,
 * so the pool can be made when the file loads: `const db = testDbForFile();`.
 */
export function testDbForFile(): Db {
  const db = testDb();
  afterAll(() => db.destroy());
  return db;
}

/**
 * A migrated database of its own on the test run's PostgreSQL, for a file that reads or digests
 * whole tables: what other files write at the same time never shows in it. `drop` removes it.
 */
export async function createOwnTestDatabase(prefix: string): Promise<{ url: string; drop(): Promise<void> }> {
  const name = unique(prefix).toLowerCase();
  const server = createDb(testDatabaseUrl(), { max: 1 });
  await server.raw(`CREATE DATABASE "${name}"`);
  const url = new URL(testDatabaseUrl());
  url.pathname = `/${name}`;
  const own = createDb(url.toString(), { max: 1 });
  await migrateLatest(own);
  await own.destroy();
  return {
    url: url.toString(),
    async drop() {
      await server.raw(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
      await server.destroy();
    },
  };
}

/**
 * A pool on a loopback port nothing listens on: every query fails with ECONNREFUSED. Tests use
 * it to take PostgreSQL away on purpose, so knex's "Acquire connection error" lines are dropped.
 */
export async function unreachableDb(): Promise<Db> {
  const quiet = () => undefined;
  const url = `postgres://tally:tally@127.0.0.1:${await freePort()}/tally`;
  return knex({ client: 'pg', connection: url, pool: { min: 0, max: 2 }, log: { warn: quiet, error: quiet } });
}

/** A unique suffix, so tests share one database without seeing each other's rows. */
export function unique(prefix: string): string {
  return `${prefix}_${randomBytes(4).toString('hex')}`;
}

/**
 * The tests' webhook receivers listen on 127.0.0.1 over plain http, which the default policy
 * refuses: every harness opts in explicitly, as a developer would with WEBHOOK_ALLOW_PRIVATE_TARGETS.
 */
export const LOCAL_WEBHOOK_TARGETS: WebhookTargetPolicy = { allowPrivateTargets: true, httpAllowedHosts: ['127.0.0.1', 'localhost'] };

/** A quiet logger for activities under test. */
export const quietLogger = appLogger.child({ test: true });
quietLogger.level = process.env.TEST_LOG_LEVEL ?? 'silent';

/**
 * The Temporal SDK's log, in tests: its errors, except the workflows' own (such as an alert given
 * up after a receiver failed on purpose). Its warnings are mostly about failures tests inject (an
 * activity attempt while PostgreSQL is away, a workflow task slowed by a local activity's retries)
 * and show under TEST_VERBOSE=1, with the workflows' logs. Core's logs are forwarded to this
 * logger, so the one rule covers them too.
 */
const stderrLogger = new DefaultLogger('WARN');
const sdkLogger = new DefaultLogger(VERBOSE ? 'WARN' : 'ERROR', (entry: LogEntry) => {
  const component = entry.meta?.sdkComponent;
  if (!VERBOSE && (component === 'workflow' || component === 'activity')) return;
  stderrLogger.log(entry.level, entry.message, { ...entry.meta, [LogTimestamp]: entry.timestampNanos });
});

let runtimeInstalled = false;
/** Installs the SDK runtime with that quiet logger, once per test process. */
export function installQuietRuntime(): void {
  if (runtimeInstalled) return;
  runtimeInstalled = true;
  try {
    Runtime.install({ logger: sdkLogger, telemetryOptions: { logging: { filter: { core: 'WARN', other: 'ERROR' }, forward: {} } } });
  } catch {
    // already installed by another test file in this process
  }
}

let bundle: Promise<WorkflowBundle> | undefined;
/** The workflow bundle: the global set-up's build, or a build of this file's own outside jest. */
export function workflowBundle(): Promise<WorkflowBundle> {
  const built = process.env.TALLY_TEST_WORKFLOW_BUNDLE;
  bundle ??= built ? fs.promises.readFile(built, 'utf8').then((code) => ({ code })) : buildWorkflowBundle().then((code) => ({ code }));
  return bundle;
}

/** A client and a worker connection to the test run's dev server. */
export async function connectToTestTemporal(): Promise<{ client: Client; connection: Connection; nativeConnection: NativeConnection }> {
  installQuietRuntime();
  const address = testTemporalAddress();
  const connection = await Connection.connect({ address });
  const nativeConnection = await NativeConnection.connect({ address });
  return { client: new Client({ connection }), connection, nativeConnection };
}
