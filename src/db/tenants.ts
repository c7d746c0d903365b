import type { Db } from './knex';
import type { Period } from '../domain/periods';

/** A tenant row as the API and activities read it. */
export interface TenantRow {
  id: string;
  name: string;
  plan_id: string;
  email: string | null;
  webhook_url: string | null;
  webhook_secret: string | null;
  timezone: string;
  billing_anchor: Date;
  status: 'active' | 'cancelled';
  /** The tenant's own limits (`src/db/entitlements.ts`); absent on rows read before the column existed. */
  limit_overrides?: Record<string, string>;
  /** The tenant's own `balance.low` threshold (decimal string); null: the plan's. */
  low_balance_threshold?: string | null;
  created_at: Date;
}

/** A new tenant with its first period and its hashed API key, written in one transaction. */
export interface NewTenant {
  tenant: Omit<TenantRow, 'status' | 'created_at' | 'webhook_secret'> & { webhook_secret: string | null };
  firstPeriod: Period;
  planVersion: number;
  apiKey: { id: string; key_hash: string; prefix: string };
}

/** Creates the tenant, its first period row and its API key; false when the id is taken. */
export async function insertTenant(db: Db, input: NewTenant): Promise<boolean> {
  return db.transaction(async (trx) => {
    const inserted = await trx('tenants').insert(input.tenant).onConflict('id').ignore().returning('id');
    if (inserted.length === 0) return false;
    await trx('periods').insert({
      tenant_id: input.tenant.id,
      start: input.firstPeriod.start,
      end: input.firstPeriod.end,
      plan_id: input.tenant.plan_id,
      plan_version: input.planVersion,
      status: 'open',
    });
    await trx('api_keys').insert({ ...input.apiKey, tenant_id: input.tenant.id });
    return true;
  });
}

/** One tenant, or undefined. */
export async function findTenant(db: Db, id: string): Promise<TenantRow | undefined> {
  return db('tenants').where({ id }).first<TenantRow | undefined>();
}
