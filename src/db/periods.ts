import { inOneSnapshot, type Db } from './knex';
import { invoiceTotalsOfPeriods, type InvoiceTotals, type PeriodBounds, type PeriodRow } from './invoices';
import { readPeriodCounters } from './ledger';
import type { PeriodCounter } from '../contracts/ledger';
import { keysetPage, type Page, type PageRequest } from './pagination';
import { findPlanVersion } from './plans';
import type { PlanVersion } from '../domain/plan';

/** The reads of a tenant's billing periods that the API answers from (`periods`). */

/** The tenant's latest `count` periods' bounds, newest first: the open one, then the one before it. */
export async function latestPeriods(db: Db, tenantId: string, count: number): Promise<PeriodBounds[]> {
  return db('periods')
    .where({ tenant_id: tenantId })
    .orderBy('start', 'desc')
    .limit(count)
    .select<PeriodBounds[]>('start', 'end', 'status', 'grace_ends_at', 'plan_id', 'plan_version');
}

/**
 * Tenants whose open period ended before `endedBefore`, oldest first: a tenant's run rolls its
 * period over at the end, so one still open long after it has most likely no run (it ended
 * unexpectedly, and no message came since to start one). Uses the partial index on open periods.
 */
export async function tenantsPastPeriodEnd(db: Db, endedBefore: Date, limit: number): Promise<string[]> {
  const rows = await db('periods').where('status', 'open').andWhere('end', '<', endedBefore).orderBy('end').limit(limit).select<Array<{ tenant_id: string }>>('tenant_id');
  return rows.map((r) => r.tenant_id);
}

/** The tenant's newest period: the open one, or a cancelled tenant's final one. */
export async function latestPeriod(db: Db, tenantId: string): Promise<PeriodBounds | undefined> {
  return (await latestPeriods(db, tenantId, 1))[0];
}

/** The plan version a period of the tenant bills with, when the period exists. */
export async function periodPlanRef(db: Db, tenantId: string, start: Date): Promise<{ id: string; version: number } | undefined> {
  const period = await db('periods').where({ tenant_id: tenantId, start }).first<Pick<PeriodRow, 'plan_id' | 'plan_version'> | undefined>('plan_id', 'plan_version');
  return period && { id: period.plan_id, version: period.plan_version };
}

/**
 * The plans a tenant's limits and alert rules may name: the running period's version, and the
 * latest version of the plan its next period opens on (`nextPlanId`, default the tenant's plan).
 */
export async function runningAndNextPlans(db: Db, tenant: { id: string; plan_id: string }, nextPlanId?: string): Promise<PlanVersion[]> {
  const current = await latestPeriod(db, tenant.id);
  const plans = [
    current ? await findPlanVersion(db, current.plan_id, current.plan_version) : undefined,
    await findPlanVersion(db, nextPlanId ?? tenant.plan_id),
  ];
  return plans.filter((p): p is PlanVersion => p !== undefined);
}

/** A page of a tenant's periods with what `GET …/periods` shows beside each. */
export interface PeriodsPage {
  page: Page<PeriodRow>;
  /** Every invoice version of the page's periods, oldest version first. */
  invoices: InvoiceTotals[];
  /** The page's periods' counters, from the read model. */
  counters: PeriodCounter[];
}

/**
 * A page of the tenant's periods, newest first, with their invoices and counters, in one snapshot:
 * read statement by statement, a finalization committing in between would show a period still
 * closed beside its finalized invoice. `parseId` maps a period's public id to its start
 * (undefined: not a period id of this tenant).
 */
export function listPeriods(db: Db, tenantId: string, page: PageRequest, parseId: (id: string) => string | undefined): Promise<PeriodsPage> {
  return inOneSnapshot(db, async (trx) => {
    const periods = await keysetPage<PeriodRow>(trx('periods').where({ tenant_id: tenantId }).select('*'), page, { sort: 'start', idColumn: 'start', parseId });
    const starts = periods.data.map((p) => p.start);
    return { page: periods, invoices: await invoiceTotalsOfPeriods(trx, tenantId, starts), counters: await readPeriodCounters(trx, tenantId, starts) };
  });
}
