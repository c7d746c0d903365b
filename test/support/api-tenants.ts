import type { ApiHarness } from './api-harness';
import { unique } from './stack';
import type { PlanVersion } from '../../src/domain/plan';

/**
 * A plan and a tenant made through the real API, for the suites that drive one tenant hard: a
 * hard-limited `calls` meter and an unlimited `tokens` meter, both per unit, no grace.
 */
export function ledgerPlan(id: string, overrides: Partial<Omit<PlanVersion, 'version'>> = {}) {
  return {
    id,
    name: 'Ledger',
    currency: 'USD',
    interval: 'month',
    base_fee: '1.00',
    grace_period_seconds: 0,
    meters: [
      { metric: 'calls', aggregation: 'sum', limit: 100, hard_limit: true, pricing: { model: 'per_unit', unit_price: '0.01' } },
      { metric: 'tokens', aggregation: 'sum', pricing: { model: 'per_unit', unit_price: '0.001' } },
    ],
    ...overrides,
  };
}

export interface ApiTenant {
  id: string;
  key: string;
  period: { start: string; end: string };
}

/** Posts the plan (a new version if it exists) and a tenant on it; answers the tenant's key. */
export async function tenantOn(api: ApiHarness, planBody: ReturnType<typeof ledgerPlan>, id = unique('led')): Promise<ApiTenant> {
  expect((await api.call('POST', '/v1/plans', { body: planBody })).status).toBe(201);
  const res = await api.call('POST', '/v1/tenants', { body: { id, name: id, plan_id: planBody.id } });
  expect(res.status).toBe(201);
  return { id, key: res.body.api_key, period: res.body.current_period };
}

/** `GET …/usage?consistent=true`: every event acknowledged before the call is counted. */
export async function settledUsage(api: ApiHarness, tenant: { id: string; key: string }) {
  const res = await api.call('GET', `/v1/tenants/${tenant.id}/usage?consistent=true`, { key: tenant.key });
  expect(res.status).toBe(200);
  return res.body;
}
