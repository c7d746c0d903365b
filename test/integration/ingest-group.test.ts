import express from 'express';
import type { AddressInfo } from 'node:net';
import { errorMiddleware } from '../../src/api/errors';
import { PlacementKeptChanging, storeUsageRequests, type IncomingEvent, type IngestRequest } from '../../src/db/ingest';
import { countUnclaimedEvents } from '../../src/db/ledger';
import { PlacementContexts } from '../../src/db/placement-contexts';
import { rollOverPeriod } from '../../src/db/rollover';
import { testDbForFile, unique } from '../support/stack';
import { createTenantFixture } from '../support/tenant-fixture';

/**
 * Group commit on a real PostgreSQL (src/db/ingest.ts, `storeUsageRequests`): several requests
 * in one transaction are judged each on its own. A refused, backlogged or unknown-tenant request
 * stores nothing of itself and changes nothing for the others; a resend is never refused, also
 * across the requests of one transaction; every event is stored once. A context kept by the
 * process is checked under the tenant's lock, never trusted.
 */
const db = testDbForFile();

async function tenant(): Promise<string> {
  const tenantId = unique('group');
  await createTenantFixture(db, {
    tenantId,
    anchor: new Date(Date.now() - 60_000).toISOString(),
    plan: { id: unique('plan'), name: 'Group', currency: 'USD', interval: 'month', base_fee: '0', alert_thresholds: [], grace_period_seconds: 0, meters: [{ metric: 'tokens', aggregation: 'sum', pricing: { model: 'per_unit', unit_price: '0.01' } }] },
  });
  return tenantId;
}

const ev = (id: string, metric = 'tokens'): IncomingEvent => ({ id, metric, quantity: '1', timestamp: null });
const req = (batchId: string, batches: Array<[string, IncomingEvent[]]>): IngestRequest => ({ batches: new Map(batches), receivedAt: new Date(), batchId });
const storedIds = async (tenantId: string) => (await db('usage_events').where({ tenant_id: tenantId }).orderBy('event_id').pluck<string[]>('event_id'));

test('requests sharing a transaction are stored or refused each on its own', async () => {
  const [a, b] = [await tenant(), await tenant()];
  const results = await storeUsageRequests(db, [
    req('r1', [[a, [ev('a1'), ev('a2')]], [b, [ev('b1')]]]),
    req('r2', [[b, [ev('b2'), ev('b3', 'minutes')]]]), // unknown metric: nothing of r2
    req('r3', [[a, [ev('a2'), ev('a3')]]]), // a2 again: stored once, not refused
    req('r4', [[a, [ev('a4')]], ['nobody_' + unique('x'), [ev('n1')]]]), // an unknown tenant: nothing of r4
    req('r5', [[b, [ev('a1'), ev('b1', 'minutes')]]]), // b1 with a metric b's plan lacks, but r1 stores b1: a resend
  ]);
  const kinds = results.map((r) => (r.kind === 'judged' ? Object.fromEntries([...r.outcomes].map(([t, o]) => [t === a ? 'a' : t === b ? 'b' : 'nobody', o.kind])) : r.kind));
  expect(kinds).toEqual([{ a: 'stored', b: 'stored' }, { b: 'refused' }, { a: 'stored' }, { a: 'stored', nobody: 'no_tenant' }, { b: 'stored' }]);
  expect(await storedIds(a)).toEqual(['a1', 'a2', 'a3']);
  expect(await storedIds(b)).toEqual(['a1', 'b1']);
  // Receipts count what was stored: three of a's, two of b's.
  expect([await countUnclaimedEvents(db, a), await countUnclaimedEvents(db, b)]).toEqual([3, 2]);
  const r3 = results[2]!;
  expect(r3.kind === 'judged' && r3.outcomes.get(a)).toMatchObject({ kind: 'stored', received: 2, stored: 1 });
});

test('a tenant over its backlog refuses the requests that name it, not the others of the transaction', async () => {
  const [busy, calm] = [await tenant(), await tenant()];
  await storeUsageRequests(db, [req('fill', [[busy, [ev('f1'), ev('f2'), ev('f3')]]])]);
  const results = await storeUsageRequests(
    db,
    [req('r1', [[busy, [ev('f4')]], [calm, [ev('c1')]]]), req('r2', [[calm, [ev('c2')]]])],
    { maxPending: 2 },
  );
  expect(results[0]).toEqual({ kind: 'backlogged', tenantId: busy, pending: 3 });
  expect(results[1]!.kind).toBe('judged');
  expect(await storedIds(busy)).toEqual(['f1', 'f2', 'f3']);
  expect(await storedIds(calm)).toEqual(['c2']);
});

test('with its context kept a batch is one statement; a context gone stale is read again and the batch placed where the tenant stands now', async () => {
  const tenantId = await tenant();
  const contexts = new PlacementContexts();
  const queries: string[] = [];
  const count = (q: { sql: string }) => void queries.push(q.sql);
  db.on('query', count);
  try {
    await storeUsageRequests(db, [req('first', [[tenantId, [ev('k1')]]])], { contexts });
    expect(queries).toHaveLength(2); // the context, then the store
    queries.length = 0;
    await storeUsageRequests(db, [req('kept', [[tenantId, [ev('k2')]]])], { contexts });
    expect(queries).toHaveLength(1);

    // The tenant's period closes behind the kept context.
    const { start } = await db('periods').where({ tenant_id: tenantId, status: 'open' }).first<{ start: Date }>('start');
    const closeAt = new Date(Date.now() - 1000).toISOString();
    const rolled = await rollOverPeriod(db, { tenant_id: tenantId, period_start: start.toISOString(), close_at: closeAt, grace_seconds: 0, cancel: false });
    queries.length = 0;
    const [now] = await storeUsageRequests(db, [req('after', [[tenantId, [ev('k3')]]])], { contexts });
    expect(now).toMatchObject({ kind: 'judged' });
    // The stale store, the context read afresh, the store again.
    expect(queries).toHaveLength(3);
    const row = await db('usage_events').where({ tenant_id: tenantId, event_id: 'k3' }).first<{ period_start: Date }>('period_start');
    expect(row.period_start.toISOString()).toBe(rolled.next!.period.start);
    const [late] = await storeUsageRequests(db, [req('late', [[tenantId, [{ ...ev('k4'), timestamp: new Date(Date.parse(closeAt) - 5000).toISOString() }]]])], { contexts });
    expect(late?.kind === 'judged' && late.outcomes.get(tenantId)).toMatchObject({ kind: 'refused', refusals: [expect.objectContaining({ code: 'late_event' })] });
  } finally {
    db.off('query', count);
  }
});

test('a tenant that changes before every attempt stores nothing, and the client is told to retry (503), not of a defect', async () => {
  const tenantId = await tenant();
  let reads = 0;
  /** Another process changes the tenant's time zone right after each read of its context. */
  class ChangedBehind extends PlacementContexts {
    override async read(...args: Parameters<PlacementContexts['read']>) {
      const found = await super.read(...args);
      reads += 1;
      await db('tenants').where({ id: tenantId }).update({ timezone: reads % 2 ? 'Europe/Paris' : 'UTC' });
      return found;
    }
  }
  const failure = await storeUsageRequests(db, [req('busy', [[tenantId, [ev('c1')]]])], { contexts: new ChangedBehind() }).catch((err: unknown) => err);
  expect(failure).toBeInstanceOf(PlacementKeptChanging);
  expect(reads).toBe(5);
  expect(await storedIds(tenantId)).toEqual([]);

  const app = express();
  app.post('/', () => {
    throw failure;
  });
  app.use(errorMiddleware());
  const server = app.listen(0, '127.0.0.1');
  try {
    await new Promise((resolve) => server.once('listening', resolve));
    const res = await fetch(`http://127.0.0.1:${(server.address() as AddressInfo).port}/`, { method: 'POST' });
    expect(res.status).toBe(503);
    expect(res.headers.get('retry-after')).toBe('1');
    expect(await res.json()).toMatchObject({ code: 'unavailable' });
  } finally {
    server.close();
  }
});

test('a backlog grown behind a kept figure is found under the lock, and nothing of the request is stored', async () => {
  const tenantId = await tenant();
  const contexts = new PlacementContexts();
  await storeUsageRequests(db, [req('first', [[tenantId, [ev('b1')]]])], { contexts, maxPending: 2 });
  // Another API process stores three more: this one's kept figure does not know.
  await storeUsageRequests(db, [req('other', [[tenantId, [ev('b2'), ev('b3'), ev('b4')]]])]);
  const [result] = await storeUsageRequests(db, [req('more', [[tenantId, [ev('b5')]]])], { contexts, maxPending: 2 });
  expect(result).toEqual({ kind: 'backlogged', tenantId, pending: 4 });
  expect(await storedIds(tenantId)).toEqual(['b1', 'b2', 'b3', 'b4']);
});

test("a tenant's placement version changes with what placement reads, and only with it", async () => {
  const tenantId = await tenant();
  const version = async () => (await db('tenants').where({ id: tenantId }).first<{ placement_version: string }>('placement_version')).placement_version;
  const changes = async (write: () => Promise<unknown>) => {
    const before = await version();
    await write();
    return (await version()) !== before;
  };
  const period = () => db('periods').where({ tenant_id: tenantId, status: 'open' });
  expect(await changes(() => db('tenants').where({ id: tenantId }).update({ timezone: 'Europe/Paris' }))).toBe(true);
  expect(await changes(() => period().update({ grace_ends_at: new Date() }))).toBe(true);
  expect(await changes(() => db('tenants').where({ id: tenantId }).update({ timezone: 'Europe/Paris' }))).toBe(false);
  expect(await changes(() => period().update({ events_purged_at: new Date() }))).toBe(false);
});

test('beyond its capacity a process keeps the contexts used last', async () => {
  const [a, b] = [await tenant(), await tenant()];
  const contexts = new PlacementContexts(1);
  const queries: string[] = [];
  const count = (q: { sql: string }) => void queries.push(q.sql);
  const storeFor = async (tenantId: string, id: string) => {
    queries.length = 0;
    await storeUsageRequests(db, [req(id, [[tenantId, [ev(id)]]])], { contexts });
    return queries.length;
  };
  db.on('query', count);
  try {
    expect(await storeFor(a, 'a1')).toBe(2); // read, then stored
    expect(await storeFor(a, 'a2')).toBe(1); // kept
    expect(await storeFor(b, 'b1')).toBe(2); // b's context replaces a's
    expect(await storeFor(a, 'a3')).toBe(2);
  } finally {
    db.off('query', count);
  }
});
