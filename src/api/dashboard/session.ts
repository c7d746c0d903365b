import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Request, Response } from 'express';
import type { Db } from '../../db/knex';
import { isLiveTenantKey, resolveApiKey, safeEqual, type Principal, type TenantPrincipal } from '../../db/api-keys';
import type { TenantKeyCache } from '../tenant-key-cache';

/**
 * Dashboard sessions: an API key is exchanged once for a signed cookie, so the browser never
 * keeps the key. The cookie holds no secret: for a tenant it names the key's id (the key itself
 * stays only as a digest in `api_keys`), for the admin a keyed fingerprint of the admin key. Each
 * request checks the signature, the expiry, and that the key behind it still works: rotating a
 * tenant's key or the admin key ends its sessions at once. With the API's cache of tenant keys,
 * that a session's key is live is kept there too, and forgotten with the tenant's other keys when
 * they are revoked (src/api/tenant-key-cache.ts).
 */

export const SESSION_COOKIE = 'tally_session';
/** The header that carries the session's CSRF token on state-changing requests. */
export const CSRF_HEADER = 'x-csrf-token';
/** A session lasts a working day; signing in again issues a new one. */
export const SESSION_TTL_SECONDS = 12 * 60 * 60;

interface SessionClaims {
  /** `a` admin, `t` tenant. */
  k: 'a' | 't';
  /** Tenant sessions: the tenant and the id of the key that signed in. */
  tid?: string;
  kid?: string;
  /** Admin sessions: a keyed fingerprint of the admin key that signed in. */
  akf?: string;
  /** The CSRF token state-changing requests must echo in `X-CSRF-Token`. */
  csrf: string;
  /** Expiry, Unix seconds. */
  exp: number;
}

/** A session the cookie proved, with who it speaks for and its CSRF token. */
export interface VerifiedSession {
  principal: Principal;
  csrfToken: string;
  expiresAt: Date;
}

export class DashboardSessions {
  private readonly key: Buffer;

  constructor(
    private readonly db: Db,
    private readonly adminKey: string,
    secret: string,
    private readonly tenantKeys?: TenantKeyCache,
  ) {
    // A dedicated key per purpose, so the secret is never used raw.
    this.key = createHmac('sha256', secret).update('tally dashboard session v1').digest();
  }

  /** Signs in with an API key: the session cookie's value, or undefined for an unknown key. */
  async issue(apiKey: string, now = Date.now()): Promise<{ cookie: string; session: VerifiedSession } | undefined> {
    const principal = await resolveApiKey(this.db, this.adminKey, apiKey);
    if (!principal) return undefined;
    const claims: SessionClaims = {
      k: principal.kind === 'admin' ? 'a' : 't',
      ...(principal.kind === 'tenant' ? { tid: principal.tenantId, kid: principal.keyId } : { akf: this.fingerprint(this.adminKey) }),
      csrf: randomBytes(24).toString('base64url'),
      exp: Math.floor(now / 1000) + SESSION_TTL_SECONDS,
    };
    const payload = Buffer.from(JSON.stringify(claims)).toString('base64url');
    return {
      cookie: `${payload}.${this.sign(payload)}`,
      session: { principal, csrfToken: claims.csrf, expiresAt: new Date(claims.exp * 1000) },
    };
  }

  /** The session a cookie value proves, or undefined (bad signature, expired, key revoked). */
  async verify(value: string, now = Date.now()): Promise<VerifiedSession | undefined> {
    const [payload, signature, extra] = value.split('.');
    if (!payload || !signature || extra !== undefined) return undefined;
    const expected = Buffer.from(this.sign(payload));
    const given = Buffer.from(signature);
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return undefined;
    let claims: SessionClaims;
    try {
      claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as SessionClaims;
    } catch {
      return undefined;
    }
    if (typeof claims.exp !== 'number' || claims.exp * 1000 <= now || typeof claims.csrf !== 'string') return undefined;
    const session = (principal: Principal): VerifiedSession => ({ principal, csrfToken: claims.csrf, expiresAt: new Date(claims.exp * 1000) });
    if (claims.k === 'a') {
      return claims.akf !== undefined && safeEqual(claims.akf, this.fingerprint(this.adminKey)) ? session({ kind: 'admin' }) : undefined;
    }
    if (claims.k !== 't' || typeof claims.tid !== 'string' || typeof claims.kid !== 'string') return undefined;
    const principal: TenantPrincipal = { kind: 'tenant', tenantId: claims.tid, keyId: claims.kid };
    const live = async () => ((await isLiveTenantKey(this.db, principal.tenantId, principal.keyId)) ? principal : undefined);
    // A key digest is hex: this name cannot be one.
    const found = this.tenantKeys ? await this.tenantKeys.resolve(`session:${principal.tenantId}:${principal.keyId}`, live) : await live();
    return found ? session(found) : undefined;
  }

  private sign(payload: string): string {
    return createHmac('sha256', this.key).update(payload).digest('base64url');
  }

  private fingerprint(adminKey: string): string {
    return createHmac('sha256', this.key).update(`admin:${adminKey}`).digest('base64url').slice(0, 32);
  }
}


/** The session cookie's value in a request, if any (a minimal parser: one cookie by name). */
export function sessionCookieOf(req: Request): string | undefined {
  const header = req.get('cookie');
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === SESSION_COOKIE) return part.slice(eq + 1).trim() || undefined;
  }
  return undefined;
}

/** Sets the session cookie: httpOnly, SameSite=Strict, and Secure whenever the request came over TLS. */
export function setSessionCookie(req: Request, res: Response, value: string): void {
  res.cookie(SESSION_COOKIE, value, {
    httpOnly: true,
    sameSite: 'strict',
    secure: req.secure,
    path: '/',
    maxAge: SESSION_TTL_SECONDS * 1000,
  });
}

/** Clears the session cookie (sign-out). */
export function clearSessionCookie(req: Request, res: Response): void {
  res.clearCookie(SESSION_COOKIE, { httpOnly: true, sameSite: 'strict', secure: req.secure, path: '/' });
}

/** Methods that change nothing: no CSRF token needed. */
export function isSafeMethod(method: string): boolean {
  return method === 'GET' || method === 'HEAD' || method === 'OPTIONS';
}
