import { completeDelivery, openDeliveryAttempt, recordDeliveryFailure, type DeliveryKey } from '../../src/db/deliveries';
import { testDbForFile, unique } from '../support/stack';

/**
 * Opening an attempt at a delivery on a real PostgreSQL: one statement creates the row with its
 * payload, or finds it, and leases a pending row to one attempt at a time, counting attempts, so
 * overlapping attempts of one notification never both send it.
 */
const db = testDbForFile();

const webhook = (eventId: string): DeliveryKey => ({ event_id: eventId, channel: 'webhook', target: 'http://127.0.0.1:9/hook' });
const pendingRow = (payload: unknown) => ({ tenant_id: 'deliveries-test', event_type: 'alert.triggered' as const, status: 'pending' as const, attempts: 0, payload });

test('the first attempt creates the row and holds its lease; a second attempt meanwhile is busy and changes nothing', async () => {
  const key = webhook(unique('al'));
  const first = await openDeliveryAttempt(db, key, pendingRow({ n: 1 }));
  expect(first).toMatchObject({ kind: 'leased', created: true, delivery: { status: 'pending', attempts: 1, payload: { n: 1 } } });

  const second = await openDeliveryAttempt(db, key, pendingRow({ n: 2 }));
  expect(second).toEqual({ kind: 'busy', attempts: 1 });
  const row = await db('notification_deliveries').where(key).first();
  expect(row).toMatchObject({ attempts: 1, payload: { n: 1 } }); // the payload frozen by the first attempt
});

test('a failed attempt releases the lease: the next one leases the row again with the first payload, and a delivered row is settled', async () => {
  const key = webhook(unique('al'));
  const first = await openDeliveryAttempt(db, key, pendingRow({ n: 1 }));
  if (first.kind !== 'leased') throw new Error(`expected a lease, got ${first.kind}`);
  await recordDeliveryFailure(db, first.delivery.id, 'receiver answered 503', false);

  const retry = await openDeliveryAttempt(db, key, pendingRow({ n: 2 }));
  expect(retry).toMatchObject({ kind: 'leased', created: false, delivery: { attempts: 2, last_error: 'receiver answered 503', payload: { n: 1 } } });
  if (retry.kind !== 'leased') return;
  await completeDelivery(db, retry.delivery.id, 'delivered');

  expect(await openDeliveryAttempt(db, key, pendingRow({ n: 3 }))).toMatchObject({ kind: 'settled', created: false, delivery: { status: 'delivered', attempts: 2 } });
});

test('an expired lease is taken over by the next attempt', async () => {
  const key = webhook(unique('al'));
  await openDeliveryAttempt(db, key, pendingRow({}));
  await db('notification_deliveries').where(key).update({ locked_until: db.raw("now() - interval '1 second'") });
  expect(await openDeliveryAttempt(db, key, pendingRow({}))).toMatchObject({ kind: 'leased', created: false, delivery: { attempts: 2 } });
});

test('a row created as kept (the log channel) is settled at once and never leased', async () => {
  const key: DeliveryKey = { event_id: unique('al'), channel: 'log', target: 'log' };
  const row = { ...pendingRow({ logged: true }), status: 'recorded' as const, attempts: 1 };
  expect(await openDeliveryAttempt(db, key, row)).toMatchObject({ kind: 'settled', created: true, delivery: { status: 'recorded', attempts: 1 } });
  expect(await openDeliveryAttempt(db, key, row)).toMatchObject({ kind: 'settled', created: false, delivery: { status: 'recorded', attempts: 1 } });
});

test('of many attempts opened at once, exactly one holds the lease', async () => {
  for (let round = 0; round < 5; round += 1) {
    const key = webhook(unique('al'));
    const opened = await Promise.all(Array.from({ length: 8 }, (_, n) => openDeliveryAttempt(db, key, pendingRow({ n }))));
    expect(opened.filter((o) => o.kind === 'leased')).toHaveLength(1);
    expect(opened.filter((o) => o.kind === 'busy')).toHaveLength(7);
    expect(await db('notification_deliveries').where(key).select('attempts')).toEqual([{ attempts: 1 }]);
  }
});
