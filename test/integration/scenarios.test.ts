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
          if (expected.percent !== undefined) expect(usage.metrics[metric].percent).toBe(expected.percent);
          if (expected.amount !== undefined) expect(usage.metrics[metric].amount).toBe(expected.amount);
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
        expect(res.body.allowed).toBe(step.expect.allowed);
        const again = await api.call('POST', `/v1/tenants/${tenantId}/authorize`, { key, body: step.authorize });
        expect(again.body).toEqual(res.body); // idempotent on its id
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
          const line = invoice.lines.find((l: any) => l.metric === metric);
          expect(line).toBeDefined();
          expect(line.quantity).toBe(expected.quantity);
          expect(line.amount).toBe(expected.amount);
        }
        expect(invoice.total).toBe(step.expect_invoice.total);
      } else {
        throw new Error(`unknown step ${JSON.stringify(step)}`);
      }
    }
  });
});
