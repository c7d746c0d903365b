import { ApplicationFailure } from '@temporalio/common';
import type { Db } from '../db/knex';
import type { Logger } from '../logger';
import { writeInvoiceRerun } from '../db/invoice-reruns';
import { InvoiceRerunRefused, type InvoiceRerunInput, type InvoiceRerunResult } from '../invoices/rerun';

/** Re-exported so the workflow and the API import the rerun's types from the activity module, as types only. */
export type { InvoiceRerunInput, InvoiceRerunResult } from '../invoices/rerun';
export type { InvoiceLineChange } from '../invoices/changes';

/** What the invoicing activities need: PostgreSQL and a logger (no Temporal, no notifier). */
export interface InvoicingActivityDeps {
  db: Db;
  logger: Logger;
}

/** Failure type of a rerun that must not be retried (the workflow fails with it, visibly). */
export const INVOICE_RERUN_REFUSED = 'InvoiceRerunRefused';

/**
 * The activities of invoice reruns, spread into `createActivities` so the one worker registers
 * them. Kept apart so reruns do not grow the tenant activities' module; idempotent like the rest.
 */
export function createInvoicingActivities({ db, logger }: InvoicingActivityDeps) {
  return {
    /**
     * Voids version n and writes version n+1 finalized in one transaction (see
     * `writeInvoiceRerun`); a retry after the commit returns the same result. A refusal (version
     * n is no longer the finalized one) is non-retryable: retrying cannot change the answer.
     */
    async rerunInvoice(input: InvoiceRerunInput): Promise<InvoiceRerunResult> {
      try {
        const result = await writeInvoiceRerun(db, input);
        logger.info(
          { tenant_id: input.tenant_id, invoice_id: result.invoice_id, replaces: input.replaces, number: result.number, total_delta: result.total_delta },
          'invoice rerun finalized',
        );
        return result;
      } catch (err) {
        if (err instanceof InvoiceRerunRefused) throw ApplicationFailure.nonRetryable(err.message, INVOICE_RERUN_REFUSED);
        throw err;
      }
    },
  };
}
