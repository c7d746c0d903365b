/** usage, authorize and estimate: the request each sends, the answer, and problem+json as TallyApiError. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TallyApiError, TallyClient } from '../src';
import { FAST_RETRY, problem, scriptedApi } from './support';

test('usage, authorize and estimate call their routes with the key; authorize keeps one id across its retries', async () => {
  let authorizeCalls = 0;
  const api = await scriptedApi((req) => {
    if (req.url.startsWith('/v1/tenants/acme%2F1/usage')) return { status: 200, body: { tenant_id: 'acme/1', pending_events: 0 } };
    if (req.url === '/v1/tenants/acme%2F1/authorize') return ++authorizeCalls === 1 ? { ...problem(503, 'unavailable'), headers: { 'retry-after': '0' } } : { status: 200, body: { allowed: true, remaining: 10 } };
    if (req.url === '/v1/tenants/other/estimate') return { status: 200, body: { amount: '4.80', currency: 'USD' } };
    return problem(404, 'not_found');
  });
  const client = new TallyClient({ baseUrl: `${api.url}/`, apiKey: 'tk_key', tenantId: 'acme/1', retry: FAST_RETRY });
  assert.deepEqual(await client.usage({ consistent: true }), { tenant_id: 'acme/1', pending_events: 0 });
  assert.equal(api.received[0]!.url, '/v1/tenants/acme%2F1/usage?consistent=true');
  assert.equal(api.received[0]!.method, 'GET');
  assert.equal(api.received[0]!.headers['x-api-key'], 'tk_key');

  const decision = await client.authorize({ metric: 'gpu_seconds', quantity: 5 });
  assert.deepEqual({ allowed: decision.allowed, remaining: decision.remaining }, { allowed: true, remaining: 10 });
  const sent = api.received.filter((r) => r.url.endsWith('/authorize')).map((r) => JSON.parse(r.body));
  assert.equal(sent.length, 2);
  assert.deepEqual(sent[0], { id: decision.id, metric: 'gpu_seconds', quantity: 5 });
  assert.deepEqual(sent[1], sent[0]);

  assert.deepEqual(await client.estimate({ metric: 'minutes', quantity: 60, tenantId: 'other' }), { amount: '4.80', currency: 'USD' });
  assert.deepEqual(JSON.parse(api.received.at(-1)!.body), { metric: 'minutes', quantity: 60 });
  await client.close();
  await api.close();
});

test('problem+json becomes a TallyApiError with status, code and errors; 4xx are not retried', async () => {
  const api = await scriptedApi(() => problem(422, 'unknown_metric', [{ path: 'metric', message: 'not metered by the plan' }]));
  const client = new TallyClient({ baseUrl: api.url, apiKey: 'tk_key', tenantId: 'acme', retry: FAST_RETRY });
  const err = await client.estimate({ metric: 'nope', quantity: 1 }).catch((e: unknown) => e);
  assert.ok(err instanceof TallyApiError);
  assert.equal(err.status, 422);
  assert.equal(err.code, 'unknown_metric');
  assert.deepEqual(err.errors, [{ path: 'metric', message: 'not metered by the plan' }]);
  assert.equal(err.requestId, 'req-1');
  assert.match(err.message, /^422 unknown_metric: /);
  assert.equal(api.received.length, 1);
  await client.close();
  await api.close();
});

test('an answer that is not problem+json (a proxy page) still becomes a TallyApiError', async () => {
  const api = await scriptedApi(() => ({ status: 502, body: '<html>bad gateway</html>' }));
  const client = new TallyClient({ baseUrl: api.url, apiKey: 'tk_key', tenantId: 'acme', retry: { ...FAST_RETRY, maxAttempts: 2 } });
  const err = await client.usage().catch((e: unknown) => e);
  assert.ok(err instanceof TallyApiError);
  assert.equal(err.status, 502);
  assert.equal(err.code, 'http_502');
  assert.equal(api.received.length, 2, '502 is retried');
  await assert.rejects(() => new TallyClient({ baseUrl: api.url, apiKey: 'k' }).usage(), /no tenant/);
  await client.close();
  await api.close();
});
