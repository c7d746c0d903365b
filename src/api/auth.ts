import type { Request, RequestHandler, Response } from 'express';
import type { Db } from '../db/knex';
import { resolveApiKey, type Principal } from '../db/api-keys';
import { ApiError, notFound } from './errors';

/** Reads `X-API-Key` (or `Authorization: Bearer`) and resolves who is calling; 401 otherwise. */
export function authenticate(db: Db, adminKey: string): RequestHandler {
  return async (req, res, next) => {
    const header = req.get('x-api-key') ?? req.get('authorization')?.replace(/^Bearer\s+/i, '');
    if (!header) return next(new ApiError(401, 'unauthorized', 'missing API key (X-API-Key header)'));
    const principal = await resolveApiKey(db, adminKey, header.trim());
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
