import type { Db } from './knex';
import { keysetPage, type Page, type PageRequest } from './pagination';
import type { Period } from '../domain/periods';
import { storePeriodFigures } from './summaries';

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

/** Creates the tenant, its first period row (with its running figure) and its API key; false when the id is taken. */
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
    await storePeriodFigures(trx, input.tenant.id, [input.firstPeriod.start]); // its base fee, in monthly summaries
    await trx('api_keys').insert({ ...input.apiKey, tenant_id: input.tenant.id });
    return true;
  });
}

/**
 * Removes a tenant `insertTenant` just created, with its first period and its API key, when its
 * billing workflow could not be started: nothing else refers to it yet, and the client can retry.
 */
export async function deleteUnstartedTenant(db: Db, tenantId: string): Promise<void> {
  await db.transaction(async (trx) => {
    await trx('api_keys').where({ tenant_id: tenantId }).delete();
    await trx('periods').where({ tenant_id: tenantId }).delete();
    await trx('tenants').where({ id: tenantId }).delete();
  });
}

/** The fields of a tenant its owner or the admin may change directly. */
export type TenantChange = Partial<Pick<TenantRow, 'plan_id' | 'name' | 'email' | 'webhook_url' | 'low_balance_threshold'>>;

/** Stores a change of the tenant's own fields (the running period keeps its plan version). */
export async function updateTenant(db: Db, tenantId: string, change: TenantChange): Promise<void> {
  await db('tenants').where({ id: tenantId }).update({ ...change, updated_at: new Date() });
}

/**
 * A page of tenants, newest first, optionally those whose id or name holds `q` (any case,
 * matched literally: `%`, `_` and `\` are escaped). Any tenant is a valid cursor.
 */
export async function listTenants(db: Db, filters: { q?: string }, page: PageRequest): Promise<Page<TenantRow>> {
  const rows = db('tenants').select('*');
  if (filters.q !== undefined) {
    const pattern = `%${filters.q.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
    rows.where((w) => w.whereILike('id', pattern).orWhereILike('name', pattern));
  }
  return keysetPage<TenantRow>(rows, page, { sort: ['created_at', 'id'], idColumn: 'id', cursorScope: db('tenants') });
}

/** A tenant's id and status only (the hot ingest path's read), or undefined. */
export async function findTenantStatus(db: Db, id: string): Promise<Pick<TenantRow, 'id' | 'status'> | undefined> {
  return db('tenants').where({ id }).first<Pick<TenantRow, 'id' | 'status'> | undefined>('id', 'status');
}

/** The tenant's webhook target (`webhook_url` null: it has none), or undefined when there is no such tenant. */
export async function findTenantWebhookUrl(db: Db, id: string): Promise<Pick<TenantRow, 'webhook_url'> | undefined> {
  return db('tenants').where({ id }).first<Pick<TenantRow, 'webhook_url'> | undefined>('webhook_url');
}

/** The secret the tenant's webhooks are signed with (null: none yet), or undefined when there is no such tenant. */
export async function findTenantWebhookSecret(db: Db, id: string): Promise<Pick<TenantRow, 'webhook_secret'> | undefined> {
  return db('tenants').where({ id }).first<Pick<TenantRow, 'webhook_secret'> | undefined>('webhook_secret');
}

/** Stores `secret` as the tenant's webhook secret only if it has none: true when stored. Conditional on NULL, so of two concurrent calls one stores. */
export async function storeWebhookSecretIfMissing(db: Db, tenantId: string, secret: string): Promise<boolean> {
  const updated = await db('tenants').where({ id: tenantId }).whereNull('webhook_secret').update({ webhook_secret: secret, updated_at: new Date() }).returning('id');
  return updated.length > 0;
}

/** Replaces the tenant's webhook secret with `secret` at once: true when the tenant exists. */
export async function replaceWebhookSecret(db: Db, tenantId: string, secret: string): Promise<boolean> {
  const updated = await db('tenants').where({ id: tenantId }).update({ webhook_secret: secret, updated_at: new Date() }).returning('id');
  return updated.length > 0;
}

/**
 * Takes back a secret `issueWebhookSecretIfMissing` just issued, when the request that issued it
 * failed before answering (it was never shown). A secret rotated since is left as it is.
 */
export async function withdrawWebhookSecret(db: Db, tenantId: string, secret: string): Promise<void> {
  await db('tenants').where({ id: tenantId, webhook_secret: secret }).update({ webhook_secret: null });
}

/** One tenant, or undefined. */
export async function findTenant(db: Db, id: string): Promise<TenantRow | undefined> {
  return db('tenants').where({ id }).first<TenantRow | undefined>();
}
