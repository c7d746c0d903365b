import type { Knex } from 'knex';
import { inOneSnapshot, type Db } from './knex';
import { keysetPage, type Page, type PageRequest } from './pagination';
import { normalizeDecimal } from './numeric';
import { allocateCredit, amountDue, buildBalanceView, creditBalance, lowBalanceThreshold, type BalanceView, type CreditGrant } from '../domain/credits';
import { readPeriodCounters } from './ledger';
import { findPlanVersion } from './plans';
import { counterFromAggregates } from '../domain/aggregation';
import { packCharges, rateWithPacks } from '../domain/packs';
import { readPacks } from './packs';
import { aggregateStoredGroups } from './dimensions';
import type { BalanceAlertState, BalanceFacts } from '../contracts/ledger';
import { BALANCE_DEPLETED, BALANCE_LOW } from '../contracts/ids';
import { Dec, toDecimalString } from '../domain/decimal';

/**
 * Prepaid credit as PostgreSQL holds it (`credit_grants`, `credit_applications`). Credit is taken
 * only inside an invoice's finalization transaction and given back only inside the rerun that
 * voids it, so the balance and the invoices agree to the cent at every commit.
 */

/** A grant row as pg returns it (decimals as strings). */
export interface CreditGrantRow {
  tenant_id: string;
  id: string;
  currency: string;
  amount: string;
  remaining: string;
  description: string | null;
  expires_at: Date | null;
  created_at: Date;
}

/** A grant to store: `id` is the client's idempotency key. */
export interface NewCreditGrant {
  id: string;
  currency: string;
  amount: string;
  description: string | null;
  expires_at: Date | null;
}

/**
 * Stores a grant once per (tenant, id): the same id again answers the stored grant with
 * `created: false` (whatever the second body said; the caller compares).
 */
export async function insertCreditGrant(db: Db, tenantId: string, grant: NewCreditGrant): Promise<{ grant: CreditGrantRow; created: boolean }> {
  const inserted = await db('credit_grants')
    .insert({ tenant_id: tenantId, ...grant, remaining: grant.amount })
    .onConflict(['tenant_id', 'id'])
    .ignore()
    .returning<CreditGrantRow[]>('*');
  if (inserted[0]) return { grant: inserted[0], created: true };
  const stored = await db('credit_grants').where({ tenant_id: tenantId, id: grant.id }).first<CreditGrantRow>();
  return { grant: stored, created: false };
}

/** A page of the tenant's grants, newest first. */
export async function listCreditGrants(db: Db, tenantId: string, page: PageRequest): Promise<Page<CreditGrantRow>> {
  const scope = db('credit_grants').where({ tenant_id: tenantId });
  return keysetPage<CreditGrantRow>(scope.clone().select('*'), page, { sort: ['created_at', 'id'], idColumn: 'id', cursorScope: scope });
}

/** The grant as allocation reads it. */
function asGrant(row: CreditGrantRow): CreditGrant {
  return {
    id: row.id,
    remaining: normalizeDecimal(row.remaining),
    expires_at: row.expires_at ? new Date(row.expires_at).toISOString() : null,
    created_at: new Date(row.created_at).toISOString(),
  };
}

/** What the tenant holds now in `currency`: the remainders of its active grants, and everything ever charged to them. */
export async function readBalance(db: Db | Knex.Transaction, tenantId: string, currency: string, at: Date): Promise<{ balance: string; total_charged: string }> {
  const grants = await db('credit_grants').where({ tenant_id: tenantId, currency }).select<CreditGrantRow[]>('*');
  const charged = await db('credit_applications as a')
    .join('credit_grants as g', function joinGrant() {
      this.on('g.tenant_id', '=', 'a.tenant_id').andOn('g.id', '=', 'a.grant_id');
    })
    .where({ 'a.tenant_id': tenantId, 'g.currency': currency })
    .whereNull('a.reversed_at')
    .sum<{ total: string | null }>('a.amount as total')
    .first();
  return { balance: creditBalance(grants.map(asGrant), at.toISOString()), total_charged: normalizeDecimal(charged?.total ?? '0') };
}

/**
 * Applies the tenant's credit to a finalized invoice, inside the finalization's transaction:
 * the grants are locked, credit is taken in spending order (`allocateCredit`), never above the
 * total, and recorded per grant. Credit active at `at` only. Answers `credits_applied` and
 * `amount_due`, which the caller stores on the invoice.
 */
export async function applyInvoiceCredit(
  trx: Knex.Transaction,
  invoice: { id: string; tenant_id: string; total: string; currency: string },
  at: Date,
): Promise<{ credits_applied: string; amount_due: string }> {
  const rows = await trx('credit_grants')
    .where({ tenant_id: invoice.tenant_id, currency: invoice.currency })
    .where('remaining', '>', 0)
    .forUpdate()
    .select<CreditGrantRow[]>('*');
  const { allocations, applied } = allocateCredit(rows.map(asGrant), invoice.total, at.toISOString());
  for (const allocation of allocations) {
    await trx('credit_grants')
      .where({ tenant_id: invoice.tenant_id, id: allocation.grant_id })
      .update({ remaining: trx.raw('remaining - ?::numeric', [allocation.amount]) });
    await trx('credit_applications').insert({
      tenant_id: invoice.tenant_id,
      grant_id: allocation.grant_id,
      invoice_id: invoice.id,
      amount: allocation.amount,
      applied_at: at,
    });
  }
  return { credits_applied: toDecimalString(applied), amount_due: amountDue(invoice.total, applied, invoice.currency) };
}

/** Gives a voided invoice's credit back to the grants it came from (inside the voiding transaction). */
export async function reverseInvoiceCredit(trx: Knex.Transaction, invoiceId: string, at: Date): Promise<string> {
  const applied = await trx('credit_applications')
    .where({ invoice_id: invoiceId })
    .whereNull('reversed_at')
    .forUpdate()
    .select<Array<{ id: string; tenant_id: string; grant_id: string; amount: string }>>('id', 'tenant_id', 'grant_id', 'amount');
  for (const row of applied) {
    await trx('credit_grants')
      .where({ tenant_id: row.tenant_id, id: row.grant_id })
      .update({ remaining: trx.raw('remaining + ?::numeric', [row.amount]) });
    await trx('credit_applications').where({ id: row.id }).update({ reversed_at: at });
  }
  return toDecimalString(applied.reduce((sum, r) => sum.plus(r.amount), new Dec(0)));
}

/** The credit each grant gave to an invoice (what the invoice and its PDF show). */
export async function invoiceCreditLines(db: Db | Knex.Transaction, invoiceId: string): Promise<Array<{ grant_id: string; amount: string; reversed: boolean }>> {
  const rows = await db('credit_applications')
    .where({ invoice_id: invoiceId })
    .orderBy('id')
    .select<Array<{ grant_id: string; amount: string; reversed_at: Date | null }>>('grant_id', 'amount', 'reversed_at');
  return rows.map((r) => ({ grant_id: r.grant_id, amount: normalizeDecimal(r.amount), reversed: r.reversed_at !== null }));
}

/**
 * `GET …/balance` as PostgreSQL holds it now: the active grants, and the running cost (rated like
 * the invoice, base fee included) of every period without a finalized invoice: the open period and
 * the closed ones still in grace. Undefined when the tenant has no period.
 */
export function readBalanceView(db: Db, tenantId: string, at: Date): Promise<BalanceView | undefined> {
  return inOneSnapshot(db, (trx) => balanceViewIn(trx, tenantId, at));
}

async function balanceViewIn(db: Knex.Transaction, tenantId: string, at: Date): Promise<BalanceView | undefined> {
  const periods = await db('periods')
    .where({ tenant_id: tenantId })
    .whereNot({ status: 'invoiced' })
    .orderBy('start')
    .select<Array<{ start: Date; end: Date; status: string; plan_id: string; plan_version: number }>>('start', 'end', 'status', 'plan_id', 'plan_version');
  const current = periods.find((p) => p.status === 'open') ?? periods[periods.length - 1];
  if (!current) return undefined;
  const counters = await readPeriodCounters(db, tenantId, periods.map((p) => p.start));
  const packs = await readPacks(db, tenantId);
  const rated = await Promise.all(
    periods.map(async (p) => {
      const plan = await findPlanVersion(db, p.plan_id, p.plan_version);
      if (!plan) throw new Error(`plan ${p.plan_id} v${p.plan_version} is missing`);
      const start = p.start.toISOString();
      const values: Record<string, string> = {};
      for (const meter of plan.meters) values[meter.metric] = counterFromAggregates(counters.find((c) => c.period_start === start && c.metric === meter.metric), meter.aggregation);
      const bounds = { start, end: p.end.toISOString() };
      const groups = await aggregateStoredGroups(db, tenantId, start, plan.meters, { countedOnly: true });
      return { period: p, plan, values, rated: rateWithPacks(plan, values, packs, start, packCharges(packs, bounds), groups) };
    }),
  );
  const now = rated.find((r) => r.period === current)!;
  const tenant = await db('tenants').where({ id: tenantId }).first<{ low_balance_threshold: string | null }>('low_balance_threshold');
  const stored = await readBalance(db, tenantId, now.plan.currency, at);
  return buildBalanceView({
    currency: now.plan.currency,
    balance: stored.balance,
    total_charged: stored.total_charged,
    unchargedTotals: rated.filter((r) => r.plan.currency === now.plan.currency).map((r) => r.rated.total),
    lowBalanceThreshold: lowBalanceThreshold(tenant?.low_balance_threshold ?? null, now.plan),
    meters: now.plan.meters,
    values: now.values,
    usageCost: now.rated.usage,
    period: { start: current.start.toISOString(), end: current.end.toISOString() },
    asOf: at.toISOString(),
  });
}

/**
 * The prepaid facts a tenant's ledger decides from (`BalanceFacts`), in one read: the credit held
 * now in the current plan's currency, the periods not charged yet, and the tenant's own threshold,
 * all as of one commit ({@link inOneSnapshot}).
 */
export function readBalanceFacts(db: Db | Knex.Transaction, tenantId: string, at: Date): Promise<BalanceFacts> {
  return inOneSnapshot(db, (trx) => balanceFactsIn(trx, tenantId, at));
}

async function balanceFactsIn(db: Knex.Transaction, tenantId: string, at: Date): Promise<BalanceFacts> {
  const periods = await db('periods')
    .where({ tenant_id: tenantId })
    .whereNot({ status: 'invoiced' })
    .orderBy('start')
    .select<Array<{ start: Date; plan_id: string; plan_version: number }>>('start', 'plan_id', 'plan_version');
  const latest = periods[periods.length - 1];
  const plan = latest ? await findPlanVersion(db, latest.plan_id, latest.plan_version) : undefined;
  const tenant = await db('tenants').where({ id: tenantId }).first<{ low_balance_threshold: string | null } | undefined>('low_balance_threshold');
  const { balance } = plan ? await readBalance(db, tenantId, plan.currency, at) : { balance: '0' };
  return {
    balance,
    uncharged_periods: periods.map((p) => p.start.toISOString()),
    low_balance_threshold: tenant?.low_balance_threshold == null ? null : normalizeDecimal(tenant.low_balance_threshold),
  };
}

/**
 * The balance alerts' state as the stored alerts and grants tell it (a ledger rebuilt from
 * PostgreSQL): how many of each kind fired, and a kind is armed again when it never fired or a
 * grant came after its latest firing (the ledger re-checks the level at its next read).
 */
export async function readBalanceAlertState(db: Db | Knex.Transaction, tenantId: string): Promise<{ low: BalanceAlertState; depleted: BalanceAlertState }> {
  const latestGrant = await db('credit_grants').where({ tenant_id: tenantId }).max<{ at: Date | null }>('created_at as at').first();
  const state = async (subject: string): Promise<BalanceAlertState> => {
    const row = await db('alerts')
      .where({ tenant_id: tenantId, subject })
      .max<{ fired: string | null; at: Date | null }>({ fired: 'threshold', at: 'fired_at' })
      .first();
    const fired = row?.fired ? Number(normalizeDecimal(row.fired)) : 0;
    const armed = fired === 0 || (latestGrant?.at != null && row?.at != null && latestGrant.at > row.at);
    return { fired, armed };
  };
  return { low: await state(BALANCE_LOW), depleted: await state(BALANCE_DEPLETED) };
}

/**
 * The credit a rerun of `source` would apply to a total, without writing: `source`'s credit given
 * back to its grants, then allocated again as `writeInvoiceRerun` does (judged at `source`'s
 * finalization instant). What a rerun preview shows.
 */
export async function projectRerunCredit(
  db: Db | Knex.Transaction,
  source: { id: string; tenant_id: string; currency: string; finalized_at: Date | null },
  total: string,
): Promise<{ credits_applied: string; amount_due: string }> {
  const rows = await db('credit_grants').where({ tenant_id: source.tenant_id, currency: source.currency }).select<CreditGrantRow[]>('*');
  const back = await db('credit_applications').where({ invoice_id: source.id }).whereNull('reversed_at').select<Array<{ grant_id: string; amount: string }>>('grant_id', 'amount');
  const grants = rows.map((row) => {
    const grant = asGrant(row);
    const returned = back.filter((b) => b.grant_id === row.id).reduce((sum, b) => sum.plus(b.amount), new Dec(0));
    return { ...grant, remaining: toDecimalString(returned.plus(grant.remaining)) };
  });
  const { applied } = allocateCredit(grants, total, (source.finalized_at ?? new Date()).toISOString());
  return { credits_applied: applied, amount_due: amountDue(total, applied, source.currency) };
}
