import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { createApp } from '../../src/api/app';
import { listen, type RunningServer } from '../../src/api/server';
import { startApiHarness, eventually, type ApiHarness } from '../support/api-harness';
import { quietLogger, unique } from '../support/stack';

/**
 * The webhook guard through the real stack: an API with the default policy refuses URLs that are
 * not https or that name internal addresses (directly, in disguise, or through DNS), on every
 * route that takes one; and a worker with the default address policy refuses, at delivery, a
 * registered URL whose name resolves to loopback, recording the delivery as failed without a
 * single request reaching the receiver.
 */

let api: ApiHarness;
let strict: { server: RunningServer; baseUrl: string };
let receiver: { port: number; hits: string[]; close(): Promise<void> };
let planId: string;

beforeAll(async () => {
  const hits: string[] = [];
  const server = http.createServer((req, res) => {
    hits.push(req.url ?? '/');
    res.writeHead(200).end('ok');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  receiver = { port: (server.address() as AddressInfo).port, hits, close: () => new Promise<void>((done) => server.close(() => done())) };

  // The harness's API registers local URLs (opted in); its worker delivers under the default
  // address policy, with http allowed to these names only so the address check is what refuses.
  api = await startApiHarness({ notifier: { webhookTargets: { allowPrivateTargets: false, httpAllowedHosts: ['localhost', '127.0.0.1'] }, maxAttempts: 2 } });
  // A second API on the same stack with the production default: https, public addresses only.
  const app = createApp({ db: api.db, temporal: api.client, taskQueue: api.taskQueue, namespace: 'default', adminKey: api.adminKey, logger: quietLogger });
  const listening = await listen(app, 0, '127.0.0.1');
  strict = { server: listening, baseUrl: `http://127.0.0.1:${listening.port}` };

  planId = unique('guard');
  const plan = await api.call('POST', '/v1/plans', {
    body: {
      id: planId,
      name: 'Guarded',
      currency: 'USD',
      interval: 'month',
      base_fee: '0.00',
      meters: [{ metric: 'tokens', aggregation: 'sum', limit: 100, pricing: { model: 'per_unit', unit_price: '0.01' } }],
    },
  });
  expect(plan.status).toBe(201);
});

afterAll(async () => {
  await strict?.server.close();
  await api?.stop();
  await receiver?.close();
});

async function callStrict(method: string, path: string, key: string, body: unknown) {
  const res = await fetch(`${strict.baseUrl}${path}`, { method, headers: { 'x-api-key': key, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: res.status, body: (await res.json()) as any };
}

/** URLs the default policy refuses, and the class (or `scheme`) the refusal names. */
const REFUSED: Array<[string, string]> = [
  ['http://hooks.example.com/x', 'https URL'],
  ['https://127.0.0.1/x', 'loopback'],
  ['https://localhost:8443/x', 'loopback'], // a name: refused by what it resolves to
  ['https://2130706433/x', 'loopback'], // decimal 127.0.0.1
  ['https://0177.0.0.1/x', 'loopback'], // octal
  ['https://0x7f.1/x', 'loopback'], // hex, short form
  ['https://[::1]/x', 'loopback'],
  ['https://[::ffff:127.0.0.1]/x', 'ipv4-mapped'],
  ['https://10.0.0.1/x', 'private'],
  ['https://192.168.0.10/x', 'private'],
  ['https://100.64.0.1/x', 'cgnat'],
  ['https://169.254.10.1/x', 'link-local'],
  ['https://169.254.169.254/latest/meta-data/', 'metadata'],
  ['https://[fd00:ec2::254]/latest/meta-data/', 'metadata'],
  ['https://[fd12:3456::1]/x', 'unique-local'],
  ['https://[fe80::1]/x', 'link-local'],
  ['https://0.0.0.0/x', 'unspecified'],
];

test.each(REFUSED)('registration of %s is refused with 422 webhook_target_refused naming the field, on every route', async (url, named) => {
  const id = unique('ssrf');
  const created = await callStrict('POST', '/v1/tenants', api.adminKey, { id, name: 'x', plan_id: planId, webhook_url: url });
  expect(created.status).toBe(422);
  expect(created.body).toMatchObject({ code: 'webhook_target_refused', errors: [{ path: 'webhook_url' }] });
  expect(created.body.errors[0].message).toContain(named);
  expect(await api.db('tenants').where({ id }).first()).toBeUndefined();

  const tenant = await api.call('POST', '/v1/tenants', { body: { id, name: 'x', plan_id: planId } });
  const patched = await callStrict('PATCH', `/v1/tenants/${id}`, tenant.body.api_key, { webhook_url: url });
  expect(patched.status).toBe(422);
  expect(patched.body).toMatchObject({ code: 'webhook_target_refused', errors: [{ path: 'webhook_url' }] });
  const rule = await callStrict('POST', `/v1/tenants/${id}/alert-rules`, tenant.body.api_key, { metric: 'tokens', threshold: 50, channel: { type: 'webhook', url } });
  expect(rule.status).toBe(422);
  expect(rule.body).toMatchObject({ code: 'webhook_target_refused', errors: [{ path: 'channel.url' }] });
  const stored = await api.db('tenants').where({ id }).first();
  expect([stored.webhook_url, stored.webhook_secret]).toEqual([null, null]);
  expect(await api.db('alert_rules').where({ tenant_id: id })).toEqual([]);
});

test('an https URL on a public name (or one that does not resolve yet) is accepted', async () => {
  const res = await callStrict('POST', '/v1/tenants', api.adminKey, { id: unique('pub'), name: 'x', plan_id: planId, webhook_url: 'https://hooks.tally-receiver.invalid/x' });
  expect(res.status).toBe(201);
  expect(res.body.webhook_secret).toMatch(/^whsec_/);
});

test('at delivery, a name that resolves to loopback is refused and recorded as failed; the receiver gets nothing', async () => {
  // Registered while allowed (as if the name resolved to a public address then), delivered under the default policy.
  const byName = `http://localhost:${receiver.port}/by-name`;
  const byLiteral = `http://127.0.0.1:${receiver.port}/by-literal`;
  const id = unique('rebind');
  const tenant = await api.call('POST', '/v1/tenants', { body: { id, name: 'Rebound', plan_id: planId, webhook_url: byName } });
  expect(tenant.status).toBe(201);
  const key = tenant.body.api_key as string;
  expect((await api.call('POST', `/v1/tenants/${id}/alert-rules`, { key, body: { metric: 'tokens', threshold: 50, channel: { type: 'webhook', url: byLiteral } } })).status).toBe(201);
  expect((await api.call('POST', '/v1/events', { key, body: { events: [{ id: 'e1', metric: 'tokens', quantity: 100 }] } })).status).toBe(202);

  const failed = await eventually(async () => {
    const res = await api.call('GET', `/v1/tenants/${id}/deliveries`, { key });
    const done = res.body.data.filter((d: any) => d.status === 'failed');
    const targets = new Set(done.map((d: any) => d.target));
    if (targets.has(byName) && targets.has(byLiteral)) return done;
    // What a timeout then reports: where each delivery (and the tenant's alerts) stood.
    const alerts = await api.db('alerts').where({ tenant_id: id }).select('id', 'threshold', 'status', 'channels');
    throw new Error(`deliveries ${JSON.stringify(res.body.data.map((d: any) => [d.target, d.status, d.attempts, d.last_error]))}, alerts ${JSON.stringify(alerts)}`);
  }, 30_000, 'both webhook deliveries failed');
  const byTarget = new Map<string, any>(failed.map((d: any) => [d.target, d]));
  expect(byTarget.get(byName)).toMatchObject({ channel: 'webhook', status: 'failed', attempts: 2, delivered_at: null });
  expect(byTarget.get(byName).last_error).toContain(`localhost (127.0.0.1) is a loopback address`);
  expect(byTarget.get(byLiteral).last_error).toContain('127.0.0.1 is a loopback address');
  expect(receiver.hits).toEqual([]);
});
