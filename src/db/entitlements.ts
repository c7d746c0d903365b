import type { Knex } from 'knex';
import type { Db } from './knex';
import { applyLimitChange, type LimitChange, type LimitOverrides } from '../domain/limits';

/**
 * A tenant's entitlements as PostgreSQL holds them: its own limit overrides (`tenants.limit_overrides`).
 * The tenant's workflow reads them from here whenever it is told they changed, so the running
 * period always applies what is stored, whatever order concurrent changes arrived in.
 */

/** The tenant's limit overrides (empty when it has none, or no such tenant). */
export async function readLimitOverrides(db: Db | Knex.Transaction, tenantId: string): Promise<Record<string, string>> {
  const row = await db('tenants').where({ id: tenantId }).first<{ limit_overrides: Record<string, string> } | undefined>('limit_overrides');
  return { ...(row?.limit_overrides ?? {}) };
}

/** Applies a change to the stored overrides under the tenant row's lock; answers them before and after. */
export async function changeLimitOverrides(db: Db, tenantId: string, change: LimitChange): Promise<{ before: LimitOverrides; after: LimitOverrides }> {
  return db.transaction(async (trx) => {
    const row = await trx('tenants').where({ id: tenantId }).forUpdate().first<{ limit_overrides: Record<string, string> }>('limit_overrides');
    const before = { ...(row?.limit_overrides ?? {}) };
    const after = applyLimitChange(before, change);
    await trx('tenants').where({ id: tenantId }).update({ limit_overrides: JSON.stringify(after), updated_at: new Date() });
    return { before, after };
  });
}

/** Puts the overrides back as they were before a change the workflow never heard of (only if nobody changed them since). */
export async function revertLimitOverrides(db: Db, tenantId: string, change: { before: LimitOverrides; after: LimitOverrides }): Promise<void> {
  await db('tenants')
    .where({ id: tenantId })
    .whereRaw('limit_overrides = ?::jsonb', [JSON.stringify(change.after)])
    .update({ limit_overrides: JSON.stringify(change.before) });
}
