import { startApiHarness, eventually, everyRow, expectProblem, type ApiHarness } from '../support/api-harness';
import { closeAndFinalize as closeAndFinalizeOf, sendEvents, settledUsage, tenantOnPlan } from '../support/api-tenants';
import { unique } from '../support/stack';
import { backfillPeriodFigures, refreshMonthlySummary } from '../../src/db/summaries';

/**
 * Insight through the real API (worker, Temporal dev server, PostgreSQL): forecasts in the usage
 * view, alert triage across tenants, rerun previews, monthly summaries and the events listing's
 * property filter and estimated costs. Every datum is made through the API.
 */
let api: ApiHarness;
beforeAll(async () => {
  api = await startApiHarness({ ownDatabase: true });
});
afterAll(async () => {
  await api?.stop();
});

async function createPlan(unitPrice: string, extra: Record<string, unknown> = {}): Promise<string> {
  const id = unique('insight');
  const res = await api.call('POST', '/v1/plans', {
    body: {
      id,
      name: 'Insight',
      currency: 'USD',
      interval: 'month',
      base_fee: '5.00',
      grace_period_seconds: 0,
      meters: [
        {
          metric: 'api_calls',
          aggregation: 'sum',
          limit: 100,
          pricing: { model: 'graduated', tiers: [{ up_to: 50, unit_price: unitPrice }, { up_to: null, unit_price: '0.01' }] },
        },
        { metric: 'seats', aggregation: 'max', pricing: { model: 'per_unit', unit_price: '2.00' } },
      ],
      ...extra,
    },
  });
  expect(res.status).toBe(201);
  return id;
}

const createTenant = (planId: string) => tenantOnPlan(api, planId, unique('insight'));
const send = (key: string, events: unknown[]) => sendEvents(api, key, events);
const settle = (tenantId: string, key: string) => settledUsage(api, { id: tenantId, key });
const closeAndFinalize = (tenantId: string) => closeAndFinalizeOf(api, tenantId);

/**
 * Where `monthly_summary_usage` and the summary rows' metrics disagree, either way: a usage row
 * missing, left behind, or with another figure. The sort by a metric reads the former.
 */
async function usageOutOfStep(): Promise<unknown[]> {
  const { rows } = await api.db.raw(
    `SELECT month::text AS month, metric, tenant_id, currency, held.used::text AS held, indexed.used::text AS indexed
       FROM (SELECT s.month, m.key AS metric, s.tenant_id, s.currency, coalesce((m.value ->> 'used')::numeric, 0) AS used
               FROM monthly_summaries s CROSS JOIN LATERAL jsonb_each(s.metrics) m) held
       FULL JOIN monthly_summary_usage indexed USING (month, metric, tenant_id, currency)
      WHERE held.used IS DISTINCT FROM indexed.used`,
  );
  return rows;
}

describe('forecast in the usage view', () => {
  test('every meter carries a forecast and the costs a projected_total', async () => {
    const tenant = await createTenant(await createPlan('0.10'));
    await send(tenant.key, [{ id: 'f1', metric: 'api_calls', quantity: 10 }]);
    const usage = (await api.call('GET', `/v1/tenants/${tenant.id}/usage`, { key: tenant.key })).body;
    await settle(tenant.id, tenant.key);
    const view = (await api.call('GET', `/v1/tenants/${tenant.id}/usage`, { key: tenant.key })).body;
    expect(Object.keys(view.metrics.api_calls.forecast).sort()).toEqual(['exhausts_at', 'projected_amount', 'projected_used']);
    expect(view.costs).toHaveProperty('projected_total');
    const { start, end } = view.period;
    const elapsed = (Date.parse(view.as_of) - Date.parse(start)) / (Date.parse(end) - Date.parse(start));
    if (elapsed < 0.01) {
      expect(view.metrics.api_calls.forecast).toEqual({ projected_used: null, projected_amount: null, exhausts_at: null });
      expect(view.costs.projected_total).toBeNull();
    } else {
      // Linear: at least what is used, and the reading meter projects its reading.
      expect(view.metrics.api_calls.forecast.projected_used).toBeGreaterThanOrEqual(10);
      expect(view.metrics.seats.forecast).toMatchObject({ projected_used: 0, projected_amount: '0.00', exhausts_at: null });
    }
    expect(usage.tenant_id).toBe(tenant.id);
  });
});

describe('alert triage', () => {
  test('open alerts across tenants, acknowledged by the tenant or the admin, idempotently; acknowledged alerts never fire again', async () => {
    const planId = await createPlan('0.10');
    const a = await createTenant(planId);
    const b = await createTenant(planId);
    await send(a.key, [{ id: 'a1', metric: 'api_calls', quantity: 95 }]); // 80 superseded, 90 notified
    await settle(a.id, a.key);
    const alerts = await eventually(async () => {
      const res = await api.call('GET', `/v1/tenants/${a.id}/alerts`, { key: a.key });
      return res.body.data.length === 2 ? res.body.data : undefined;
    }, 20_000, "tenant A's alerts");
    const notified = alerts.find((x: any) => x.status === 'notified');
    expect(notified).toMatchObject({ tenant_id: a.id, threshold: 90, acknowledged_at: null });

    // The admin's triage list: A's notified alert, not its superseded one.
    const openOfA = (await everyRow(api, '/v1/alerts?acknowledged=false')).filter((x: any) => x.tenant_id === a.id);
    expect(openOfA.map((x: any) => x.id)).toEqual([notified.id]);
    expectProblem(await api.call('GET', '/v1/alerts', { key: a.key }), 403, 'forbidden');
    expectProblem(await api.call('GET', '/v1/alerts?acknowledged=maybe'), 422, 'validation_failed');

    // Another tenant's key, or A's alert under B's id: 404 as if absent.
    expectProblem(await api.call('POST', `/v1/tenants/${a.id}/alerts/${notified.id}/acknowledge`, { key: b.key }), 404, 'not_found');
    expectProblem(await api.call('POST', `/v1/tenants/${b.id}/alerts/${notified.id}/acknowledge`, { key: b.key }), 404, 'not_found');
    expectProblem(await api.call('POST', `/v1/tenants/${b.id}/alerts/${notified.id}/acknowledge`), 404, 'not_found');

    const ack = await api.call('POST', `/v1/tenants/${a.id}/alerts/${notified.id}/acknowledge`, { key: a.key });
    expect(ack.status).toBe(200);
    expect(ack.body).toMatchObject({ id: notified.id, tenant_id: a.id, status: 'notified', threshold: 90 });
    expect(Date.parse(ack.body.acknowledged_at)).toBeGreaterThan(0);
    const again = await api.call('POST', `/v1/tenants/${a.id}/alerts/${notified.id}/acknowledge`, { body: {} });
    expect(again.status).toBe(200);
    expect(again.body).toEqual(ack.body);

    expect((await everyRow(api, '/v1/alerts?acknowledged=false')).some((x: any) => x.id === notified.id)).toBe(false);
    expect((await everyRow(api, '/v1/alerts?acknowledged=true')).find((x: any) => x.id === notified.id)).toEqual(ack.body);

    // More usage: 100 % fires, and the acknowledged 90 % does not fire again.
    await send(a.key, [{ id: 'a2', metric: 'api_calls', quantity: 10 }]);
    await settle(a.id, a.key);
    const after = await eventually(async () => {
      const res = await api.call('GET', `/v1/tenants/${a.id}/alerts`, { key: a.key });
      return res.body.data.length === 3 ? res.body.data : undefined;
    }, 20_000, 'the 100 % alert');
    expect(after.map((x: any) => x.threshold).sort((x: number, y: number) => x - y)).toEqual([80, 90, 100]);
    expect(after.find((x: any) => x.threshold === 90).acknowledged_at).toBe(ack.body.acknowledged_at);
    expect(await api.db('alerts').where({ tenant_id: a.id, threshold: 90 }).count({ n: '*' })).toEqual([{ n: '1' }]);
  });
});

describe('rerun preview (dry_run)', () => {
  test('previews another plan without writing anything; the real rerun then writes exactly the previewed figures', async () => {
    const planId = await createPlan('0.10');
    const otherPlan = await createPlan('0.25');
    const tenant = await createTenant(planId);
    await send(tenant.key, [
      { id: 'r1', metric: 'api_calls', quantity: 70 },
      { id: 'r2', metric: 'seats', quantity: 3 },
    ]);
    await settle(tenant.id, tenant.key);
    const invoice = await closeAndFinalize(tenant.id);
    expect(invoice.total).toBe('16.20'); // 5 + 50 × 0.10 + 20 × 0.01 + 3 × 2

    const preview = await api.call('POST', `/v1/invoices/${invoice.id}/rerun`, {
      body: { reason: 'what if they were on the other plan?', plan_id: otherPlan, dry_run: true },
    });
    expect(preview.status).toBe(200);
    expect(preview.body.invoice).toMatchObject({
      id: invoice.id.replace(/_v1$/, '_v2'),
      number: null,
      version: 2,
      plan_id: otherPlan,
      total: '23.70', // 5 + 50 × 0.25 + 20 × 0.01 + 3 × 2
      replaces: invoice.id,
    });
    expect(preview.body.changes).toEqual([
      { line: 'api_calls', description: 'api_calls, graduated tiers', before: { quantity: 70, amount: '5.20' }, after: { quantity: 70, amount: '12.70' }, delta: '7.50' },
    ]);
    // Nothing written, nothing started.
    expect(await api.db('invoices').where({ tenant_id: tenant.id }).pluck('status')).toEqual(['finalized']);
    expect(await api.db('invoice_reruns').where({ invoice_id: invoice.id }).first()).toBeUndefined();
    const workflowId = `invoice-${tenant.id}-${invoice.id.split('_').slice(-2, -1)[0]}-v2`;
    await expect(api.client.workflow.getHandle(workflowId).describe()).rejects.toThrow();

    // Without plan_id: the period's own plan, and nothing changes.
    const same = await api.call('POST', `/v1/invoices/${invoice.id}/rerun`, { body: { reason: 'no change', dry_run: true } });
    expect(same.status).toBe(200);
    expect(same.body.changes).toEqual([]);
    expect(same.body.invoice.total).toBe(invoice.total);

    // The real rerun writes what the preview showed.
    const rerun = await api.call('POST', `/v1/invoices/${invoice.id}/rerun`, { body: { reason: 'move to the other plan', plan_id: otherPlan } });
    expect(rerun.status).toBe(202);
    expect(rerun.body.workflow_id).toBe(workflowId);
    const written = await eventually(async () => {
      const res = await api.call('GET', `/v1/invoices/${rerun.body.invoice_id}`);
      return res.body?.status === 'finalized' ? res.body : undefined;
    }, 30_000, 'the rerun version');
    // The preview shows the prepaid credit the rerun would take, and the rerun takes exactly that.
    const { number: _n, created_at: _c, finalized_at: _f, reason: _r, requested_by: _q, ...figures } = written;
    const { number: _pn, created_at: _pc, finalized_at: _pf, reason: _pr, requested_by: _pq, ...previewed } = preview.body.invoice;
    expect(figures).toEqual(previewed);
    expect(written.changes.map((c: any) => ({ line: c.metric, delta: c.delta, before: c.amount_before, after: c.amount_after }))).toEqual(
      preview.body.changes.map((c: any) => ({ line: c.line, delta: c.delta, before: c.before.amount, after: c.after.amount })),
    );
    // The month's summary follows the new version (its row is rewritten with the rerun).
    const month = invoice.period_start.slice(0, 7);
    const row = (await everyRow(api, `/v1/summaries?month=${month}`)).find((r: any) => r.tenant_id === tenant.id);
    expect(row.metrics.api_calls).toEqual({ used: '70', amount: '12.70' });
    expect(await usageOutOfStep()).toEqual([]);
    // A preview of the now void version is refused like a rerun of it.
    expectProblem(await api.call('POST', `/v1/invoices/${invoice.id}/rerun`, { body: { reason: 'again', dry_run: true } }), 409, 'conflict');
  });
});

describe('monthly summaries', () => {
  test('per tenant: invoiced periods from their invoices, the others from the read model; sorted, paged, CSV, with the change', async () => {
    const planId = await createPlan('0.10');
    const a = await createTenant(planId);
    const b = await createTenant(planId);
    await send(a.key, [
      { id: 's1', metric: 'api_calls', quantity: 70 },
      { id: 's2', metric: 'seats', quantity: 3 },
    ]);
    await send(b.key, [{ id: 's1', metric: 'api_calls', quantity: 10 }]);
    await settle(a.id, a.key);
    await settle(b.id, b.key);
    const invoiceA = await closeAndFinalize(a.id); // 5 + 5.20 + 6 = 16.20
    const invoiceB = await closeAndFinalize(b.id); // 5 + 1.00 + 0 = 6.00
    expect([invoiceA.total, invoiceB.total]).toEqual(['16.20', '6.00']);
    // A's next period, not invoiced yet: 20 more calls, rated from the read model (5 + 2.00).
    await send(a.key, [{ id: 's3', metric: 'api_calls', quantity: 20 }]);
    await settle(a.id, a.key);
    const month = invoiceA.period_start.slice(0, 7) as string;
    const usage = (await api.call('GET', `/v1/tenants/${a.id}/usage`, { key: a.key })).body;
    const sameMonth = usage.period.start.slice(0, 7) === month; // false only across a month boundary

    // The month before, as an invoiced period of A (a stored per-period figure, like any invoice).
    const previousStart = new Date(Date.UTC(Number(month.slice(0, 4)), Number(month.slice(5, 7)) - 2, 1));
    const previousEnd = new Date(Date.UTC(Number(month.slice(0, 4)), Number(month.slice(5, 7)) - 1, 1));
    const previousId = `in_${a.id}_previous_v1`;
    await api.db('periods').insert({ tenant_id: a.id, start: previousStart, end: previousEnd, plan_id: planId, plan_version: 1, status: 'invoiced' });
    await api.db('invoices').insert({
      id: previousId, tenant_id: a.id, number: 1000, version: 1, status: 'finalized', period_start: previousStart, period_end: previousEnd,
      plan_id: planId, plan_version: 1, currency: 'USD', subtotal: '11.60', total: '11.60', finalized_at: previousEnd,
    });
    await api.db('invoice_lines').insert([
      { invoice_id: previousId, position: 0, metric: 'base_fee', description: 'base fee', quantity: 1, amount: '5.00' },
      { invoice_id: previousId, position: 1, metric: 'api_calls', description: 'calls', quantity: 6, amount: '0.60' },
      { invoice_id: previousId, position: 2, metric: 'seats', description: 'seats', quantity: 3, amount: '6.00' },
    ]);
    await api.db.transaction((trx) => refreshMonthlySummary(trx, a.id, previousStart)); // as its finalization would

    const mine = (rows: any[]) => rows.filter((r) => r.tenant_id === a.id || r.tenant_id === b.id);
    // The figures refresher rates A's next period from the claim's counters about a second later.
    const rows = await eventually(async () => {
      const found = mine(await everyRow(api, `/v1/summaries?month=${month}`));
      return !sameMonth || found.find((r) => r.tenant_id === a.id)?.metrics.api_calls.used === '90' ? found : undefined;
    }, 10_000, "A's running figure in the month");
    const rowA = rows.find((r) => r.tenant_id === a.id);
    const rowB = rows.find((r) => r.tenant_id === b.id);
    expect(rowA).toEqual({
      id: `${a.id}/USD`,
      tenant_id: a.id,
      month,
      metrics: sameMonth
        ? { api_calls: { used: '90', amount: '7.20' }, seats: { used: '3', amount: '6.00' } }
        : { api_calls: { used: '70', amount: '5.20' }, seats: { used: '3', amount: '6.00' } },
      total: sameMonth ? '23.20' : '16.20',
      currency: 'USD',
      change: sameMonth ? { total: '11.60', percent: 100 } : { total: '4.60', percent: 39.66 },
      final: !sameMonth,
    });
    // B: its invoice, plus its empty next period's base fee.
    expect(rowB).toMatchObject({ total: sameMonth ? '11.00' : '6.00', change: { total: sameMonth ? '11.00' : '6.00', percent: null }, metrics: { api_calls: { used: '10', amount: '1.00' } } });
    expect(rows.map((r) => r.tenant_id)).toEqual([a.id, b.id]); // -total by default

    const byCalls = mine(await everyRow(api, `/v1/summaries?month=${month}&sort=api_calls`));
    const callsOrder = byCalls.map((r) => r.tenant_id);
    expect(callsOrder).toEqual([b.id, a.id]);
    const seatsOnly = mine(await everyRow(api, `/v1/summaries?month=${month}&metric=seats&sort=-seats`));
    expect(seatsOnly.map((r) => [r.tenant_id, Object.keys(r.metrics)])).toEqual([
      [a.id, ['seats']],
      [b.id, ['seats']],
    ]);

    // Pages of one, walked with starting_after, give the same rows in the same order (the first
    // dozen of them: the month holds every tenant the suite made).
    const all = await everyRow(api, `/v1/summaries?month=${month}`);
    const walked: string[] = [];
    let after: string | undefined;
    for (let i = 0; i < Math.min(all.length, 12); i++) {
      const page = await api.call('GET', `/v1/summaries?month=${month}&limit=1${after ? `&starting_after=${encodeURIComponent(after)}` : ''}`);
      walked.push(page.body.data[0].id);
      after = page.body.data[0].id;
      expect(page.body.has_more).toBe(i < all.length - 1);
      expect(page.body.total_count).toBe(all.length);
    }
    expect(walked).toEqual(all.slice(0, 12).map((r: any) => r.id));

    // CSV for a spreadsheet: every row of the month.
    const csv = await fetch(`${api.baseUrl}/v1/summaries?month=${month}&metric=api_calls`, { headers: { 'x-api-key': api.adminKey, accept: 'text/csv' } });
    expect(csv.status).toBe(200);
    expect(csv.headers.get('content-type')).toMatch(/^text\/csv/);
    const lines = (await csv.text()).trim().split('\r\n');
    expect(lines[0]).toBe('tenant_id,month,currency,total,change_total,change_percent,final,api_calls_used,api_calls_amount');
    expect(lines).toContain(
      sameMonth ? `${a.id},${month},USD,23.20,11.60,100,false,90,7.20` : `${a.id},${month},USD,16.20,4.60,39.66,true,70,5.20`,
    );

    // The month before, every period invoiced: read as stored, in index order.
    const previousMonth = previousStart.toISOString().slice(0, 7);
    const stored = await everyRow(api, `/v1/summaries?month=${previousMonth}`);
    expect(stored.find((r: any) => r.tenant_id === a.id)).toEqual({
      id: `${a.id}/USD`,
      tenant_id: a.id,
      month: previousMonth,
      metrics: { api_calls: { used: '6', amount: '0.60' }, seats: { used: '3', amount: '6.00' } },
      total: '11.60',
      currency: 'USD',
      change: { total: '11.60', percent: null },
      final: true,
    });
    const storedPage = await api.call('GET', `/v1/summaries?month=${previousMonth}&sort=seats&metric=seats&limit=1`);
    const withSeats = await everyRow(api, `/v1/summaries?month=${previousMonth}&sort=seats&metric=seats`);
    expect(storedPage.body).toMatchObject({ total_count: withSeats.length, data: [{ id: withSeats[0].id, metrics: { seats: expect.any(Object) } }] });
    const next = await api.call('GET', `/v1/summaries?month=${previousMonth}&sort=seats&metric=seats&limit=1&starting_after=${encodeURIComponent(storedPage.body.data[0].id)}`);
    expect(next.status).toBe(200);
    expect(next.body.data.map((r: any) => r.id)).not.toContain(storedPage.body.data[0].id);
    expectProblem(await api.call('GET', `/v1/summaries?month=${previousMonth}&starting_after=nobody/USD`), 422, 'validation_failed');

    // Never re-aggregated from raw events: deleting A's events (as retention would) changes nothing.
    await api.db('periods').where({ tenant_id: a.id, start: invoiceA.period_start }).update({ events_purged_at: new Date() });
    await api.db('usage_events').where({ tenant_id: a.id, period_start: invoiceA.period_start }).delete();
    const afterPurge = mine(await everyRow(api, `/v1/summaries?month=${month}`));
    expect(afterPurge.find((r) => r.tenant_id === a.id)).toEqual(rowA);

    expectProblem(await api.call('GET', '/v1/summaries?month=2026-13'), 422, 'validation_failed');
    expectProblem(await api.call('GET', `/v1/summaries?month=${month}&sort=-Total`), 422, 'validation_failed');
    expectProblem(await api.call('GET', `/v1/summaries?month=${month}&starting_after=nobody/USD`), 422, 'validation_failed');
    expectProblem(await api.call('GET', `/v1/summaries?month=${month}`, { key: a.key }), 403, 'forbidden');
  });

  test("the current month moves with the claims, from the period's stored running figure, and ends where its invoice says", async () => {
    const tenant = await createTenant(await createPlan('0.10'));
    const opened = (await api.call('GET', `/v1/tenants/${tenant.id}/usage`, { key: tenant.key })).body.period.start as string;
    const month = opened.slice(0, 7);
    const rowOf = async () => (await everyRow(api, `/v1/summaries?month=${month}`)).find((r: any) => r.tenant_id === tenant.id);
    const figure = () => api.db('period_figures').where({ tenant_id: tenant.id, period_start: new Date(opened) }).first();

    // Opened with the tenant: the base fee alone.
    expect(await rowOf()).toMatchObject({ total: '5.00', metrics: { api_calls: { used: '0', amount: '0.00' }, seats: { used: '0', amount: '0.00' } }, final: false });
    // Counted, the tenant's figures are rated again by the figures refresher, within about a second.
    const rowAt = (total: string) => eventually(async () => ((await rowOf())?.total === total ? rowOf() : undefined), 10_000, `the summary at ${total}`);
    await send(tenant.key, [{ id: 'm1', metric: 'api_calls', quantity: 30 }]);
    await settle(tenant.id, tenant.key);
    expect(await rowAt('8.00')).toMatchObject({ total: '8.00', metrics: { api_calls: { used: '30', amount: '3.00' } } });
    await send(tenant.key, [
      { id: 'm2', metric: 'api_calls', quantity: 40 },
      { id: 'm3', metric: 'seats', quantity: 3 },
    ]);
    await settle(tenant.id, tenant.key);
    const running = await rowAt('16.20'); // 5 + (50 × 0.10 + 20 × 0.01) + 3 × 2.00
    expect(running).toMatchObject({ total: '16.20', metrics: { api_calls: { used: '70', amount: '5.20' }, seats: { used: '3', amount: '6.00' } }, final: false });
    expect(await figure()).toMatchObject({ currency: 'USD', total: '16.20' });

    // A backfill (migration 20261222000000) rates a period without a figure to the same numbers.
    await api.db('period_figures').where({ tenant_id: tenant.id, period_start: new Date(opened) }).delete();
    expect(await backfillPeriodFigures(api.db)).toBeGreaterThanOrEqual(1);
    expect(await figure()).toMatchObject({ total: '16.20', metrics: running.metrics });

    const invoice = await closeAndFinalize(tenant.id);
    expect(invoice.total).toBe(running.total);
    const lines = Object.fromEntries(invoice.lines.filter((l: any) => l.metric !== 'base_fee').map((l: any) => [l.metric, { used: l.quantity_decimal, amount: l.amount }]));
    expect(lines).toEqual(running.metrics);
    // Invoiced, the period counts with its invoice; the next one, opened by the close, with its base fee.
    const next = (await api.call('GET', `/v1/tenants/${tenant.id}/usage`, { key: tenant.key })).body.period.start as string;
    expect(await rowOf()).toMatchObject(next.slice(0, 7) === month ? { total: '21.20', final: false } : { total: '16.20', final: true });
    expect(await usageOutOfStep()).toEqual([]);
  });

  test('sorted by a metric: rows with and without it, both directions, paged across 0, filtered, in two currencies', async () => {
    const planId = await createPlan('0.10');
    // A month of its own, far ahead, so it holds only these rows.
    const year = 3000 + (parseInt(unique('y').slice(-4), 16) % 5000);
    const month = `${year}-06`;
    const prefix = unique('ranked');
    const tenant = (letter: string) => `${prefix}_${letter}`;
    await api.db('tenants').insert('abcdefgh'.split('').map((l) => ({ id: tenant(l), name: l, plan_id: planId, billing_anchor: `${month}-01` })));
    /** A period of the month not invoiced yet, with its running figure, summarized as a claim would. */
    const store = async (letter: string, day: string, currency: string, used: Record<string, string>, monthOf = month) => {
      const start = new Date(`${monthOf}-${day}T00:00:00Z`);
      const metrics = Object.fromEntries(Object.entries(used).map(([metric, u]) => [metric, { used: u, amount: '1.00' }]));
      await api.db('periods')
        .insert({ tenant_id: tenant(letter), start, end: new Date(start.getTime() + 86_400_000), plan_id: planId, plan_version: 1, status: 'closed' })
        .onConflict(['tenant_id', 'start'])
        .ignore();
      await api.db('period_figures')
        .insert({ tenant_id: tenant(letter), period_start: start, currency, total: String(5 + Object.keys(used).length), metrics: JSON.stringify(metrics) })
        .onConflict(['tenant_id', 'period_start'])
        .merge();
      await api.db.transaction((trx) => refreshMonthlySummary(trx, tenant(letter), start));
    };
    await store('a', '01', 'USD', { calls: '30', seats: '2' });
    await store('b', '01', 'USD', { calls: '0', seats: '1' });
    await store('c', '01', 'USD', { seats: '4' });
    await store('d', '01', 'USD', { calls: '0' });
    await store('e', '01', 'USD', {});
    await store('e', '15', 'EUR', { calls: '30', seats: '1' });
    await store('f', '01', 'USD', { calls: '12.5', seats: '3' });
    await store('g', '01', 'USD', { seats: '2' });
    await store('h', '01', 'USD', { calls: '0' });
    await store('a', '01', 'USD', { calls: '1' }, `${year}-05`); // the month before, for the change

    const ids = (rows: any[]) => rows.map((r) => r.id.slice(prefix.length + 1));
    /** Every row of a query, walked in pages of `limit`; each page's has_more and total_count checked. */
    const walk = async (query: string, limit: number) => {
      const rows: any[] = [];
      let after: string | undefined;
      for (;;) {
        const res = await api.call('GET', `/v1/summaries?month=${month}&${query}&limit=${limit}${after ? `&starting_after=${encodeURIComponent(after)}` : ''}`);
        expect(res.status).toBe(200);
        rows.push(...res.body.data);
        expect(res.body.total_count).toBeGreaterThanOrEqual(rows.length);
        expect(res.body.has_more).toBe(rows.length < res.body.total_count);
        if (!res.body.has_more) return rows;
        after = res.body.data[res.body.data.length - 1].id;
      }
    };
    /** The rule: a row without the metric counts as 0; ties by id in the same direction. */
    const expected = (rows: any[], sort: string, filter?: string) => {
      const metric = sort.replace(/^-/, '');
      const sign = sort.startsWith('-') ? -1 : 1;
      const used = (r: any) => Number(r.metrics[metric]?.used ?? 0);
      return rows
        .filter((r) => filter === undefined || r.metrics[filter] !== undefined)
        .sort((x, y) => sign * (used(x) - used(y) || (x.tenant_id < y.tenant_id ? -1 : x.tenant_id > y.tenant_id ? 1 : 0) || (x.currency < y.currency ? -1 : 1)))
        .map((r) => r.id.slice(prefix.length + 1));
    };
    const check = async () => {
      const all = await everyRow(api, `/v1/summaries?month=${month}`);
      expect(all).toHaveLength(9);
      const byId = new Map(all.map((r) => [r.id, r]));
      for (const [sort, filter] of [['-calls'], ['calls'], ['-calls', 'seats'], ['calls', 'seats'], ['-calls', 'calls'], ['seats'], ['-nothing']] as Array<[string, string?]>) {
        const query = `sort=${sort}${filter ? `&metric=${filter}` : ''}`;
        const order = expected(all, sort, filter);
        for (const limit of [1, 2]) expect([query, limit, ids(await walk(query, limit))]).toEqual([query, limit, order]);
        // In one page, the same rows as sorted by total: the same figures and change.
        const rows = await walk(query, 100);
        expect([query, ids(rows)]).toEqual([query, order]);
        for (const row of rows) {
          const whole = byId.get(row.id);
          expect(row).toEqual(filter ? { ...whole, metrics: { [filter]: whole.metrics[filter] } } : whole);
        }
      }
      return all;
    };
    const all = await check();
    // The rule's outcome, spelled out: 30 (e in EUR before a), 12.5, then the 0s by id
    // descending whether they hold calls at 0 (h, d, b) or not at all (g, e in USD, c).
    expect(ids(await walk('sort=-calls', 4))).toEqual(['e/EUR', 'a/USD', 'f/USD', 'h/USD', 'g/USD', 'e/USD', 'd/USD', 'c/USD', 'b/USD']);
    expect(ids(await walk('sort=calls&metric=seats', 2))).toEqual(['b/USD', 'c/USD', 'g/USD', 'f/USD', 'a/USD', 'e/EUR']);
    expect(all.find((r) => r.id === `${tenant('a')}/USD`)).toMatchObject({ total: '7.00', change: { total: '1.00', percent: 16.67 } });
    // A cursor outside the filter's rows is unknown.
    expectProblem(await api.call('GET', `/v1/summaries?month=${month}&sort=-calls&metric=seats&starting_after=${encodeURIComponent(`${tenant('d')}/USD`)}`), 422, 'validation_failed');

    // Figures move: a loses calls, c gains them, h's goes up; the order and the index follow.
    await store('a', '01', 'USD', { seats: '2' });
    await store('c', '01', 'USD', { calls: '5', seats: '4' });
    await store('h', '01', 'USD', { calls: '40' });
    await check();
    expect(ids(await walk('sort=-calls', 3))).toEqual(['h/USD', 'e/EUR', 'f/USD', 'c/USD', 'g/USD', 'e/USD', 'd/USD', 'b/USD', 'a/USD']);
    expect(await usageOutOfStep()).toEqual([]);
  });
});

describe('events listing: property filters, estimated cost, retained_since', () => {
  test('filters by properties (all must hold), estimates each event at the current tier price', async () => {
    const tenant = await createTenant(await createPlan('0.10'));
    const other = await createTenant(await createPlan('0.10'));
    await send(tenant.key, [
      { id: 'e1', metric: 'api_calls', quantity: 30, properties: { region: 'eu', tier: 3 } },
      { id: 'e2', metric: 'api_calls', quantity: 5, properties: { region: 'us', tier: '3' } },
      { id: 'e3', metric: 'api_calls', quantity: 20, properties: { region: 'eu', beta: true } },
      { id: 'e4', metric: 'seats', quantity: 2, properties: { region: 'eu' } },
      { id: 'e5', metric: 'api_calls', quantity: 1 },
    ]);
    await send(other.key, [{ id: 'o1', metric: 'api_calls', quantity: 1, properties: { region: 'eu' } }]);
    await settle(tenant.id, tenant.key);
    const list = async (query: string) => {
      const res = await api.call('GET', `/v1/tenants/${tenant.id}/events${query}`, { key: tenant.key });
      expect(res.status).toBe(200);
      return res.body;
    };
    const ids = (body: any) => body.data.map((e: any) => e.id).sort();

    expect(ids(await list('?property.region=eu'))).toEqual(['e1', 'e3', 'e4']);
    expect(ids(await list('?property.region=eu&metric=api_calls'))).toEqual(['e1', 'e3']);
    expect(ids(await list('?property.region=eu&property.beta=true'))).toEqual(['e3']);
    expect(ids(await list('?property.tier=3'))).toEqual(['e1', 'e2']); // the number 3 and the string "3"
    expect(ids(await list('?property.region=mars'))).toEqual([]);
    expect(await list('?property.region=eu&limit=2')).toMatchObject({ total_count: 3, total_count_exact: true });

    // The counter stands at 56 calls: past the 50 of tier 1, so each call costs 0.01 now.
    const all = await list('');
    expect(all.retained_since).toBeNull();
    const cost = Object.fromEntries(all.data.map((e: any) => [e.id, e.cost]));
    expect(cost).toEqual({ e1: '0.3', e2: '0.05', e3: '0.2', e4: null, e5: '0.01' });

    const repeated = await api.call('GET', `/v1/tenants/${tenant.id}/events?property.region=eu&property.region=us`, { key: tenant.key });
    expectProblem(repeated, 422, 'validation_failed');
    expect(repeated.body.errors).toEqual([{ path: 'property.region', message: 'must be given once' }]);
    expectProblem(await api.call('GET', `/v1/tenants/${tenant.id}/events?property.region=`, { key: tenant.key }), 422, 'validation_failed');
    // Another tenant's events never match, with or without a filter.
    expectProblem(await api.call('GET', `/v1/tenants/${tenant.id}/events?property.region=eu`, { key: other.key }), 404, 'not_found');
  });

  test('total_count is exact up to 10,000 matching events, an estimate flagged as such beyond', async () => {
    const tenant = await createTenant(await createPlan('0.10'));
    for (let batch = 0; batch < 11; batch++) {
      const events = Array.from({ length: 1000 }, (_, i) => ({ id: `b${batch}-${i}`, metric: 'api_calls', quantity: 1, properties: { region: i % 2 === 0 ? 'eu' : 'us' } }));
      await send(tenant.key, events);
    }
    const list = async (query: string) => (await api.call('GET', `/v1/tenants/${tenant.id}/events${query}`, { key: tenant.key })).body;
    expect(await list('?property.region=eu&limit=1')).toMatchObject({ total_count: 5_500, total_count_exact: true, has_more: true });
    const all = await list('?limit=100');
    expect(all).toMatchObject({ total_count_exact: false, has_more: true });
    expect(all.data).toHaveLength(100);
    expect(all.total_count).toBeGreaterThan(10_000); // at least the 10,001 counted before stopping
  });
});
