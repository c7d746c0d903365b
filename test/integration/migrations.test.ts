import { randomBytes } from 'node:crypto';
import { createDb, migrateLatest, type Db } from '../../src/db/knex';
import { testDatabaseUrl } from '../support/stack';

/**
 * The schema's migrations are reversible: on a fresh database, every migration applies, rolls
 * back to nothing, and applies again. Money columns are exact numerics, never floats.
 */
let admin: Db;
let db: Db;
const database = `tally_migrations_${randomBytes(4).toString('hex')}`;

beforeAll(async () => {
  admin = createDb(testDatabaseUrl(), { max: 1 });
  await admin.raw(`CREATE DATABASE ${database}`);
  const url = new URL(testDatabaseUrl());
  url.pathname = `/${database}`;
  db = createDb(url.toString(), { max: 2 });
});

afterAll(async () => {
  await db?.destroy();
  await admin?.raw(`DROP DATABASE IF EXISTS ${database}`);
  await admin?.destroy();
});

async function tables(): Promise<string[]> {
  const rows = await db('information_schema.tables').where({ table_schema: 'public' }).select('table_name');
  return rows.map((r: { table_name: string }) => r.table_name).filter((t) => !t.startsWith('knex_')).sort();
}

test('every migration applies, rolls back completely and applies again', async () => {
  const applied = await migrateLatest(db);
  expect(applied.length).toBeGreaterThanOrEqual(1);
  const full = await tables();
  expect(full).toEqual(
    expect.arrayContaining(['plans', 'plan_versions', 'tenants', 'api_keys', 'periods', 'usage_events', 'invoices', 'invoice_lines', 'alerts', 'alert_rules', 'notification_deliveries']),
  );
  await db.migrate.rollback(undefined, true);
  expect(await tables()).toEqual([]);
  await migrateLatest(db);
  expect(await tables()).toEqual(full);
});

test('money and quantity columns are exact numerics', async () => {
  const columns = await db('information_schema.columns')
    .where({ table_schema: 'public' })
    .whereIn('column_name', ['base_fee', 'cost_limit', 'quantity', 'amount', 'subtotal', 'total', 'used', 'limit', 'threshold'])
    .select('table_name', 'column_name', 'data_type');
  expect(columns.length).toBeGreaterThan(8);
  for (const c of columns) expect(`${c.table_name}.${c.column_name}: ${c.data_type}`).toBe(`${c.table_name}.${c.column_name}: numeric`);
});

test('no index is a leading part of another on the same table: every stored row pays for each one', async () => {
  // Plain btree indexes (not unique, not partial), by their key columns; a direction (DESC) does
  // not matter, since PostgreSQL scans a btree either way.
  const { rows } = await db.raw<{ rows: Array<{ table: string; name: string; columns: string[] }> }>(
    `SELECT i.indrelid::regclass::text AS table, c.relname AS name,
            array(SELECT a.attname FROM unnest(i.indkey) WITH ORDINALITY k(attnum, n)
                    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum ORDER BY k.n)::text[] AS columns
       FROM pg_index i
       JOIN pg_class c ON c.oid = i.indexrelid
       JOIN pg_am am ON am.oid = c.relam
       JOIN pg_namespace ns ON ns.oid = c.relnamespace
      WHERE ns.nspname = 'public' AND am.amname = 'btree' AND NOT i.indisunique AND i.indpred IS NULL`,
  );
  expect(rows.some((r) => r.table === 'usage_events')).toBe(true);
  const redundant = rows.flatMap((a) =>
    rows
      .filter((b) => b !== a && b.table === a.table && a.columns.length <= b.columns.length && a.columns.every((col, i) => b.columns[i] === col))
      .map((b) => `${a.name} (${a.columns.join(', ')}) leads ${b.name} (${b.columns.join(', ')})`),
  );
  expect(redundant).toEqual([]);
});
