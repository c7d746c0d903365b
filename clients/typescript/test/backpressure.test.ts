/** Bounded memory while the API is down: track() refuses, trackAsync() waits, in line. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BufferFullError, ClientClosedError, TallyClient, type UsageDeliveryError } from '../src';
import { FAST_RETRY, problem, scriptedApi, until } from './support';

test('API down: the buffer fills to its bound, track() throws BufferFullError, trackAsync() waits until the API is back', async () => {
  let down = true;
  const api = await scriptedApi(() => (down ? { ...problem(503, 'unavailable'), headers: { 'retry-after': '0' } } : { status: 202 }));
  const errors: UsageDeliveryError[] = [];
  const client = new TallyClient({
    baseUrl: api.url,
    apiKey: 'tk_test',
    maxBatchEvents: 5,
    maxBufferedEvents: 10,
    flushIntervalMs: 20,
    retry: { ...FAST_RETRY, maxAttempts: 1_000, maxElapsedMs: 60_000 },
    onError: (e) => errors.push(e),
  });
  const tracked: string[] = [];
  for (let i = 0; i < 10; i += 1) tracked.push(client.track({ metric: 'm', quantity: 1 }));
  await until(() => api.received.length >= 3, 5_000, 'retries while the API is down');
  assert.throws(() => client.track({ metric: 'm', quantity: 1 }), (err: unknown) => err instanceof BufferFullError && err.code === 'buffer_full' && err.limit.events === 10);
  assert.equal(client.stats().queued + client.stats().inFlight, 10, 'nothing beyond the bound is held');

  // Waiters queue in order; one that gives up leaves the line.
  const giveUp = new AbortController();
  const waiting = [client.trackAsync({ metric: 'm', quantity: 1, id: 'late-1' }), client.trackAsync({ metric: 'm', quantity: 1, id: 'late-2' })];
  const abandoned = client.trackAsync({ metric: 'm', quantity: 1, id: 'abandoned' }, { signal: giveUp.signal });
  giveUp.abort(new Error('caller gave up'));
  await assert.rejects(abandoned, /caller gave up/);
  assert.equal(client.stats().waiting, 2);
  // While someone waits, track() does not jump the line.
  assert.throws(() => client.track({ metric: 'm', quantity: 1 }), BufferFullError);

  down = false;
  assert.deepEqual(await Promise.all(waiting), ['late-1', 'late-2']);
  await client.flush();
  const accepted = api.accepted().map((e) => e.id);
  assert.deepEqual(accepted, [...tracked, 'late-1', 'late-2']);
  assert.equal(errors.length, 0);
  await client.close();
  await api.close();
});

test('the byte bound: maxBufferedBytes refuses an event that would not fit', async () => {
  const api = await scriptedApi(() => 'hang');
  const client = new TallyClient({ baseUrl: api.url, apiKey: 'tk_test', maxBatchBytes: 4_096, maxBufferedBytes: 8_192, flushIntervalMs: 60_000, requestTimeoutMs: 60_000, onError: () => undefined });
  const blob = 'x'.repeat(1_000);
  let held = 0;
  assert.throws(() => {
    for (;;) {
      client.track({ metric: 'm', quantity: 1, properties: { blob } });
      held += 1;
    }
  }, BufferFullError);
  assert.ok(held >= 7 && held <= 8, `${held} events of ~1 KB held under 8 KiB`);
  assert.ok(client.stats().heldBytes <= 8_192);
  await client.close({ timeoutMs: 50 });
  await api.close();
});

test('close() rejects waiting trackAsync() calls and refuses new events', async () => {
  const api = await scriptedApi(() => 'hang');
  const errors: UsageDeliveryError[] = [];
  const client = new TallyClient({ baseUrl: api.url, apiKey: 'tk_test', maxBatchEvents: 1, maxBufferedEvents: 1, flushIntervalMs: 10, requestTimeoutMs: 60_000, onError: (e) => errors.push(e) });
  client.track({ metric: 'm', quantity: 1 });
  const waiter = client.trackAsync({ metric: 'm', quantity: 1 });
  const closing = client.close({ timeoutMs: 100 });
  await assert.rejects(waiter, ClientClosedError);
  await closing;
  assert.throws(() => client.track({ metric: 'm', quantity: 1 }), ClientClosedError);
  await assert.rejects(client.trackAsync({ metric: 'm', quantity: 1 }), ClientClosedError);
  assert.equal(errors.length, 1);
  assert.equal(errors[0]!.reason, 'closed');
  await api.close();
});
