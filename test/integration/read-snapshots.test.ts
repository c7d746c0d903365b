import { insertCreditGrant, readBalanceFacts, readBalanceView } from '../../src/db/credits';
import { testDbForFile, unique } from '../support/stack';
import { createTenantFixture } from '../support/tenant-fixture';

/**
 * A balance adds figures from several tables: the credit held (`credit_grants`) and the running
 * cost of the periods not charged yet (`periods`). A finalization moves a period's charge from
 * one to the other in one commit. Read across that commit, statement by statement, the charge
 * would count twice (owed and already taken from the credit): `available` too low, and a low
 * balance alert that should not fire. Both reads must see one commit.
 *
 * The finalization here holds `credit_grants` locked until the read has read the periods and
 * waits for the grants, then commits: the read must answer the figures from before it.
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

/** Until some transaction waits for a lock on `credit_grants`. */
async function readerWaitsForGrants(): Promise<void> {
  for (let i = 0; i < 500; i++) {
    const { rows } = await db.raw<{ rows: Array<{ waiting: string }> }>(
      `SELECT count(*) AS waiting FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = 'credit_grants' AND NOT l.granted`,
    );
    if (Number(rows[0]!.waiting) > 0) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error('the read never waited for credit_grants');
}

/** Charges the period's base fee to the grant, as a finalization does, with the grants locked until `read` waits for them. */
async function finalizeDuring<T>(tenantId: string, read: () => Promise<T>): Promise<T> {
  const trx = await db.transaction();
  try {
    await trx.raw('LOCK TABLE credit_grants IN ACCESS EXCLUSIVE MODE');
    await trx('periods').where({ tenant_id: tenantId }).update({ status: 'invoiced' });
    await trx('credit_grants').where({ tenant_id: tenantId, id: 'g1' }).update({ remaining: '90.00' });
    const answer = read();
    answer.catch(() => undefined); // awaited below
    await readerWaitsForGrants();
    await trx.commit();
    return await answer;
  } catch (err) {
    if (!trx.isCompleted()) await trx.rollback();
    throw err;
  }
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
