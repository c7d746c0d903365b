import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startEmbeddedPostgres } from '../../src/platform/postgres';
import { startTemporalDevServer } from '../../src/platform/temporal-server';
import { createDb, migrateLatest } from '../../src/db/knex';
import { freePort, freePorts } from '../../src/platform/free-port';
import { buildWorkflowBundle } from './workflow-bundle';

/** Where the running test stack is described for the test files and the tear-down. */
export const STACK_FILE = path.resolve(__dirname, '../../.test-stack/stack.json');


declare global {
  var __TALLY_STACK_STOP__: (() => Promise<void>) | undefined;
}

/**
 * Starts the servers once per test run: a real PostgreSQL (embedded, or DATABASE_URL) and a real
 * Temporal dev server. Test files read their addresses from the environment.
 */
export default async function globalSetup(): Promise<void> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tally-test-'));
  const stops: Array<() => Promise<void>> = [];
  // Built once for the run while the servers start (webpack spends about 3 s of CPU on it), then
  // read by every test file: on two cores, a build in each file cost the run about half a minute.
  const bundlePath = path.join(dataDir, 'workflow-bundle.js');
  const bundled = buildWorkflowBundle().then((code) => fs.writeFileSync(bundlePath, code));

  let databaseUrl = process.env.DATABASE_URL;
  if (!databaseUrl) {
    const pg = await startEmbeddedPostgres({ dataDir, port: await freePort() });
    stops.push(pg.stop);
    databaseUrl = pg.url;
  }
  const db = createDb(databaseUrl);
  await migrateLatest(db);
  await db.destroy();

  const [temporalPort, uiPort] = await freePorts(2);
  const temporal = await startTemporalDevServer({ dataDir, port: temporalPort, uiPort, namespace: 'default', logLevel: 'never' });
  stops.push(temporal.stop);

  // The SDK's core panics in a background task when a local activity's 30 s timeout fires after
  // its worker has stopped (a test stopped its worker sooner after a claim that failed, or that it
  // held in flight); the tests go on. Where RUST_BACKTRACE is set, each such panic would also print
  // a backtrace into the run's output.
  process.env.RUST_BACKTRACE = '0';
  process.env.TALLY_TEST_DATABASE_URL = databaseUrl;
  process.env.TALLY_TEST_TEMPORAL_ADDRESS = temporal.address;
  await bundled;
  process.env.TALLY_TEST_WORKFLOW_BUNDLE = bundlePath;
  fs.mkdirSync(path.dirname(STACK_FILE), { recursive: true });
  fs.writeFileSync(STACK_FILE, JSON.stringify({ databaseUrl, temporalAddress: temporal.address, dataDir, pid: process.pid }, null, 2));

  globalThis.__TALLY_STACK_STOP__ = async () => {
    for (const stop of stops.reverse()) await stop().catch(() => undefined);
    fs.rmSync(dataDir, { recursive: true, force: true });
    fs.rmSync(STACK_FILE, { force: true });
  };
}
