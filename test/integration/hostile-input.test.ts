import http from 'node:http';
import { startApiHarness, eventually, type ApiHarness } from '../support/api-harness';
import { unique } from '../support/stack';

/**
 * Hostile input and concurrency (issue 17), through real HTTP against the real app, its worker,
 * Temporal and PostgreSQL:
 *
 * - a field or query parameter the API does not know is refused with 422 naming it, on every
 *   body and every read, and the refused request changes nothing;
 * - a body that is not UTF-8 is refused whole (two ids could otherwise collapse into one);
 * - the literal text `\u0000` is stored as sent, a real NUL is refused;
 * - concurrent versions of one plan all succeed, and `?version=` is validated;
 * - a body that is not JSON is 415 `unsupported_media_type`, a number JSON cannot carry (1e400)
 *   is refused, and an empty `X-API-Key:` does not hide a bearer token.
 */
let api: ApiHarness;
let planId: string;
/** The tenant most requests aim at, and its key. */
const T = { id: '', key: '' };

function planBody(id: string, extra: Record<string, unknown> = {}) {
  return {
    id,
    name: 'Hostile',
    currency: 'USD',
    interval: 'month',
    base_fee: '0.00',
    grace_period_seconds: 0,
    meters: [
      { metric: 'calls', aggregation: 'sum', limit: 1000, pricing: { model: 'per_unit', unit_price: '0.01' } },
      { metric: 'tokens', aggregation: 'sum', pricing: { model: 'graduated', tiers: [{ up_to: 100, unit_price: '0.10' }, { up_to: null, unit_price: '0.05' }] } },
    ],
    ...extra,
  };
}

async function createTenant(): Promise<{ id: string; key: string }> {
  const id = unique('hostile');
  const res = await api.call('POST', '/v1/tenants', { body: { id, name: id, plan_id: planId } });
  expect(res.status).toBe(201);
  return { id, key: res.body.api_key };
}

beforeAll(async () => {
  api = await startApiHarness();
  planId = unique('hplan');
  expect((await api.call('POST', '/v1/plans', { body: planBody(planId) })).status).toBe(201);
  Object.assign(T, await createTenant());
});

afterAll(async () => {
  await api?.stop();
});

interface Answer {
  status: number;
  contentType: string;
  body: any;
}

/**
 * One request exactly as given: raw bytes, and only the headers listed (fetch would add a
 * `text/plain` content type to a string body; this sends none unless told).
 */
function rawRequest(method: string, path: string, options: { headers?: Record<string, string>; body?: Buffer | string } = {}): Promise<Answer> {
  const body = typeof options.body === 'string' ? Buffer.from(options.body, 'utf8') : options.body;
  const { port } = new URL(api.baseUrl);
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port: Number(port), method, path, headers: { ...(body ? { 'content-length': String(body.length) } : {}), ...options.headers } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown;
          try {
            parsed = text ? JSON.parse(text) : undefined;
          } catch {
            parsed = text;
          }
          resolve({ status: res.statusCode ?? 0, contentType: String(res.headers['content-type'] ?? ''), body: parsed });
        });
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

function expectProblem(res: { status: number; body: any; contentType?: string; headers?: Headers }, status: number, code: string): void {
  expect({ status: res.status, code: res.body?.code }).toEqual({ status, code });
  const contentType = res.contentType ?? res.headers?.get('content-type') ?? '';
  expect(contentType).toMatch(/^application\/problem\+json/);
  expect(res.body.status).toBe(status);
}

/** The paths `errors[]` names. */
const paths = (res: { body: any }): string[] => (res.body?.errors ?? []).map((e: { path: string }) => e.path);

/** The event ids stored for a tenant (counted, or kept as refused). */
async function storedIds(tenantId: string): Promise<string[]> {
  const counted: string[] = await api.db('usage_events').where({ tenant_id: tenantId }).pluck('event_id');
  const refused: string[] = await api.db('rejected_events').where({ tenant_id: tenantId }).pluck('event_id');
  return [...counted, ...refused].sort();
}

/** Read-your-writes: every event acknowledged so far is counted. */
async function settle(tenantId: string, key: string): Promise<void> {
  const res = await api.call('GET', `/v1/tenants/${tenantId}/usage?consistent=true`, { key });
  expect(res.status).toBe(200);
  expect(res.body.pending_events).toBe(0);
}

describe('unknown fields are refused by name, everywhere', () => {
  test('every request body and each nested object: 422 naming the field, and nothing happens', async () => {
    const ghostPlan = unique('ghostplan');
    const ghostTenant = unique('ghost');
    const withPricingTypo = planBody(ghostPlan);
    (withPricingTypo.meters[1] as any).pricing = { model: 'per_unit', unit_prise: '0.10' };
    const withTierTypo = planBody(ghostPlan);
    (withTierTypo.meters[1] as any).pricing.tiers[0].upto = 10;
    const cases: Array<{ method: string; path: string; key?: string; body: unknown; named: string[] }> = [
      { method: 'POST', path: '/v1/plans', body: { ...planBody(ghostPlan), colour: 'red' }, named: ['colour'] },
      { method: 'POST', path: '/v1/plans', body: withPricingTypo, named: ['meters.1.pricing.unit_price', 'meters.1.pricing.unit_prise'] },
      { method: 'POST', path: '/v1/plans', body: withTierTypo, named: ['meters.1.pricing.tiers.0.upto'] },
      { method: 'POST', path: '/v1/plans', body: planBody(ghostPlan, { meters: [{ ...planBody('x').meters[0], unit: 'calls' }] }), named: ['meters.0.unit'] },
      { method: 'POST', path: '/v1/tenants', body: { id: ghostTenant, name: 'x', plan_id: planId, plan_version: 1 }, named: ['plan_version'] },
      { method: 'PATCH', path: `/v1/tenants/${T.id}`, key: T.key, body: { name: 'renamed', status: 'cancelled' }, named: ['status'] },
      { method: 'POST', path: '/v1/events', key: T.key, body: { events: [{ id: 'ok-1', metric: 'calls' }, { id: 'typo-1', metric: 'calls', colour: 'red' }] }, named: ['events.1.colour'] },
      { method: 'POST', path: '/v1/events', key: T.key, body: { events: [{ id: 'ok-2', metric: 'calls' }], batch_id: 'b1' }, named: ['batch_id'] },
      { method: 'POST', path: `/v1/tenants/${T.id}/authorize`, key: T.key, body: { id: 'auth-1', metric: 'calls', quantity: 1, dry_run: true }, named: ['dry_run'] },
      { method: 'POST', path: `/v1/tenants/${T.id}/estimate`, key: T.key, body: { metric: 'calls', quantity: 1, at: 'now' }, named: ['at'] },
      { method: 'POST', path: `/v1/tenants/${T.id}/close-period`, body: { finalise: true }, named: ['finalise'] },
      { method: 'POST', path: `/v1/tenants/${T.id}/alert-rules`, key: T.key, body: { metric: 'calls', threshold: 50, channel: { type: 'email', to: 'a@example.com', cc: 'b@example.com' } }, named: ['channel.cc'] },
      { method: 'POST', path: `/v1/tenants/${T.id}/api-keys`, key: T.key, body: { expires_in: 3600 }, named: ['expires_in'] },
      { method: 'POST', path: `/v1/tenants/${T.id}/webhook-secret`, key: T.key, body: { algorithm: 'sha512' }, named: ['algorithm'] },
      { method: 'DELETE', path: `/v1/tenants/${T.id}`, body: { reason: 'typo' }, named: ['reason'] },
      { method: 'POST', path: '/v1/invoices/in_ghost_20260101T000000Z_v1/rerun', body: { reason: 'check', preview: true }, named: ['preview'] },
    ];
    for (const c of cases) {
      const res = await api.call(c.method, c.path, { key: c.key ?? api.adminKey, body: c.body });
      expectProblem(res, 422, 'validation_failed');
      expect({ case: `${c.method} ${c.path}`, paths: paths(res).sort() }).toEqual({ case: `${c.method} ${c.path}`, paths: [...c.named].sort() });
    }
    // Nothing of it happened: no plan, no tenant, no event, no rule; T is active, its name and
    // key unchanged, its period still open.
    expect(await api.db('plans').where({ id: ghostPlan }).first()).toBeUndefined();
    expect(await api.db('tenants').where({ id: ghostTenant }).first()).toBeUndefined();
    expect(await storedIds(T.id)).toEqual([]);
    expect(await api.db('alert_rules').where({ tenant_id: T.id }).first()).toBeUndefined();
    const tenant = await api.call('GET', `/v1/tenants/${T.id}`, { key: T.key });
    expect(tenant.status).toBe(200);
    expect(tenant.body).toMatchObject({ status: 'active', name: T.id });
    expect(await api.db('periods').where({ tenant_id: T.id }).pluck('status')).toEqual(['open']);
  });

  test('many unknown fields: the first ten are named, the rest summed up on the object', async () => {
    const extra = Object.fromEntries(Array.from({ length: 25 }, (_, i) => [`extra_${i}`, i]));
    const res = await api.call('POST', '/v1/events', { key: T.key, body: { events: [{ id: 'many', metric: 'calls', ...extra }] } });
    expectProblem(res, 422, 'validation_failed');
    expect(res.body.errors).toHaveLength(11);
    expect(paths(res).slice(0, 10)).toEqual(Array.from({ length: 10 }, (_, i) => `events.0.extra_${i}`));
    expect(res.body.errors[10]).toEqual({ path: 'events.0', message: 'has 15 more unknown fields' });
  });

  test('event properties stay free-form: any keys, nested', async () => {
    const id = unique('props');
    const res = await api.call('POST', '/v1/events', { key: T.key, body: { events: [{ id, metric: 'calls', properties: { colour: 'red', nested: { dry_run: true, list: [1, 'two'] } } }] } });
    expect(res.status).toBe(202);
    await settle(T.id, T.key);
    const listed = await api.call('GET', `/v1/tenants/${T.id}/events?metric=calls`, { key: T.key });
    expect(listed.body.data.find((e: any) => e.id === id)?.properties).toEqual({ colour: 'red', nested: { dry_run: true, list: [1, 'two'] } });
  });

  test('unknown query parameters on every read and write route: 422 naming them', async () => {
    const t = T.id;
    const reads = [
      '/v1/plans?colour=red',
      `/v1/plans/${planId}?v=1`,
      '/v1/tenants?limit=5&colour=red',
      `/v1/tenants/${t}?expand=plan`,
      `/v1/tenants/${t}/events?region=eu`,
      `/v1/tenants/${t}/periods?status=open`,
      `/v1/tenants/${t}/alerts?level=critical`,
      `/v1/tenants/${t}/alert-rules?metric=calls`,
      `/v1/tenants/${t}/alert-rules/ar_ghost?expand=channel`,
      `/v1/tenants/${t}/deliveries?channel=email`,
      `/v1/tenants/${t}/invoices?status=void`,
      '/v1/invoices/in_ghost_20260101T000000Z_v1?expand=lines',
      '/v1/invoices/in_ghost_20260101T000000Z_v1/pdf?lang=fr',
    ];
    for (const path of reads) {
      const res = await api.call('GET', path);
      expectProblem(res, 422, 'validation_failed');
      const name = decodeURIComponent(path.split('?')[1]!.split('&').pop()!.split('=')[0]!);
      expect({ path, named: paths(res) }).toEqual({ path, named: [name] });
    }
    const writes: Array<{ method: string; path: string; body?: unknown }> = [
      { method: 'POST', path: `/v1/tenants/${t}/close-period?dry_run=true`, body: { finalize: true } },
      { method: 'POST', path: '/v1/invoices/in_ghost_20260101T000000Z_v1/rerun?dry_run=true', body: { reason: 'check' } },
      { method: 'POST', path: `/v1/plans?dry_run=true`, body: planBody(unique('ghostplan')) },
      { method: 'PATCH', path: `/v1/tenants/${t}?notify=false`, body: { name: 'renamed' } },
    ];
    for (const w of writes) {
      const res = await api.call(w.method, w.path, { body: w.body });
      expectProblem(res, 422, 'validation_failed');
      expect(paths(res)).toEqual([w.path.split('?')[1]!.split('=')[0]]);
    }
    expect(await api.db('periods').where({ tenant_id: t }).pluck('status')).toEqual(['open']);
    expect((await api.call('GET', `/v1/tenants/${t}`)).body.name).toBe(t);
  });

  test('a rerun whose `dry_run` is not a boolean is refused, and the invoice stays finalized and alone', async () => {
    const tenant = await createTenant();
    expect((await api.call('POST', '/v1/events', { key: tenant.key, body: { events: [{ id: 'r1', metric: 'calls', quantity: 7 }] } })).status).toBe(202);
    await settle(tenant.id, tenant.key);
    const close = await api.call('POST', `/v1/tenants/${tenant.id}/close-period`, { body: { finalize: true } });
    expect(close.status).toBe(200);
    const invoiceId = close.body.invoice_id as string;
    await eventually(async () => ((await api.call('GET', `/v1/invoices/${invoiceId}`)).body?.status === 'finalized' ? true : undefined), 30_000, 'finalized invoice');
    // A string is not `true`: refused by name, never taken as a real rerun.
    const res = await api.call('POST', `/v1/invoices/${invoiceId}/rerun`, { body: { reason: 'what would change?', dry_run: 'true' } });
    expectProblem(res, 422, 'validation_failed');
    expect(paths(res)).toEqual(['dry_run']);
    const invoices = await api.db('invoices').where({ tenant_id: tenant.id }).select('id', 'status');
    expect(invoices).toEqual([{ id: invoiceId, status: 'finalized' }]);
    expect(await api.db('invoice_reruns').where({ invoice_id: invoiceId }).first()).toBeUndefined();
  });
});

describe('bodies that are not UTF-8 (#5)', () => {
  test('ids with invalid UTF-8 bytes are refused with 400, so no two ids collapse into one', async () => {
    const bodies = [
      [0x69, 0x6e, 0x76, 0xff], // inv\xff
      [0x69, 0x6e, 0x76, 0xfe], // inv\xfe
      [0x69, 0x6e, 0x76, 0xc0, 0xaf], // an overlong "/"
      [0x69, 0x6e, 0x76, 0xed, 0xa0, 0x80], // a UTF-16 surrogate, encoded as if it were a character
      [0x69, 0x6e, 0x76, 0xe2, 0x82], // a sequence cut short
    ].map((id) => Buffer.concat([Buffer.from('{"events":[{"id":"'), Buffer.from(id), Buffer.from('","metric":"calls"}]}')]));
    for (const body of bodies) {
      const res = await rawRequest('POST', '/v1/events', { headers: { 'x-api-key': T.key, 'content-type': 'application/json' }, body });
      expectProblem(res, 400, 'validation_failed');
      expect(res.body.detail).toMatch(/UTF-8/);
    }
    // The same bytes in any other body, and in a key, are refused the same way.
    const plan = Buffer.concat([Buffer.from(`{"id":"${unique('utf')}","name":"`), Buffer.from([0xff]), Buffer.from('"}')]);
    expectProblem(await rawRequest('POST', '/v1/plans', { headers: { 'x-api-key': api.adminKey, 'content-type': 'application/json' }, body: plan }), 400, 'validation_failed');
    const key = Buffer.concat([Buffer.from('{"events":[{"id":"k","metric":"calls","properties":{"'), Buffer.from([0xfe]), Buffer.from('":1}}]}')]);
    expectProblem(await rawRequest('POST', '/v1/events', { headers: { 'x-api-key': T.key, 'content-type': 'application/json' }, body: key }), 400, 'validation_failed');
    await settle(T.id, T.key);
    expect((await storedIds(T.id)).filter((id) => id.startsWith('inv') || id === 'k')).toEqual([]);

    // Valid UTF-8 for the same-looking text is accepted, and the ids stay distinct.
    const ids = ['inv\u00ff', 'inv\u00fe', 'inv\ufffd'];
    const ok = await rawRequest('POST', '/v1/events', {
      headers: { 'x-api-key': T.key, 'content-type': 'application/json; charset=utf-8' },
      body: JSON.stringify({ events: ids.map((id) => ({ id, metric: 'calls' })) }),
    });
    expect(ok.status).toBe(202);
    await settle(T.id, T.key);
    expect((await storedIds(T.id)).filter((id) => id.startsWith('inv'))).toEqual([...ids].sort());
  });

  test('JSON in another charset than UTF-8 is 415', async () => {
    const body = Buffer.from(JSON.stringify({ events: [{ id: 'utf16', metric: 'calls' }] }), 'utf16le');
    for (const charset of ['utf-16', 'utf-16le', 'iso-8859-1']) {
      const res = await rawRequest('POST', '/v1/events', { headers: { 'x-api-key': T.key, 'content-type': `application/json; charset=${charset}` }, body });
      expectProblem(res, 415, 'unsupported_media_type');
    }
    expect(await api.db('usage_events').where({ tenant_id: T.id, event_id: 'utf16' }).first()).toBeUndefined();
  });
});

describe('NUL, and the text "\\u0000" (#4)', () => {
  test('the six characters \\u0000 are text like any other: acknowledged and stored exactly as sent', async () => {
    const literal = 'bs2\\u0000x'; // a backslash, then "u0000": no NUL anywhere
    expect(literal).toHaveLength(10);
    // As JSON: "bs2\\u0000x", an escaped backslash followed by u0000.
    const raw = `{"events":[{"id":${JSON.stringify(literal)},"metric":"calls","properties":{"note":${JSON.stringify(literal)},${JSON.stringify(literal)}:"as a key"}}]}`;
    expect(raw).toContain('"bs2\\\\u0000x"');
    const res = await api.call('POST', '/v1/events', { key: T.key, raw });
    expect(res.status).toBe(202);
    await settle(T.id, T.key);
    // Counted, not set aside as unstorable.
    expect(await api.db('rejected_events').where({ tenant_id: T.id, event_id: literal }).first('reason')).toBeUndefined();
    const page = await api.call('GET', `/v1/tenants/${T.id}/events?limit=100`, { key: T.key });
    const listed = page.body.data.find((e: any) => e.id === literal);
    expect(listed).toMatchObject({ id: literal, metric: 'calls', properties: { note: literal, [literal]: 'as a key' } });
  });

  test('a real NUL character is refused with 422 naming the field, and nothing is recorded', async () => {
    const cases = [
      { raw: '{"events":[{"id":"nul\\u0000id","metric":"calls"}]}', at: 'events.0.id' },
      { raw: '{"events":[{"id":"nul-prop","metric":"calls","properties":{"note":"a\\u0000b"}}]}', at: 'events.0.properties.note' },
    ];
    for (const c of cases) {
      const res = await api.call('POST', '/v1/events', { key: T.key, raw: c.raw });
      expectProblem(res, 422, 'validation_failed');
      expect(paths(res)).toEqual([c.at]);
    }
    await settle(T.id, T.key);
    expect((await storedIds(T.id)).filter((id) => id.startsWith('nul'))).toEqual([]);
  });
});

describe('plans (#11)', () => {
  test('10 concurrent versions of one new plan id: all 201, versions 1 to 10', async () => {
    const id = unique('race');
    const answers = await Promise.all(Array.from({ length: 10 }, (_, i) => api.call('POST', '/v1/plans', { body: planBody(id, { name: `v${i}` }) })));
    expect(answers.map((a) => a.status)).toEqual(Array(10).fill(201));
    expect(answers.map((a) => a.body.version).sort((a, b) => a - b)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    // Each version holds the body that was answered with it, and the plan points at the last.
    for (const a of answers) {
      const read = await api.call('GET', `/v1/plans/${id}?version=${a.body.version}`);
      expect({ version: a.body.version, name: read.body.name }).toEqual({ version: a.body.version, name: a.body.name });
    }
    expect((await api.call('GET', `/v1/plans/${id}`)).body.version).toBe(10);
    expect(await api.db('plans').where({ id }).first('latest_version')).toEqual({ latest_version: 10 });
  });

  test('?version= must be a version number; one that does not exist is 404', async () => {
    const id = unique('ver');
    for (let i = 0; i < 3; i++) expect((await api.call('POST', '/v1/plans', { body: planBody(id) })).status).toBe(201);
    for (const bad of ['2147483648', '99999999999', 'abc', '1.5', '0', '-1', '1e1', '', '2&version=3']) {
      const res = await api.call('GET', `/v1/plans/${id}?version=${bad}`);
      expectProblem(res, 422, 'validation_failed');
      expect({ bad, named: paths(res) }).toEqual({ bad, named: ['version'] });
    }
    expect((await api.call('GET', `/v1/plans/${id}?version=2`)).body.version).toBe(2);
    expectProblem(await api.call('GET', `/v1/plans/${id}?version=4`), 404, 'not_found');
    expectProblem(await api.call('GET', `/v1/plans/${id}?version=2147483647`), 404, 'not_found');
    expectProblem(await api.call('GET', `/v1/plans/${unique('none')}?version=1`), 404, 'not_found');
  });
});

describe('smaller ones (#15)', () => {
  test('a body that is not declared JSON is 415 `unsupported_media_type`, on every route with a body', async () => {
    const event = JSON.stringify({ events: [{ id: 'ct-1', metric: 'calls' }] });
    const contentTypes: Array<string | undefined> = [undefined, 'text/plain', 'text/plain; charset=utf-8', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/xml'];
    for (const type of contentTypes) {
      const res = await rawRequest('POST', '/v1/events', { headers: { 'x-api-key': T.key, ...(type ? { 'content-type': type } : {}) }, body: event });
      expectProblem(res, 415, 'unsupported_media_type');
    }
    const routes = [
      { method: 'POST', path: '/v1/plans', body: JSON.stringify(planBody(unique('ghostplan'))) },
      { method: 'POST', path: '/v1/tenants', body: JSON.stringify({ id: unique('ghost'), name: 'x', plan_id: planId }) },
      { method: 'PATCH', path: `/v1/tenants/${T.id}`, body: '{"name":"renamed"}' },
      { method: 'POST', path: `/v1/tenants/${T.id}/close-period`, body: '{"finalize":true}' },
      { method: 'POST', path: `/v1/tenants/${T.id}/authorize`, body: '{"id":"ct-a","metric":"calls","quantity":1}' },
      { method: 'POST', path: '/v1/invoices/in_ghost_20260101T000000Z_v1/rerun', body: '{"reason":"x"}' },
    ];
    for (const r of routes) {
      const res = await rawRequest(r.method, r.path, { headers: { 'x-api-key': api.adminKey, 'content-type': 'text/plain' }, body: r.body });
      expect({ route: `${r.method} ${r.path}`, status: res.status, code: res.body?.code }).toEqual({ route: `${r.method} ${r.path}`, status: 415, code: 'unsupported_media_type' });
    }
    // The HTTP layer's own 415 (a content encoding it cannot read) carries the same code.
    const compressed = await rawRequest('POST', '/v1/events', { headers: { 'x-api-key': T.key, 'content-type': 'application/json', 'content-encoding': 'compress' }, body: event });
    expectProblem(compressed, 415, 'unsupported_media_type');
    // An empty body needs no content type: close-period takes none.
    const other = await createTenant();
    const close = await rawRequest('POST', `/v1/tenants/${other.id}/close-period`, { headers: { 'x-api-key': api.adminKey, 'content-length': '0' } });
    expect(close.status).toBe(200);
    await settle(T.id, T.key);
    expect(await api.db('usage_events').where({ tenant_id: T.id, event_id: 'ct-1' }).first()).toBeUndefined();
    expect(await api.db('periods').where({ tenant_id: T.id }).pluck('status')).toEqual(['open']);
    expect((await api.call('GET', `/v1/tenants/${T.id}`)).body.name).toBe(T.id);
  });

  test('a number beyond the double range (1e400) is refused with 422 naming it, not stored as null', async () => {
    const cases = [
      { raw: '{"events":[{"id":"big-1","metric":"calls","properties":{"big":1e400}}]}', at: 'events.0.properties.big' },
      { raw: '{"events":[{"id":"big-2","metric":"calls","properties":{"list":[1,-1e400]}}]}', at: 'events.0.properties.list.1' },
      { raw: '{"events":[{"id":"big-3","metric":"calls","quantity":1e400}]}', at: 'events.0.quantity' },
    ];
    for (const c of cases) {
      const res = await api.call('POST', '/v1/events', { key: T.key, raw: c.raw });
      expectProblem(res, 422, 'validation_failed');
      expect(paths(res)).toEqual([c.at]);
    }
    await settle(T.id, T.key);
    expect((await storedIds(T.id)).filter((id) => id.startsWith('big'))).toEqual([]);
    // Tiny numbers and the largest double are numbers like any other.
    const ok = await api.call('POST', '/v1/events', { key: T.key, raw: '{"events":[{"id":"big-ok","metric":"calls","properties":{"max":1.7976931348623157e308,"tiny":5e-324}}]}' });
    expect(ok.status).toBe(202);
  });

  test('an empty X-API-Key header counts as absent: the bearer token beside it is used', async () => {
    const path = `/v1/tenants/${T.id}`;
    for (const empty of ['', ' ', '\t']) {
      const res = await rawRequest('GET', path, { headers: { 'x-api-key': empty, authorization: `Bearer ${T.key}` } });
      expect({ empty, status: res.status }).toEqual({ empty, status: 200 });
    }
    expect((await rawRequest('GET', path, { headers: { 'x-api-key': '', authorization: `Bearer ${api.adminKey}` } })).status).toBe(200);
    expectProblem(await rawRequest('GET', path, { headers: { 'x-api-key': '' } }), 401, 'unauthorized');
    expectProblem(await rawRequest('GET', path, { headers: { 'x-api-key': '', authorization: 'Bearer ' } }), 401, 'unauthorized');
    // A key that is given and wrong is still wrong, whatever the bearer says.
    expectProblem(await rawRequest('GET', path, { headers: { 'x-api-key': 'tk_wrong', authorization: `Bearer ${T.key}` } }), 401, 'unauthorized');
  });
});

describe('large amounts (#6)', () => {
  test('a period of 1,000 events of 10^15 units at a price of 1 is invoiced through the API: 10^18', async () => {
    const bigPlan = unique('bigplan');
    const plan = planBody(bigPlan, { cost_limit: '999999999999999999.9999999999', meters: [{ metric: 'units', aggregation: 'sum', pricing: { model: 'per_unit', unit_price: '1' } }] });
    expect((await api.call('POST', '/v1/plans', { body: plan })).status).toBe(201);
    const id = unique('big');
    const created = await api.call('POST', '/v1/tenants', { body: { id, name: id, plan_id: bigPlan } });
    expect(created.status).toBe(201);
    const key = created.body.api_key as string;
    const events = Array.from({ length: 1_000 }, (_, i) => ({ id: `big-${i}`, metric: 'units', quantity: 1e15 }));
    expect((await api.call('POST', '/v1/events', { key, body: { events } })).status).toBe(202);
    await settle(id, key);
    const close = await api.call('POST', `/v1/tenants/${id}/close-period`, { body: { finalize: true } });
    expect(close.status).toBe(200);
    const invoice = await eventually(async () => {
      const res = await api.call('GET', `/v1/invoices/${close.body.invoice_id}`, { key });
      return res.body?.status === 'finalized' ? res.body : undefined;
    }, 30_000, 'the finalized invoice');
    expect(invoice).toMatchObject({ total: '1000000000000000000.00', lines: [{ metric: 'units', quantity: 1e18, amount: '1000000000000000000.00' }] });
  });
});
