import { claimUsage, countUnclaimedEvents, readPeriodCounters } from '../../src/db/ledger';
import { currentPeriodFigures, tenantStanding, tenantStandings } from '../../src/db/usage-read-model';
import { insertPlacedEvents } from '../../src/db/ingest';
import { insertPack, readPacks, recordPackDraws } from '../../src/db/packs';
import { insertAlerts, alertView, type AlertRow } from '../../src/db/alerts';
import { changeLimitOverrides, readLimitOverrides } from '../../src/db/entitlements';
import { counterFromAggregates } from '../../src/domain/aggregation';
import type { AlertRecord } from '../../src/contracts/ledger';
import { testDbForFile, unique } from '../support/stack';
import { LEDGER_METERS } from '../support/ledger-meters';
import { createTenantFixture } from '../support/tenant-fixture';

/**
 * `GET …/usage` reads the current period in one statement (src/db/usage-read-model.ts). It must
 * answer exactly what the read model's tables hold, each read on its own: counters, alerts in
 * firing order, packs with their draws, limit overrides and unclaimed events.
 */
const db = testDbForFile();

const PERIOD = '2026-11-01T00:00:00.000Z';
const EARLIER = '2026-10-01T00:00:00.000Z';
const AT = '2026-11-20T10:00:00.000Z';

async function tenant(): Promise<string> {
  const tenantId = unique('figures');
  await createTenantFixture(db, {
    tenantId,
    anchor: PERIOD,
    plan: {
      id: unique('plan'),
      name: 'Figures',
      currency: 'USD',
      interval: 'month',
      base_fee: '0',
      alert_thresholds: [80, 100],
      grace_period_seconds: 0,
      meters: LEDGER_METERS.map((m) => ({ ...m, limit: 100, pricing: { model: 'per_unit' as const, unit_price: '0.01' } })),
    },
  });
  return tenantId;
}

/** The same figures, read table by table. */
async function readPieceByPiece(tenantId: string) {
  const counters = await readPeriodCounters(db, tenantId, [PERIOD]);
  const alerts = await db('alerts').where({ tenant_id: tenantId, period_start: PERIOD }).orderBy([{ column: 'fired_at' }, { column: 'threshold' }]).select<AlertRow[]>();
  return {
    values: Object.fromEntries(LEDGER_METERS.map((m) => [m.metric, counterFromAggregates(counters.find((c) => c.metric === m.metric), m.aggregation)])),
    alerts: alerts.map(alertView),
    packs: await readPacks(db, tenantId),
    limitOverrides: await readLimitOverrides(db, tenantId),
    pendingEvents: await countUnclaimedEvents(db, tenantId),
  };
}

test('a tenant with nothing yet: zero counters, no alerts, no packs, nothing pending', async () => {
  const tenantId = await tenant();
  const figures = await currentPeriodFigures(db, tenantId);
  expect(figures).toMatchObject({ period: { start: PERIOD, end: '2026-12-01T00:00:00.000Z' }, alerts: [], packs: [], limitOverrides: {}, pendingEvents: 0 });
  expect(figures).toMatchObject(await readPieceByPiece(tenantId));
});

test('counters, alerts, packs with draws, overrides and unclaimed events read in one statement equal each table read alone', async () => {
  const tenantId = await tenant();
  const events = [
    { id: 'a', metric: 'minutes', quantity: '12.345678', timestamp: AT, period_start: PERIOD },
    { id: 'b', metric: 'minutes', quantity: '70', timestamp: '2026-11-21T10:00:00.000Z', period_start: PERIOD },
    { id: 'c', metric: 'storage', quantity: '40.5', timestamp: AT, period_start: PERIOD },
    { id: 'd', metric: 'seats', quantity: '3', timestamp: AT, period_start: PERIOD },
  ];
  await insertPlacedEvents(db, tenantId, events, 'test-ingest', new Date());
  await claimUsage(db, tenantId, `${tenantId}-claim`, 100);
  await insertPlacedEvents(db, tenantId, [{ id: 'e', metric: 'calls', quantity: '1', timestamp: AT, period_start: PERIOD }], 'test-ingest', new Date());
  await changeLimitOverrides(db, tenantId, { minutes: '90.5', calls: 7 });
  const alert = (id: string, threshold: number, firedAt: string, status: AlertRecord['status']): AlertRecord => ({
    id,
    subject: 'minutes',
    threshold,
    level: threshold >= 100 ? 'critical' : 'warning',
    status,
    used: '82.345678',
    limit: '90.5',
    covers: [threshold],
    fired_at: firedAt,
  });
  // Stored out of order: the read answers them in firing order, the tie broken by threshold.
  await insertAlerts(db, tenantId, PERIOD, [alert(`${tenantId}-100`, 100, '2026-11-21T10:00:00.000Z', 'notified'), alert(`${tenantId}-80`, 80, '2026-11-21T10:00:00.000Z', 'superseded')]);
  await insertAlerts(db, tenantId, EARLIER, [alert(`${tenantId}-old`, 80, '2026-10-21T10:00:00.000Z', 'notified')]);
  const packs = [
    { id: 'late', metric: 'minutes', units: '50', price: null, currency: 'USD', purchased_at: new Date('2026-11-02T00:00:00Z'), expires_at: new Date('2027-02-01T00:00:00Z') },
    { id: 'early', metric: 'minutes', units: '25.25', price: '9.99', currency: 'USD', purchased_at: new Date('2026-10-02T00:00:00Z'), expires_at: new Date('2027-01-01T00:00:00Z') },
  ];
  for (const pack of packs) await insertPack(db, tenantId, pack);
  await recordPackDraws(db, tenantId, PERIOD, [{ pack_id: 'early', units: '10.5' }]);

  const figures = await currentPeriodFigures(db, tenantId);
  const pieces = await readPieceByPiece(tenantId);
  expect(figures).toMatchObject(pieces);
  // And the pieces hold what was stored (so the comparison is not between two empty answers).
  expect(pieces.values).toMatchObject({ minutes: '82.345678', storage: '40.5', calls: '0' });
  expect(pieces.alerts.map((a) => a.id)).toEqual([`${tenantId}-80`, `${tenantId}-100`]);
  expect(pieces.packs.map((p) => [p.id, p.price, p.draws])).toEqual([
    ['early', '9.99', { [PERIOD]: '10.5' }],
    ['late', undefined, {}],
  ]);
  expect(pieces.limitOverrides).toEqual({ minutes: '90.5', calls: '7' });
  expect(pieces.pendingEvents).toBe(1);
});

test('no open period (no such tenant): no figures', async () => {
  expect(await currentPeriodFigures(db, unique('nobody'))).toBeUndefined();
});

test("a tenant's standing in the same statement: none, active with its figures, cancelled without an open period", async () => {
  expect(await tenantStanding(db, unique('nobody'))).toBeUndefined();
  const tenantId = await tenant();
  const active = await tenantStanding(db, tenantId);
  expect(active).toMatchObject({ status: 'active', figures: { period: { start: PERIOD } } });
  expect(active!.figures).toEqual(await currentPeriodFigures(db, tenantId));
  await db('periods').where({ tenant_id: tenantId }).update({ status: 'closed' });
  await db('tenants').where({ id: tenantId }).update({ status: 'cancelled' });
  expect(await tenantStanding(db, tenantId)).toEqual({ status: 'cancelled', figures: undefined });
});

test("a page of tenants' standings in one statement: each tenant's own, as read alone", async () => {
  const [busy, idle, gone] = [await tenant(), await tenant(), await tenant()];
  await insertPlacedEvents(db, busy, [{ id: 'a', metric: 'minutes', quantity: '42', timestamp: AT, period_start: PERIOD }], 'test-ingest', new Date());
  await claimUsage(db, busy, `${busy}-claim`, 100);
  await insertPlacedEvents(db, busy, [{ id: 'b', metric: 'calls', quantity: '1', timestamp: AT, period_start: PERIOD }], 'test-ingest', new Date());
  await changeLimitOverrides(db, idle, { minutes: '7' });
  await db('periods').where({ tenant_id: gone }).update({ status: 'closed' });
  await db('tenants').where({ id: gone }).update({ status: 'cancelled' });
  const nobody = unique('nobody');

  const page = await tenantStandings(db, [busy, nobody, idle, gone]);
  expect([...page.keys()].sort()).toEqual([busy, idle, gone].sort());
  for (const id of [busy, idle, gone]) expect(page.get(id)).toEqual(await tenantStanding(db, id));
  expect(page.get(busy)!.figures).toMatchObject({ values: { minutes: '42' }, pendingEvents: 1, limitOverrides: {} });
  expect(page.get(idle)!.figures).toMatchObject({ values: { minutes: '0' }, pendingEvents: 0, limitOverrides: { minutes: '7' } });
  expect(page.get(gone)).toEqual({ status: 'cancelled', figures: undefined });
  expect(await tenantStandings(db, [])).toEqual(new Map());
});
