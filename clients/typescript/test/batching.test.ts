/** When batches go out, and what they carry: size, bytes, interval, ids. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TallyClient } from '../src';
import { FAST_RETRY, scriptedApi, until } from './support';

test('flush on size: 1,000 events go out at once, the rest waits for flush()', async () => {
  const api = await scriptedApi();
  const client = new TallyClient({ baseUrl: api.url, apiKey: 'tk_test', flushIntervalMs: 60_000, retry: FAST_RETRY });
  for (let i = 0; i < 2_500; i += 1) client.track({ metric: 'api_requests', quantity: 1 });
  await until(() => api.received.length === 2, 5_000, 'two full batches');
  await new Promise((r) => setTimeout(r, 100));
  assert.deepEqual(api.received.map((r) => r.events.length), [1000, 1000]);
  assert.equal(client.stats().queued, 500);
  await client.flush();
  assert.deepEqual(api.received.map((r) => r.events.length), [1000, 1000, 500]);
  assert.equal(new Set(api.accepted().map((e) => e.id)).size, 2_500);
  await client.close();
  await api.close();
});

test('flush on bytes: a batch goes out once 512 KiB wait, and no body is larger', async () => {
  const api = await scriptedApi();
  const client = new TallyClient({ baseUrl: api.url, apiKey: 'tk_test', flushIntervalMs: 60_000, retry: FAST_RETRY });
  const note = 'x'.repeat(10_000);
  // About 10 KB per event: 52 of them cross 512 KiB, long before 1,000 events.
  for (let i = 0; i < 60; i += 1) client.track({ metric: 'storage_gb', quantity: 1, properties: { note } });
  await until(() => api.received.length === 1, 5_000, 'the first batch');
  const first = api.received[0]!;
  assert.ok(Buffer.byteLength(first.body) <= 512 * 1024, `body of ${Buffer.byteLength(first.body)} bytes`);
  const oneMore = Buffer.byteLength(JSON.stringify(first.events[0])) + 1;
  assert.ok(Buffer.byteLength(first.body) + oneMore > 512 * 1024, 'the batch is filled up to the limit');
  assert.ok(first.events.length < 60);
  await client.close();
  assert.equal(api.accepted().length, 60);
  await api.close();
});

test('flush on interval: a lone event goes out after flushIntervalMs without flush()', async () => {
  const api = await scriptedApi();
  const client = new TallyClient({ baseUrl: api.url, apiKey: 'tk_test', flushIntervalMs: 150, retry: FAST_RETRY });
  const trackedAt = Date.now();
  const id = client.track({ metric: 'api_requests', quantity: 2, timestamp: new Date('2026-12-01T10:00:00Z'), properties: { region: 'eu' } });
  await until(() => api.received.length === 1, 5_000, 'the interval flush');
  const waited = api.received[0]!.at - trackedAt;
  assert.ok(waited >= 140 && waited < 2_000, `sent after ${waited} ms`);
  assert.deepEqual(api.received[0]!.events, [{ id, metric: 'api_requests', quantity: 2, timestamp: '2026-12-01T10:00:00.000Z', properties: { region: 'eu' } }]);
  assert.equal(api.received[0]!.headers['x-api-key'], 'tk_test');
  assert.equal(api.received[0]!.headers['content-type'], 'application/json');
  await client.close();
  await api.close();
});

test('ids: made once per event at track time, kept by every resend; given ids are kept; tenant_id from the client', async () => {
  let calls = 0;
  const api = await scriptedApi(() => (++calls <= 2 ? { status: 503, headers: { 'retry-after': '0' } } : { status: 202 }));
  const client = new TallyClient({ baseUrl: api.url, apiKey: 'ak_admin', tenantId: 'acme', flushIntervalMs: 60_000, retry: FAST_RETRY });
  const made = [client.track({ metric: 'm', quantity: 1 }), client.track({ metric: 'm', quantity: 1, id: 'order-42' }), client.track({ metric: 'm', quantity: 1, tenantId: 'other' })];
  assert.match(made[0]!, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.equal(made[1], 'order-42');
  await client.flush();
  assert.equal(api.received.length, 3);
  for (const r of api.received) assert.deepEqual(r.events.map((e) => e.id), made);
  assert.deepEqual(api.received[0]!.events.map((e) => e.tenant_id), ['acme', 'acme', 'other']);
  assert.equal(client.stats().retries, 2);
  assert.equal(client.stats().delivered, 3);
  await client.close();
  await api.close();
});

test('events the API could never take are refused by track() itself', async () => {
  const client = new TallyClient({ baseUrl: 'http://127.0.0.1:9', apiKey: 'tk_test' });
  assert.throws(() => client.track({ metric: '', quantity: 1 }), TypeError);
  assert.throws(() => client.track({ metric: 'm', quantity: Number.NaN }), RangeError);
  assert.throws(() => client.track({ metric: 'm', quantity: -1 }), RangeError);
  assert.throws(() => client.track({ metric: 'm', quantity: 1, id: 'x'.repeat(129) }), RangeError);
  assert.throws(() => client.track({ metric: 'm', quantity: 1, properties: ['a'] as unknown as Record<string, unknown> }), /properties must be a JSON object/);
  assert.throws(() => client.track({ metric: 'm', quantity: 1, properties: { blob: 'x'.repeat(600 * 1024) } }), /a batch holds at most 524288 bytes/);
  assert.throws(() => new TallyClient({ baseUrl: 'http://x', apiKey: 'k', maxBatchEvents: 1001 }), /maxBatchEvents must be an integer from 1 to 1000/);
  assert.throws(() => new TallyClient({ baseUrl: 'http://x', apiKey: 'k', maxBatchBytes: 2 * 1024 * 1024 }), /maxBatchBytes/);
  assert.equal(client.stats().queued, 0);
  await client.close();
});
