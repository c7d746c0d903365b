import type { Db } from '../../src/db/knex';
import { savePlanVersion } from '../../src/db/plans';
import { insertTenant } from '../../src/db/tenants';
import { generateApiKey } from '../../src/db/api-keys';
import { periodContaining, type Period } from '../../src/domain/periods';
import type { PlanVersion } from '../../src/domain/plan';
import type { TenantBillingInput } from '../../src/workflows/tenant-billing';

/** A plan and a tenant stored in PostgreSQL, and the input that starts the tenant's workflow. */
export interface TenantFixture {
  plan: PlanVersion;
  tenantId: string;
  period: Period;
  input: TenantBillingInput;
}

/** Stores a plan and a tenant the way the API does, without going through HTTP. */
export async function createTenantFixture(
  db: Db,
  options: { tenantId: string; plan: Omit<PlanVersion, 'version'>; anchor: string; timezone?: string; limits?: TenantBillingInput['limits'] },
): Promise<TenantFixture> {
  const plan = await savePlanVersion(db, options.plan);
  const timezone = options.timezone ?? 'UTC';
  const first = periodContaining(options.anchor, plan.interval, timezone, options.anchor);
  const period = { start: first.start, end: first.end };
  const key = generateApiKey(options.tenantId);
  await insertTenant(db, {
    tenant: {
      id: options.tenantId,
      name: options.tenantId,
      plan_id: plan.id,
      email: null,
      webhook_url: null,
      webhook_secret: null,
      timezone,
      billing_anchor: new Date(options.anchor),
    },
    firstPeriod: period,
    planVersion: plan.version,
    apiKey: { id: key.id, key_hash: key.key_hash, prefix: key.prefix },
  });
  return {
    plan,
    tenantId: options.tenantId,
    period,
    input: { tenant_id: options.tenantId, search_attributes: false, ...(options.limits ? { limits: options.limits } : {}) },
  };
}
