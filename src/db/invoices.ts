import type { Knex } from 'knex';
import type { Db } from './knex';
import { aggregateStoredUsage } from './usage';
import { lockTenantLedger } from './ingest';
import { findPlanVersion } from './plans';
import { invoiceId } from '../contracts/ids';
import type { InvoiceRef, InvoiceSummary } from '../contracts/invoices';
import type { InvoiceLineDraft } from '../domain/rating';
import type { InvoiceLineChange } from '../invoices/changes';
import { applyInvoiceCredit } from './credits';
import { ratePeriodWithPacks, storePeriodDraws } from './packs';
import { refreshMonthlySummary } from './summaries';
import { keysetPage, type Page, type PageRequest } from './pagination';

/** Writes an invoice's rated lines in their order (shared by period invoices and reruns). */
export async function insertInvoiceLines(trx: Knex.Transaction, invoiceId: string, lines: InvoiceLineDraft[]): Promise<void> {
  if (lines.length === 0) return;
  await trx('invoice_lines').insert(
    lines.map((line, position) => ({
      invoice_id: invoiceId,
      position,
      metric: line.metric,
      description: line.description,
      quantity: line.quantity,
      amount: line.amount,
      tiers: line.tiers ? JSON.stringify(line.tiers) : null,
      kind: line.kind ?? null,
      pack_draws: line.pack_draws ? JSON.stringify(line.pack_draws) : null,
      group_values: line.group ? JSON.stringify(line.group) : null,
    })),
  );
}

/**
 * Takes the tenant's next invoice number, inside the transaction that finalizes the invoice: the
 * tenant's row stays locked until it commits, so numbers are sequential and a rollback leaves no gap.
 */
export async function nextInvoiceNumber(trx: Knex.Transaction, tenantId: string): Promise<number> {
  const [row] = await trx('tenants')
    .where({ id: tenantId })
    .increment('last_invoice_number', 1)
    .returning<Array<{ last_invoice_number: number }>>('last_invoice_number');
  return row!.last_invoice_number;
}

/**
 * A row of `periods` as PostgreSQL returns it. One definition for every reader (invoicing, the
 * API's period list, the chaos checks), so a column change is made once.
 */
export interface PeriodRow {
  tenant_id: string;
  start: Date;
  end: Date;
  plan_id: string;
  plan_version: number;
  status: 'open' | 'closed' | 'invoiced';
  /** The snapshot taken at close or invoicing: `{ metric: "decimal" }`. */
  counters: Record<string, string> | null;
  grace_ends_at: Date | null;
  closed_at: Date | null;
  created_at: Date;
}

/** What the ledger reads of a period: its bounds, state, grace and plan version. */
export type PeriodBounds = Pick<PeriodRow, 'start' | 'end' | 'status' | 'grace_ends_at' | 'plan_id' | 'plan_version'>;

/**
 * A row of `invoices` as PostgreSQL returns it (money columns are decimal strings). One definition
 * for every reader (invoicing, reruns, the API, the chaos checks); take a `Pick` where only a
 * few columns are selected.
 */
export interface InvoiceRow {
  id: string;
  tenant_id: string;
  /** Sequential per tenant, assigned at finalization. */
  number: number | null;
  version: number;
  status: 'draft' | 'finalized' | 'void';
  period_start: Date;
  period_end: Date;
  plan_id: string;
  plan_version: number;
  currency: string;
  subtotal: string;
  total: string;
  /** Prepaid credit applied at finalization (0 on drafts), and `total - credits_applied`. */
  credits_applied: string;
  amount_due: string | null;
  /** On a rerun's version: the id of the version it voided; `replaced_by` is the other way. */
  replaces: string | null;
  replaced_by: string | null;
  reason: string | null;
  requested_by: string | null;
  /** On a rerun's version: how its lines differ from the version it replaced. */
  changes: InvoiceLineChange[] | null;
  created_at: Date;
  finalized_at: Date | null;
  voided_at: Date | null;
}

/** A row of `invoice_lines` as PostgreSQL returns it (decimals as strings, jsonb parsed). */
export interface InvoiceLineRow {
  invoice_id: string;
  position: number;
  metric: string;
  description: string;
  quantity: string;
  amount: string;
  tiers: unknown;
  kind: string | null;
  pack_draws: unknown;
  group_values: unknown;
}

/** An invoice version with its lines in their order. */
export interface InvoiceWithLines {
  invoice: InvoiceRow;
  lines: InvoiceLineRow[];
}

/** The columns of an invoice version that a period's totals show. */
export type InvoiceTotals = Pick<InvoiceRow, 'id' | 'period_start' | 'version' | 'status' | 'subtotal' | 'total' | 'currency'>;

/** One invoice version, or undefined. */
export async function findInvoice(db: Db, id: string): Promise<InvoiceRow | undefined> {
  return db('invoices').where({ id }).first<InvoiceRow | undefined>();
}

/** One invoice version with its lines, or undefined. */
export async function findInvoiceWithLines(db: Db, id: string): Promise<InvoiceWithLines | undefined> {
  const invoice = await findInvoice(db, id);
  if (!invoice) return undefined;
  return { invoice, lines: await db('invoice_lines').where({ invoice_id: invoice.id }).orderBy('position').select<InvoiceLineRow[]>('*') };
}

/** A page of the tenant's invoices with their lines: newest period first, within a period the newest version (a rerun) first. */
export async function listTenantInvoices(db: Db, tenantId: string, page: PageRequest): Promise<Page<InvoiceWithLines>> {
  const invoices = await keysetPage<InvoiceRow>(db('invoices').where({ tenant_id: tenantId }).select('*'), page, { sort: ['period_start', 'version'], idColumn: 'id' });
  const ids = invoices.data.map((row) => row.id);
  const lines = ids.length === 0 ? [] : await db('invoice_lines').whereIn('invoice_id', ids).orderBy(['invoice_id', 'position']).select<InvoiceLineRow[]>('*');
  const byInvoice = new Map<string, InvoiceLineRow[]>();
  for (const line of lines) {
    const list = byInvoice.get(line.invoice_id) ?? [];
    list.push(line);
    byInvoice.set(line.invoice_id, list);
  }
  return { ...invoices, data: invoices.data.map((invoice) => ({ invoice, lines: byInvoice.get(invoice.id) ?? [] })) };
}

/** The totals of every invoice version of the tenant's periods starting at `starts`, oldest version first. */
export async function invoiceTotalsOfPeriods(db: Db, tenantId: string, starts: Date[]): Promise<InvoiceTotals[]> {
  if (starts.length === 0) return [];
  return db('invoices')
    .where({ tenant_id: tenantId })
    .whereIn('period_start', starts)
    .orderBy('version', 'asc')
    .select<InvoiceTotals[]>('id', 'period_start', 'version', 'status', 'subtotal', 'total', 'currency');
}

/**
 * Rates a period from its stored events and writes the invoice version `ref.version` as a draft
 * or finalized. Runs in one transaction holding the period's row lock, so late events and the
 * finalization cannot interleave; a finalized invoice is never rewritten (retries return it).
 */
export async function writePeriodInvoice(db: Db, ref: InvoiceRef, finalize: boolean): Promise<InvoiceSummary> {
  return db.transaction(async (trx) => {
    // Exclusive: no batch is being placed into the period while it is rated.
    await lockTenantLedger(trx, ref.tenant_id, 'exclusive');
    const period = await trx('periods')
      .where({ tenant_id: ref.tenant_id, start: ref.period_start })
      .forUpdate()
      .first<PeriodRow | undefined>();
    if (!period) throw new Error(`no period ${ref.period_start} for tenant ${ref.tenant_id}`);
    const id = invoiceId(ref.tenant_id, ref.period_start, ref.version);
    const existing = await trx('invoices').where({ id }).first<InvoiceRow | undefined>();
    if (existing && existing.status !== 'draft') return summarize(trx, existing);

    const plan = await findPlanVersion(trx, period.plan_id, period.plan_version);
    if (!plan) throw new Error(`plan ${period.plan_id} v${period.plan_version} is missing`);
    const counters = await aggregateStoredUsage(trx, ref.tenant_id, ref.period_start, plan.meters);
    const bounds = { start: period.start.toISOString(), end: period.end.toISOString() };
    const { rated, packs } = await ratePeriodWithPacks(trx, ref.tenant_id, bounds, plan, counters, 'top-up', { forUpdate: finalize });
    // Finalized, the period's pack draws are what its invoice says: the ledger draws no more for it.
    if (finalize) await storePeriodDraws(trx, ref.tenant_id, bounds.start, packs);
    const now = new Date();
    const number = finalize ? await nextInvoiceNumber(trx, ref.tenant_id) : null;
    const invoice = {
      id,
      tenant_id: ref.tenant_id,
      number,
      version: ref.version,
      status: finalize ? 'finalized' : 'draft',
      period_start: period.start,
      period_end: period.end,
      plan_id: plan.id,
      plan_version: plan.version,
      currency: plan.currency,
      subtotal: rated.subtotal,
      total: rated.total,
      credits_applied: '0',
      amount_due: rated.total,
      finalized_at: finalize ? now : null,
    };
    await trx('invoices').insert(invoice).onConflict('id').merge();
    // Credit is taken in the same transaction that finalizes: the balance and the invoice agree at every commit.
    if (finalize) {
      const credit = await applyInvoiceCredit(trx, { id, tenant_id: ref.tenant_id, total: rated.total, currency: plan.currency }, now);
      await trx('invoices').where({ id }).update(credit);
    }
    await trx('invoice_lines').where({ invoice_id: id }).delete();
    await insertInvoiceLines(trx, id, rated.lines);
    if (finalize) await refreshMonthlySummary(trx, ref.tenant_id, ref.period_start);
    // Finalized before its grace ended (finance's `finalize`, which a rollover that kept its grace
    // passes on), the period's grace ends now: it refuses late events from here on, and says so.
    await trx('periods')
      .where({ tenant_id: ref.tenant_id, start: ref.period_start })
      .update({ counters: JSON.stringify(counters), ...(finalize ? { status: 'invoiced', grace_ends_at: trx.raw('LEAST(grace_ends_at, ?)', [now]) } : {}) });
    return { invoice_id: id, number, status: invoice.status as InvoiceSummary['status'], total: rated.total, currency: plan.currency, lines: rated.lines.length };
  });
}

async function summarize(trx: Knex.Transaction, row: InvoiceRow): Promise<InvoiceSummary> {
  const [{ count }] = (await trx('invoice_lines').where({ invoice_id: row.id }).count({ count: '*' })) as [{ count: string }];
  return { invoice_id: row.id, number: row.number, status: row.status, total: row.total, currency: row.currency, lines: Number(count) };
}
