/**
 * Invoice reruns in PostgreSQL: the write of version n+1 rated from the period's stored events,
 * with version n voided, in one transaction (`writeInvoiceRerun`); its preview, which writes
 * nothing (`previewInvoiceRerun`); and the requests stored by `Idempotency-Key`. What a rerun
 * asks, answers and refuses is in `src/invoices/rerun.ts`.
 */
import type { Knex } from 'knex';
import type { Db } from './knex';
import { aggregateStoredUsage } from './usage';
import { findPlanVersion } from './plans';
import { insertInvoiceLines, nextInvoiceNumber, type InvoiceRow } from './invoices';
import { refreshMonthlySummary } from './summaries';
import { applyInvoiceCredit, projectRerunCredit, reverseInvoiceCredit } from './credits';
import { ratePeriodWithPacks, storePeriodDraws } from './packs';
import type { Pack } from '../domain/packs';
import type { RatedPeriod } from '../domain/rating';
import type { PlanVersion } from '../domain/plan';
import { invoiceId } from '../contracts/ids';
import { diffInvoiceLines, type InvoiceLineChange } from '../invoices/changes';
import { EventsPurged, InvoiceRerunRefused, rerunRefusal, rerunResult, type InvoiceRerunInput, type InvoiceRerunResult } from '../invoices/rerun';

/** Throws `EventsPurged` when retention has marked the period's raw events as deleted. */
export async function assertEventsKept(db: Db | Knex.Transaction, tenantId: string, periodStart: string): Promise<void> {
  const period = await db('periods')
    .where({ tenant_id: tenantId, start: periodStart })
    .first<{ events_purged_at: Date | null } | undefined>('events_purged_at');
  if (period?.events_purged_at) throw new EventsPurged(periodStart, period.events_purged_at);
}

/** What a rerun of a version computes: the plan it rates with, the rated period and the per-line changes. */
export interface RerunComputation {
  plan: PlanVersion;
  rated: RatedPeriod;
  /** The tenant's packs with this period's draws recomputed for the rerun (stored by the write only). */
  packs: Pack[];
  changes: InvoiceLineChange[];
}

/**
 * The one computation of a rerun, shared by the write (`writeInvoiceRerun`) and the preview
 * (`previewInvoiceRerun`), so a preview shows exactly what the rerun will write: the period rated
 * from its stored events with `planRef`, and how its lines differ from `source`'s. Refuses a
 * period whose events retention purged (`EventsPurged`); retention marks a period before deleting
 * anything, so reading the mark and the events in one snapshot (or under the period's row lock)
 * never rates a partial set.
 */
export async function computeRerun(
  db: Db | Knex.Transaction,
  source: Pick<InvoiceRow, 'id' | 'tenant_id' | 'period_start' | 'period_end' | 'currency'>,
  planRef: { id: string; version: number },
): Promise<RerunComputation> {
  const periodStart = new Date(source.period_start).toISOString();
  await assertEventsKept(db, source.tenant_id, periodStart);
  const plan = await findPlanVersion(db, planRef.id, planRef.version);
  if (!plan) throw new InvoiceRerunRefused(`plan ${planRef.id} v${planRef.version} is missing`);
  const counters = await aggregateStoredUsage(db, source.tenant_id, periodStart, plan.meters);
  const period = { start: periodStart, end: new Date(source.period_end).toISOString() };
  const { rated, packs } = await ratePeriodWithPacks(db, source.tenant_id, period, plan, counters, 'recompute');
  const sourceLines = await db('invoice_lines')
    .where({ invoice_id: source.id })
    .orderBy('position')
    .select<Array<{ metric: string; description: string; quantity: string; amount: string }>>('metric', 'description', 'quantity', 'amount');
  const changes = diffInvoiceLines({ currency: source.currency, lines: sourceLines }, { currency: plan.currency, lines: rated.lines });
  return { plan, rated, changes, packs };
}

/** A rerun's preview (`"dry_run": true`): the version n+1 it would write and what would change. */
export interface RerunPreview extends RerunComputation {
  id: string;
  version: number;
  /** The prepaid credit n+1 would take (n's given back first), and what would be left to pay. */
  credit: { credits_applied: string; amount_due: string };
}

/**
 * What rerunning `source` with `planRef` would write, without writing anything and without a
 * workflow: `computeRerun` in one REPEATABLE READ snapshot, so the retention mark and the events
 * read agree.
 */
export async function previewInvoiceRerun(db: Db, source: InvoiceRow, planRef: { id: string; version: number }): Promise<RerunPreview> {
  return db.transaction(
    async (trx) => {
      const computed = await computeRerun(trx, source, planRef);
      const periodStart = new Date(source.period_start).toISOString();
      const credit = await projectRerunCredit(trx, { ...source, currency: computed.plan.currency }, computed.rated.total);
      return { ...computed, credit, id: invoiceId(source.tenant_id, periodStart, source.version + 1), version: source.version + 1 };
    },
    { isolationLevel: 'repeatable read', readOnly: true },
  );
}

/**
 * Rates the period from its stored events with `input.plan`, voids version n (`void`,
 * `voided_at`, `replaced_by`) and writes version n+1 finalized (`replaces`, `reason`,
 * `requested_by`, `changes`) with the tenant's next invoice number, in ONE transaction: version n
 * is voided before n+1 is inserted, so the partial unique index (one finalized invoice per tenant
 * and period) holds at every instant, and a failure leaves no gap in the numbers. It holds the
 * period's row lock like `writePeriodInvoice`. Idempotent: once n+1 exists, a retry returns it.
 */
export async function writeInvoiceRerun(db: Db, input: InvoiceRerunInput): Promise<InvoiceRerunResult> {
  return db.transaction(async (trx) => {
    const period = await trx('periods')
      .where({ tenant_id: input.tenant_id, start: input.period_start })
      .forUpdate()
      .first<{ start: Date } | undefined>('start');
    if (!period) throw new InvoiceRerunRefused(`no period ${input.period_start} for tenant ${input.tenant_id}`);
    const id = invoiceId(input.tenant_id, input.period_start, input.version);
    const source = await trx('invoices').where({ id: input.replaces }).forUpdate().first<InvoiceRow | undefined>();
    if (!source || source.tenant_id !== input.tenant_id || new Date(source.period_start).getTime() !== new Date(period.start).getTime()) {
      throw new InvoiceRerunRefused(`invoice ${input.replaces} is not an invoice of tenant ${input.tenant_id} for period ${input.period_start}`);
    }
    const existing = await trx('invoices').where({ id }).first<InvoiceRow | undefined>();
    if (existing) {
      if (existing.replaces !== source.id || existing.status === 'draft') {
        throw new InvoiceRerunRefused(`invoice ${id} exists and is not a rerun of ${source.id}`);
      }
      return rerunResult(existing, source); // a retry after the commit: the same answer
    }
    const refusal = rerunRefusal(source);
    if (refusal) throw new InvoiceRerunRefused(refusal);
    if (source.version + 1 !== input.version) {
      throw new InvoiceRerunRefused(`invoice ${source.id} is version ${source.version}, so its rerun is version ${source.version + 1}, not ${input.version}`);
    }

    const { plan, rated, changes, packs } = await computeRerun(trx, source, input.plan);

    const now = new Date();
    // Void first: the partial unique index allows one finalized invoice per period at any instant.
    await trx('invoices').where({ id: source.id }).update({ status: 'void', voided_at: now, replaced_by: id });
    const row = {
      id,
      tenant_id: input.tenant_id,
      number: await nextInvoiceNumber(trx, input.tenant_id),
      version: input.version,
      status: 'finalized' as const,
      period_start: input.period_start,
      period_end: input.period_end,
      plan_id: plan.id,
      plan_version: plan.version,
      currency: plan.currency,
      subtotal: rated.subtotal,
      total: rated.total,
      replaces: source.id,
      reason: input.reason,
      requested_by: input.requested_by,
      changes: JSON.stringify(changes),
      finalized_at: now,
    };
    await trx('invoices').insert(row);
    await insertInvoiceLines(trx, id, rated.lines);
    await storePeriodDraws(trx, input.tenant_id, input.period_start, packs);
    await refreshMonthlySummary(trx, input.tenant_id, input.period_start);
    // The voided version's credit goes back to its grants, and n+1 takes credit again, judged at
    // n's finalization instant: a rerun that changes nothing charges the same grants the same.
    await reverseInvoiceCredit(trx, source.id, now);
    const credit = await applyInvoiceCredit(trx, { id, tenant_id: input.tenant_id, total: rated.total, currency: plan.currency }, source.finalized_at ?? now);
    await trx('invoices').where({ id }).update(credit);
    return rerunResult({ ...row, changes }, { ...source, status: 'void' });
  });
}

/*
 * Rerun requests by `Idempotency-Key` (`invoice_reruns`): the same key answers the same 202, and
 * a key reused for another request is refused. Requests without a key are not stored here.
 */

/** A rerun request as stored under its key. */
export interface InvoiceRerunRequest {
  idempotency_key: string;
  tenant_id: string;
  /** The version the request asked to rerun. */
  invoice_id: string;
  /** Version n+1: what the 202 answers. */
  new_invoice_id: string;
  workflow_id: string;
  reason: string;
  /** As requested; null: the period's plan. */
  plan_id: string | null;
  /** The plan version resolved when the request was accepted. */
  rerun_plan_id: string;
  rerun_plan_version: number;
  requested_by: string;
}

/** The request stored under `key`, or undefined. */
export async function findInvoiceRerunRequest(db: Db, key: string): Promise<InvoiceRerunRequest | undefined> {
  return db('invoice_reruns').where({ idempotency_key: key }).first<InvoiceRerunRequest | undefined>();
}

/**
 * Stores a request under its key, first writer wins: undefined when stored, else the request
 * another caller stored under the same key (concurrently or before).
 */
export async function storeInvoiceRerunRequest(db: Db, request: InvoiceRerunRequest): Promise<InvoiceRerunRequest | undefined> {
  const stored = await db('invoice_reruns').insert(request).onConflict('idempotency_key').ignore().returning('idempotency_key');
  return stored.length > 0 ? undefined : findInvoiceRerunRequest(db, request.idempotency_key);
}

/** Forgets a key whose request started no rerun of its own, so it does not answer for another. */
export async function forgetInvoiceRerunRequest(db: Db, key: string): Promise<void> {
  await db('invoice_reruns').where({ idempotency_key: key }).delete();
}
