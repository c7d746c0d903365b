import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Db } from './knex';

/** Who a key belongs to: the admin, or exactly one tenant. */
export type Principal = { kind: 'admin' } | TenantPrincipal;

/** A tenant key's owner. */
export interface TenantPrincipal {
  kind: 'tenant';
  tenantId: string;
  keyId: string;
}

/** Keys are stored as SHA-256 digests: high-entropy random keys need no slow hash, only no plaintext. */
export function hashApiKey(key: string): string {
  return createHash('sha256').update(key).digest('hex');
}

/** A new tenant key: shown once, stored hashed. */
export function generateApiKey(tenantId: string): { key: string; id: string; key_hash: string; prefix: string } {
  const secret = randomBytes(24).toString('base64url');
  const key = `tk_${secret}`;
  return { key, id: `key_${randomBytes(8).toString('hex')}`, key_hash: hashApiKey(key), prefix: `${key.slice(0, 7)}…(${tenantId})` };
}

const sha256 = (secret: string): Buffer => createHash('sha256').update(secret).digest();

/** Constant-time comparison of two secrets of any length (digests of equal length are compared). */
export function safeEqual(a: string, b: string): boolean {
  return timingSafeEqual(sha256(a), sha256(b));
}

/** The admin key's digest, made once per process rather than on every request. */
let adminDigest: { key: string; digest: Buffer } | undefined;

/** Whether the presented key is the admin key, compared in constant time. */
export function isAdminKey(adminKey: string, presented: string): boolean {
  if (adminDigest?.key !== adminKey) adminDigest = { key: adminKey, digest: sha256(adminKey) };
  return timingSafeEqual(sha256(presented), adminDigest.digest);
}

/** The tenant key stored under this digest (`hashApiKey`), unless it was revoked. */
export async function findTenantKey(db: Db, keyHash: string): Promise<TenantPrincipal | undefined> {
  const row = await db('api_keys')
    .where({ key_hash: keyHash })
    .whereNull('revoked_at')
    .whereNotNull('tenant_id')
    .first<{ id: string; tenant_id: string } | undefined>('id', 'tenant_id');
  return row ? { kind: 'tenant', tenantId: row.tenant_id, keyId: row.id } : undefined;
}

/** Resolves a presented key: the admin key is compared in constant time, tenant keys by digest lookup. */
export async function resolveApiKey(db: Db, adminKey: string, presented: string): Promise<Principal | undefined> {
  return isAdminKey(adminKey, presented) ? { kind: 'admin' } : findTenantKey(db, hashApiKey(presented));
}

/**
 * The channel on which a transaction that revokes a tenant's keys names the tenant, so that every
 * API process forgets the keys it resolved for it (src/api/tenant-key-cache.ts).
 */
export const API_KEYS_REVOKED_CHANNEL = 'tally_api_keys_revoked';

/** Notifies {@link API_KEYS_REVOKED_CHANNEL}: a tenant whose keys were revoked, or a listener's probe of the channel. */
export async function notifyKeysRevoked(db: Db, payload: string): Promise<void> {
  await db.raw('SELECT pg_notify(?, ?)', [API_KEYS_REVOKED_CHANNEL, payload]);
}

/** A tenant key just issued: `key` is the only copy of the secret and is shown once. */
export interface IssuedApiKey {
  id: string;
  tenant_id: string;
  key: string;
  prefix: string;
  created_at: Date;
  /** How many earlier keys of the tenant this issue revoked. */
  revoked: number;
}

/**
 * Rotates a tenant's key: issues a new one and revokes every earlier key of the tenant in the
 * same transaction, so there is never a moment with no valid key or with two. The tenant row is
 * locked first, so concurrent rotations run one after the other and exactly one key survives.
 * Revoked rows stay (with `revoked_at`) for audit; `findTenantKey` ignores them, and the
 * notification on {@link API_KEYS_REVOKED_CHANNEL} makes every API process forget the tenant's
 * cached keys when the transaction commits. Undefined when the tenant does not exist.
 */
export async function rotateTenantApiKey(db: Db, tenantId: string): Promise<IssuedApiKey | undefined> {
  return db.transaction(async (trx) => {
    const tenant = await trx('tenants').where({ id: tenantId }).forUpdate().first<{ id: string } | undefined>('id');
    if (!tenant) return undefined;
    const now = new Date();
    const revoked = await trx('api_keys').where({ tenant_id: tenantId }).whereNull('revoked_at').update({ revoked_at: now });
    // Delivered at commit, to every API process that caches resolved keys.
    await notifyKeysRevoked(trx, tenantId);
    const issued = generateApiKey(tenantId);
    await trx('api_keys').insert({ id: issued.id, tenant_id: tenantId, key_hash: issued.key_hash, prefix: issued.prefix, created_at: now });
    return { id: issued.id, tenant_id: tenantId, key: issued.key, prefix: issued.prefix, created_at: now, revoked };
  });
}

/** True while the tenant's key with this id is not revoked (a dashboard session lives as long as its key). */
export async function isLiveTenantKey(db: Db, tenantId: string, keyId: string): Promise<boolean> {
  const row = await db('api_keys').where({ id: keyId, tenant_id: tenantId }).whereNull('revoked_at').first<{ id: string } | undefined>('id');
  return row !== undefined;
}
