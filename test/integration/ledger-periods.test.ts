import { randomUUID } from 'node:crypto';
import { storeUsage, storeUsageRequests, type IncomingEvent, type RequestOutcome } from '../../src/db/ingest';
import { PlacementContexts } from '../../src/db/placement-contexts';
import { claimUsage, readPeriodCounters } from '../../src/db/ledger';
import { rollOverPeriod } from '../../src/db/rollover';
import { savePlanVersion } from '../../src/db/plans';
import type { PlanVersion } from '../../src/domain/plan';
import { aggregateStoredUsage } from '../../src/db/usage';
import { testDbForFile, unique } from '../support/stack';
import { periodAfterEarlyClose } from '../../src/domain/periods';
import { createTenantFixture } from '../support/tenant-fixture';

/**
 * Closing is a database fact (docs/design/core-v2.md): batches are placed, then stored under the
 * tenant's ledger lock once a check finds the tenant as they were placed against; a rollover
 * closes, moves and opens in one transaction under the same lock. So every stored event lands in
 * exactly one period, and late events only until grace end.
 */
const db = testDbForFile();

const monthly = (id: string, grace = 3600): Omit<PlanVersion, 'version'> => ({
  id,
  name: 'Monthly',
  currency: 'USD',
  interval: 'month',
  base_fee: '5.00',
  alert_thresholds: [80, 90, 100],
  grace_period_seconds: grace,
  meters: [
    { metric: 'tokens', aggregation: 'sum', limit: 1000, pricing: { model: 'per_unit', unit_price: '0.01' } },
    { metric: 'seats', aggregation: 'latest', pricing: { model: 'per_unit', unit_price: '1' } },
  ],
});

/** A tenant whose open period started a minute ago (anchor = now - 1 min, monthly). */
async function tenant(plan = monthly(unique('plan'))) {
  const anchor = new Date(Date.now() - 60_000).toISOString();
  return createTenantFixture(db, { tenantId: unique('t'), plan, anchor });
}

function event(id: string, timestamp: string | null, quantity = '1', metric = 'tokens'): IncomingEvent {
  return { id, metric, quantity, timestamp };
}

async function store(tenantId: string, events: IncomingEvent[], receivedAt = new Date()) {
  return storeUsage(db, tenantId, events, receivedAt, `batch-${randomUUID()}`);
}

async function periodOf(tenantId: string, eventId: string): Promise<string> {
  const row = await db('usage_events').where({ tenant_id: tenantId, event_id: eventId }).first<{ period_start: Date }>('period_start');
  return row.period_start.toISOString();
}

test('a batch is placed and stored whole, or refused whole with every reason', async () => {
  const t = await tenant();
  const now = Date.now();
  expect(await store(t.tenantId, [event('a', null), event('b', new Date(now - 1000).toISOString(), '2.5'), event('a', null)])).toMatchObject({
    kind: 'stored',
    received: 3,
    stored: 2,
  });
  expect(await periodOf(t.tenantId, 'b')).toBe(t.period.start);

  const refused = await store(t.tenantId, [
    event('ok', null),
    event('future', new Date(now + 6 * 60_000).toISOString()),
    event('before', new Date(now - 3_600_000).toISOString()),
    event('unknown', null, '1', 'minutes'),
  ]);
  expect(refused).toEqual({
    kind: 'refused',
    refusals: [
      expect.objectContaining({ index: 1, code: 'future_event', field: 'timestamp' }),
      expect.objectContaining({ index: 2, code: 'late_event', field: 'timestamp' }),
      expect.objectContaining({ index: 3, code: 'unknown_metric', field: 'metric' }),
    ],
  });
  expect(await db('usage_events').where({ tenant_id: t.tenantId, event_id: 'ok' }).first()).toBeUndefined();
  expect(await store(unique('nobody'), [event('x', null)])).toEqual({ kind: 'no_tenant' });
});

test('a close moves events stamped at or after it to the next period, counters included', async () => {
  const t = await tenant();
  const now = Date.now();
  const closeAt = new Date(now - 10_000).toISOString();
  await store(t.tenantId, [event('before', new Date(now - 20_000).toISOString(), '3'), event('after', new Date(now - 5_000).toISOString(), '4')]);
  await store(t.tenantId, [event('ahead', new Date(now + 60_000).toISOString(), '5')]);
  await claimUsage(db, t.tenantId, 'claim-1', 1); // one of them is counted before the close

  const result = await rollOverPeriod(db, { tenant_id: t.tenantId, period_start: t.period.start, close_at: closeAt, grace_seconds: 3600, cancel: false });
  expect(result.closed).toEqual({ start: t.period.start, end: closeAt, grace_ends_at: new Date(Date.parse(closeAt) + 3_600_000).toISOString() });
  expect(result.next!.period.start).toBe(closeAt);
  expect(result.next!.period.end).toBe(t.period.end); // the next anniversary
  expect(await periodOf(t.tenantId, 'before')).toBe(t.period.start);
  expect(await periodOf(t.tenantId, 'after')).toBe(closeAt);
  expect(await periodOf(t.tenantId, 'ahead')).toBe(closeAt);

  // Once everything is claimed, the read model equals the stored events, period by period.
  await claimUsage(db, t.tenantId, 'claim-2', 100);
  for (const start of [t.period.start, closeAt]) {
    const [counter] = await readPeriodCounters(db, t.tenantId, [start]);
    expect(counter?.total ?? '0').toBe((await aggregateStoredUsage(db, t.tenantId, start, t.plan.meters)).tokens);
  }
  expect((await aggregateStoredUsage(db, t.tenantId, t.period.start, t.plan.meters)).tokens).toBe('3');

  // A retry after the commit answers the same, and the draft invoice exists.
  expect(await rollOverPeriod(db, { tenant_id: t.tenantId, period_start: t.period.start, close_at: closeAt, grace_seconds: 3600, cancel: false })).toEqual(
    expect.objectContaining({ closed: result.closed, invoice_id: result.invoice_id }),
  );
  expect(await db('invoices').where({ id: result.invoice_id }).first('status')).toEqual({ status: 'draft' });

  // Within the grace a late event counts in the closed period; past it (finalized) it is refused.
  expect(await store(t.tenantId, [event('late', new Date(now - 30_000).toISOString())])).toMatchObject({ kind: 'stored', stored: 1 });
  expect(await periodOf(t.tenantId, 'late')).toBe(t.period.start);
});

test('a close never moves an event already counted out of its period: it ends just after the latest one', async () => {
  const t = await tenant();
  const now = Date.now();
  const counted = new Date(now - 5_000);
  await store(t.tenantId, [event('early', new Date(now - 20_000).toISOString(), '3'), event('counted', counted.toISOString(), '4')]);
  await claimUsage(db, t.tenantId, 'claim-all', 100); // both counted: the run may have decided on them
  await store(t.tenantId, [event('waiting', new Date(now - 2_000).toISOString(), '5')]); // stored, not counted yet

  // Asked to close 10 s ago (an instant read before the claim's events were stamped).
  const result = await rollOverPeriod(db, { tenant_id: t.tenantId, period_start: t.period.start, close_at: new Date(now - 10_000).toISOString(), grace_seconds: 0, cancel: false });
  const end = new Date(counted.getTime() + 1).toISOString();
  expect(result.closed.end).toBe(end);
  expect(result.next!.period.start).toBe(end);
  expect(await periodOf(t.tenantId, 'counted')).toBe(t.period.start);
  expect(await periodOf(t.tenantId, 'waiting')).toBe(end); // not counted: it moves, as any event stamped after the close
  expect(result.closed_counters.map((c) => [c.metric, c.total])).toEqual([['tokens', '7']]);
  expect((await aggregateStoredUsage(db, t.tenantId, t.period.start, t.plan.meters)).tokens).toBe('7');
});

test('the next period follows the next plan, in both directions, and tiles with the closed one', async () => {
  const t = await tenant();
  const daily = await savePlanVersion(db, { ...monthly(unique('daily')), interval: 'day' });
  await db('tenants').where({ id: t.tenantId }).update({ plan_id: daily.id });
  const closeAt = new Date(Math.floor(Date.now() / 1000) * 1000).toISOString();
  const toDaily = await rollOverPeriod(db, { tenant_id: t.tenantId, period_start: t.period.start, close_at: closeAt, grace_seconds: 0, cancel: false });
  expect(toDaily.next!.plan.interval).toBe('day');
  expect(toDaily.next!.period.start).toBe(closeAt);
  const midnight = new Date(closeAt);
  midnight.setUTCHours(24, 0, 0, 0);
  expect(toDaily.next!.period.end).toBe(midnight.toISOString());

  await db('tenants').where({ id: t.tenantId }).update({ plan_id: t.plan.id });
  const toMonthly = await rollOverPeriod(db, { tenant_id: t.tenantId, period_start: closeAt, close_at: toDaily.next!.period.end, grace_seconds: 0, cancel: false });
  expect(toMonthly.next!.plan.interval).toBe('month');
  expect(toMonthly.next!.period).toEqual({ start: toDaily.next!.period.end, end: t.period.end });
});

test('a cancellation keeps every stored event in the final period and refuses what comes after', async () => {
  const t = await tenant();
  const now = Date.now();
  const ahead = new Date(now + 120_000).toISOString();
  await store(t.tenantId, [event('a', null), event('ahead', ahead)]);
  const cancelAt = new Date(now).toISOString();
  const result = await rollOverPeriod(db, { tenant_id: t.tenantId, period_start: t.period.start, close_at: cancelAt, grace_seconds: 3600, cancel: true });
  expect(result.next).toBeNull();
  expect(result.closed.end).toBe(new Date(Date.parse(ahead) + 1).toISOString());
  expect(await periodOf(t.tenantId, 'ahead')).toBe(t.period.start);
  expect(await db('tenants').where({ id: t.tenantId }).first('status')).toEqual({ status: 'cancelled' });

  expect(await store(t.tenantId, [event('after', new Date(Date.parse(ahead) + 10).toISOString())])).toMatchObject({
    kind: 'refused',
    refusals: [expect.objectContaining({ code: 'subscription_cancelled' })],
  });
  // A late event within the final period's grace is still taken.
  expect(await store(t.tenantId, [event('late', new Date(now - 1000).toISOString())])).toMatchObject({ kind: 'stored', stored: 1 });
});

// Contexts read by each store, and kept across stores as the API keeps them (then checked under the lock).
test.each(['read by each store', 'kept'])('ingest racing a close (contexts %s): every stored event lands in exactly one period, on the right side', async (contexts) => {
  const t = await tenant(monthly(unique('plan'), 0));
  const kept = new PlacementContexts();
  const storeBatch = async (events: IncomingEvent[]) => {
    if (contexts !== 'kept') return store(t.tenantId, events);
    const [outcome] = await storeUsageRequests(db, [{ batches: new Map([[t.tenantId, events]]), receivedAt: new Date(), batchId: `batch-${randomUUID()}` }], { contexts: kept });
    return (outcome as Extract<RequestOutcome, { kind: 'judged' }>).outcomes.get(t.tenantId)!;
  };
  const closeAt = new Date(Date.now() + 300).toISOString();
  let n = 0;
  const sender = async () => {
    const outcomes = [];
    for (let i = 0; i < 40; i += 1) {
      const batch = Array.from({ length: 10 }, () => event(`e${(n += 1)}`, null));
      outcomes.push(await storeBatch(batch));
    }
    return outcomes;
  };
  const [a, b, closed] = await Promise.all([
    sender(),
    sender(),
    new Promise((r) => setTimeout(r, 150)).then(() =>
      rollOverPeriod(db, { tenant_id: t.tenantId, period_start: t.period.start, close_at: closeAt, grace_seconds: 0, cancel: false }),
    ),
  ]);
  const stored = [...a, ...b].reduce((sum, o) => sum + (o.kind === 'stored' ? o.stored : 0), 0);
  expect(stored).toBe(800);
  const rows = await db('usage_events').where({ tenant_id: t.tenantId }).select<Array<{ timestamp: Date; period_start: Date }>>('timestamp', 'period_start');
  expect(rows).toHaveLength(800);
  for (const row of rows) {
    const expected = row.timestamp.toISOString() >= closed.closed.end ? closed.next!.period.start : t.period.start;
    expect(row.period_start.toISOString()).toBe(expected);
  }
});

test('a cancellation takes in events already placed past the period (its rollover was due): they have no later period', async () => {
  const ends = Date.now() + 120_000;
  const anchor = new Date(ends);
  anchor.setUTCMonth(anchor.getUTCMonth() - 1);
  const t = await createTenantFixture(db, { tenantId: unique('t'), plan: monthly(unique('plan')), anchor: anchor.toISOString() });
  expect(Date.parse(t.period.end)).toBe(ends);
  const past = new Date(ends + 60_000).toISOString(); // within the future tolerance, past the period's end
  await store(t.tenantId, [event('past', past, '4')]);
  expect(await periodOf(t.tenantId, 'past')).toBe(t.period.end);
  await claimUsage(db, t.tenantId, 'claim-before-cancel', 10);

  const result = await rollOverPeriod(db, { tenant_id: t.tenantId, period_start: t.period.start, close_at: new Date().toISOString(), grace_seconds: 0, cancel: true });
  expect(result.closed.end).toBe(new Date(Date.parse(past) + 1).toISOString());
  expect(await periodOf(t.tenantId, 'past')).toBe(t.period.start);
  expect(result.closed_counters.map((c) => [c.metric, c.total])).toEqual([['tokens', '4']]);
  expect(await readPeriodCounters(db, t.tenantId, [t.period.end])).toEqual([]);
});

test('an early close onto another interval places again the events ingest had placed past the period', async () => {
  const ends = Date.now() + 120_000;
  const anchor = new Date(ends);
  anchor.setUTCMonth(anchor.getUTCMonth() - 1);
  const t = await createTenantFixture(db, { tenantId: unique('t'), plan: monthly(unique('plan')), anchor: anchor.toISOString() });
  const past = new Date(ends + 60_000).toISOString();
  await store(t.tenantId, [event('past', past, '4')]);
  expect(await periodOf(t.tenantId, 'past')).toBe(t.period.end); // where a monthly tiling would put it
  await claimUsage(db, t.tenantId, 'claim-before-close', 10);

  const daily = await savePlanVersion(db, { ...monthly(unique('daily')), interval: 'day' });
  await db('tenants').where({ id: t.tenantId }).update({ plan_id: daily.id });
  const result = await rollOverPeriod(db, { tenant_id: t.tenantId, period_start: t.period.start, close_at: new Date().toISOString(), grace_seconds: 0, cancel: false });
  // Daily periods tiled from the close: the event belongs to the one that holds its timestamp.
  let home = result.next!.period;
  while (Date.parse(past) >= Date.parse(home.end)) home = periodAfterEarlyClose(anchor.toISOString(), 'day', 'UTC', home.end);
  expect(await periodOf(t.tenantId, 'past')).toBe(home.start);
  // Its counter moved with it.
  expect(await readPeriodCounters(db, t.tenantId, [t.period.end])).toEqual([]);
  expect((await readPeriodCounters(db, t.tenantId, [home.start])).map((c) => c.total)).toEqual(['4']);
});
