import type { Db } from './knex';

/**
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
