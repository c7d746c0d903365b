import { randomBytes } from 'node:crypto';
import { Runtime, DefaultLogger, NativeConnection, bundleWorkflowCode, type WorkflowBundleWithSourceMap } from '@temporalio/worker';
import { Client, Connection } from '@temporalio/client';
import { createDb, type Db } from '../../src/db/knex';
import { logger as appLogger } from '../../src/logger';
import { WORKFLOWS_PATH } from '../../src/workers/worker';

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

/** A unique suffix, so tests share one database without seeing each other's rows. */
export function unique(prefix: string): string {
  return `${prefix}_${randomBytes(4).toString('hex')}`;
}

/** A quiet logger for activities under test. */
export const quietLogger = appLogger.child({ test: true });
quietLogger.level = process.env.TEST_LOG_LEVEL ?? 'silent';

let runtimeInstalled = false;
/** Keeps the SDK's own logs at warnings, once per test process. */
export function installQuietRuntime(): void {
  if (runtimeInstalled) return;
  runtimeInstalled = true;
  try {
    Runtime.install({ logger: new DefaultLogger('WARN') });
  } catch {
    // already installed by another test file in this process
  }
}

let bundle: Promise<WorkflowBundleWithSourceMap> | undefined;
/** The workflow bundle, built once per test process (webpack takes about a second). */
export function workflowBundle(): Promise<WorkflowBundleWithSourceMap> {
  bundle ??= bundleWorkflowCode({ workflowsPath: WORKFLOWS_PATH, logger: new DefaultLogger('WARN') });
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
