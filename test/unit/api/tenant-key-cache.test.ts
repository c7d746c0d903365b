import type { TenantPrincipal } from '../../../src/db/api-keys';
import { TenantKeyCache } from '../../../src/api/tenant-key-cache';

const acme: TenantPrincipal = { kind: 'tenant', tenantId: 'acme', keyId: 'key_1' };
const beta: TenantPrincipal = { kind: 'tenant', tenantId: 'beta', keyId: 'key_2' };

/** A lookup that answers from a table and counts its calls, as PostgreSQL would be asked. */
function table(rows: Record<string, TenantPrincipal>) {
  const lookup = jest.fn(async (digest: string) => rows[digest]);
  return { rows, lookup };
}

test('caches nothing until revocations are heard, then serves a known key without a lookup', async () => {
  const cache = new TenantKeyCache();
  const { lookup } = table({ d1: acme });
  await cache.resolve('d1', lookup);
  await cache.resolve('d1', lookup);
  expect(lookup).toHaveBeenCalledTimes(2);
  cache.setListening(true);
  expect(await cache.resolve('d1', lookup)).toEqual(acme);
  expect(await cache.resolve('d1', lookup)).toEqual(acme);
  expect(lookup).toHaveBeenCalledTimes(3);
});

test('a revocation forgets only that tenant, and losing the channel forgets everything', async () => {
  const cache = new TenantKeyCache();
  cache.setListening(true);
  const { rows, lookup } = table({ d1: acme, d2: beta });
  await cache.resolve('d1', lookup);
  await cache.resolve('d2', lookup);
  delete rows.d1;
  cache.forgetTenant('acme');
  expect(await cache.resolve('d1', lookup)).toBeUndefined();
  expect(await cache.resolve('d2', lookup)).toEqual(beta);
  expect(lookup).toHaveBeenCalledTimes(3);
  cache.setListening(false);
  expect(cache.size).toBe(0);
});

test('a lookup under way when a revocation is heard is answered but not cached', async () => {
  const cache = new TenantKeyCache();
  cache.setListening(true);
  let answer!: (p: TenantPrincipal) => void;
  const slow = jest.fn(() => new Promise<TenantPrincipal | undefined>((resolve) => (answer = resolve)));
  const resolving = cache.resolve('d1', slow);
  // The key was read just before its revocation committed; the notification arrives meanwhile.
  cache.forgetTenant('acme');
  answer(acme);
  expect(await resolving).toEqual(acme);
  expect(cache.size).toBe(0);
});

test('unknown keys are never cached, and the cache keeps at most its size', async () => {
  const cache = new TenantKeyCache(2);
  cache.setListening(true);
  const { lookup } = table({ d1: acme, d2: beta, d3: { ...beta, keyId: 'key_3' } });
  expect(await cache.resolve('nope', lookup)).toBeUndefined();
  expect(cache.size).toBe(0);
  for (const d of ['d1', 'd2', 'd3']) await cache.resolve(d, lookup);
  expect(cache.size).toBe(2);
  lookup.mockClear();
  await cache.resolve('d3', lookup);
  expect(lookup).not.toHaveBeenCalled();
});
