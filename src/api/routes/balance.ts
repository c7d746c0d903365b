import { randomBytes } from 'node:crypto';
import { Router, type Response } from 'express';
import { z } from 'zod';
import type { ApiContext } from '../context';
import { assertTenantAccess, requireAdmin, tenantParam } from '../auth';
import { ApiError, notFound, type FieldError } from '../errors';
import { paginate, paginationQuery, parseListQuery } from '../pagination';
import { decimalString, noQuery, resourceId } from '../schemas';
import { operation, tenantIdParam } from '../operation';
import { pageOf } from '../responses';
import { findTenant, type TenantRow } from '../../db/tenants';
import { insertCreditGrant, readBalanceView, type CreditGrantRow } from '../../db/credits';
import { normalizeDecimal } from '../../db/numeric';
import { currentPeriodFigures, type CurrentPeriodFigures } from '../../db/usage-read-model';
import { Dec, minorUnits, roundMoney } from '../../domain/decimal';
import { grantActiveAt } from '../../domain/credits';
import { insertPack, readPacks, type PackRow } from '../../db/packs';
import { defaultPackExpiry, packStatus, type Pack } from '../../domain/packs';
import { findMeter } from '../../domain/plan';
import { meterLimit } from '../../domain/limits';
import { isDimensioned } from '../../domain/dimensions';

/** `POST /v1/tenants/{id}/credits` (admin): a grant of prepaid credit in the plan's currency. */
export const createCreditGrantBody = z.strictObject({
  id: resourceId.optional().describe('idempotency key: a grant posted twice with the same id exists once'),
  amount: z.union([decimalString, z.number().finite()]).describe('> 0, in the currency of the tenant\'s plan, at most its minor unit'),
  description: z.string().max(500).optional(),
  expires_at: z.string().datetime({ offset: true }).optional().describe('after now; absent: never expires'),
});

/** `GET /v1/tenants/{id}/credits`: pagination only. */
export const listCreditGrantsQuery = paginationQuery.strict();

const money = z.string().describe('decimal string at the currency\'s minor unit');

export const creditGrant = z
  .object({
    id: z.string(),
    tenant_id: z.string(),
    currency: z.string(),
    amount: money,
    remaining: money.describe('what is left of it (credit applied to invoices is taken from here)'),
    description: z.string().nullable(),
    expires_at: z.string().nullable(),
    status: z.enum(['active', 'spent', 'expired']),
    created_at: z.string(),
  })
  .meta({ id: 'CreditGrant' });

export const balanceView = z
  .object({
    currency: z.string(),
    balance: money.describe('prepaid credit held now: what is left of every active grant'),
    uncharged: money.describe('running cost (base fee included) of every period without a finalized invoice'),
    available: money.describe('balance - uncharged; may be negative'),
    total_charged: money.describe('credit applied to finalized invoices so far (a voided invoice gives its credit back)'),
    low_balance_threshold: money.nullable(),
    estimated_units_remaining: z.record(z.string(), z.number().int().nullable()).describe('per metric, floor(available / the price of its next unit); null for a free unit'),
    days_remaining: z.number().nullable().describe("available / the period's usage cost per day so far; null while that is 0"),
  })
  .meta({ id: 'Balance' });

/** `POST /v1/tenants/{id}/packs` (admin): an add-on pack of one metric. */
export const createPackBody = z.strictObject({
  id: resourceId.optional().describe('idempotency key: a pack posted twice with the same id exists once'),
  metric: z.string().max(64),
  units: z.number().finite().refine((u) => new Dec(u).decimalPlaces() <= 6, 'must have at most 6 decimal places').describe('> 0'),
  price: decimalString.optional().describe("billed once, as its own line, on the invoice of the period it is bought in"),
  purchased_at: z.string().datetime({ offset: true }).optional().describe('default: now'),
  expires_at: z.string().datetime({ offset: true }).optional().describe('after `purchased_at`; default: 3 months after it, clamped like monthly anniversaries'),
});

/** `GET /v1/tenants/{id}/packs`: pagination only. */
export const listPacksQuery = paginationQuery.strict();

export const packView = z
  .object({
    id: z.string(),
    tenant_id: z.string(),
    metric: z.string(),
    units: z.number(),
    remaining: z.number().describe('units not drawn yet (0 once expired)'),
    lost: z.number().describe('units left when it expired: lost'),
    price: money.nullable(),
    currency: z.string(),
    purchased_at: z.string(),
    expires_at: z.string(),
    status: z.enum(['active', 'exhausted', 'expired']),
    created_at: z.string(),
  })
  .meta({ id: 'Pack' });

/** Prepaid credit: grants (admin) and the balance view (admin or own key); add-on packs. */
export function balanceRouter(ctx: ApiContext): Router {
  const router = Router();

  router.post(
    '/tenants/:id/credits',
    operation({
      operationId: 'createCreditGrant',
      tag: 'Usage',
      summary: 'Grant prepaid credit (idempotent on `id`)',
      params: { id: tenantIdParam },
      query: noQuery,
      body: createCreditGrantBody,
      responses: {
        201: { description: 'the grant', schema: creditGrant },
        200: { description: 'a grant with this id exists with the same terms: it is answered, nothing is added', schema: creditGrant },
      },
      problems: {
        409: 'a grant with this id exists with other terms, or the tenant is cancelled (`conflict`)',
        422: 'an amount <= 0 or finer than the currency\'s minor unit, an expiry not after now (`errors[].path` names the field)',
      },
    }),
    requireAdmin,
    async (req, res) => {
      const tenant = await ownTenant(ctx, res, tenantParam(req));
      parseListQuery(noQuery, req);
      const body = createCreditGrantBody.parse(req.body);
      const figures = await openPeriodOf(ctx, tenant);
      const currency = figures.plan.currency;
      const amount = new Dec(body.amount);
      const errors: FieldError[] = [];
      if (!amount.greaterThan(0)) errors.push({ path: 'amount', message: 'must be > 0' });
      else if (amount.decimalPlaces() > minorUnits(currency)) errors.push({ path: 'amount', message: `must have at most ${minorUnits(currency)} decimal places (${currency})` });
      const now = new Date();
      if (body.expires_at !== undefined && Date.parse(body.expires_at) <= now.getTime()) errors.push({ path: 'expires_at', message: 'must be after now' });
      refuseFields(errors);

      const wanted = {
        id: body.id ?? `cg_${randomBytes(8).toString('hex')}`,
        currency,
        amount: amount.toFixed(),
        description: body.description ?? null,
        expires_at: body.expires_at ? new Date(body.expires_at) : null,
      };
      const { grant, created } = await insertCreditGrant(ctx.db, tenant.id, wanted);
      if (!created && !sameTerms(grant, wanted)) {
        throw new ApiError(409, 'conflict', `credit grant ${wanted.id} exists with other terms (amount ${normalizeDecimal(grant.amount)} ${grant.currency})`);
      }
      if (created) {
        req.log?.info({ tenant_id: tenant.id, grant_id: grant.id, amount: wanted.amount }, 'credit granted');
        // The running period judges its balance alerts again (a grant re-arms them). The grant is
        // stored whatever happens here: a run that misses this reads the balance at its next claim.
        await ctx.billing.entitlementsChanged(tenant.id, { granted: true }).catch((err: unknown) => req.log?.warn({ err, tenant_id: tenant.id }, 'grant not signalled'));
      }
      res.status(created ? 201 : 200).json(presentGrant(grant, now));
    },
  );

  router.get(
    '/tenants/:id/credits',
    operation({
      operationId: 'listCreditGrants',
      tag: 'Usage',
      summary: "List the tenant's credit grants",
      params: { id: tenantIdParam },
      query: listCreditGrantsQuery,
      responses: { 200: { description: 'a page of grants', schema: pageOf(creditGrant) } },
    }),
    async (req, res) => {
      const tenant = await ownTenant(ctx, res, tenantParam(req));
      const query = parseListQuery(listCreditGrantsQuery, req);
      const scope = ctx.db('credit_grants').where({ tenant_id: tenant.id });
      const page = await paginate<CreditGrantRow>(scope.clone().select('*'), query, { sort: ['created_at', 'id'], idColumn: 'id', cursorScope: scope });
      const now = new Date();
      res.json({ ...page, data: page.data.map((g) => presentGrant(g, now)) });
    },
  );

  router.get(
    '/tenants/:id/balance',
    operation({
      operationId: 'getBalance',
      tag: 'Usage',
      summary: 'Prepaid balance: credit held, uncharged usage, what is available and what it still buys',
      params: { id: tenantIdParam },
      query: noQuery,
      responses: { 200: { description: 'the balance', schema: balanceView } },
    }),
    async (req, res) => {
      const tenant = await ownTenant(ctx, res, tenantParam(req));
      parseListQuery(noQuery, req);
      const view = await readBalanceView(ctx.db, tenant.id, new Date());
      if (!view) throw notFound(`the balance of tenant ${tenant.id}`);
      res.json(view);
    },
  );

  router.post(
    '/tenants/:id/packs',
    operation({
      operationId: 'createPack',
      tag: 'Usage',
      summary: 'Buy an add-on pack: extra units of one metric, with their own expiry (idempotent on `id`)',
      params: { id: tenantIdParam },
      query: noQuery,
      body: createPackBody,
      responses: {
        201: { description: 'the pack; the running period counts it at once', schema: packView },
        200: { description: 'a pack with this id exists with the same terms: it is answered, nothing is added', schema: packView },
      },
      problems: {
        409: 'a pack with this id exists with other terms, or the tenant is cancelled (`conflict`)',
        422: "units <= 0, a metric the plan lacks or without a limit (`unknown_metric`), an expiry not after the purchase; `errors[].path` names the field",
      },
    }),
    requireAdmin,
    async (req, res) => {
      const tenant = await ownTenant(ctx, res, tenantParam(req));
      parseListQuery(noQuery, req);
      const body = createPackBody.parse(req.body);
      const figures = await openPeriodOf(ctx, tenant);
      const meter = findMeter(figures.plan, body.metric);
      if (meter && isDimensioned(meter)) {
        throw new ApiError(422, 'validation_failed', `${meter.metric} prices by group: a pack could not say which group its units are for`, [
          { path: 'metric', message: 'a meter priced by group (group_by) takes no packs' },
        ]);
      }
      if (!meter || meterLimit(meter, figures.limitOverrides) === undefined) {
        throw new ApiError(422, 'unknown_metric', `the tenant's plan has no metric ${body.metric} with a limit for a pack to extend`, [
          { path: 'metric', message: 'must be a metric of the plan that has a limit' },
        ]);
      }
      const now = new Date();
      const purchasedAt = body.purchased_at ? new Date(body.purchased_at).toISOString() : now.toISOString();
      const expiresAt = body.expires_at ? new Date(body.expires_at).toISOString() : defaultPackExpiry(purchasedAt, tenant.timezone);
      const errors: FieldError[] = [];
      if (!(body.units > 0)) errors.push({ path: 'units', message: 'must be > 0' });
      if (Date.parse(expiresAt) <= Date.parse(purchasedAt)) errors.push({ path: 'expires_at', message: 'must be after purchased_at' });
      if (body.price !== undefined && new Dec(body.price).decimalPlaces() > minorUnits(figures.plan.currency)) {
        errors.push({ path: 'price', message: `must have at most ${minorUnits(figures.plan.currency)} decimal places (${figures.plan.currency})` });
      }
      refuseFields(errors);

      const wanted = {
        id: body.id ?? `pk_${randomBytes(8).toString('hex')}`,
        metric: meter.metric,
        units: new Dec(body.units).toFixed(),
        price: body.price ?? null,
        currency: figures.plan.currency,
        purchased_at: new Date(purchasedAt),
        expires_at: new Date(expiresAt),
      };
      const { pack, created } = await insertPack(ctx.db, tenant.id, wanted);
      if (!created && !samePack(pack, wanted)) throw new ApiError(409, 'conflict', `pack ${wanted.id} exists with other terms`);
      if (created) {
        // The running period counts the pack at once (its effective limit rises); should the run
        // not take it, the purchase is undone, so a retry is clean.
        try {
          await ctx.billing.entitlementsChanged(tenant.id);
        } catch (err) {
          await ctx.db('packs').where({ tenant_id: tenant.id, id: pack.id }).delete();
          throw err;
        }
        req.log?.info({ tenant_id: tenant.id, pack_id: pack.id, metric: pack.metric, units: wanted.units }, 'pack bought');
      }
      const stored = (await readPacks(ctx.db, tenant.id)).find((p) => p.id === pack.id)!;
      res.status(created ? 201 : 200).json(presentPack(pack, stored, now));
    },
  );

  router.get(
    '/tenants/:id/packs',
    operation({
      operationId: 'listPacks',
      tag: 'Usage',
      summary: "List the tenant's add-on packs",
      params: { id: tenantIdParam },
      query: listPacksQuery,
      responses: { 200: { description: 'a page of packs', schema: pageOf(packView) } },
    }),
    async (req, res) => {
      const tenant = await ownTenant(ctx, res, tenantParam(req));
      const query = parseListQuery(listPacksQuery, req);
      const scope = ctx.db('packs').where({ tenant_id: tenant.id });
      const page = await paginate<PackRow>(scope.clone().select('*'), query, { sort: ['created_at', 'id'], idColumn: 'id', cursorScope: scope });
      const packs = new Map((await readPacks(ctx.db, tenant.id)).map((p) => [p.id, p]));
      const now = new Date();
      res.json({ ...page, data: page.data.map((row) => presentPack(row, packs.get(row.id)!, now)) });
    },
  );

  return router;
}

function samePack(stored: PackRow, wanted: Omit<PackRow, 'tenant_id' | 'created_at'>): boolean {
  return (
    stored.metric === wanted.metric &&
    new Dec(stored.units).equals(wanted.units) &&
    (stored.price === null ? wanted.price === null : wanted.price !== null && new Dec(stored.price).equals(wanted.price)) &&
    stored.purchased_at.getTime() === wanted.purchased_at.getTime() &&
    stored.expires_at.getTime() === wanted.expires_at.getTime()
  );
}

function presentPack(row: PackRow, pack: Pack, now: Date) {
  const state = packStatus(pack, now.toISOString());
  return {
    id: row.id,
    tenant_id: row.tenant_id,
    metric: row.metric,
    units: Number(normalizeDecimal(row.units)),
    remaining: Number(state.remaining),
    lost: Number(state.lost),
    price: row.price === null ? null : roundMoney(row.price, row.currency),
    currency: row.currency,
    purchased_at: pack.purchased_at,
    expires_at: pack.expires_at,
    status: state.status,
    created_at: new Date(row.created_at).toISOString(),
  };
}

/** The tenant's open period, or 409: a cancelled tenant takes no credit and no pack. */
async function openPeriodOf(ctx: ApiContext, tenant: TenantRow): Promise<CurrentPeriodFigures> {
  const figures = await currentPeriodFigures(ctx.db, tenant.id);
  if (tenant.status !== 'active' || !figures) throw new ApiError(409, 'conflict', `tenant ${tenant.id} is cancelled`);
  return figures;
}

/** 422 naming every bad field, when there is one. */
function refuseFields(errors: FieldError[]): void {
  if (errors.length > 0) throw new ApiError(422, 'validation_failed', errors.map((e) => `${e.path} ${e.message}`).join('; '), errors);
}

async function ownTenant(ctx: ApiContext, res: Response, tenantId: string): Promise<TenantRow> {
  assertTenantAccess(res, tenantId);
  const tenant = resourceId.safeParse(tenantId).success ? await findTenant(ctx.db, tenantId) : undefined;
  if (!tenant) throw notFound(`tenant ${tenantId}`);
  return tenant;
}

function sameTerms(stored: CreditGrantRow, wanted: { amount: string; currency: string; description: string | null; expires_at: Date | null }): boolean {
  return (
    new Dec(stored.amount).equals(wanted.amount) &&
    stored.currency === wanted.currency &&
    (stored.description ?? null) === wanted.description &&
    (stored.expires_at?.getTime() ?? null) === (wanted.expires_at?.getTime() ?? null)
  );
}

function presentGrant(g: CreditGrantRow, now: Date) {
  const expiresAt = g.expires_at ? new Date(g.expires_at).toISOString() : null;
  const status = !grantActiveAt({ expires_at: expiresAt }, now.toISOString()) ? 'expired' : new Dec(g.remaining).isZero() ? 'spent' : 'active';
  return {
    id: g.id,
    tenant_id: g.tenant_id,
    currency: g.currency,
    amount: roundMoney(g.amount, g.currency),
    remaining: roundMoney(g.remaining, g.currency),
    description: g.description,
    expires_at: expiresAt,
    status,
    created_at: new Date(g.created_at).toISOString(),
  };
}
