import type { Knex } from 'knex';
import { insertCreditGrant, readBalanceFacts, readBalanceView } from '../../src/db/credits';
import { listPeriods } from '../../src/db/periods';
import { testDbForFile, unique } from '../support/stack';
import { createTenantFixture } from '../support/tenant-fixture';

/**
 * Reads that put figures from several tables side by side must see them as of one commit.
 *
 * - A balance adds the credit held (`credit_grants`) and the running cost of the periods not
 *   charged yet (`periods`). A finalization moves a period's charge from one to the other in one
 *   commit. Read across that commit, statement by statement, the charge would count twice (owed
 *   and already taken from the credit): `available` too low, and a low balance alert that should
 *   not fire.
 * - `GET …/periods` shows each period beside its invoices: across a finalization, a period still
 *   open or closed beside its finalized invoice.
 *
 * The finalization here holds the second table locked until the read has read the first and
 * waits for the second, then commits: the read must answer the figures from before it.
 */
const db = testDbForFile();

const ANCHOR = '2026-11-01T00:00:00.000Z';

async function prepaidTenant(): Promise<string> {
  const tenantId = unique('snapshot');
  await createTenantFixture(db, {
    tenantId,
    anchor: ANCHOR,
    plan: {
      id: unique('plan'),
      name: 'Snapshot',
      currency: 'USD',
      interval: 'month',
      base_fee: '10.00',
      alert_thresholds: [80, 100],
      grace_period_seconds: 0,
      meters: [{ metric: 'calls', aggregation: 'sum', pricing: { model: 'per_unit', unit_price: '0.01' } }],
    },
  });
  await insertCreditGrant(db, tenantId, { id: 'g1', currency: 'USD', amount: '100.00', description: null, expires_at: null });
  return tenantId;
}

/** Until some transaction waits for a lock on `table`. */
async function readerWaitsFor(table: string): Promise<void> {
  for (let i = 0; i < 500; i++) {
    const { rows } = await db.raw<{ rows: Array<{ waiting: string }> }>(
      `SELECT count(*) AS waiting FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = ? AND NOT l.granted`,
      [table],
    );
    if (Number(rows[0]!.waiting) > 0) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error(`the read never waited for ${table}`);
}

/** Commits `write` with `locked` held until `read` waits for it, and answers what `read` read. */
async function commitDuring<T>(locked: string, write: (trx: Knex.Transaction) => Promise<void>, read: () => Promise<T>): Promise<T> {
  const trx = await db.transaction();
  try {
    await trx.raw(`LOCK TABLE ${locked} IN ACCESS EXCLUSIVE MODE`);
    await write(trx);
    const answer = read();
    answer.catch(() => undefined); // awaited below
    await readerWaitsFor(locked);
    await trx.commit();
    return await answer;
  } catch (err) {
    if (!trx.isCompleted()) await trx.rollback();
    throw err;
  }
}

/** Charges the period's base fee to the grant, as a finalization does, with the grants locked until `read` waits for them. */
function finalizeDuring<T>(tenantId: string, read: () => Promise<T>): Promise<T> {
  return commitDuring(
    'credit_grants',
    async (trx) => {
      await trx('periods').where({ tenant_id: tenantId }).update({ status: 'invoiced' });
      await trx('credit_grants').where({ tenant_id: tenantId, id: 'g1' }).update({ remaining: '90.00' });
    },
    read,
  );
}

test('the balance facts a workflow decides from are read as of one commit', async () => {
  const tenantId = await prepaidTenant();
  expect(await readBalanceFacts(db, tenantId, new Date())).toMatchObject({ balance: '100', uncharged_periods: [ANCHOR] });
  const facts = await finalizeDuring(tenantId, () => readBalanceFacts(db, tenantId, new Date()));
  expect(facts).toMatchObject({ balance: '100', uncharged_periods: [ANCHOR] });
  // The finalization did commit: read after it, nothing is left to charge.
  expect(await readBalanceFacts(db, tenantId, new Date())).toMatchObject({ uncharged_periods: [] });
  expect(await db('credit_grants').where({ tenant_id: tenantId }).first()).toMatchObject({ remaining: '90.00' });
});

test('GET …/balance is read as of one commit', async () => {
  const tenantId = await prepaidTenant();
  expect(await readBalanceView(db, tenantId, new Date())).toMatchObject({ balance: '100.00', uncharged: '10.00', available: '90.00' });
  const view = await finalizeDuring(tenantId, () => readBalanceView(db, tenantId, new Date()));
  expect(view).toMatchObject({ balance: '100.00', uncharged: '10.00', available: '90.00' });
});

test('GET …/periods shows each period beside its invoices as of one commit', async () => {
  const tenantId = await prepaidTenant();
  const start = new Date(ANCHOR);
  const read = () => listPeriods(db, tenantId, { limit: 10 }, () => undefined);
  const before = await read();
  expect(before.page.data.map((p) => p.status)).toEqual(['open']);
  expect(before.invoices).toEqual([]);

  // The period invoiced and its invoice written in one commit, with the invoices locked until the read waits for them.
  const during = await commitDuring(
    'invoices',
    async (trx) => {
      const period = await trx('periods').where({ tenant_id: tenantId, start }).first();
      await trx('periods').where({ tenant_id: tenantId, start }).update({ status: 'invoiced' });
      await trx('invoices').insert({
        id: `in_${tenantId}_v1`, tenant_id: tenantId, number: 1, version: 1, status: 'finalized', period_start: start, period_end: period.end,
        plan_id: period.plan_id, plan_version: period.plan_version, currency: 'USD', subtotal: '10.00', total: '10.00', finalized_at: new Date(),
      });
    },
    read,
  );
  expect(during.page.data.map((p) => p.status)).toEqual(['open']);
  expect(during.invoices).toEqual([]);

  const after = await read();
  expect(after.page.data.map((p) => p.status)).toEqual(['invoiced']);
  expect(after.invoices.map((i) => i.status)).toEqual(['finalized']);
});
