import fc from 'fast-check';
import type { Knex } from 'knex';
import { COUNTED, claimUsage, countUnclaimedEvents, readPeriodCounters } from '../../src/db/ledger';
import { counterFromAggregates } from '../../src/domain/aggregation';
import { aggregateStoredUsage } from '../../src/db/usage';
import { insertPlacedEvents, lockTenantLedger } from '../../src/db/ingest';
import type { ClaimResult } from '../../src/contracts/ledger';
import type { Db } from '../../src/db/knex';
import { testDbForFile, unique } from '../support/stack';
import { LEDGER_METERS } from '../support/ledger-meters';

/**
 * The event ledger's counting side on a real PostgreSQL: claims mark each stored event once and
 * add it once to `period_counters`, whatever the claim sizes, retries and overlapping claimers,
 * and the read model always equals the reference aggregation of the stored events.
 */
const db = testDbForFile();

const METERS = LEDGER_METERS;
const PERIODS = ['2026-11-01T00:00:00.000Z', '2026-12-01T00:00:00.000Z'];

interface StoredEvent {
  id: string;
  metric: string;
  quantity: string;
  timestamp: string;
  period_start: string;
}

/** Stores events as the API does: acknowledged, not counted yet. */
async function storeUnclaimed(db: Db | Knex.Transaction, tenantId: string, events: StoredEvent[]): Promise<void> {
  if (events.length === 0) return;
  await insertPlacedEvents(db, tenantId, events, 'test-ingest', new Date());
}

/** The read model, meter by meter, against the reference aggregation of the stored events. */
async function expectReadModelMatchesStore(tenantId: string): Promise<void> {
  const counters = await readPeriodCounters(db, tenantId, PERIODS);
  for (const period of PERIODS) {
    const stored = await aggregateStoredUsage(db, tenantId, period, METERS);
    const model = Object.fromEntries(
      METERS.map((m) => [m.metric, counterFromAggregates(counters.find((c) => c.period_start === period && c.metric === m.metric), m.aggregation)]),
    );
    expect(model).toEqual(stored);
  }
}

const eventArb = fc.record({
  id: fc.integer({ min: 0, max: 60 }).map((n) => `e${n}`), // repeats: sent twice, stored once
  metric: fc.constantFrom(...METERS.map((m) => m.metric)),
  quantity: fc.integer({ min: 0, max: 10_000_000 }).map((n) => (n / 1000).toString()),
  // few distinct timestamps, so `latest` ties are common and the receive order must break them
  timestamp: fc.integer({ min: 0, max: 4 }).map((n) => new Date(Date.parse('2026-11-20T00:00:00Z') + n * 1000).toISOString()),
  period_start: fc.constantFrom(...PERIODS),
});

test('claims of any size, retried and overlapping, count every stored event exactly once', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.array(eventArb, { maxLength: 25 }), { minLength: 1, maxLength: 6 }),
      fc.integer({ min: 1, max: 20 }),
      async (batches, claimSize) => {
        const tenantId = unique('ledger');
        let claims = 0;
        let [firstClaimed, firstMore] = [-1, false];
        for (const batch of batches) {
          await storeUnclaimed(db, tenantId, batch);
          // Two claimers at once (a timed-out attempt beside the next claim) until nothing is left.
          for (let more = true; more; ) {
            claims += 1;
            const [a, b] = await Promise.all([
              claimUsage(db, tenantId, `${tenantId}-c${claims}`, claimSize),
              claimUsage(db, tenantId, `${tenantId}-c${claims}-overlap`, claimSize),
            ]);
            more = a.more || b.more;
            if (claims === 1) [firstClaimed, firstMore] = [a.claimed, a.more];
            // pending_events is kept from receipts and totals, never counted: it must equal the count.
            const waiting = await db('usage_events').where({ tenant_id: tenantId }).whereRaw(`NOT ${COUNTED()}`).count<{ n: string }[]>('* as n');
            expect(await countUnclaimedEvents(db, tenantId)).toBe(Number(waiting[0]!.n));
          }
        }
        // A retried claim counts nothing again and answers for what it claimed before.
        const retried = await claimUsage(db, tenantId, `${tenantId}-c1`, claimSize);
        expect(retried.claimed).toBe(firstClaimed);
        expect(retried.more).toBe(firstMore);

        expect(await countUnclaimedEvents(db, tenantId)).toBe(0);
        await expectReadModelMatchesStore(tenantId);
      },
    ),
    { numRuns: 25, seed: 20261201 },
  );
});

test('a claim answers with the absolute counters it touched and whether more events wait', async () => {
  const tenantId = unique('ledger');
  const at = '2026-11-20T10:00:00.000Z';
  await storeUnclaimed(db, tenantId, [
    { id: 'a', metric: 'minutes', quantity: '1.5', timestamp: at, period_start: PERIODS[0]! },
    { id: 'b', metric: 'minutes', quantity: '2.25', timestamp: at, period_start: PERIODS[0]! },
    { id: 'c', metric: 'calls', quantity: '1', timestamp: at, period_start: PERIODS[1]! },
  ]);
  expect(await countUnclaimedEvents(db, tenantId)).toBe(3);

  const first = await claimUsage(db, tenantId, 'claim-1', 2);
  expect(first).toEqual({
    claimed: 2,
    more: true,
    counters: [{ period_start: PERIODS[0], metric: 'minutes', total: '3.75', events: 2, largest: '2.25', latest: '2.25' }],
    barrier_seq: expect.any(String),
  });
  const second = await claimUsage(db, tenantId, 'claim-2', 2);
  expect(second.claimed).toBe(1);
  expect(second.more).toBe(false);
  expect(second.counters).toEqual([{ period_start: PERIODS[1], metric: 'calls', total: '1', events: 1, largest: '1', latest: '1' }]);
  expect(await claimUsage(db, tenantId, 'claim-3', 2)).toEqual({ claimed: 0, more: false, counters: [], barrier_seq: second.barrier_seq });
});

test('a claim waits for the ingest transactions in flight, counts what they stored, and nothing stored after its barrier', async () => {
  const tenantId = unique('ledger');
  const at = '2026-11-20T10:00:00.000Z';
  const event = (id: string) => ({ id, metric: 'minutes', quantity: '1', timestamp: at, period_start: PERIODS[0]! });
  // An ingest transaction holds the tenant's ledger lock shared until it commits, as ingest does.
  const ingest = await db.transaction();
  await lockTenantLedger(ingest, tenantId, 'shared');
  await insertPlacedEvents(ingest, tenantId, [event('early')], 'in-flight', new Date());
  let claimed: ClaimResult | undefined;
  const claiming = claimUsage(db, tenantId, 'claim-1', 100).then((c) => (claimed = c));
  await new Promise((resolve) => setTimeout(resolve, 300));
  expect(claimed).toBeUndefined();
  await ingest.commit();
  await claiming;
  expect(claimed).toMatchObject({ claimed: 1, more: false });

  // Stored after the first claim's barrier: a claim bounded by it leaves it; an unbounded one counts it.
  await storeUnclaimed(db, tenantId, [event('late')]);
  expect(await claimUsage(db, tenantId, 'claim-2', 100, { throughSeq: claimed!.barrier_seq })).toMatchObject({ claimed: 0, more: false });
  expect(await countUnclaimedEvents(db, tenantId)).toBe(1);
  expect(await claimUsage(db, tenantId, 'claim-3', 100)).toMatchObject({ claimed: 1, more: false });
  expect(await countUnclaimedEvents(db, tenantId)).toBe(0);
});
