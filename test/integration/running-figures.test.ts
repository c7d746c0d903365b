import { randomUUID } from 'node:crypto';
import { storeUsage } from '../../src/db/ingest';
import { claimUsage } from '../../src/db/ledger';
import { refreshDueFigures } from '../../src/db/summaries';
import { testDbForFile, unique } from '../support/stack';
import { createTenantFixture } from '../support/tenant-fixture';

/**
 * Running figures beside the claims (docs/design/core-v2.md, "Running figures"): a claim only
 * moves the watermark, which makes the tenant's figures due; the refresher rates them under the
 * tenant's figures lock, never waits for a claim nor holds one up, and marks them with the
 * watermark it read before their counters.
 * Other test files' refreshers share this database, so the test reads state under the tenant's
 * own lock rather than assuming no one else rated it.
 */
const db = testDbForFile();

async function tenant(tenantId = unique('figures')) {
  const anchor = new Date(Date.now() - 60_000).toISOString();
  return createTenantFixture(db, {
    tenantId,
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
  Number((await db('period_figures').where({ tenant_id: tenantId, period_start: new Date(periodStart) }).first<{ total: string }>())?.total);
const countedTokens = async (tenantId: string) => Number((await db('period_counters').where({ tenant_id: tenantId, metric: 'tokens' }).first<{ total: string }>())?.total ?? 0);
const totalsOf = async (tenantId: string) => (await db('tenant_event_totals').where({ tenant_id: tenantId }).first<{ claimed_through_seq: string; figures_through_seq: string }>())!;
const send = (tenantId: string, id: string) => storeUsage(db, tenantId, [{ id, metric: 'tokens', quantity: '100', timestamp: null }], new Date(), `batch-${randomUUID()}`);

test('a claim makes the figures due; the refresher rates them without waiting for a claim, and marks them once the claim is done', async () => {
  const t = await tenant();
  expect(await figureOf(t.tenantId, t.period.start)).toBe(5); // rated when the tenant was created: its base fee

  let sawDueWhileHeld = false;
  for (let round = 1; round <= 5 && !sawDueWhileHeld; round++) {
    await send(t.tenantId, `e${round}`);
    await claimUsage(db, t.tenantId, `claim-${round}`, 100);
    // Held as a claim holds it: no one can claim the tenant, or mark its figures, until this transaction ends.
    await db.transaction(async (trx) => {
      const row = await trx('tenant_event_totals').where({ tenant_id: t.tenantId }).forUpdate().first<{ claimed_through_seq: string; figures_through_seq: string }>();
      if (BigInt(row!.figures_through_seq) >= BigInt(row!.claimed_through_seq)) return; // another file's refresher rated it first: try again
      sawDueWhileHeld = true;
      const expected = 5 + (await countedTokens(t.tenantId)) * 0.01;
      // Would wait forever if it waited for the row. Another file's refresher may be rating the
      // tenant at this moment (this one then leaves it to that one): until it is rated, by either.
      for (let i = 0; i === 0 || (i < 100 && (await figureOf(t.tenantId, t.period.start)) !== expected); i++) await refreshDueFigures(db);
      expect(await figureOf(t.tenantId, t.period.start)).toBe(expected);
      expect((await trx('tenant_event_totals').where({ tenant_id: t.tenantId }).first())!.figures_through_seq).toBe(row!.figures_through_seq);
    });
  }
  expect(sawDueWhileHeld).toBe(true);

  // Free again, it is marked at its watermark, whoever's refresher gets there first.
  for (let i = 0; i < 100 && (await totalsOf(t.tenantId)).figures_through_seq !== (await totalsOf(t.tenantId)).claimed_through_seq; i++) await refreshDueFigures(db);
  const totals = await totalsOf(t.tenantId);
  expect(totals.figures_through_seq).toBe(totals.claimed_through_seq);
  expect(await figureOf(t.tenantId, t.period.start)).toBe(5 + (await countedTokens(t.tenantId)) * 0.01);
});

test('while a rollover holds the figures lock, claims go on and the refresher leaves the tenant for later', async () => {
  const t = await tenant();
  await send(t.tenantId, 'first');
  await claimUsage(db, t.tenantId, 'claim-first', 100);
  for (let i = 0; i < 100 && (await totalsOf(t.tenantId)).figures_through_seq !== (await totalsOf(t.tenantId)).claimed_through_seq; i++) await refreshDueFigures(db);
  expect(await figureOf(t.tenantId, t.period.start)).toBe(6);

  await db.transaction(async (trx) => {
    await trx.raw('SELECT pg_advisory_xact_lock(?, hashtext(?))', [0x7a12, t.tenantId]); // as storePeriodFigures takes it
    await send(t.tenantId, 'second');
    expect((await claimUsage(db, t.tenantId, 'claim-second', 100)).claimed).toBe(1); // a claim never waits for the figures
    await refreshDueFigures(db);
    expect(await figureOf(t.tenantId, t.period.start)).toBe(6); // not rated while the lock is held
    const totals = await totalsOf(t.tenantId);
    expect(BigInt(totals.figures_through_seq)).toBeLessThan(BigInt(totals.claimed_through_seq));
  });
  for (let i = 0; i < 100 && (await totalsOf(t.tenantId)).figures_through_seq !== (await totalsOf(t.tenantId)).claimed_through_seq; i++) await refreshDueFigures(db);
  expect(await figureOf(t.tenantId, t.period.start)).toBe(7);
});

test('a batch of due tenants starts after the tenant the batch before ended with', async () => {
  // Ids that sort before every other test's tenants: the lowest due ones in the shared database.
  const [first, second] = [await tenant(`0-${unique('figures')}`), await tenant(`0-${unique('figures')}`)].sort((a, b) => (a.tenantId < b.tenantId ? -1 : 1));
  for (const t of [first!, second!]) {
    await send(t.tenantId, 'cursor');
    await claimUsage(db, t.tenantId, 'claim-cursor', 100);
  }
  const batch = await refreshDueFigures(db, 1, first!.tenantId);
  expect(batch.due).toBe(1);
  expect(batch.last! > first!.tenantId).toBe(true);
});
