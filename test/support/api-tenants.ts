import { eventually, type ApiHarness } from './api-harness';
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
  return tenantOnPlan(api, planBody.id, id);
}

/** Posts a tenant (named by its id) on a stored plan; answers its key, shown only once. */
export async function tenantOnPlan(api: ApiHarness, planId: string, id: string): Promise<ApiTenant> {
  const res = await api.call('POST', '/v1/tenants', { body: { id, name: id, plan_id: planId } });
  expect(res.status).toBe(201);
  return { id, key: res.body.api_key, period: res.body.current_period };
}

/** `POST /v1/events` with the tenant's key: the batch is stored whole (202). */
export async function sendEvents(api: ApiHarness, key: string, events: unknown[]): Promise<void> {
  const res = await api.call('POST', '/v1/events', { key, body: { events } });
  expect(res.status).toBe(202);
}

/** The invoice once it is finalized (its workflow finalizes it after the grace, or at once when asked). */
export function finalizedInvoice(api: ApiHarness, invoiceId: string, timeoutMs = 30_000): Promise<any> {
  return eventually(async () => {
    const res = await api.call('GET', `/v1/invoices/${invoiceId}`);
    return res.body?.status === 'finalized' ? res.body : undefined;
  }, timeoutMs, `invoice ${invoiceId} finalized`);
}

/** Closes the tenant's current period with `finalize` (no grace wait) and answers its finalized invoice. */
export async function closeAndFinalize(api: ApiHarness, tenantId: string): Promise<any> {
  const close = await api.call('POST', `/v1/tenants/${tenantId}/close-period`, { body: { finalize: true } });
  expect(close.status).toBe(200);
  return finalizedInvoice(api, close.body.invoice_id);
}

/** `GET …/usage?consistent=true`: every event acknowledged before the call is counted. */
export async function settledUsage(api: ApiHarness, tenant: { id: string; key: string }) {
  const res = await api.call('GET', `/v1/tenants/${tenant.id}/usage?consistent=true`, { key: tenant.key });
  expect(res.status).toBe(200);
  return res.body;
}
