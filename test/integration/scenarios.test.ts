import { startApiHarness, eventually, type ApiHarness } from '../support/api-harness';
import { loadScenarios } from '../support/scenarios';
import { unique } from '../support/stack';

/**
 * Every billing scenario of test/fixtures/scenarios replayed through the real API, the tenant
 * workflow and PostgreSQL, against the figures computed by hand in the scenario files.
 */
const scenarios = loadScenarios<any>('plan');

let api: ApiHarness;
beforeAll(async () => {
  api = await startApiHarness();
});
afterAll(async () => {
  await api?.stop();
});

test('the fixture folder has billing scenarios', () => {
  expect(scenarios.length).toBeGreaterThan(0);
});

describe.each(scenarios.map(({ file, scenario }) => [file, scenario] as const))('%s', (_file, scenario) => {
  test(scenario.name, async () => {
    const planId = unique(scenario.plan.id);
    const tenantId = unique(scenario.tenant.id);
    const plan = await api.call('POST', '/v1/plans', { body: { ...scenario.plan, id: planId } });
    expect(plan.status).toBe(201);
    const tenant = await api.call('POST', '/v1/tenants', { body: { ...scenario.tenant, id: tenantId, plan_id: planId } });
    expect(tenant.status).toBe(201);
    const key: string = tenant.body.api_key;
    let invoiceId: string | undefined;

    const settledUsage = () =>
      eventually(async () => {
        const res = await api.call('GET', `/v1/tenants/${tenantId}/usage?consistent=true`, { key });
        return res.status === 200 && res.body.pending_events === 0 ? res.body : undefined;
      }, 20_000, 'usage with no pending events');

    for (const step of scenario.steps) {
      if (step.events) {
        const res = await api.call('POST', '/v1/events', { key, body: { events: step.events } });
        expect(res.status).toBe(202);
        expect(res.body).toEqual({ received: step.events.length });
      } else if (step.expect_usage) {
        const usage = await settledUsage();
        for (const [metric, expected] of Object.entries<any>(step.expect_usage)) {
          expect(usage.metrics[metric].used).toBe(expected.used);
          if (expected.limit !== undefined) expect(usage.metrics[metric].limit).toBe(expected.limit);
          if (expected.percent !== undefined) expect(usage.metrics[metric].percent).toBe(expected.percent);
          if (expected.amount !== undefined) expect(usage.metrics[metric].amount).toBe(expected.amount);
          if (expected.groups !== undefined) {
            const label = (g: Record<string, string>) => Object.entries(g).map(([k, v]) => `${k}=${v}`).join(', ');
            expect(Object.fromEntries(usage.metrics[metric].groups.map((g: { group: Record<string, string>; used: number }) => [label(g.group), g.used]))).toEqual(expected.groups);
          }
          if (expected.packs !== undefined) {
            const drawn = Object.fromEntries(usage.metrics[metric].packs.map((p: { id: string; drawn_this_period: number }) => [p.id, p.drawn_this_period]));
            expect(drawn).toEqual(expected.packs);
          }
        }
      } else if (step.expect_alerts) {
        const usage = await settledUsage();
        const alerts = usage.alerts.map((a: any) => ({ metric: a.metric, threshold: a.threshold, status: a.status }));
        expect(alerts).toEqual(step.expect_alerts);
      } else if (step.estimate) {
        await settledUsage();
        const res = await api.call('POST', `/v1/tenants/${tenantId}/estimate`, { key, body: step.estimate });
        expect(res.status).toBe(200);
        expect(res.body.amount).toBe(step.expect.amount);
      } else if (step.authorize) {
        const res = await api.call('POST', `/v1/tenants/${tenantId}/authorize`, { key, body: step.authorize });
        expect(res.status).toBe(200);
        expect(res.body).toMatchObject(step.expect);
        const again = await api.call('POST', `/v1/tenants/${tenantId}/authorize`, { key, body: step.authorize });
        expect(again.body).toEqual(res.body); // idempotent on its id
      } else if (step.pack) {
        const res = await api.call('POST', `/v1/tenants/${tenantId}/packs`, { body: step.pack });
        expect(res.status).toBe(201);
        const again = await api.call('POST', `/v1/tenants/${tenantId}/packs`, { body: { ...step.pack, purchased_at: res.body.purchased_at } });
        expect(again.status).toBe(200); // idempotent on its id
      } else if (step.grant) {
        const res = await api.call('POST', `/v1/tenants/${tenantId}/credits`, { body: step.grant });
        expect(res.status).toBe(201);
        const again = await api.call('POST', `/v1/tenants/${tenantId}/credits`, { body: step.grant });
        expect(again.status).toBe(200); // idempotent on its id
      } else if (step.expect_balance) {
        await settledUsage();
        const res = await api.call('GET', `/v1/tenants/${tenantId}/balance`, { key });
        expect(res.status).toBe(200);
        expect(res.body).toMatchObject(step.expect_balance);
      } else if (step.limits) {
        const res = await api.call('PATCH', `/v1/tenants/${tenantId}`, { body: { limits: step.limits } });
        expect(res.status).toBe(200);
      } else if (step.close) {
        await settledUsage();
        const res = await api.call('POST', `/v1/tenants/${tenantId}/close-period`, { body: step.close });
        expect(res.status).toBe(200);
        invoiceId = res.body.invoice_id;
      } else if (step.expect_invoice) {
        const invoice = await eventually(async () => {
          const res = await api.call('GET', `/v1/invoices/${invoiceId}`, { key });
          return res.status === 200 && res.body.status === 'finalized' ? res.body : undefined;
        }, 20_000, 'a finalized invoice');
        for (const [metric, expected] of Object.entries<any>(step.expect_invoice.lines)) {
          // A key is a metric, or a dimensioned meter's line as its description names it: `tokens (model=gpt-4)`.
          const line = invoice.lines.find((l: any) => l.metric === metric || l.description === metric);
          expect(line).toBeDefined();
          expect(line.quantity).toBe(expected.quantity);
          expect(line.amount).toBe(expected.amount);
          if (expected.packs !== undefined) expect(line.packs).toEqual(expected.packs);
        }
        expect(invoice.total).toBe(step.expect_invoice.total);
        if (step.expect_invoice.credits_applied !== undefined) expect(invoice.credits_applied).toBe(step.expect_invoice.credits_applied);
        if (step.expect_invoice.amount_due !== undefined) expect(invoice.amount_due).toBe(step.expect_invoice.amount_due);
      } else {
        throw new Error(`unknown step ${JSON.stringify(step)}`);
      }
    }
  });
});
