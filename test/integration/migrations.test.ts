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
