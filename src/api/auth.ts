import type { Request, RequestHandler, Response } from 'express';
import type { Db } from '../db/knex';
import { resolveApiKey, type Principal } from '../db/api-keys';
import { ApiError, notFound } from './errors';

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

/** Reads `X-API-Key` (or `Authorization: Bearer`) and resolves who is calling; 401 otherwise. */
export function authenticate(db: Db, adminKey: string): RequestHandler {
  return async (req, res, next) => {
    const key = presentedKey(req);
    if (!key) return next(new ApiError(401, 'unauthorized', 'missing API key (X-API-Key header)'));
    const principal = await resolveApiKey(db, adminKey, key);
    if (!principal) return next(new ApiError(401, 'unauthorized', 'unknown or revoked API key'));
    res.locals.principal = principal;
    req.log = req.log?.child(principal.kind === 'tenant' ? { tenant_id: principal.tenantId } : { principal: 'admin' });
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
