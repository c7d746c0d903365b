import { randomBytes } from 'node:crypto';
import { Router, type Request, type RequestHandler, type Response } from 'express';
import { z } from 'zod';
import type { ApiContext } from '../context';
import { assertTenantAccess, requireAdmin, tenantParam } from '../auth';
import { ApiError, notFound, type FieldError } from '../errors';
import { paginationQuery, parseListQuery } from '../pagination';
import { decimalString, noQuery, resourceId } from '../schemas';
import { operation, tenantIdParam } from '../operation';
import { pageOf } from '../responses';
import { findTenant, type TenantRow } from '../../db/tenants';
import { insertCreditGrant, listCreditGrants, readBalanceView, type CreditGrantRow } from '../../db/credits';
import { normalizeDecimal } from '../../db/numeric';
import { currentPeriodFigures, type CurrentPeriodFigures } from '../../db/usage-read-model';
import { Dec, minorUnits, roundMoney } from '../../domain/decimal';
import { grantActiveAt } from '../../domain/credits';
import { insertPack, listPacks, readPacks, removeUndrawnPack, type PackRow } from '../../db/packs';
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

/**
 * A purchase on a tenant's prepaid account (a credit grant, a pack), judged against its open
 * period: what to store, how a repeat of its id is compared, how the running period hears of it,
 * and how it is answered.
 */
interface Purchase<Row> {
  /** Stores it once per (tenant, id); `created: false` answers the row stored before. */
  store: () => Promise<{ row: Row; created: boolean }>;
  sameTerms: (stored: Row) => boolean;
  /** The 409's detail when the id is stored with other terms. */
  otherTerms: (stored: Row) => string;
  /** After the first store only: tells the tenant's running period. */
  announce: (row: Row) => Promise<void>;
  present: (row: Row) => Promise<object>;
}

/** The request a purchase is judged from: the tenant, its open period, the parsed body. */
interface PurchaseRequest<Body> {
  req: Request;
  tenant: TenantRow;
  figures: CurrentPeriodFigures;
  body: Body;
  now: Date;
}

/**
 * `POST /v1/tenants/{id}/credits` and `…/packs`: admin only, refused for a cancelled tenant,
 * idempotent on `id` (201 when stored, 200 for the same terms again, 409 for other terms).
 */
function purchaseHandlers<B extends z.ZodType, Row>(
  ctx: ApiContext,
  spec: {
    operationId: string;
    summary: string;
    /** What the document calls one: `grant`, `pack`. */
    noun: string;
    body: B;
    schema: z.ZodType;
    created: string;
    refused: string;
    judge: (request: PurchaseRequest<z.infer<B>>) => Purchase<Row>;
  },
): RequestHandler[] {
  return [
    operation({
      operationId: spec.operationId,
      tag: 'Usage',
      summary: spec.summary,
      params: { id: tenantIdParam },
      query: noQuery,
      body: spec.body,
      responses: {
        201: { description: spec.created, schema: spec.schema },
        200: { description: `a ${spec.noun} with this id exists with the same terms: it is answered, nothing is added`, schema: spec.schema },
      },
      problems: {
        409: `a ${spec.noun} with this id exists with other terms, or the tenant is cancelled (\`conflict\`)`,
        422: spec.refused,
      },
    }),
    requireAdmin,
    async (req, res) => {
      const tenant = await ownTenant(ctx, res, tenantParam(req));
      parseListQuery(noQuery, req);
      const body = spec.body.parse(req.body);
      const figures = await openPeriodOf(ctx, tenant);
      const purchase = spec.judge({ req, tenant, figures, body, now: new Date() });
      const { row, created } = await purchase.store();
      if (!created && !purchase.sameTerms(row)) throw new ApiError(409, 'conflict', purchase.otherTerms(row));
      if (created) await purchase.announce(row);
      res.status(created ? 201 : 200).json(await purchase.present(row));
    },
  ];
}

/** Prepaid credit: grants (admin) and the balance view (admin or own key); add-on packs. */
export function balanceRouter(ctx: ApiContext): Router {
  const router = Router();

  router.post(
    '/tenants/:id/credits',
    ...purchaseHandlers<typeof createCreditGrantBody, CreditGrantRow>(ctx, {
      operationId: 'createCreditGrant',
      summary: 'Grant prepaid credit (idempotent on `id`)',
      noun: 'grant',
      body: createCreditGrantBody,
      schema: creditGrant,
      created: 'the grant',
      refused: 'an amount <= 0 or finer than the currency\'s minor unit, an expiry not after now (`errors[].path` names the field)',
      judge: ({ req, tenant, figures, body, now }) => {
        const currency = figures.plan.currency;
        const amount = new Dec(body.amount);
        const errors: FieldError[] = [];
        if (!amount.greaterThan(0)) errors.push({ path: 'amount', message: 'must be > 0' });
        else if (amount.decimalPlaces() > minorUnits(currency)) errors.push({ path: 'amount', message: `must have at most ${minorUnits(currency)} decimal places (${currency})` });
        if (body.expires_at !== undefined && Date.parse(body.expires_at) <= now.getTime()) errors.push({ path: 'expires_at', message: 'must be after now' });
        refuseFields(errors);

        const wanted = {
          id: body.id ?? `cg_${randomBytes(8).toString('hex')}`,
          currency,
          amount: amount.toFixed(),
          description: body.description ?? null,
          expires_at: body.expires_at ? new Date(body.expires_at) : null,
        };
        return {
          store: async () => {
            const { grant, created } = await insertCreditGrant(ctx.db, tenant.id, wanted);
            return { row: grant, created };
          },
          sameTerms: (stored) => sameTerms(stored, wanted),
          otherTerms: (stored) => `credit grant ${wanted.id} exists with other terms (amount ${normalizeDecimal(stored.amount)} ${stored.currency})`,
          announce: async (grant) => {
            req.log?.info({ tenant_id: tenant.id, grant_id: grant.id, amount: wanted.amount }, 'credit granted');
            // The running period judges its balance alerts again (a grant re-arms them). The grant is
            // stored whatever happens here: a run that misses this reads the balance at its next claim.
            await ctx.billing.entitlementsChanged(tenant.id, { granted: true }).catch((err: unknown) => req.log?.warn({ err, tenant_id: tenant.id }, 'grant not signalled'));
          },
          present: async (grant) => presentGrant(grant, now),
        };
      },
    }),
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
      const page = await listCreditGrants(ctx.db, tenant.id, parseListQuery(listCreditGrantsQuery, req));
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
    ...purchaseHandlers<typeof createPackBody, PackRow>(ctx, {
      operationId: 'createPack',
      summary: 'Buy an add-on pack: extra units of one metric, with their own expiry (idempotent on `id`)',
      noun: 'pack',
      body: createPackBody,
      schema: packView,
      created: 'the pack; the running period counts it at once',
      refused: "units <= 0, a metric the plan lacks or without a limit (`unknown_metric`), an expiry not after the purchase; `errors[].path` names the field",
      judge: ({ req, tenant, figures, body, now }) => {
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
        return {
          store: async () => {
            const { pack, created } = await insertPack(ctx.db, tenant.id, wanted);
            return { row: pack, created };
          },
          sameTerms: (stored) => samePack(stored, wanted),
          otherTerms: () => `pack ${wanted.id} exists with other terms`,
          announce: async (pack) => {
            // The running period counts the pack at once (its effective limit rises); should the run
            // not confirm it, the purchase is undone, so a retry is clean. A run that has drawn from
            // the pack meanwhile took it: the purchase stands.
            try {
              await ctx.billing.entitlementsChanged(tenant.id);
            } catch (err) {
              if (await removeUndrawnPack(ctx.db, tenant.id, pack.id)) {
                ctx.billing.rereadAfterUndo(tenant.id, 'entitlements', (e) => req.log?.warn({ err: e, tenant_id: tenant.id }, 'undone pack not re-read by the run'));
                throw err;
              }
              req.log?.warn({ err, tenant_id: tenant.id, pack_id: pack.id }, 'the run did not confirm the pack, but has drawn from it: the purchase stands');
            }
            req.log?.info({ tenant_id: tenant.id, pack_id: pack.id, metric: pack.metric, units: wanted.units }, 'pack bought');
          },
          present: async (pack) => presentPack(pack, (await readPacks(ctx.db, tenant.id)).find((p) => p.id === pack.id)!, now),
        };
      },
    }),
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
      const page = await listPacks(ctx.db, tenant.id, parseListQuery(listPacksQuery, req));
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
