import fc from 'fast-check';
import { claimUsage, countUnclaimedEvents, readPeriodCounters } from '../../src/db/ledger';
import { countInBulk, listenForDecisionsWaiting, tenantsWaiting, type DecisionWaiting } from '../../src/db/bulk-counting';
import { counterFromAggregates } from '../../src/domain/aggregation';
import { aggregateStoredUsage } from '../../src/db/usage';
import { insertPlacedEvents, lockTenantLedger } from '../../src/db/ingest';
import type { DecisionPoints } from '../../src/contracts/ledger';
import type { Client } from '@temporalio/client';
import { createLedgerActivities } from '../../src/activities/ledger';
import { quietLogger, testDatabaseUrl, testDbForFile, unique } from '../support/stack';
import { createDb } from '../../src/db/knex';
import { LEDGER_METERS } from '../support/ledger-meters';
import { createTenantFixture } from '../support/tenant-fixture';

/**
 * Bulk counting on a real PostgreSQL (src/db/bulk-counting.ts): the counter counts a tenant's
 * waiting events only while they stay below the decision points its workflow's last claim
 * stored, and otherwise leaves every one of them to the workflow. Together with claims, each
 * stored event is counted exactly once.
 */
const db = testDbForFile();

const METERS = LEDGER_METERS;
const PERIOD = '2026-11-01T00:00:00.000Z';
const NEXT_PERIOD = '2026-12-01T00:00:00.000Z';
const AT = '2026-11-20T10:00:00.000Z';

/** Decision points over the four meters: `below` per metric (null: nothing to decide). */
function points(below: Partial<Record<string, string | null>>, period = PERIOD): DecisionPoints {
  return { period_start: period, meters: Object.fromEntries(METERS.filter((m) => m.metric in below).map((m) => [m.metric, { aggregation: m.aggregation, below: below[m.metric] ?? null }])) };
}

let eventNumber = 0;
function event(metric: string, quantity: string, period = PERIOD, timestamp = AT) {
  eventNumber += 1;
  return { id: `e${eventNumber}`, metric, quantity, timestamp, period_start: period };
}

async function store(tenantId: string, events: Array<ReturnType<typeof event>>): Promise<void> {
  await insertPlacedEvents(db, tenantId, events, 'test-ingest', new Date());
}

/**
 * A tenant whose workflow has claimed once and published `published` (no workflow runs: the
 * test claims by hand). With `stored`, a tenant row too, as the counter lists only real tenants.
 */
async function tenantWithPoints(published: DecisionPoints | null, options: { stored?: boolean } = {}): Promise<string> {
  const tenantId = unique('bulk');
  if (options.stored) {
    await createTenantFixture(db, {
      tenantId,
      anchor: PERIOD,
      plan: { id: unique('plan'), name: 'Bulk', currency: 'USD', interval: 'month', base_fee: '0', alert_thresholds: [80], grace_period_seconds: 0, meters: METERS.map((m) => ({ ...m, pricing: { model: 'per_unit' as const, unit_price: '0.01' } })) },
    });
  }
  await claimUsage(db, tenantId, `${tenantId}-first`, 100, { decisionPoints: published });
  return tenantId;
}

async function counters(tenantId: string, period = PERIOD): Promise<Record<string, string>> {
  const stored = await readPeriodCounters(db, tenantId, [period]);
  return Object.fromEntries(stored.map((c) => [c.metric, counterFromAggregates(c, METERS.find((m) => m.metric === c.metric)!.aggregation)]));
}

test('a tenant whose waiting events stay below its points is counted in bulk: counters, watermark and receipts move together', async () => {
  const tenantId = await tenantWithPoints(points({ minutes: '100', calls: '10', storage: '50', seats: null }), { stored: true });
  await store(tenantId, [event('minutes', '30'), event('minutes', '69.5'), event('calls', '1'), event('storage', '49'), event('seats', '7')]);
  expect(await countUnclaimedEvents(db, tenantId)).toBe(5);
  expect((await tenantsWaiting(db, 100_000)).map((w) => w.tenant_id)).toContain(tenantId);

  expect(await countInBulk(db, [tenantId], 1_000)).toEqual([{ tenant_id: tenantId, kind: 'counted', counted: 5, more: false }]);
  expect(await counters(tenantId)).toEqual({ minutes: '99.5', calls: '1', storage: '49', seats: '7' });
  expect(await countUnclaimedEvents(db, tenantId)).toBe(0);
  expect((await tenantsWaiting(db, 100_000)).map((w) => w.tenant_id)).not.toContain(tenantId);
  // A claim after it finds nothing left, and answers the whole period when asked.
  const claim = await claimUsage(db, tenantId, 'after', 100, { currentPeriod: PERIOD });
  expect(claim.claimed).toBe(0);
  expect(claim.counters.map((c) => c.metric)).toEqual(['calls', 'minutes', 'seats', 'storage']);
});

test.each([
  ['a sum that reaches its point', points({ minutes: '100' }), [event('minutes', '60'), event('minutes', '40')]],
  ['a count that reaches its point', points({ calls: '2' }), [event('calls', '1'), event('calls', '1')]],
  ['a max that reaches its point', points({ storage: '50' }), [event('storage', '50')]],
  ['a latest meter whose new value could reach its point', points({ seats: '5' }), [event('seats', '5', PERIOD, '2026-11-01T00:00:00.000Z')]],
  ['a metric the points do not list', points({ minutes: null }), [event('calls', '1')]],
  ['an event of another period', points({ minutes: null }), [event('minutes', '1', NEXT_PERIOD, '2026-12-02T00:00:00.000Z')]],
  ['no points published', null, [event('minutes', '1')]],
])('%s: nothing of the tenant is counted in bulk; its workflow decides', async (_name, published, events) => {
  const tenantId = await tenantWithPoints(published);
  // One quiet event beside them: all or nothing per tenant, so the workflow sees the whole step.
  await store(tenantId, [event('minutes', '0.5'), ...events]);
  expect(await countInBulk(db, [tenantId], 1_000)).toEqual([{ tenant_id: tenantId, kind: 'decides' }]);
  expect(await countUnclaimedEvents(db, tenantId)).toBe(events.length + 1);
  expect(await counters(tenantId)).toEqual({});
});

test('just below each point counts; a tenant never claimed is left to its workflow; a claim in progress is not waited for', async () => {
  const quiet = await tenantWithPoints(points({ minutes: '100', calls: '3', storage: '50', seats: '5' }));
  await store(quiet, [event('minutes', '99.99'), event('calls', '1'), event('calls', '1'), event('storage', '49.9'), event('seats', '4.9')]);
  const fresh = unique('bulk');
  await store(fresh, [event('minutes', '1')]);
  const claiming = await tenantWithPoints(points({ minutes: null }));
  await store(claiming, [event('minutes', '1')]);

  const holder = await db.transaction();
  try {
    await holder('tenant_event_totals').where({ tenant_id: claiming }).forUpdate().select('tenant_id');
    const outcomes = await countInBulk(db, [quiet, fresh, claiming], 1_000);
    expect(new Map(outcomes.map((o) => [o.tenant_id, o.kind]))).toEqual(new Map([[quiet, 'counted'], [fresh, 'decides'], [claiming, 'busy']]));
  } finally {
    await holder.rollback();
  }
  expect(await countUnclaimedEvents(db, claiming)).toBe(1);
  expect(await countInBulk(db, [claiming], 1_000)).toEqual([{ tenant_id: claiming, kind: 'counted', counted: 1, more: false }]);
});

test('bulk counting waits for the ingest transactions in flight and counts what they stored; a full batch leaves the rest waiting', async () => {
  const tenantId = await tenantWithPoints(points({ minutes: null }), { stored: true });
  const ingest = await db.transaction();
  await lockTenantLedger(ingest, tenantId, 'shared');
  await insertPlacedEvents(ingest, tenantId, [event('minutes', '1'), event('minutes', '1'), event('minutes', '1')], 'in-flight', new Date());
  let done = false;
  const counting = countInBulk(db, [tenantId], 2).then((o) => {
    done = true;
    return o;
  });
  await new Promise((resolve) => setTimeout(resolve, 300));
  expect(done).toBe(false);
  await ingest.commit();
  expect(await counting).toEqual([{ tenant_id: tenantId, kind: 'counted', counted: 2, more: true }]);
  expect((await tenantsWaiting(db, 100_000)).map((w) => w.tenant_id)).toContain(tenantId);
  expect(await countInBulk(db, [tenantId], 2)).toEqual([{ tenant_id: tenantId, kind: 'counted', counted: 1, more: false }]);
  expect(await counters(tenantId)).toEqual({ minutes: '3' });
});

test('a claim stores its decision points, and a retried claim answers the whole current period as it stands', async () => {
  const tenantId = unique('bulk');
  await store(tenantId, [event('minutes', '2')]);
  const published = points({ minutes: '10' });
  const first = await claimUsage(db, tenantId, 'c1', 100, { decisionPoints: published, currentPeriod: PERIOD });
  expect(first.counters).toMatchObject([{ metric: 'minutes', total: '2' }]);
  const stored = await db('tenant_event_totals').where({ tenant_id: tenantId }).first('decision_points');
  expect(stored.decision_points).toEqual(published);

  await store(tenantId, [event('calls', '1')]);
  expect(await countInBulk(db, [tenantId], 100)).toMatchObject([{ kind: 'decides' }]); // calls is not listed
  await claimUsage(db, tenantId, 'c2', 100, { decisionPoints: points({ minutes: '10', calls: null }) });
  await store(tenantId, [event('minutes', '3')]);
  expect(await countInBulk(db, [tenantId], 100)).toMatchObject([{ kind: 'counted', counted: 1 }]);
  // The retry of c1 reads every counter of the period now, the bulk-counted ones included.
  const retried = await claimUsage(db, tenantId, 'c1', 100, { currentPeriod: PERIOD });
  expect(retried.claimed).toBe(1);
  expect(retried.counters).toMatchObject([
    { metric: 'calls', events: 1 },
    { metric: 'minutes', total: '5' },
  ]);
  // Null withdraws the points: nothing is counted in bulk any more.
  await claimUsage(db, tenantId, 'c3', 100, { decisionPoints: null });
  await store(tenantId, [event('minutes', '1')]);
  expect(await countInBulk(db, [tenantId], 100)).toMatchObject([{ kind: 'decides' }]);
});

test('an authorized consumption counted in bulk before its own claim: the claim counts nothing, and still answers the period as it stands', async () => {
  const tenantId = await tenantWithPoints(points({ minutes: '100' }), { stored: true });
  await store(tenantId, [event('minutes', '30')]);
  await claimUsage(db, tenantId, 'before', 100);
  // consumeAuthorized stores its event, and the counter may count it first: it stays below the point.
  const authorized = event('minutes', '10');
  await store(tenantId, [authorized]);
  expect(await countInBulk(db, [tenantId], 100)).toEqual([{ tenant_id: tenantId, kind: 'counted', counted: 1, more: false }]);

  // The workflow starts no invoice here: this activity never reaches Temporal.
  const ledger = createLedgerActivities({ db, logger: quietLogger, temporal: undefined as unknown as Client });
  const answer = await ledger.consumeAuthorized({ tenant_id: tenantId, claim_id: 'run-authorize-a1', event: authorized });
  expect(answer.claimed).toBe(0);
  // Without the period's counters the workflow would answer `remaining` as if the event were not counted.
  expect(answer.counters).toMatchObject([{ period_start: PERIOD, metric: 'minutes', total: '40', events: 2 }]);
  expect(await counters(tenantId)).toEqual({ minutes: '40' });
});

test('claims and bulk counts interleaved in any order count every stored event exactly once', async () => {
  const step = fc.oneof(
    fc.record({ kind: fc.constant('store' as const), events: fc.array(fc.record({ metric: fc.constantFrom(...METERS.map((m) => m.metric)), quantity: fc.integer({ min: 0, max: 20 }) }), { minLength: 1, maxLength: 6 }) }),
    fc.record({ kind: fc.constant('claim' as const), limit: fc.integer({ min: 1, max: 5 }), below: fc.option(fc.integer({ min: 1, max: 120 }), { nil: null }) }),
    fc.record({ kind: fc.constant('bulk' as const), limit: fc.integer({ min: 1, max: 5 }) }),
  );
  await fc.assert(
    fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 12 }), async (steps) => {
      const tenantId = unique('bulk');
      let claims = 0;
      const bulk: Promise<unknown>[] = [];
      for (const s of steps) {
        if (s.kind === 'store') await store(tenantId, s.events.map((e) => event(e.metric, String(e.quantity))));
        else if (s.kind === 'claim') {
          claims += 1;
          const below = s.below === null ? null : String(s.below);
          await claimUsage(db, tenantId, `c${claims}`, s.limit, { decisionPoints: points({ minutes: below, calls: below, storage: below, seats: below }) });
        } else bulk.push(countInBulk(db, [tenantId], s.limit)); // overlapping the steps after it
      }
      await Promise.all(bulk);
      // Whatever is left, claims finish it.
      for (let i = 0; (await countUnclaimedEvents(db, tenantId)) > 0; i++) await claimUsage(db, tenantId, `rest-${i}`, 100);
      const expected = await aggregateStoredUsage(db, tenantId, PERIOD, METERS);
      const stored = await readPeriodCounters(db, tenantId, [PERIOD]);
      const model = Object.fromEntries(METERS.map((m) => [m.metric, counterFromAggregates(stored.find((c) => c.metric === m.metric), m.aggregation)]));
      expect(model).toEqual(expected);
      const totals = await db('tenant_event_totals').where({ tenant_id: tenantId }).first('stored', 'claimed');
      expect(Number(totals?.claimed ?? 0)).toBe(Number(totals?.stored ?? 0));
    }),
    { numRuns: 25 },
  );
});

test('the counter is told which waiting tenants published no decision points: their workflows count them', async () => {
  const withPoints = await tenantWithPoints(points({ minutes: null }), { stored: true });
  const without = await tenantWithPoints(null, { stored: true });
  for (const t of [withPoints, without]) await store(t, [event('minutes', '1')]);
  const waiting = new Map((await tenantsWaiting(db, 100_000)).map((w) => [w.tenant_id, w.countable]));
  expect([waiting.get(withPoints), waiting.get(without)]).toEqual([true, false]);
});

test('a commit that stores events reaching a decision point notifies the counter, naming the tenant and its receipt; other commits do not', async () => {
  // Other files' stacks share the database and its channel: only notices naming this test's tenants count.
  const ours = new Set<string>();
  const named: DecisionWaiting[] = [];
  let notices = 0;
  let listening = false;
  const stop = listenForDecisionsWaiting(
    db,
    (waiting) => {
      // The notice without a tenant says that its LISTEN is in place.
      if (!waiting) listening = true;
      if (!waiting || !ours.has(waiting.tenant_id)) return;
      notices += 1;
      named.push(waiting);
    },
    (err) => {
      throw err;
    },
  );
  try {
    const tenantId = await tenantWithPoints(points({ minutes: '100', calls: null }), { stored: true });
    ours.add(tenantId);
    await eventually(() => listening);
    await store(tenantId, [event('minutes', '100')]);
    await eventually(() => notices === 1);
    const receipt = await db('event_receipts').where({ tenant_id: tenantId }).max({ id: 'id' }).first();
    expect(named).toEqual([{ tenant_id: tenantId, receipt: String(receipt!.id) }]);
    await claimUsage(db, tenantId, 'after-first', 100, { decisionPoints: points({ minutes: '200', calls: null }) });

    // Below the point, a metric with nothing to decide, another period, a tenant without points: silent.
    await store(tenantId, [event('minutes', '99.5'), event('calls', '1000')]);
    await store(tenantId, [event('minutes', '500', NEXT_PERIOD, '2026-12-02T00:00:00.000Z')]);
    const without = await tenantWithPoints(null, { stored: true });
    ours.add(without);
    await store(without, [event('minutes', '1000')]);
    // Reaching it inside a transaction: told at the commit, not before. (Events stored before and
    // not counted yet are left out of the judgement, so they are counted first.)
    await claimUsage(db, tenantId, 'after-silent', 100, { decisionPoints: points({ minutes: '200', calls: null }) });
    const ingest = await db.transaction();
    await insertPlacedEvents(ingest, tenantId, [event('minutes', '0.5')], 'in-flight', new Date());
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(notices).toBe(1);
    await ingest.commit();
    await eventually(() => notices === 2);
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(notices).toBe(2);

    // Two tenants reaching their points in one transaction: one notice for each.
    const other = await tenantWithPoints(points({ minutes: '1' }), { stored: true });
    ours.add(other);
    await claimUsage(db, tenantId, 'after-second', 100, { decisionPoints: points({ minutes: '300', calls: null }) });
    await db.transaction(async (trx) => {
      await insertPlacedEvents(trx, tenantId, [event('minutes', '500')], 'two-tenants', new Date());
      await insertPlacedEvents(trx, other, [event('minutes', '1')], 'two-tenants', new Date());
    });
    await eventually(() => notices === 4);
    expect(named.slice(2).map((n) => n.tenant_id).sort()).toEqual([tenantId, other].sort());
  } finally {
    await stop();
  }
});

test('a listener says once when it starts listening, and once again after its connection is lost: the gap', async () => {
  let tenantId = '';
  let notices = 0;
  let starts = 0;
  const errors: unknown[] = [];
  // Its own connection name, so that only its session is ended (other files' counters listen too),
  // and only notices naming its tenant, or none (the gap), count.
  const name = unique('listener');
  const url = new URL(testDatabaseUrl());
  url.searchParams.set('application_name', name);
  const listening = createDb(url.toString(), { max: 1 });
  const stop = listenForDecisionsWaiting(
    listening,
    (waiting) => {
      if (waiting === undefined) starts += 1;
      else if (waiting.tenant_id === tenantId) notices += 1;
    },
    (err) => errors.push(err),
    200,
  );
  try {
    tenantId = await tenantWithPoints(points({ minutes: '10' }), { stored: true });
    await eventually(() => starts === 1);
    await store(tenantId, [event('minutes', '10')]);
    await eventually(() => notices === 1);
    // What a PostgreSQL restart does to it: its session is ended from the server's side.
    const ended = await db.raw<{ rows: unknown[] }>(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = ?`, [name]);
    expect(ended.rows).toHaveLength(1);
    await eventually(() => starts === 2); // listening again, told it may have missed something
    expect(errors.length).toBeGreaterThan(0);
    await claimUsage(db, tenantId, 'after-loss', 100, { decisionPoints: points({ minutes: '20' }) });
    await store(tenantId, [event('minutes', '10')]);
    await eventually(() => notices === 2);
    expect(starts).toBe(2);
  } finally {
    await stop();
    await listening.destroy();
  }
});

async function eventually(check: () => boolean, timeoutMs = 5_000): Promise<void> {
  for (const until = Date.now() + timeoutMs; !check(); ) {
    if (Date.now() > until) throw new Error('timed out');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
