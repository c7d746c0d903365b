import { startApiHarness, eventually, type ApiHarness } from '../support/api-harness';
import { unique } from '../support/stack';
import { recordPackDraws } from '../../src/db/packs';

/**
 * Entitlements through the real API, the tenant workflow and PostgreSQL (issue 13): per-tenant
 * limit overrides. The worked scenarios (test/fixtures/scenarios) replay the figures; this file
 * pins the edges: who may set them, what is refused and that nothing of a refused request is
 * stored, the cost override, and that an override outlives the period it was set in.
 */
let api: ApiHarness;
beforeAll(async () => {
  api = await startApiHarness();
});
afterAll(async () => {
  await api?.stop();
});

async function tenantOn(costLimit?: string): Promise<{ id: string; key: string }> {
  const planId = unique('ent');
  const plan = await api.call('POST', '/v1/plans', {
    body: {
      id: planId,
      name: 'Entitlements',
      currency: 'USD',
      interval: 'month',
      base_fee: '0.00',
      grace_period_seconds: 0,
      ...(costLimit ? { cost_limit: costLimit } : {}),
      meters: [
        { metric: 'tokens', aggregation: 'sum', limit: 1000, hard_limit: true, pricing: { model: 'per_unit', unit_price: '0.01' } },
        { metric: 'storage', aggregation: 'max', pricing: { model: 'per_unit', unit_price: '1' } },
      ],
    },
  });
  expect(plan.status).toBe(201);
  const id = unique('ent');
  const res = await api.call('POST', '/v1/tenants', { body: { id, name: id, plan_id: planId } });
  expect(res.status).toBe(201);
  return { id, key: res.body.api_key };
}

const usage = async (tenant: { id: string; key: string }) => {
  const res = await api.call('GET', `/v1/tenants/${tenant.id}/usage?consistent=true`, { key: tenant.key });
  expect(res.status).toBe(200);
  return res.body;
};

test('a bad limit is refused with 422 naming it, and nothing of the request is stored', async () => {
  const tenant = await tenantOn();
  const cases: Array<[unknown, string]> = [
    [{ minutes: 10 }, 'limits.minutes'],
    [{ tokens: 0 }, 'limits.tokens'],
    [{ tokens: -5 }, 'limits.tokens'],
    [{ tokens: 'many' }, 'limits.tokens'],
  ];
  for (const [limits, path] of cases) {
    const res = await api.call('PATCH', `/v1/tenants/${tenant.id}`, { body: { name: 'renamed', limits: { storage: 5, ...(limits as object) } } });
    expect(res.status).toBe(422);
    expect(res.headers.get('content-type')).toContain('application/problem+json');
    expect(res.body.code).toBe('validation_failed');
    expect(res.body.errors.map((e: { path: string }) => e.path)).toContain(path);
  }
  const after = await api.call('GET', `/v1/tenants/${tenant.id}`, { key: tenant.key });
  expect(after.body).toMatchObject({ name: tenant.id, limits: {} });
  expect((await usage(tenant)).metrics.storage.limit).toBeNull();
});

test('only the admin sets limits; the tenant sees them on itself and in its usage', async () => {
  const tenant = await tenantOn();
  const refused = await api.call('PATCH', `/v1/tenants/${tenant.id}`, { key: tenant.key, body: { limits: { tokens: 5000 } } });
  expect(refused.status).toBe(403);
  expect(refused.body.code).toBe('forbidden');
  const set = await api.call('PATCH', `/v1/tenants/${tenant.id}`, { body: { limits: { tokens: 5000, storage: 20 } } });
  expect(set.status).toBe(200);
  expect(set.body.limits).toEqual({ tokens: 5000, storage: 20 });
  // The same PATCH again changes nothing (idempotent).
  expect((await api.call('PATCH', `/v1/tenants/${tenant.id}`, { body: { limits: { tokens: 5000, storage: 20 } } })).body.limits).toEqual({ tokens: 5000, storage: 20 });
  const view = await usage(tenant);
  expect(view.metrics.tokens).toMatchObject({ limit: 5000, plan_limit: 1000, effective_limit: 5000 });
  expect(view.metrics.storage).toMatchObject({ limit: 20, plan_limit: null, effective_limit: 20 });
  // The read model (no consistent=true) agrees with the workflow.
  const read = await api.call('GET', `/v1/tenants/${tenant.id}/usage`, { key: tenant.key });
  expect(read.body.metrics.tokens.limit).toBe(5000);
  const removed = await api.call('PATCH', `/v1/tenants/${tenant.id}`, { body: { limits: { storage: null } } });
  expect(removed.body.limits).toEqual({ tokens: 5000 });
});

test('a $cost override alerts on the running cost, and the override outlives its period', async () => {
  const tenant = await tenantOn('1000.00');
  expect((await api.call('POST', '/v1/events', { key: tenant.key, body: { events: [{ id: 'e1', metric: 'tokens', quantity: 850 }] } })).status).toBe(202);
  // 8.50 of 1000.00: nothing. Lowered to 9.00: 94 %, 90 notified (80 superseded).
  expect((await usage(tenant)).alerts).toEqual([expect.objectContaining({ metric: 'tokens', threshold: 80 })]);
  const set = await api.call('PATCH', `/v1/tenants/${tenant.id}`, { body: { limits: { $cost: 9 } } });
  expect(set.status).toBe(200);
  const view = await usage(tenant);
  expect(view.costs.cost_limit).toBe('9.00');
  expect(view.alerts.filter((a: { metric: string }) => a.metric === '$cost').map((a: { threshold: number; status: string }) => [a.threshold, a.status])).toEqual([
    [80, 'superseded'],
    [90, 'notified'],
  ]);
  const alerts = await api.call('GET', `/v1/tenants/${tenant.id}/alerts`, { key: tenant.key });
  expect(alerts.body.data.find((a: { kind: string; threshold: number }) => a.kind === 'cost' && a.threshold === 90)).toMatchObject({ limit: 9 });

  const close = await api.call('POST', `/v1/tenants/${tenant.id}/close-period`, { body: { finalize: true } });
  expect(close.status).toBe(200);
  const next = await eventually(async () => {
    const v = await usage(tenant);
    return v.period.start === close.body.current_period.start ? v : undefined;
  });
  expect(next.costs.cost_limit).toBe('9.00');
  expect(next.alerts).toEqual([]);
});

test('a cancelled tenant takes no limits', async () => {
  const tenant = await tenantOn();
  expect((await api.call('DELETE', `/v1/tenants/${tenant.id}`)).status).toBe(200);
  const res = await api.call('PATCH', `/v1/tenants/${tenant.id}`, { body: { limits: { tokens: 10 } } });
  expect(res.status).toBe(409);
});

// ---- prepaid credit -----------------------------------------------------------------------------

async function prepaidTenant(): Promise<{ id: string; key: string }> {
  const planId = unique('pre');
  expect(
    (
      await api.call('POST', '/v1/plans', {
        body: {
          id: planId,
          name: 'Prepaid',
          currency: 'USD',
          interval: 'month',
          base_fee: '0.00',
          grace_period_seconds: 0,
          prepaid: true,
          low_balance_threshold: '5.00',
          meters: [{ metric: 'minutes', aggregation: 'sum', pricing: { model: 'per_unit', unit_price: '0.10' } }],
        },
      })
    ).status,
  ).toBe(201);
  const id = unique('pre');
  const res = await api.call('POST', '/v1/tenants', { body: { id, name: id, plan_id: planId } });
  expect(res.status).toBe(201);
  return { id, key: res.body.api_key };
}

const balanceOf = async (tenant: { id: string; key: string }) => {
  await usage(tenant);
  const res = await api.call('GET', `/v1/tenants/${tenant.id}/balance`, { key: tenant.key });
  expect(res.status).toBe(200);
  return res.body;
};

test('grants: idempotent on id, 422 naming the field for bad input, admin only', async () => {
  const tenant = await prepaidTenant();
  const url = `/v1/tenants/${tenant.id}/credits`;
  for (const [body, path] of [
    [{ amount: '0' }, 'amount'],
    [{ amount: -3 }, 'amount'],
    [{ amount: '1.005' }, 'amount'],
    [{ amount: '5', expires_at: '2020-01-01T00:00:00Z' }, 'expires_at'],
    [{ amount: '5', colour: 'red' }, 'colour'],
  ] as const) {
    const res = await api.call('POST', url, { body });
    expect(res.status).toBe(422);
    expect(res.body.errors.map((e: { path: string }) => e.path)).toContain(path);
  }
  expect((await api.call('POST', url, { key: tenant.key, body: { amount: '5' } })).status).toBe(403);
  expect((await api.call('GET', url, { key: tenant.key })).body.total_count).toBe(0);

  const first = await api.call('POST', url, { body: { id: 'g1', amount: '10.00', description: 'top-up' } });
  expect(first.status).toBe(201);
  expect(first.body).toMatchObject({ id: 'g1', amount: '10.00', remaining: '10.00', currency: 'USD', status: 'active', expires_at: null });
  const again = await api.call('POST', url, { body: { id: 'g1', amount: '10', description: 'top-up' } });
  expect(again.status).toBe(200);
  expect((await api.call('POST', url, { body: { id: 'g1', amount: '11.00' } })).status).toBe(409);
  const list = await api.call('GET', url, { key: tenant.key });
  expect(list.body.total_count).toBe(1);
  expect((await balanceOf(tenant)).balance).toBe('10.00');
});

test('prepaid: authorize refuses what available cannot pay; low and depleted fire once per crossing and re-arm after a grant', async () => {
  const tenant = await prepaidTenant();
  const url = `/v1/tenants/${tenant.id}/credits`;
  expect((await api.call('POST', url, { body: { id: 'g1', amount: '10.00' } })).status).toBe(201);
  const authorize = (id: string, quantity: number) => api.call('POST', `/v1/tenants/${tenant.id}/authorize`, { key: tenant.key, body: { id, metric: 'minutes', quantity } });
  // 10.00 buys 100 minutes at 0.10: 101 would take available below 0.
  expect((await authorize('a1', 101)).body).toEqual({ allowed: false, reason: 'insufficient_balance', remaining: 100 });
  expect((await authorize('a2', 60)).body).toMatchObject({ allowed: true });
  // available 4.00 <= 5.00: balance.low once.
  const kinds = async () => (await usage(tenant)).alerts.map((a: { metric: string }) => a.metric);
  expect(await kinds()).toEqual(['balance.low']);
  expect((await authorize('a3', 40)).body).toMatchObject({ allowed: true });
  expect(await kinds()).toEqual(['balance.low', 'balance.depleted']);
  // Events sent anyway are recorded and billed; no alert fires again without a grant.
  expect((await api.call('POST', '/v1/events', { key: tenant.key, body: { events: [{ id: 'e1', metric: 'minutes', quantity: 5 }] } })).status).toBe(202);
  expect(await kinds()).toEqual(['balance.low', 'balance.depleted']);
  const view = await balanceOf(tenant);
  expect(view).toMatchObject({ balance: '10.00', uncharged: '10.50', available: '-0.50', estimated_units_remaining: { minutes: 0 } });
  // A grant that lifts available above 5.00 re-arms both; the next crossing fires both again.
  expect((await api.call('POST', url, { body: { id: 'g2', amount: '6.00' } })).status).toBe(201);
  expect(await kinds()).toEqual(['balance.low', 'balance.depleted']);
  expect((await authorize('a4', 55)).body).toMatchObject({ allowed: true });
  expect(await kinds()).toEqual(['balance.low', 'balance.depleted', 'balance.low', 'balance.depleted']);
  const alerts = await api.call('GET', `/v1/tenants/${tenant.id}/alerts`, { key: tenant.key });
  expect(alerts.body.data.map((a: { kind: string; threshold: number }) => `${a.kind} ${a.threshold}`).sort()).toEqual([
    'balance.depleted 1',
    'balance.depleted 2',
    'balance.low 1',
    'balance.low 2',
  ]);
  // Delivered as their own webhook/email event types (recorded here: the tenant has no channel).
  await eventually(async () => {
    const deliveries = await api.call('GET', `/v1/tenants/${tenant.id}/deliveries?limit=100`, { key: tenant.key });
    const types = deliveries.body.data.map((d: { event_type: string }) => d.event_type);
    return types.filter((t: string) => t === 'balance.low').length === 2 && types.filter((t: string) => t === 'balance.depleted').length === 2 ? true : undefined;
  });
});

test('credit is applied at finalization, earliest expiry first, never above the total; a rerun gives it back and applies it again', async () => {
  const tenant = await prepaidTenant();
  const url = `/v1/tenants/${tenant.id}/credits`;
  const later = new Date(Date.now() + 90 * 86_400_000).toISOString();
  const sooner = new Date(Date.now() + 30 * 86_400_000).toISOString();
  expect((await api.call('POST', url, { body: { id: 'forever', amount: '100.00' } })).status).toBe(201);
  expect((await api.call('POST', url, { body: { id: 'later', amount: '3.00', expires_at: later } })).status).toBe(201);
  expect((await api.call('POST', url, { body: { id: 'sooner', amount: '2.00', expires_at: sooner } })).status).toBe(201);
  expect((await api.call('POST', '/v1/events', { key: tenant.key, body: { events: [{ id: 'e1', metric: 'minutes', quantity: 62.3 }] } })).status).toBe(202);
  await usage(tenant);
  const close = await api.call('POST', `/v1/tenants/${tenant.id}/close-period`, { body: { finalize: true } });
  const invoice = await eventually(async () => {
    const res = await api.call('GET', `/v1/invoices/${close.body.invoice_id}`, { key: tenant.key });
    return res.body.status === 'finalized' ? res.body : undefined;
  });
  // 62.3 minutes at 0.10 = 6.23: 2.00 from `sooner`, 3.00 from `later`, 1.23 from `forever`.
  expect(invoice).toMatchObject({ total: '6.23', credits_applied: '6.23', amount_due: '0.00' });
  expect(invoice.lines.map((l: { kind: string }) => l.kind)).toEqual(['usage']);
  const grants = async () =>
    Object.fromEntries((await api.call('GET', `${url}?limit=100`, { key: tenant.key })).body.data.map((g: { id: string; remaining: string }) => [g.id, g.remaining]));
  expect(await grants()).toEqual({ sooner: '0.00', later: '0.00', forever: '98.77' });
  expect(await balanceOf(tenant)).toMatchObject({ balance: '98.77', total_charged: '6.23' });

  // A preview shows the credit the rerun would apply (the replaced version's given back first), and writes nothing.
  const preview = await api.call('POST', `/v1/invoices/${close.body.invoice_id}/rerun`, { body: { reason: 'check credit', dry_run: true } });
  expect(preview.status).toBe(200);
  expect(preview.body.invoice).toMatchObject({ total: '6.23', credits_applied: '6.23', amount_due: '0.00' });
  expect(await grants()).toEqual({ sooner: '0.00', later: '0.00', forever: '98.77' });
  const rerun = await api.call('POST', `/v1/invoices/${close.body.invoice_id}/rerun`, { body: { reason: 'check credit' } });
  expect(rerun.status).toBe(202);
  const second = await eventually(async () => {
    const res = await api.call('GET', `/v1/invoices/${rerun.body.invoice_id}`, { key: tenant.key });
    return res.body.status === 'finalized' ? res.body : undefined;
  });
  expect(second).toMatchObject({ total: '6.23', credits_applied: '6.23', amount_due: '0.00' });
  // Given back and taken again from the same grants: nothing is charged twice.
  expect(await grants()).toEqual({ sooner: '0.00', later: '0.00', forever: '98.77' });
  expect(await balanceOf(tenant)).toMatchObject({ balance: '98.77', total_charged: '6.23' });
  const pdf = await fetch(`${api.baseUrl}/v1/invoices/${rerun.body.invoice_id}/pdf`, { headers: { 'x-api-key': tenant.key } });
  expect(pdf.status).toBe(200);
  // The ledger of credit agrees with the invoices to the cent: each grant's remainder is its amount
  // less what invoices still hold of it, and each invoice's credits_applied is what it holds.
  const grantsOff = await api.db.raw(
    `SELECT g.id FROM credit_grants g
       LEFT JOIN credit_applications a ON a.tenant_id = g.tenant_id AND a.grant_id = g.id AND a.reversed_at IS NULL
      WHERE g.tenant_id = ? GROUP BY g.id, g.amount, g.remaining
     HAVING g.remaining <> g.amount - coalesce(sum(a.amount), 0)`,
    [tenant.id],
  );
  expect(grantsOff.rows).toEqual([]);
  const invoicesOff = await api.db.raw(
    `SELECT i.id FROM invoices i
       LEFT JOIN credit_applications a ON a.invoice_id = i.id AND a.reversed_at IS NULL
      WHERE i.tenant_id = ? GROUP BY i.id, i.status, i.credits_applied
     HAVING (CASE WHEN i.status = 'void' THEN 0 ELSE i.credits_applied END) <> coalesce(sum(a.amount), 0)`,
    [tenant.id],
  );
  expect(invoicesOff.rows).toEqual([]);
});

// ---- add-on packs -------------------------------------------------------------------------------

test('packs: 422 naming the field, idempotent on id, admin only', async () => {
  const tenant = await tenantOn();
  const url = `/v1/tenants/${tenant.id}/packs`;
  const now = Date.now();
  for (const [body, path] of [
    [{ metric: 'tokens', units: 0 }, 'units'],
    [{ metric: 'tokens', units: -5 }, 'units'],
    [{ metric: 'minutes', units: 5 }, 'metric'],
    [{ metric: 'storage', units: 5 }, 'metric'], // no limit to extend
    [{ metric: 'tokens', units: 5, purchased_at: new Date(now).toISOString(), expires_at: new Date(now - 1000).toISOString() }, 'expires_at'],
    [{ metric: 'tokens', units: 5, price: '1.001' }, 'price'],
  ] as const) {
    const res = await api.call('POST', url, { body });
    expect(res.status).toBe(422);
    expect(res.body.errors.map((e: { path: string }) => e.path)).toContain(path);
  }
  expect((await api.call('POST', url, { key: tenant.key, body: { metric: 'tokens', units: 5 } })).status).toBe(403);
  const body = { id: 'pk1', metric: 'tokens', units: 500, purchased_at: new Date(now).toISOString() };
  const first = await api.call('POST', url, { body });
  expect(first.status).toBe(201);
  expect(first.body).toMatchObject({ id: 'pk1', units: 500, remaining: 500, status: 'active', price: null });
  // Three months later, clamped like monthly anniversaries (UTC tenant).
  const expiry = new Date(now);
  expect(Date.parse(first.body.expires_at)).toBeGreaterThan(now + 88 * 86_400_000);
  expect(new Date(first.body.expires_at).getUTCHours()).toBe(expiry.getUTCHours());
  expect((await api.call('POST', url, { body })).status).toBe(200);
  expect((await api.call('POST', url, { body: { ...body, units: 600 } })).status).toBe(409);
  expect((await api.call('GET', url, { key: tenant.key })).body.total_count).toBe(1);
  expect((await usage(tenant)).metrics.tokens).toMatchObject({ limit: 1500, plan_limit: 1000, effective_limit: 1500 });
});

test('a pack that expires mid-period stops counting at its expiry; its unused units are lost and reported', async () => {
  const tenant = await tenantOn();
  const url = `/v1/tenants/${tenant.id}/packs`;
  const expiresAt = new Date(Date.now() + 2500).toISOString();
  expect((await api.call('POST', url, { body: { id: 'brief', metric: 'tokens', units: 300, expires_at: expiresAt } })).status).toBe(201);
  expect((await api.call('POST', '/v1/events', { key: tenant.key, body: { events: [{ id: 'e1', metric: 'tokens', quantity: 1100 }] } })).status).toBe(202);
  const during = await usage(tenant);
  expect(during.metrics.tokens).toMatchObject({ limit: 1300, amount: '10.00' });
  expect(during.metrics.tokens.packs).toEqual([expect.objectContaining({ id: 'brief', drawn_this_period: 100, remaining: 200, status: 'active' })]);
  await new Promise((r) => setTimeout(r, Math.max(0, Date.parse(expiresAt) - Date.now()) + 200));
  const after = await usage(tenant);
  // Drawn units still count; the 200 left are lost.
  expect(after.metrics.tokens).toMatchObject({ limit: 1100, percent: 100 });
  expect(after.metrics.tokens.packs).toEqual([expect.objectContaining({ id: 'brief', drawn_this_period: 100, remaining: 0, lost: 200, status: 'expired' })]);
  const listed = await api.call('GET', url, { key: tenant.key });
  expect(listed.body.data[0]).toMatchObject({ status: 'expired', lost: 200, remaining: 0 });
  // More usage after the expiry is not drawn from it: it is billed.
  expect((await api.call('POST', '/v1/events', { key: tenant.key, body: { events: [{ id: 'e2', metric: 'tokens', quantity: 50 }] } })).status).toBe(202);
  expect((await usage(tenant)).metrics.tokens).toMatchObject({ amount: '10.50' });
});

test('a rerun recomputes the period\'s draws without drawing any unit twice', async () => {
  const tenant = await tenantOn();
  expect((await api.call('POST', `/v1/tenants/${tenant.id}/packs`, { body: { id: 'pk', metric: 'tokens', units: 400 } })).status).toBe(201);
  expect((await api.call('POST', '/v1/events', { key: tenant.key, body: { events: [{ id: 'e1', metric: 'tokens', quantity: 1300 }] } })).status).toBe(202);
  await usage(tenant);
  const close = await api.call('POST', `/v1/tenants/${tenant.id}/close-period`, { body: { finalize: true } });
  const invoice = await eventually(async () => {
    const res = await api.call('GET', `/v1/invoices/${close.body.invoice_id}`, { key: tenant.key });
    return res.body.status === 'finalized' ? res.body : undefined;
  });
  expect(invoice.lines.find((l: { metric: string }) => l.metric === 'tokens')).toMatchObject({ kind: 'usage', quantity: 1000, amount: '10.00', packs: [{ pack_id: 'pk', units: '300' }] });
  const rerun = await api.call('POST', `/v1/invoices/${close.body.invoice_id}/rerun`, { body: { reason: 'pack check' } });
  const second = await eventually(async () => {
    const res = await api.call('GET', `/v1/invoices/${rerun.body.invoice_id}`, { key: tenant.key });
    return res.body.status === 'finalized' ? res.body : undefined;
  });
  expect(second.lines.find((l: { metric: string }) => l.metric === 'tokens')).toMatchObject({ quantity: 1000, packs: [{ pack_id: 'pk', units: '300' }] });
  // The next period sees 100 units left, not 400 and not -200.
  const pack = (await api.call('GET', `/v1/tenants/${tenant.id}/packs`, { key: tenant.key })).body.data[0];
  expect(pack).toMatchObject({ remaining: 100, status: 'active' });
  expect((await usage(tenant)).metrics.tokens).toMatchObject({ limit: 1100 });
  // A ledger deciding on stale facts cannot draw past the pack: the store clamps to what is left.
  const current = (await usage(tenant)).period.start;
  await recordPackDraws(api.db, tenant.id, current, [{ pack_id: 'pk', units: '250' }]);
  const drawn = await api.db('pack_draws').where({ tenant_id: tenant.id, pack_id: 'pk' }).sum<{ total: string }>('units as total').first();
  expect(Number(drawn!.total)).toBe(400);
});

// ---- dimensions ---------------------------------------------------------------------------------

test('dimensions: a match key missing from group_by is refused with 422 naming it, and no plan version is written', async () => {
  const id = unique('dim');
  const body = {
    id,
    name: 'Dims',
    currency: 'USD',
    interval: 'month',
    base_fee: '0.00',
    meters: [
      {
        metric: 'tokens',
        aggregation: 'sum',
        pricing: { model: 'per_unit', unit_price: '0.00001' },
        group_by: ['model'],
        prices: [{ match: { modle: 'gpt-4' }, pricing: { model: 'per_unit', unit_price: '0.00003' } }],
      },
    ],
  };
  const res = await api.call('POST', '/v1/plans', { body });
  expect(res.status).toBe(422);
  expect(res.body.errors.map((e: { path: string }) => e.path)).toContain('meters.0.prices.0.match.modle');
  expect((await api.call('GET', `/v1/plans/${id}`)).status).toBe(404);
  const fixed = { ...body, meters: [{ ...body.meters[0]!, prices: [{ match: { model: 'gpt-4' }, pricing: { model: 'per_unit', unit_price: '0.00003' } }] }] };
  expect((await api.call('POST', '/v1/plans', { body: fixed })).status).toBe(201);
  // A dimensioned meter takes no pack: its units could not say which group they are for.
  const tenantId = unique('dim');
  expect((await api.call('POST', '/v1/tenants', { body: { id: tenantId, name: tenantId, plan_id: id } })).status).toBe(201);
  expect((await api.call('PATCH', `/v1/tenants/${tenantId}`, { body: { limits: { tokens: 1000 } } })).status).toBe(200);
  const pack = await api.call('POST', `/v1/tenants/${tenantId}/packs`, { body: { metric: 'tokens', units: 10 } });
  expect(pack.status).toBe(422);
  expect(pack.body.errors[0].path).toBe('metric');
});

test('dimensions: the workflow rates each group in its running cost, so a $cost limit alerts on per-model prices', async () => {
  const planId = unique('dimcost');
  expect(
    (
      await api.call('POST', '/v1/plans', {
        body: {
          id: planId,
          name: 'Per model',
          currency: 'USD',
          interval: 'month',
          base_fee: '0.00',
          grace_period_seconds: 0,
          meters: [
            {
              metric: 'tokens',
              aggregation: 'sum',
              pricing: { model: 'per_unit', unit_price: '0.00001' },
              group_by: ['model'],
              prices: [{ match: { model: 'gpt-4' }, pricing: { model: 'per_unit', unit_price: '0.00003' } }],
            },
          ],
        },
      })
    ).status,
  ).toBe(201);
  const id = unique('dimcost');
  const created = await api.call('POST', '/v1/tenants', { body: { id, name: id, plan_id: planId } });
  const tenant = { id, key: created.body.api_key as string };
  expect((await api.call('PATCH', `/v1/tenants/${id}`, { body: { limits: { $cost: 4 } } })).status).toBe(200);
  expect((await api.call('POST', '/v1/events', { key: tenant.key, body: { events: [{ id: 'g1', metric: 'tokens', quantity: 120000, properties: { model: 'gpt-4' } }] } })).status).toBe(202);
  // 120,000 GPT-4 tokens cost 3.60 (not 1.20 at the meter's own price): 90 % of 4.00.
  const view = await usage(tenant);
  expect(view.costs.total).toBe('3.60');
  expect(view.metrics.tokens.groups).toEqual([{ group: { model: 'gpt-4' }, used: 120000, used_decimal: '120000', amount: '3.60' }]);
  expect(view.alerts.map((a: { metric: string; threshold: number; status: string }) => `${a.metric} ${a.threshold} ${a.status}`)).toEqual(['$cost 80 superseded', '$cost 90 notified']);
  const read = await api.call('GET', `/v1/tenants/${id}/usage`, { key: tenant.key });
  expect(read.body.metrics.tokens.amount).toBe('3.60');
});
