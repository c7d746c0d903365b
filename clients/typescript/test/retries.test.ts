/** Retries: which answers are retried, how long the client waits, and when it gives up. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TallyClient, TallyApiError, type UsageDeliveryError } from '../src';
import { DEFAULT_RETRY, parseRetryAfter, retryDelayMs } from '../src/retry';
import { FAST_RETRY, problem, scriptedApi, until } from './support';

for (const status of [429, 503]) {
  test(`${status} with Retry-After: 1 — the retry comes no sooner than a second later, with the same events`, async () => {
    const api = await scriptedApi((_, i) => (i === 0 ? { ...problem(status, status === 429 ? 'rate_limited' : 'unavailable'), headers: { 'retry-after': '1' } } : { status: 202 }));
    const client = new TallyClient({ baseUrl: api.url, apiKey: 'tk_test', flushIntervalMs: 60_000, retry: FAST_RETRY });
    client.track({ metric: 'm', quantity: 1 });
    client.track({ metric: 'm', quantity: 2 });
    await client.flush();
    assert.equal(api.received.length, 2);
    const waited = api.received[1]!.at - api.received[0]!.at;
    assert.ok(waited >= 1_000, `retried after ${waited} ms`);
    assert.ok(waited < 3_000, `retried after ${waited} ms`);
    assert.equal(api.received[1]!.body, api.received[0]!.body);
    assert.equal(client.stats().delivered, 2);
    await client.close();
    await api.close();
  });
}

test('Retry-After as an HTTP date, and the backoff: full jitter in a window that doubles up to its cap', () => {
  const now = Date.parse('2026-12-01T10:00:00Z');
  assert.equal(parseRetryAfter('Tue, 01 Dec 2026 10:00:03 GMT', now), 3_000);
  assert.equal(parseRetryAfter('Tue, 01 Dec 2026 09:00:00 GMT', now), 0);
  assert.equal(parseRetryAfter('2', now), 2_000);
  assert.equal(parseRetryAfter('soon', now), undefined);
  assert.equal(parseRetryAfter(null, now), undefined);
  const policy = { ...DEFAULT_RETRY, baseDelayMs: 100, maxDelayMs: 1_000 };
  const top = () => 0.999999;
  assert.deepEqual([1, 2, 3, 4, 5, 6].map((n) => retryDelayMs(policy, n, undefined, top)), [99, 199, 399, 799, 999, 999]);
  assert.equal(retryDelayMs(policy, 3, undefined, () => 0), 0);
  // Retry-After is a floor; a larger backoff draw still wins.
  assert.equal(retryDelayMs(policy, 1, 1_000, () => 0.5), 1_000);
  assert.equal(retryDelayMs({ ...policy, maxDelayMs: 10_000 }, 6, 1_000, top), 3_199);
  const draws = new Set(Array.from({ length: 50 }, () => retryDelayMs(policy, 4, undefined)));
  assert.ok(draws.size > 10, 'the waits are spread');
});

test('network errors are retried: a connection dropped before any answer, then accepted once', async () => {
  const api = await scriptedApi((_, i) => (i === 0 ? 'destroy' : { status: 202 }));
  const client = new TallyClient({ baseUrl: api.url, apiKey: 'tk_test', flushIntervalMs: 60_000, retry: FAST_RETRY });
  client.track({ metric: 'm', quantity: 1 });
  await client.flush();
  assert.equal(api.received.length, 2);
  assert.equal(api.accepted().length, 1);
  assert.equal(client.stats().retries, 1);
  await client.close();
  await api.close();
});

test('a request without an answer within requestTimeoutMs counts as a network error and is retried', async () => {
  const api = await scriptedApi((_, i) => (i === 0 ? 'hang' : { status: 202 }));
  const client = new TallyClient({ baseUrl: api.url, apiKey: 'tk_test', flushIntervalMs: 60_000, requestTimeoutMs: 200, retry: FAST_RETRY });
  client.track({ metric: 'm', quantity: 1 });
  await client.flush();
  assert.equal(api.received.length, 2);
  assert.equal(client.stats().delivered, 1);
  await client.close();
  await api.close();
});

test('the retry budget is bounded: after maxAttempts the batch goes to onError, and the next batch is still sent', async () => {
  const api = await scriptedApi((req) => (req.events[0]?.metric === 'doomed' ? problem(503, 'unavailable') : { status: 202 }));
  const errors: UsageDeliveryError[] = [];
  const client = new TallyClient({ baseUrl: api.url, apiKey: 'tk_test', flushIntervalMs: 60_000, retry: { ...FAST_RETRY, maxAttempts: 3 }, onError: (e) => errors.push(e) });
  const doomed = client.track({ metric: 'doomed', quantity: 1 });
  const flushed = client.flush();
  client.track({ metric: 'fine', quantity: 1 });
  await flushed;
  await client.flush();
  assert.equal(api.received.filter((r) => r.events[0]?.metric === 'doomed').length, 3);
  assert.equal(errors.length, 1);
  assert.equal(errors[0]!.reason, 'retries_exhausted');
  assert.deepEqual(errors[0]!.events.map((e) => e.id), [doomed]);
  assert.ok(errors[0]!.cause instanceof TallyApiError && errors[0]!.cause.status === 503);
  assert.deepEqual(client.stats().failed, { rejected: 0, retries_exhausted: 1, closed: 0 });
  assert.equal(client.stats().delivered, 1);
  await client.close();
  await api.close();
});

test('the time budget: a Retry-After beyond maxElapsedMs is not waited for', async () => {
  const api = await scriptedApi(() => ({ ...problem(429, 'rate_limited'), headers: { 'retry-after': '3600' } }));
  const errors: UsageDeliveryError[] = [];
  const client = new TallyClient({ baseUrl: api.url, apiKey: 'tk_test', flushIntervalMs: 60_000, retry: { ...FAST_RETRY, maxElapsedMs: 5_000 }, onError: (e) => errors.push(e) });
  client.track({ metric: 'm', quantity: 1 });
  const started = Date.now();
  await client.flush();
  assert.ok(Date.now() - started < 2_000);
  assert.equal(api.received.length, 1);
  assert.equal(errors[0]!.reason, 'retries_exhausted');
  assert.equal((errors[0]!.cause as TallyApiError).retryAfterMs, 3_600_000);
  await client.close();
  await api.close();
});

test('a refusal naming events: those go to onError with their field errors, not retried; the rest is sent again', async () => {
  const api = await scriptedApi((req) =>
    req.events.some((e) => e.metric === 'bogus' || (e.quantity ?? 0) > 100)
      ? problem(422, 'validation_failed', req.events.flatMap((e, i) => (e.metric === 'bogus' ? [{ path: `events.${i}.metric`, message: 'unknown metric' }] : (e.quantity ?? 0) > 100 ? [{ path: `events.${i}.quantity`, message: 'too big' }] : [])))
      : { status: 202 },
  );
  const errors: UsageDeliveryError[] = [];
  const client = new TallyClient({ baseUrl: api.url, apiKey: 'tk_test', flushIntervalMs: 60_000, retry: FAST_RETRY, onError: (e) => errors.push(e) });
  const ids = [
    client.track({ metric: 'ok', quantity: 1 }),
    client.track({ metric: 'bogus', quantity: 1 }),
    client.track({ metric: 'ok', quantity: 2 }),
    client.track({ metric: 'ok', quantity: 500 }),
  ];
  await client.flush();
  assert.equal(api.received.length, 2);
  assert.deepEqual(api.accepted().map((e) => e.id), [ids[0], ids[2]]);
  assert.equal(errors.length, 1);
  assert.equal(errors[0]!.reason, 'rejected');
  assert.deepEqual(errors[0]!.events.map((e) => e.id), [ids[1], ids[3]]);
  assert.deepEqual(errors[0]!.fieldErrors, [
    { eventId: ids[1], path: 'metric', message: 'unknown metric' },
    { eventId: ids[3], path: 'quantity', message: 'too big' },
  ]);
  await client.close();
  await api.close();
});

test('a refusal of the request as a whole (401) gives the batch to onError at once, without retries', async () => {
  const api = await scriptedApi(() => problem(401, 'unauthorized'));
  const errors: UsageDeliveryError[] = [];
  const client = new TallyClient({ baseUrl: api.url, apiKey: 'tk_revoked', flushIntervalMs: 60_000, retry: FAST_RETRY, onError: (e) => errors.push(e) });
  client.track({ metric: 'm', quantity: 1 });
  client.track({ metric: 'm', quantity: 1 });
  await client.flush();
  assert.equal(api.received.length, 1);
  assert.equal(errors[0]!.reason, 'rejected');
  assert.equal(errors[0]!.events.length, 2);
  const cause = errors[0]!.cause as TallyApiError;
  assert.deepEqual({ status: cause.status, code: cause.code, requestId: cause.requestId }, { status: 401, code: 'unauthorized', requestId: 'req-1' });
  await client.close();
  await api.close();
});

test('500 is a defect, not a busy server: the batch goes to onError as rejected after one attempt', async () => {
  const api = await scriptedApi(() => problem(500, 'internal'));
  const errors: UsageDeliveryError[] = [];
  const client = new TallyClient({ baseUrl: api.url, apiKey: 'tk_test', flushIntervalMs: 60_000, retry: FAST_RETRY, onError: (e) => errors.push(e) });
  client.track({ metric: 'm', quantity: 1 });
  await client.flush();
  assert.equal(api.received.length, 1);
  assert.equal(errors[0]!.reason, 'rejected');
  assert.equal((errors[0]!.cause as TallyApiError).code, 'internal');
  await client.close();
  await api.close();
});

test('the server goes away with a batch in flight and comes back on the same port: the batch arrives there, with the same ids', async () => {
  const first = await scriptedApi(() => 'hang');
  const client = new TallyClient({ baseUrl: first.url, apiKey: 'tk_test', flushIntervalMs: 60_000, retry: { ...FAST_RETRY, maxDelayMs: 100, maxAttempts: 1_000 }, onError: (e) => assert.fail(e) });
  const ids = [client.track({ metric: 'm', quantity: 1 }), client.track({ metric: 'm', quantity: 2 })];
  const flushed = client.flush();
  await until(() => first.received.length === 1, 5_000, 'the batch in flight');
  await first.close();
  await new Promise((r) => setTimeout(r, 300)); // refused connections meanwhile
  const second = await scriptedApi(undefined, first.port);
  await flushed;
  assert.deepEqual(first.received[0]!.events.map((e) => e.id), ids);
  assert.deepEqual(second.accepted().map((e) => e.id), ids);
  assert.ok(client.stats().retries >= 2, `${client.stats().retries} retries`);
  await client.close();
  await second.close();
});
