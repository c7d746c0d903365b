import path from 'node:path';
import knex, { type Knex } from 'knex';
import pg from 'pg';

// PostgreSQL `numeric` and `bigint` stay strings (exact); timestamps come back as Date.
pg.types.setTypeParser(pg.types.builtins.NUMERIC, (v) => v);
pg.types.setTypeParser(pg.types.builtins.INT8, (v) => v);

/** The project's knex handle: a pool of connections. */
export type Db = Knex;

/** Where the migrations live, for the migrate script, the tests and `npm start`. */
export const MIGRATIONS_DIR = path.resolve(__dirname, '../../migrations');

/** Opens a pool on `DATABASE_URL`; the pool is small because the work is short transactions. */
export function createDb(databaseUrl: string, pool: { min?: number; max?: number } = {}): Db {
  return knex({
    client: 'pg',
    connection: databaseUrl,
    pool: { min: pool.min ?? 0, max: pool.max ?? 10 },
    migrations: { directory: MIGRATIONS_DIR, loadExtensions: ['.ts'], tableName: 'knex_migrations' },
  });
}

/**
 * The pools of one process, one per kind of work, so no kind waits for another's connections:
 * ingest transactions, everything else the API does, and the worker's activities (claims among
 * them). `npm start` runs all three in one process; `npm run api` and `npm run worker` open theirs.
 *
 * Ingest's is also the number of its transactions at once (group commit, src/api/ingest-queue.ts).
 * Fewer and fuller transactions cost less CPU per request than more and emptier ones: with 4
 * instead of 8, the 2-core bench machine acknowledged more in both load shapes (BENCHMARKS.md,
 * session 11). Fewer than 4 measured faster still, but would leave ingest to a couple of
 * transactions when closes hold some tenants' ledger locks.
 */
export const POOLS = { api: 10, ingest: 4, worker: 10 } as const;

/** Brings the schema to the latest migration; safe to run on every start. */
export async function migrateLatest(db: Db): Promise<string[]> {
  const [, applied] = (await db.migrate.latest()) as [number, string[]];
  return applied;
}

/** True when PostgreSQL answers a trivial query (readiness). */
export async function pingDb(db: Db): Promise<boolean> {
  try {
    await db.raw('select 1');
    return true;
  } catch {
    return false;
  }
}

/**
 * Runs `read` in one REPEATABLE READ, read-only snapshot, so reads that add figures from several
 * tables see them as of one commit (a finalization that moves credit from the balance to an
 * invoice between two of them would otherwise be counted twice). Inside a transaction already,
 * `read` runs in it.
 */
export function inOneSnapshot<T>(db: Db | Knex.Transaction, read: (trx: Knex.Transaction) => Promise<T>): Promise<T> {
  if (db.isTransaction) return read(db as Knex.Transaction);
  return db.transaction(read, { isolationLevel: 'repeatable read', readOnly: true });
}
