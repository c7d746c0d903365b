import type { Request, RequestHandler, Response } from 'express';
import type { Db } from '../db/knex';
import { findTenantKey, hashApiKey, isAdminKey, safeEqual, type Principal } from '../db/api-keys';
import type { TenantKeyCache } from './tenant-key-cache';
import { ApiError, notFound } from './errors';
import { identifyCaller } from './request-log';
import { CSRF_HEADER, isSafeMethod, sessionCookieOf, type DashboardSessions } from './dashboard/session';

/**
 * The key a request carries: `X-API-Key`, else `Authorization: Bearer`. A header that is empty
 * or blank counts as absent (proxies and clients send `X-API-Key:` for an unset variable), so it
 * does not hide a valid bearer token beside it.
 */
export function presentedKey(req: Request): string | undefined {
  const apiKey = req.get('x-api-key')?.trim();
  if (apiKey) return apiKey;
  return req.get('authorization')?.replace(/^Bearer\s+/i, '').trim() || undefined;
}

/**
 * Reads `X-API-Key` (or `Authorization: Bearer`) and resolves who is calling; 401 otherwise.
 * Without a key, a dashboard session cookie speaks for the key that signed in, with the same
 * permissions; a state-changing request on a session must echo its CSRF token in `X-CSRF-Token`
 * (a key in a header needs none: another site cannot make a browser send one).
 */
export function authenticate(db: Db, adminKey: string, sessions?: DashboardSessions, tenantKeys?: TenantKeyCache): RequestHandler {
  const resolve = async (key: string): Promise<Principal | undefined> => {
    if (isAdminKey(adminKey, key)) return { kind: 'admin' };
    const digest = hashApiKey(key);
    return tenantKeys ? tenantKeys.resolve(digest, (d) => findTenantKey(db, d)) : findTenantKey(db, digest);
  };
  return async (req, res, next) => {
    const key = presentedKey(req);
    const cookie = key || !sessions ? undefined : sessionCookieOf(req);
    if (cookie && sessions) {
      const session = await sessions.verify(cookie);
      if (!session) return next(new ApiError(401, 'unauthorized', 'the dashboard session expired or its key was revoked: sign in again'));
      if (!isSafeMethod(req.method) && !safeEqual(req.get(CSRF_HEADER) ?? '', session.csrfToken)) {
        return next(new ApiError(403, 'forbidden', 'missing or wrong CSRF token (X-CSRF-Token header)'));
      }
      res.locals.principal = session.principal;
      res.locals.session = session;
      identifyCaller(req, session.principal.kind === 'tenant' ? { tenant_id: session.principal.tenantId, session: true } : { principal: 'admin', session: true });
      return next();
    }
    if (!key) return next(new ApiError(401, 'unauthorized', 'missing API key (X-API-Key header)'));
    const principal = await resolve(key);
    if (!principal) return next(new ApiError(401, 'unauthorized', 'unknown or revoked API key'));
    res.locals.principal = principal;
    identifyCaller(req, principal.kind === 'tenant' ? { tenant_id: principal.tenantId } : { principal: 'admin' });
    next();
  };
}

/** The caller resolved by `authenticate`. */
export function principalOf(res: Response): Principal {
  return res.locals.principal as Principal;
}

/** Admin-only routes answer 403 to a tenant key. */
export const requireAdmin: RequestHandler = (_req, res, next) => {
  if (principalOf(res).kind !== 'admin') return next(new ApiError(403, 'forbidden', 'this route needs the admin key'));
  next();
};

/** A tenant key sees only its own tenant: anything else is 404, as if it did not exist. */
export function assertTenantAccess(res: Response, tenantId: string): void {
  const principal = principalOf(res);
  if (principal.kind === 'tenant' && principal.tenantId !== tenantId) throw notFound(`tenant ${tenantId}`);
}

/** The `:id` route parameter, typed. */
export function tenantParam(req: Request): string {
  return String(req.params.id);
}
