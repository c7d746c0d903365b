import { randomUUID } from 'node:crypto';
import type { Db } from '../db/knex';
import { API_KEYS_REVOKED_CHANNEL, notifyKeysRevoked, type TenantPrincipal } from '../db/api-keys';
import { listenOnChannel } from '../db/channel-listener';
import type { Logger } from '../logger';

/**
 * The tenant keys this API process resolved, by digest, so that a request with a known key costs
 * no PostgreSQL round trip before its own work (a `GET …/usage` is then one statement, not two).
 *
 * A revocation must still take effect at once:
 * - the rotation's transaction notifies {@link API_KEYS_REVOKED_CHANNEL} with the tenant, and every
 *   process listening forgets that tenant's keys as the commit's notification reaches it; the
 *   process that rotated forgets them before it answers, too;
 * - only while the channel is known to work is anything cached: `startTenantKeyCache` sends a
 *   probe of its own through it every few seconds and stops caching when one goes unheard (the
 *   listening connection lost, or a pooler in transaction mode, through which `LISTEN` hears
 *   nothing). Every key is then read from PostgreSQL, as without the cache; each change starts
 *   from an empty cache, since revocations may have passed unheard;
 * - a lookup that began before a revocation was heard is not cached when it ends (the generation
 *   moved on), so a key read just before its revocation committed is not kept past it;
 * - an entry is read again after `ttlMs` whatever was heard.
 * Unknown keys are never cached: a flood of wrong keys cannot fill the cache.
 */
export class TenantKeyCache {
  private readonly byDigest = new Map<string, { principal: TenantPrincipal; at: number }>();
  /** Moves on with every revocation heard and every change of the listening connection. */
  private generation = 0;
  private listening = false;

  constructor(
    private readonly maxEntries = 100_000,
    private readonly ttlMs = 5 * 60_000,
  ) {}

  /** The tenant a key digest belongs to: cached, or looked up with `lookup` (cached when it is still safe to). */
  async resolve(digest: string, lookup: (digest: string) => Promise<TenantPrincipal | undefined>): Promise<TenantPrincipal | undefined> {
    const hit = this.byDigest.get(digest);
    if (hit && Date.now() - hit.at < this.ttlMs) return hit.principal;
    const generation = this.generation;
    const found = await lookup(digest);
    if (found && this.listening && generation === this.generation) {
      this.byDigest.delete(digest);
      if (this.byDigest.size >= this.maxEntries) this.byDigest.delete(this.byDigest.keys().next().value!);
      this.byDigest.set(digest, { principal: found, at: Date.now() });
    }
    return found;
  }

  /** Forgets every key of the tenant (its keys were revoked). */
  forgetTenant(tenantId: string): void {
    this.generation += 1;
    for (const [digest, entry] of this.byDigest) if (entry.principal.tenantId === tenantId) this.byDigest.delete(digest);
  }

  /** Whether revocations are heard: only then is anything cached, and each change starts afresh. */
  setListening(listening: boolean): void {
    if (listening === this.listening) return;
    this.generation += 1;
    this.listening = listening;
    this.byDigest.clear();
  }

  get size(): number {
    return this.byDigest.size;
  }
}

/** How often the channel is probed, and how long a probe may take to be heard. */
const PROBE_EVERY_MS = 5_000;
const PROBE_HEARD_WITHIN_MS = 2_000;

/**
 * A cache kept current by listening for revocations. The channel is probed every
 * {@link PROBE_EVERY_MS} with a payload only this process sends, through the same pool that
 * rotations commit through; the cache works only while its latest probe was heard in time.
 * `stop` ends the listening.
 */
export function startTenantKeyCache(db: Db, logger: Logger): { cache: TenantKeyCache; stop: () => Promise<void> } {
  const cache = new TenantKeyCache();
  const probePrefix = `probe:${randomUUID()}:`;
  let sent = 0;
  let heard = 0;
  let connected = false;
  const probe = async () => {
    const n = ++sent;
    await notifyKeysRevoked(db, `${probePrefix}${n}`).catch(() => undefined);
    setTimeout(() => cache.setListening(connected && heard >= n), PROBE_HEARD_WITHIN_MS).unref();
  };
  const stopListening = listenOnChannel(db, API_KEYS_REVOKED_CHANNEL, {
    onNotice: (payload) => {
      if (payload.startsWith(probePrefix)) {
        heard = Math.max(heard, Number(payload.slice(probePrefix.length)));
        return;
      }
      // Another process's probe names no tenant of ours; a tenant id is never `probe:…`.
      if (!payload.startsWith('probe:')) cache.forgetTenant(payload);
    },
    onListening: () => {
      connected = true;
      void probe();
    },
    onLost: () => {
      connected = false;
      cache.setListening(false);
    },
    onError: (err) => logger.warn({ err }, 'listening for revoked API keys failed; every key is read from PostgreSQL until it is back'),
  });
  const timer = setInterval(() => void probe(), PROBE_EVERY_MS);
  timer.unref();
  return {
    cache,
    stop: async () => {
      clearInterval(timer);
      connected = false;
      await stopListening();
      cache.setListening(false);
    },
  };
}
