import { createHash } from 'node:crypto';
import { eventually, expectProblem, startApiHarness, type ApiHarness } from '../support/api-harness';
import { finalizedInvoice as finalizedInvoiceOf, sendEvents, settledUsage, tenantOnPlan } from '../support/api-tenants';
import { quietLogger, unique } from '../support/stack';
import { closeGracefully, createApp } from '../../src/api/app';
import { listen } from '../../src/api/server';
import { startTenantKeyCache } from '../../src/api/tenant-key-cache';

/**
 * The read side of API v1 through real HTTP: stored events, periods, alerts and invoices, their
 * keyset pagination (API.md: limit, starting_after, has_more, total_count, newest first), their
 * filters and validation, and tenant key rotation. Every datum is created through the API.
 */
let api: ApiHarness;
beforeAll(async () => {
  api = await startApiHarness();
});
afterAll(async () => {
  await api?.stop();
});

function planBody(id: string, extra: Record<string, unknown> = {}) {
  return {
    id,
    name: 'Reads',
    currency: 'USD',
    interval: 'month',
    base_fee: '0.00',
    grace_period_seconds: 0,
    meters: [
      { metric: 'api_calls', aggregation: 'sum', limit: 100, pricing: { model: 'per_unit', unit_price: '0.10' } },
      { metric: 'storage_gb', aggregation: 'max', pricing: { model: 'per_unit', unit_price: '1.00' } },
    ],
    ...extra,
  };
}

const createTenant = (planId: string) => tenantOnPlan(api, planId, unique('reads'));
const send = (key: string, events: unknown[]) => sendEvents(api, key, events);
/** Read-your-writes: returns once every event acknowledged so far is counted (and stored). */
const settle = (tenantId: string, key: string) => settledUsage(api, { id: tenantId, key });
const finalizedInvoice = (invoiceId: string) => finalizedInvoiceOf(api, invoiceId, 40_000);

/** Walks a list with `limit` and `starting_after` until `has_more` is false; returns every page. */
async function walk(path: string, key: string, limit: number, maxPages = 50): Promise<any[]> {
  const pages: any[] = [];
  let after: string | undefined;
  for (let i = 0; i < maxPages; i++) {
    const sep = path.includes('?') ? '&' : '?';
    const res = await api.call('GET', `${path}${sep}limit=${limit}${after ? `&starting_after=${encodeURIComponent(after)}` : ''}`, { key });
    expect(res.status).toBe(200);
    pages.push(res.body);
    if (!res.body.has_more) return pages;
    expect(res.body.data).toHaveLength(limit);
    after = res.body.data[res.body.data.length - 1].id;
  }
  throw new Error(`${path}: more than ${maxPages} pages`);
}

describe('GET /v1/tenants/{id}/events', () => {
  let planId: string;
  let tenant: Awaited<ReturnType<typeof createTenant>>;
  let base: number;
  const at = (seconds: number) => new Date(base + seconds * 1000).toISOString();

  beforeAll(async () => {
    planId = unique('reads_ev');
    expect((await api.call('POST', '/v1/plans', { body: planBody(planId) })).status).toBe(201);
    tenant = await createTenant(planId);
    // The period starts at creation (to the second); events a few seconds later are in it.
    base = Date.parse(tenant.period.start) + 1000;
    await send(tenant.key, [
      { id: 'e1', metric: 'api_calls', quantity: 1, timestamp: at(1) },
      { id: 'e2', metric: 'api_calls', quantity: 2.5, timestamp: at(2), properties: { region: 'eu', path: '/x' } },
      { id: 's1', metric: 'storage_gb', quantity: 12.25, timestamp: at(2.5) },
      { id: 'e3', metric: 'api_calls', quantity: 3, timestamp: at(3) },
      { id: 'e4', metric: 'api_calls', quantity: 4, timestamp: at(4) },
      { id: 'e5', metric: 'api_calls', quantity: 5, timestamp: at(5) },
      { id: 's2', metric: 'storage_gb', quantity: 9, timestamp: at(6) },
    ]);
    await settle(tenant.id, tenant.key);
    // Two events with the same timestamp, received one after the other: the later one is newer.
    await send(tenant.key, [{ id: 'tie_first', metric: 'api_calls', quantity: 1, timestamp: at(7) }]);
    await settle(tenant.id, tenant.key);
    await send(tenant.key, [{ id: 'tie_second', metric: 'api_calls', quantity: 1, timestamp: at(7) }]);
    await settle(tenant.id, tenant.key);
  });

  const newestFirst = ['tie_second', 'tie_first', 's2', 'e5', 'e4', 'e3', 's1', 'e2', 'e1'];

  test('lists the stored events newest first, with their period', async () => {
    const res = await api.call('GET', `/v1/tenants/${tenant.id}/events`, { key: tenant.key });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ has_more: false, total_count: newestFirst.length });
    expect(res.body.data.map((e: any) => e.id)).toEqual(newestFirst);
    const e2 = res.body.data.find((e: any) => e.id === 'e2');
    expect(e2).toEqual({
      id: 'e2',
      tenant_id: tenant.id,
      metric: 'api_calls',
      quantity: 2.5,
      timestamp: at(2),
      period_start: tenant.period.start,
      properties: { region: 'eu', path: '/x' },
      received_at: expect.stringMatching(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/),
      cost: '0.25', // 2.5 calls at 0.10
    });
    expect(res.body.data.find((e: any) => e.id === 's1')).toMatchObject({ quantity: 12.25, properties: null });
    // The admin key reads it too.
    expect((await api.call('GET', `/v1/tenants/${tenant.id}/events`)).body.total_count).toBe(newestFirst.length);
  });

  test('walks every page with limit and starting_after, newest first, each item once', async () => {
    const pages = await walk(`/v1/tenants/${tenant.id}/events`, tenant.key, 2);
    expect(pages).toHaveLength(5);
    expect(pages.map((p) => p.has_more)).toEqual([true, true, true, true, false]);
    for (const page of pages) expect(page.total_count).toBe(newestFirst.length);
    expect(pages.flatMap((p) => p.data.map((e: any) => e.id))).toEqual(newestFirst);
    const timestamps = pages.flatMap((p) => p.data.map((e: any) => Date.parse(e.timestamp)));
    expect([...timestamps].sort((a, b) => b - a)).toEqual(timestamps);
  });

  test('filters by metric and by a half-open [from, to) time range, and pages within the filter', async () => {
    const byMetric = await walk(`/v1/tenants/${tenant.id}/events?metric=api_calls`, tenant.key, 2);
    expect(byMetric.map((p) => p.total_count)).toEqual([7, 7, 7, 7]);
    expect(byMetric.flatMap((p) => p.data.map((e: any) => e.id))).toEqual(newestFirst.filter((id) => !id.startsWith('s')));

    const range = await api.call('GET', `/v1/tenants/${tenant.id}/events?from=${encodeURIComponent(at(2))}&to=${encodeURIComponent(at(5))}`, { key: tenant.key });
    expect(range.status).toBe(200);
    expect(range.body.data.map((e: any) => e.id)).toEqual(['e4', 'e3', 's1', 'e2']);
    expect(range.body.total_count).toBe(4);

    const both = await api.call('GET', `/v1/tenants/${tenant.id}/events?metric=storage_gb&from=${encodeURIComponent(at(3))}`, { key: tenant.key });
    expect(both.body.data.map((e: any) => e.id)).toEqual(['s2']);

    const none = await api.call('GET', `/v1/tenants/${tenant.id}/events?metric=nothing_here`, { key: tenant.key });
    expect(none.body).toEqual({ data: [], has_more: false, total_count: 0, total_count_exact: true, retained_since: null });

    // A cursor outside the filter still positions the page (any event of the tenant is a cursor).
    const afterS2 = await api.call('GET', `/v1/tenants/${tenant.id}/events?metric=api_calls&starting_after=s2`, { key: tenant.key });
    expect(afterS2.body.data.map((e: any) => e.id)).toEqual(['e5', 'e4', 'e3', 'e2', 'e1']);
  });

  test('default and maximum page sizes', async () => {
    const res = await api.call('GET', `/v1/tenants/${tenant.id}/events?limit=100`, { key: tenant.key });
    expect(res.body.data).toHaveLength(newestFirst.length);
    const one = await api.call('GET', `/v1/tenants/${tenant.id}/events?limit=1`, { key: tenant.key });
    expect(one.body).toMatchObject({ has_more: true, total_count: newestFirst.length });
    expect(one.body.data.map((e: any) => e.id)).toEqual(['tie_second']);
  });

  test.each([
    ['limit=0', 'limit'],
    ['limit=101', 'limit'],
    ['limit=abc', 'limit'],
    ['limit=2.5', 'limit'],
    ['limit=-1', 'limit'],
    ['limit=', 'limit'],
    ['limit=1&limit=2', 'limit'],
    ['starting_after=', 'starting_after'],
    ['starting_after=no_such_event', 'starting_after'],
    ['starting_after=%00', 'starting_after'],
    ['metric=Not-A-Metric', 'metric'],
    ['from=yesterday', 'from'],
    ['to=2026-13-01T00:00:00Z', 'to'],
    ['from=2026-11-22T10:00:00Z&to=2026-11-22T09:00:00Z', 'to'],
  ])('?%s is a 422 validation_failed on path %s', async (query, path) => {
    const res = await api.call('GET', `/v1/tenants/${tenant.id}/events?${query}`, { key: tenant.key });
    expectProblem(res, 422, 'validation_failed');
    expect(res.body.errors.map((e: any) => e.path)).toContain(path);
  });

  test("another tenant's event id is an unknown cursor (422), and reveals nothing", async () => {
    const other = await createTenant(planId);
    await send(other.key, [{ id: 'theirs', metric: 'api_calls', quantity: 1 }]);
    await settle(other.id, other.key);
    const res = await api.call('GET', `/v1/tenants/${tenant.id}/events?starting_after=theirs`);
    expectProblem(res, 422, 'validation_failed');
    expect(res.body.errors).toEqual([{ path: 'starting_after', message: expect.any(String) }]);
  });

  test('an unknown tenant is a 404 problem', async () => {
    expectProblem(await api.call('GET', `/v1/tenants/${unique('ghost')}/events`), 404, 'not_found');
  });
});

describe('GET /v1/tenants/{id}/periods and /invoices', () => {
  let tenant: Awaited<ReturnType<typeof createTenant>>;
  const invoiceIds: string[] = [];
  const closed: Array<{ start: string; end: string }> = [];

  beforeAll(async () => {
    const planId = unique('reads_per');
    expect((await api.call('POST', '/v1/plans', { body: planBody(planId, { base_fee: '1.00' }) })).status).toBe(201);
    tenant = await createTenant(planId);
    // Three periods: two closed by finance (with 10 and 20 calls), the third running (7 calls).
    for (const [n, calls] of [[1, 10], [2, 20]] as const) {
      await send(tenant.key, [{ id: `p${n}`, metric: 'api_calls', quantity: calls }, { id: `g${n}`, metric: 'storage_gb', quantity: n }]);
      await settle(tenant.id, tenant.key);
      const close = await api.call('POST', `/v1/tenants/${tenant.id}/close-period`, { body: { finalize: true } });
      expect(close.status).toBe(200);
      invoiceIds.push(close.body.invoice_id);
      closed.push(close.body.closed_period);
    }
    await Promise.all(invoiceIds.map(finalizedInvoice));
    await send(tenant.key, [{ id: 'p3', metric: 'api_calls', quantity: 7 }]);
    await settle(tenant.id, tenant.key);
  });

  test('lists past and current periods, newest first, with counters, totals and invoice ids', async () => {
    const res = await api.call('GET', `/v1/tenants/${tenant.id}/periods`, { key: tenant.key });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ has_more: false, total_count: 3 });
    const [current, second, first] = res.body.data;
    expect(current).toMatchObject({
      start: closed[1]!.end,
      status: 'open',
      plan_version: 1,
      counters: { api_calls: 7, storage_gb: 0 },
      counters_source: 'live',
      totals: null,
      invoice_ids: [],
    });
    expect(second).toMatchObject({
      start: closed[1]!.start,
      end: closed[1]!.end,
      status: 'invoiced',
      counters: { api_calls: 20, storage_gb: 2 },
      counters_source: 'stored',
      totals: { invoice_id: invoiceIds[1], subtotal: '5.00', total: '5.00', currency: 'USD' },
      invoice_ids: [invoiceIds[1]],
    });
    expect(first).toMatchObject({
      start: closed[0]!.start,
      end: closed[0]!.end,
      status: 'invoiced',
      counters: { api_calls: 10, storage_gb: 1 },
      totals: { subtotal: '3.00', total: '3.00', currency: 'USD' },
      invoice_ids: [invoiceIds[0]],
    });
    for (const p of res.body.data) {
      expect(p.id).toMatch(new RegExp(`^per_${tenant.id}_\\d{8}T\\d{6}(\\.\\d{3})?Z$`));
      expect(p.plan_id).toBeDefined();
    }
  });

  test('pages periods with limit and starting_after', async () => {
    const pages = await walk(`/v1/tenants/${tenant.id}/periods`, tenant.key, 2);
    expect(pages.map((p) => [p.data.length, p.has_more, p.total_count])).toEqual([
      [2, true, 3],
      [1, false, 3],
    ]);
    expect(pages.flatMap((p) => p.data.map((x: any) => x.start))).toEqual([closed[1]!.end, closed[1]!.start, closed[0]!.start]);
    const bad = await api.call('GET', `/v1/tenants/${tenant.id}/periods?starting_after=per_${tenant.id}_20000101T000000Z`, { key: tenant.key });
    expectProblem(bad, 422, 'validation_failed');
    expect(bad.body.errors[0].path).toBe('starting_after');
    expectProblem(await api.call('GET', `/v1/tenants/${tenant.id}/periods?starting_after=garbage`, { key: tenant.key }), 422, 'validation_failed');
    // A date that does not exist is refused as a cursor, not sent to PostgreSQL.
    expectProblem(await api.call('GET', `/v1/tenants/${tenant.id}/periods?starting_after=per_${tenant.id}_20260231T000000Z`, { key: tenant.key }), 422, 'validation_failed');
    expectProblem(await api.call('GET', `/v1/tenants/${tenant.id}/periods?limit=500`, { key: tenant.key }), 422, 'validation_failed');
  });

  test('pages invoices newest first', async () => {
    const pages = await walk(`/v1/tenants/${tenant.id}/invoices`, tenant.key, 1);
    expect(pages.map((p) => [p.has_more, p.total_count])).toEqual([
      [true, 2],
      [false, 2],
    ]);
    const invoices = pages.flatMap((p) => p.data);
    expect(invoices.map((i: any) => i.id)).toEqual([invoiceIds[1], invoiceIds[0]]);
    expect(invoices[0]).toMatchObject({ status: 'finalized', total: '5.00', currency: 'USD', tenant_id: tenant.id });
    expect(invoices[0].lines.map((l: any) => [l.metric, l.quantity, l.amount])).toEqual([
      ['base_fee', 1, '1.00'],
      ['api_calls', 20, '2.00'],
      ['storage_gb', 2, '2.00'],
    ]);
    const bad = await api.call('GET', `/v1/tenants/${tenant.id}/invoices?starting_after=in_nope`, { key: tenant.key });
    expectProblem(bad, 422, 'validation_failed');
    expect(bad.body.errors[0].path).toBe('starting_after');
    expectProblem(await api.call('GET', `/v1/tenants/${unique('ghost')}/invoices`), 404, 'not_found');
    expectProblem(await api.call('GET', `/v1/tenants/${unique('ghost')}/periods`), 404, 'not_found');
  });

  test('a cancelled tenant still lists its periods, from storage', async () => {
    const planId = unique('reads_cancel');
    expect((await api.call('POST', '/v1/plans', { body: planBody(planId) })).status).toBe(201);
    const gone = await createTenant(planId);
    await send(gone.key, [{ id: 'c1', metric: 'api_calls', quantity: 4 }]);
    await settle(gone.id, gone.key);
    const del = await api.call('DELETE', `/v1/tenants/${gone.id}`);
    expect(del.status).toBe(200);
    await finalizedInvoice(del.body.final_invoice_id);
    const res = await api.call('GET', `/v1/tenants/${gone.id}/periods`, { key: gone.key });
    expect(res.status).toBe(200);
    expect(res.body.data[0]).toMatchObject({
      status: 'invoiced',
      counters: { api_calls: 4 },
      counters_source: 'stored',
      totals: { invoice_id: del.body.final_invoice_id, total: '0.40' },
      invoice_ids: [del.body.final_invoice_id],
    });
    // Its usage and estimates are refused as cancelled, and a tenant that never was is not found.
    expect((await api.call('GET', `/v1/tenants/${gone.id}/usage`, { key: gone.key })).body).toMatchObject({ status: 409, code: 'conflict', detail: `tenant ${gone.id} is cancelled` });
    const estimate = await api.call('POST', `/v1/tenants/${gone.id}/estimate`, { key: gone.key, body: { metric: 'api_calls', quantity: 1 } });
    expect(estimate.body).toMatchObject({ status: 409, code: 'conflict', detail: `tenant ${gone.id} is cancelled` });
    expectProblem(await api.call('GET', `/v1/tenants/${unique('ghost')}/usage`), 404, 'not_found');
    expectProblem(await api.call('POST', `/v1/tenants/${unique('ghost')}/estimate`, { body: { metric: 'api_calls', quantity: 1 } }), 404, 'not_found');
  });
});

describe('GET /v1/tenants/{id}/alerts', () => {
  test('lists meter and cost alerts, notified and superseded, newest first and paged', async () => {
    const planId = unique('reads_al');
    const plan = planBody(planId, { alert_thresholds: [50, 80, 100], cost_limit: '10.00' });
    expect((await api.call('POST', '/v1/plans', { body: plan })).status).toBe(201);
    const tenant = await createTenant(planId);
    // 90 calls: 90 % of the meter's limit (100) and 9.00 of the 10.00 cost limit. One batch jumps
    // 50 and 80 for both subjects: 80 is notified, 50 superseded.
    await send(tenant.key, [{ id: 'a1', metric: 'api_calls', quantity: 90 }]);
    await settle(tenant.id, tenant.key);
    const res = await eventually(async () => {
      const r = await api.call('GET', `/v1/tenants/${tenant.id}/alerts`, { key: tenant.key });
      const notified = r.body?.data?.filter((a: any) => a.status === 'notified') ?? [];
      return r.body?.total_count === 4 && notified.every((a: any) => a.channels.length > 0) ? r : undefined;
    }, 30_000, 'four alerts, delivered');
    expect(res.body.has_more).toBe(false);
    const meter = res.body.data.filter((a: any) => a.kind === 'meter');
    const cost = res.body.data.filter((a: any) => a.kind === 'cost');
    expect(meter.map((a: any) => [a.metric, a.threshold, a.status])).toEqual([
      ['api_calls', 80, 'notified'],
      ['api_calls', 50, 'superseded'],
    ]);
    expect(cost.map((a: any) => [a.metric, a.threshold, a.status])).toEqual([
      [null, 80, 'notified'],
      [null, 50, 'superseded'],
    ]);
    expect(meter[0]).toEqual({
      id: expect.stringMatching(/^al_/),
      tenant_id: tenant.id,
      kind: 'meter',
      metric: 'api_calls',
      threshold: 80,
      level: 'warning',
      status: 'notified',
      used: 90,
      limit: 100,
      period_start: tenant.period.start,
      fired_at: expect.stringMatching(/Z$/),
      channels: ['log'],
      covers: expect.arrayContaining([50, 80]),
      acknowledged_at: null,
    });
    expect(cost[0]).toMatchObject({ used: 9, limit: 10, channels: ['log'] });
    expect(meter[1].channels).toEqual([]);
    const fired = res.body.data.map((a: any) => Date.parse(a.fired_at));
    expect([...fired].sort((a, b) => b - a)).toEqual(fired);

    const pages = await walk(`/v1/tenants/${tenant.id}/alerts`, tenant.key, 2);
    expect(pages.map((p) => [p.data.length, p.has_more, p.total_count])).toEqual([
      [2, true, 4],
      [2, false, 4],
    ]);
    expect(pages.flatMap((p) => p.data.map((a: any) => a.id))).toEqual(res.body.data.map((a: any) => a.id));
    expectProblem(await api.call('GET', `/v1/tenants/${tenant.id}/alerts?starting_after=al_nope`, { key: tenant.key }), 422, 'validation_failed');
    expectProblem(await api.call('GET', `/v1/tenants/${unique('ghost')}/alerts`), 404, 'not_found');
  });
});

describe('GET /v1/tenants (admin) is paged too', () => {
  test('limit, starting_after and newest first', async () => {
    const planId = unique('reads_list');
    expect((await api.call('POST', '/v1/plans', { body: planBody(planId) })).status).toBe(201);
    const made = [];
    for (let i = 0; i < 3; i++) made.push((await createTenant(planId)).id);
    const first = await api.call('GET', '/v1/tenants?limit=2');
    expect(first.status).toBe(200);
    expect(first.body.data).toHaveLength(2);
    expect(first.body.has_more).toBe(true);
    expect(first.body.total_count).toBeGreaterThanOrEqual(3);
    const next = await api.call('GET', `/v1/tenants?limit=2&starting_after=${first.body.data[1].id}`);
    expect(next.status).toBe(200);
    const created = [...first.body.data, ...next.body.data].map((t: any) => Date.parse(t.created_at));
    expect([...created].sort((a, b) => b - a)).toEqual(created);
    expect(new Set([...first.body.data, ...next.body.data].map((t: any) => t.id)).size).toBe(first.body.data.length + next.body.data.length);
    // The three just made are the newest (other test files may create tenants concurrently).
    const all = await walk('/v1/tenants', api.adminKey, 100, 1000);
    const ids = all.flatMap((p) => p.data.map((t: any) => t.id));
    expect(ids.indexOf(made[2]!)).toBeLessThan(ids.indexOf(made[1]!));
    expect(ids.indexOf(made[1]!)).toBeLessThan(ids.indexOf(made[0]!));
    expectProblem(await api.call('GET', '/v1/tenants?limit=0'), 422, 'validation_failed');
    expectProblem(await api.call('GET', '/v1/tenants?starting_after=nobody_here'), 422, 'validation_failed');
  });
});

describe('GET /v1/plans (admin) is paged too', () => {
  test('each plan once, at its latest version, newest first', async () => {
    const ids = [unique('pl_a'), unique('pl_b'), unique('pl_c')];
    for (const id of ids) expect((await api.call('POST', '/v1/plans', { body: planBody(id) })).status).toBe(201);
    expect((await api.call('POST', '/v1/plans', { body: { ...planBody(ids[0]!), name: 'v2' } })).body.version).toBe(2);
    // Small pages chain without overlap; the whole list is then walked in larger pages,
    // because the other test files keep adding plans to the same database.
    const first = await api.call('GET', '/v1/plans?limit=2');
    expect(first.body.has_more).toBe(true);
    expect(first.body.data).toHaveLength(2);
    const second = await api.call('GET', `/v1/plans?limit=2&starting_after=${encodeURIComponent(first.body.data[1].id)}`);
    expect(second.status).toBe(200);
    expect(second.body.data.map((p: any) => p.id)).not.toContain(first.body.data[0].id);
    expect(second.body.data.map((p: any) => p.id)).not.toContain(first.body.data[1].id);
    const all = await walk('/v1/plans', api.adminKey, 100, 1000);
    const plans = all.flatMap((p) => p.data);
    const mine = plans.filter((p: any) => ids.includes(p.id));
    expect(mine.map((p: any) => p.id)).toEqual([ids[2], ids[1], ids[0]]);
    expect(mine.find((p: any) => p.id === ids[0]).version).toBe(2);
    expect(new Set(plans.map((p: any) => p.id)).size).toBe(plans.length);
    expectProblem(await api.call('GET', '/v1/plans?starting_after=nope'), 422, 'validation_failed');
  });
});

describe('POST /v1/tenants/{id}/api-keys', () => {
  test('rotates the key: shown once, hashed at rest, the old key answers 401 at once', async () => {
    const planId = unique('reads_keys');
    expect((await api.call('POST', '/v1/plans', { body: planBody(planId) })).status).toBe(201);
    const tenant = await createTenant(planId);
    const original = tenant.key;

    // The tenant rotates its own key.
    const own = await api.call('POST', `/v1/tenants/${tenant.id}/api-keys`, { key: original });
    expect(own.status).toBe(201);
    expect(own.body).toEqual({
      id: expect.stringMatching(/^key_/),
      tenant_id: tenant.id,
      api_key: expect.stringMatching(/^tk_/),
      prefix: expect.any(String),
      created_at: expect.stringMatching(/Z$/),
      revoked_keys: 1,
    });
    const second = own.body.api_key as string;
    expect(second).not.toBe(original);
    const oldRes = await api.call('GET', `/v1/tenants/${tenant.id}`, { key: original });
    expectProblem(oldRes, 401, 'unauthorized');
    expectProblem(await api.call('POST', '/v1/events', { key: original, body: { events: [{ id: 'x', metric: 'api_calls' }] } }), 401, 'unauthorized');
    expect((await api.call('GET', `/v1/tenants/${tenant.id}`, { key: second })).status).toBe(200);
    await send(second, [{ id: 'after_rotation', metric: 'api_calls', quantity: 1 }]);

    // The admin rotates it too; only the newest key works.
    const byAdmin = await api.call('POST', `/v1/tenants/${tenant.id}/api-keys`);
    expect(byAdmin.status).toBe(201);
    const third = byAdmin.body.api_key as string;
    expectProblem(await api.call('GET', `/v1/tenants/${tenant.id}/usage`, { key: second }), 401, 'unauthorized');
    expect((await api.call('GET', `/v1/tenants/${tenant.id}/usage`, { key: third })).status).toBe(200);

    // At rest: digests only, one live key, the revoked ones kept with revoked_at.
    const rows = await api.db('api_keys').where({ tenant_id: tenant.id }).orderBy('created_at');
    expect(rows).toHaveLength(3);
    expect(rows.filter((r: any) => r.revoked_at === null).map((r: any) => r.id)).toEqual([byAdmin.body.id]);
    const digest = (k: string) => createHash('sha256').update(k).digest('hex');
    expect(rows.map((r: any) => r.key_hash).sort()).toEqual([original, second, third].map(digest).sort());
    const stored = JSON.stringify(rows);
    for (const k of [original, second, third]) expect(stored).not.toContain(k);

    // An old key cannot rotate (401), and an unknown tenant is a 404.
    expectProblem(await api.call('POST', `/v1/tenants/${tenant.id}/api-keys`, { key: original }), 401, 'unauthorized');
    expectProblem(await api.call('POST', `/v1/tenants/${unique('ghost')}/api-keys`), 404, 'not_found');
  });
});

test('a key rotated through one API process is refused by another, with its dashboard sessions, as soon as the revocation reaches it', async () => {
  const planId = unique('reads_keys_other');
  expect((await api.call('POST', '/v1/plans', { body: planBody(planId) })).status).toBe(201);
  const tenant = await createTenant(planId);
  // A second API process on the same database, with its own cache of resolved keys.
  const keys = startTenantKeyCache(api.db, quietLogger);
  const other = createApp({ db: api.db, temporal: api.client, taskQueue: api.taskQueue, namespace: 'default', adminKey: api.adminKey, logger: quietLogger, tenantKeys: keys.cache });
  const server = await listen(other, 0, '127.0.0.1');
  const usageUrl = `http://127.0.0.1:${server.port}/v1/tenants/${tenant.id}/usage`;
  const viaOther = (key: string) => fetch(usageUrl, { headers: { 'x-api-key': key } }).then((r) => r.status);
  // A dashboard session signed in there with the same key: its key's liveness is cached too.
  const signedIn = await fetch(`http://127.0.0.1:${server.port}/dashboard/session`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ api_key: tenant.key }) });
  expect(signedIn.status).toBe(201);
  const cookie = (signedIn.headers.get('set-cookie') ?? '').split(';')[0]!;
  const viaSession = () => fetch(usageUrl, { headers: { cookie } }).then((r) => r.status);
  try {
    await eventually(async () => ((await viaOther(tenant.key)) === 200 && (await viaSession()) === 200 && keys.cache.size >= 2 ? true : undefined), 10_000, 'the key and the session resolved and cached');
    const rotated = await api.call('POST', `/v1/tenants/${tenant.id}/api-keys`, { key: tenant.key });
    expect(rotated.status).toBe(201);
    const refusedAfter = Date.now();
    await eventually(async () => ((await viaOther(tenant.key)) === 401 && (await viaSession()) === 401 ? true : undefined), 5_000, 'the old key and its session refused by the other process');
    expect(Date.now() - refusedAfter).toBeLessThan(2_000);
    expect(await viaOther(rotated.body.api_key as string)).toBe(200);
  } finally {
    await closeGracefully(other, server);
    await keys.stop();
  }
});

test('ids PostgreSQL cannot store (a NUL byte) are simply not found, never a 500', async () => {
  for (const [method, path] of [
    ['GET', '/v1/tenants/%00'],
    ['GET', '/v1/tenants/%00/events'],
    ['GET', '/v1/tenants/%00/periods'],
    ['GET', '/v1/tenants/%00/alerts'],
    ['GET', '/v1/tenants/%00/invoices'],
    ['POST', '/v1/tenants/%00/api-keys'],
    ['POST', '/v1/tenants/%00/close-period'],
    ['DELETE', '/v1/tenants/%00'],
    ['GET', '/v1/invoices/%00'],
  ] as const) {
    const res = await api.call(method, path);
    expect({ path, status: res.status, code: res.body?.code }).toEqual({ path, status: 404, code: 'not_found' });
  }
});
