import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { startApiHarness, type ApiHarness } from '../support/api-harness';
import { quietLogger, unique } from '../support/stack';
import { createApp } from '../../src/api/app';
import { listen } from '../../src/api/server';

/**
 * The dashboard's server side through real HTTP: the page and its policy, sign-in that trades a
 * key for a signed session cookie, the API accepting that session with exactly the key's rights,
 * the CSRF guard on writes, sign-out, and the tenants list figures the dashboard sorts by.
 * test/browser/ drives the same in Chromium (`npm run test:browser`).
 */
let api: ApiHarness;
const planId = unique('dash_plan');
let tenant: { id: string; key: string };
let other: { id: string; key: string };

beforeAll(async () => {
  // The bundle the API serves (npm test's bootstrap builds it; this is a no-op then).
  execFileSync(process.execPath, [path.resolve(__dirname, '../../scripts/build-web.mjs')]);
  api = await startApiHarness();
  await api.call('POST', '/v1/plans', {
    body: { id: planId, name: 'Dash', currency: 'USD', interval: 'month', base_fee: '10.00', meters: [{ metric: 'llm_tokens', aggregation: 'sum', limit: 100, pricing: { model: 'per_unit', unit_price: '0.5' } }] },
  });
  const make = async (name: string) => {
    const res = await api.call('POST', '/v1/tenants', { body: { id: unique('dash'), name, plan_id: planId } });
    return { id: res.body.id as string, key: res.body.api_key as string };
  };
  tenant = await make('Zephyr Widgets');
  other = await make('Quasar Tools');
  await api.call('POST', '/v1/events', { key: tenant.key, body: { events: [{ id: 'e1', metric: 'llm_tokens', quantity: 85 }] } });
  await api.call('GET', `/v1/tenants/${tenant.id}/usage?consistent=true`, { key: tenant.key });
});

afterAll(async () => {
  await api?.stop();
});

async function signIn(key: string, headers: Record<string, string> = {}) {
  const res = await fetch(`${api.baseUrl}/dashboard/session`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify({ api_key: key }) });
  const setCookie = res.headers.get('set-cookie') ?? '';
  const body: any = await res.json();
  return { status: res.status, setCookie, cookie: setCookie.split(';')[0]!, csrf: body.csrf_token as string, body };
}

function call(method: string, p: string, cookie: string, options: { csrf?: string; body?: unknown } = {}) {
  const headers: Record<string, string> = { cookie };
  if (options.csrf !== undefined) headers['x-csrf-token'] = options.csrf;
  if (options.body !== undefined) headers['content-type'] = 'application/json';
  return fetch(`${api.baseUrl}${p}`, { method, headers, body: options.body === undefined ? undefined : JSON.stringify(options.body) });
}

test('/dashboard is served from this origin under a strict Content-Security-Policy', async () => {
  const page = await fetch(`${api.baseUrl}/dashboard`);
  expect(page.status).toBe(200);
  expect(page.headers.get('content-type')).toMatch(/^text\/html/);
  const csp = page.headers.get('content-security-policy')!;
  expect(csp).toContain("default-src 'none'");
  expect(csp).toContain("script-src 'self'");
  expect(csp).not.toContain('unsafe');
  const html = await page.text();
  expect(html).not.toMatch(/<script(?![^>]*\bsrc=)/);
  expect(html).not.toMatch(/style=|<style/);
  expect(html).not.toMatch(/https?:\/\//);
  for (const asset of ['/dashboard/assets/app.js', '/dashboard/assets/app.css']) expect((await fetch(`${api.baseUrl}${asset}`)).status).toBe(200);
  expect((await fetch(`${api.baseUrl}/dashboard/assets/nothing.js`)).status).toBe(404);
});

test('sign-in trades a key for an httpOnly, SameSite=Strict cookie that does not hold the key', async () => {
  expect((await signIn('tk_not_a_key')).status).toBe(401);
  const session = await signIn(tenant.key);
  expect(session.status).toBe(201);
  expect(session.body.principal).toEqual({ kind: 'tenant', tenant_id: tenant.id });
  expect(session.setCookie).toMatch(/HttpOnly/i);
  expect(session.setCookie).toMatch(/SameSite=Strict/i);
  expect(session.setCookie).toMatch(/Path=\//);
  expect(session.setCookie).not.toContain(tenant.key);
  expect(Buffer.from(session.cookie.split('=')[1]!.split('.')[0]!, 'base64url').toString()).not.toContain(tenant.key);
  // From another site: refused (a page elsewhere must not sign a browser in under its own key).
  expect((await signIn(tenant.key, { origin: 'https://elsewhere.example' })).status).toBe(403);
  // The session routes want the cookie: a key in a header is no session.
  expect((await fetch(`${api.baseUrl}/dashboard/session`, { headers: { 'x-api-key': tenant.key } })).status).toBe(401);
  expect((await fetch(`${api.baseUrl}/dashboard/session`)).status).toBe(401);
});

test("a tenant session has exactly its key's rights, and writes need the CSRF token", async () => {
  const { cookie, csrf } = await signIn(tenant.key);
  expect((await call('GET', `/v1/tenants/${tenant.id}/usage`, cookie)).status).toBe(200);
  expect((await call('GET', `/v1/tenants/${other.id}/usage`, cookie)).status).toBe(404);
  expect((await call('GET', '/v1/tenants', cookie)).status).toBe(403);
  const rule = { metric: 'llm_tokens', threshold: 50, channel: { type: 'email', to: 'ops@example.com' } };
  const without = await call('POST', `/v1/tenants/${tenant.id}/alert-rules`, cookie, { body: rule });
  expect(without.status).toBe(403);
  expect(((await without.json()) as any).code).toBe('forbidden');
  expect((await call('POST', `/v1/tenants/${tenant.id}/alert-rules`, cookie, { body: rule, csrf: `${csrf}x` })).status).toBe(403);
  expect((await call('POST', `/v1/tenants/${tenant.id}/alert-rules`, cookie, { body: rule, csrf })).status).toBe(201);
  // A tampered cookie is no session at all.
  expect((await call('GET', `/v1/tenants/${tenant.id}/usage`, cookie.replace(/.$/, (c) => (c === 'A' ? 'B' : 'A')))).status).toBe(401);
});

test('rotating the key ends its sessions; sign-out clears the cookie', async () => {
  const { id, key } = { id: other.id, key: other.key };
  const first = await signIn(key);
  expect((await call('GET', `/v1/tenants/${id}`, first.cookie)).status).toBe(200);
  const rotated = await api.call('POST', `/v1/tenants/${id}/api-keys`);
  expect(rotated.status).toBe(201);
  other.key = rotated.body.api_key;
  expect((await call('GET', `/v1/tenants/${id}`, first.cookie)).status).toBe(401);

  const second = await signIn(other.key);
  expect((await call('DELETE', '/dashboard/session', second.cookie)).status).toBe(403);
  const out = await call('DELETE', '/dashboard/session', second.cookie, { csrf: second.csrf });
  expect(out.status).toBe(204);
  expect(out.headers.get('set-cookie')).toMatch(/tally_session=;.*Expires=Thu, 01 Jan 1970/);
});

test('an admin session lists tenants with their usage figures, searchable', async () => {
  const { cookie } = await signIn(api.adminKey);
  const res = await call('GET', `/v1/tenants?include=usage&q=${encodeURIComponent('zephyr')}`, cookie);
  expect(res.status).toBe(200);
  const page: any = await res.json();
  expect(page.data.map((t: any) => t.id)).toEqual([tenant.id]);
  expect(page.data[0].usage).toEqual({ percent: 85, total: '52.50', currency: 'USD', alert_level: 'warning' });
  const plain: any = await (await call('GET', `/v1/tenants?q=${encodeURIComponent('%')}`, cookie)).json();
  expect(plain.data).toEqual([]);
  const config: any = await (await call('GET', '/dashboard/config', cookie)).json();
  expect(config).toEqual({ temporal_ui_url: null, namespace: 'default' });
});

test("the config endpoint gives an admin session the Temporal UI's address, and a tenant session none", async () => {
  // An app configured as `npm start` configures it: its own session secret and the UI's address.
  const app = createApp({
    db: api.db,
    temporal: api.client,
    taskQueue: api.taskQueue,
    namespace: 'default',
    adminKey: api.adminKey,
    logger: quietLogger,
    dashboard: { sessionSecret: 'a-session-secret-of-at-least-32-characters', temporalUiUrl: 'http://127.0.0.1:8233' },
  });
  const server = await listen(app, 0, '127.0.0.1');
  try {
    const base = `http://127.0.0.1:${server.port}`;
    const session = async (key: string) => {
      const res = await fetch(`${base}/dashboard/session`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ api_key: key }) });
      return (res.headers.get('set-cookie') ?? '').split(';')[0]!;
    };
    const config = async (cookie: string) => (await fetch(`${base}/dashboard/config`, { headers: { cookie } })).json();
    expect(await config(await session(api.adminKey))).toEqual({ temporal_ui_url: 'http://127.0.0.1:8233', namespace: 'default' });
    expect(await config(await session(tenant.key))).toEqual({ temporal_ui_url: null, namespace: 'default' });
    // Another secret signs other cookies: a session of the first app is no session here.
    const elsewhere = (await signIn(api.adminKey)).cookie;
    expect((await fetch(`${base}/dashboard/config`, { headers: { cookie: elsewhere } })).status).toBe(401);
  } finally {
    await server.close();
  }
});
