/**
 * What an invoice rerun is, apart from PostgreSQL: what finance asks for, what the rerun answers,
 * and when it is refused. The rerun's write and preview are in `src/db/invoice-reruns.ts`.
 */
import type { InvoiceRow } from '../db/invoices';
import { Dec, roundMoney } from '../domain/decimal';
import type { InvoiceLineChange } from './changes';

/** What finance asked for: rerun version `version - 1` of a period as `version`. */
export interface InvoiceRerunInput {
  tenant_id: string;
  period_start: string;
  period_end: string;
  /** Id of version n, the finalized invoice this rerun voids. */
  replaces: string;
  /** n + 1. */
  version: number;
  /** The plan version to rate with, resolved when the request was accepted. */
  plan: { id: string; version: number };
  reason: string;
  /** Who asked: `admin` or the id of the API key. */
  requested_by: string;
}

/** The rerun's result (the workflow's result in the Temporal UI): both versions and what changed. */
export interface InvoiceRerunResult {
  invoice_id: string;
  number: number | null;
  version: number;
  status: 'finalized' | 'void';
  plan_id: string;
  plan_version: number;
  total: string;
  currency: string;
  replaced: { invoice_id: string; number: number | null; total: string; currency: string };
  /** `total - replaced.total`, or null across currencies. */
  total_delta: string | null;
  changes: InvoiceLineChange[];
}

/** A rerun that must not happen (not retried): the version is no longer the finalized one, etc. */
export class InvoiceRerunRefused extends Error {
  override readonly name = 'InvoiceRerunRefused';
}

/**
 * Why this invoice version cannot be rerun, in words, or undefined when it can: only a period's
 * finalized version, not yet replaced. One rule, so the API's 409 and the rerun's own refusal
 * (when the version changed between the request and the workflow) say the same thing.
 */
export function rerunRefusal(invoice: Pick<InvoiceRow, 'id' | 'status' | 'replaced_by'>): string | undefined {
  if (invoice.status === 'finalized' && !invoice.replaced_by) return undefined;
  const state = invoice.status === 'draft' ? 'a draft (its period is still in grace)' : invoice.status;
  const replacement = invoice.replaced_by ? ` (replaced by ${invoice.replaced_by})` : '';
  return `invoice ${invoice.id} is ${state}${replacement}: only the finalized version of a period can be rerun`;
}

/**
 * A rerun that needs raw events retention has deleted (409 `events_purged`): the period is never
 * rated from a partial set of events. Not retried.
 */
export class EventsPurged extends InvoiceRerunRefused {
  // The name stays `InvoiceRerunRefused`: the rerun workflow does not retry errors of that type.
  readonly code = 'events_purged';
  constructor(readonly periodStart: string, purgedAt: Date) {
    super(`the raw events of period ${periodStart} were purged by retention on ${purgedAt.toISOString()}: the period cannot be rated again`);
  }
}

/** The columns of an invoice version that a rerun's result reports. */
type RerunVersion = Pick<InvoiceRow, 'id' | 'number' | 'version' | 'status' | 'plan_id' | 'plan_version' | 'currency' | 'total' | 'changes'>;

/** The rerun's answer from version n+1 and the version n it replaced (`writeInvoiceRerun` and its retries). */
export function rerunResult(invoice: RerunVersion, source: RerunVersion): InvoiceRerunResult {
  const sameCurrency = invoice.currency === source.currency;
  return {
    invoice_id: invoice.id,
    number: invoice.number,
    version: invoice.version,
    status: invoice.status === 'void' ? 'void' : 'finalized',
    plan_id: invoice.plan_id,
    plan_version: invoice.plan_version,
    total: roundMoney(invoice.total, invoice.currency),
    currency: invoice.currency,
    replaced: { invoice_id: source.id, number: source.number, total: roundMoney(source.total, source.currency), currency: source.currency },
    total_delta: sameCurrency ? roundMoney(new Dec(invoice.total).minus(source.total), invoice.currency) : null,
    changes: invoice.changes ?? [],
  };
}
