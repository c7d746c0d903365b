import { randomUUID } from 'node:crypto';
import { storeUsage } from '../../src/db/ingest';
import { claimUsage } from '../../src/db/ledger';
import { refreshDueFigures } from '../../src/db/summaries';
import type { Db } from '../../src/db/knex';
import { testDb, unique } from '../support/stack';
import { createTenantFixture } from '../support/tenant-fixture';

/**
 * Running figures beside the claims (docs/design/core-v2.md, "Running figures"): a claim only
 * moves the watermark, which makes the tenant's figures due; the refresher rates them, never
 * waits for a tenant being claimed, and marks them with the watermark they were rated at.
 * Other test files' refreshers share this database, so the test reads state under the tenant's
 * own lock rather than assuming no one else rated it.
 */
let db: Db;
beforeAll(() => {
  db = testDb();
});
afterAll(async () => {
  await db?.destroy();
});

async function tenant() {
  const anchor = new Date(Date.now() - 60_000).toISOString();
  return createTenantFixture(db, {
    tenantId: unique('figures'),
    anchor,
    plan: {
      id: unique('plan'),
      name: 'Monthly',
      currency: 'USD',
      interval: 'month',
      base_fee: '5.00',
      alert_thresholds: [80, 90, 100],
      grace_period_seconds: 3600,
      meters: [{ metric: 'tokens', aggregation: 'sum', pricing: { model: 'per_unit', unit_price: '0.01' } }],
    },
  });
}

const figureOf = async (tenantId: string, periodStart: string) =>
  (await db('period_figures').where({ tenant_id: tenantId, period_start: new Date(periodStart) }).first<{ total: string }>())?.total;

test('a claim makes the figures due; the refresher skips a tenant held by a claim, then rates it and marks it', async () => {
  const t = await tenant();
  expect(Number(await figureOf(t.tenantId, t.period.start))).toBe(5); // rated when the tenant was created: its base fee

  let sawDueWhileHeld = false;
  for (let round = 1; round <= 5 && !sawDueWhileHeld; round++) {
    await storeUsage(db, t.tenantId, [{ id: `e${round}`, metric: 'tokens', quantity: '100', timestamp: null }], new Date(), `batch-${randomUUID()}`);
    await claimUsage(db, t.tenantId, `claim-${round}`, 100);
    // Held as a claim holds it: no one can rate or claim the tenant until this transaction ends.
    await db.transaction(async (trx) => {
      const row = await trx('tenant_event_totals').where({ tenant_id: t.tenantId }).forUpdate().first<{ claimed_through_seq: string; figures_through_seq: string }>();
      if (BigInt(row!.figures_through_seq) >= BigInt(row!.claimed_through_seq)) return; // another file's refresher rated it first: try again
      sawDueWhileHeld = true;
      // Without SKIP LOCKED this would wait for the transaction holding it, that is forever.
      await refreshDueFigures(db);
      const after = await trx('tenant_event_totals').where({ tenant_id: t.tenantId }).first<{ figures_through_seq: string }>();
      expect(after!.figures_through_seq).toBe(row!.figures_through_seq);
    });
  }
  expect(sawDueWhileHeld).toBe(true);

  // Free again, the tenant is rated at its watermark, whoever's refresher gets there first.
  for (let i = 0; i < 100; i++) {
    const row = await db('tenant_event_totals').where({ tenant_id: t.tenantId }).first<{ claimed_through_seq: string; figures_through_seq: string }>();
    if (row!.figures_through_seq === row!.claimed_through_seq) break;
    await refreshDueFigures(db);
  }
  const row = await db('tenant_event_totals').where({ tenant_id: t.tenantId }).first<{ claimed_through_seq: string; figures_through_seq: string }>();
  expect(row!.figures_through_seq).toBe(row!.claimed_through_seq);
  const counted = (await db('period_counters').where({ tenant_id: t.tenantId, metric: 'tokens' }).first<{ total: string }>())!.total;
  expect(Number(await figureOf(t.tenantId, t.period.start))).toBe(5 + Number(counted) * 0.01);
});
