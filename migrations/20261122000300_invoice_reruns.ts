import type { Knex } from 'knex';

/**
 * Invoice reruns (`POST /v1/invoices/{id}/rerun`):
 *
 * - `invoice_reruns` remembers each `Idempotency-Key` with the request it answered, so the same
 *   key gets the same 202 (and a key reused for another request is refused). Requests without a
 *   key are not stored here: the new invoice itself records `reason` and `requested_by`, and the
 *   Temporal workflow id `invoice-…-v<n+1>` is what lets only one rerun of a version run.
 * - `invoices.changes` keeps, on a version that replaces another, what changed per line (metric,
 *   quantity and amount before and after, delta), computed once when it was finalized.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('invoice_reruns', (t) => {
    t.text('idempotency_key').primary();
    t.text('tenant_id').notNullable().references('tenants.id');
    t.text('invoice_id').notNullable(); // the version the request asked to rerun
    t.text('new_invoice_id').notNullable(); // version n+1 (the 202 answer)
    t.text('workflow_id').notNullable();
    t.text('reason').notNullable();
    t.text('plan_id'); // as requested (null: the period's plan)
    t.text('rerun_plan_id').notNullable(); // the plan version resolved when the request was accepted
    t.integer('rerun_plan_version').notNullable();
    t.text('requested_by').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.index(['invoice_id']);
  });
  await knex.schema.alterTable('invoices', (t) => {
    t.jsonb('changes');
  });
}

/** Removes what `up` added. */
export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('invoices', (t) => {
    t.dropColumn('changes');
  });
  await knex.schema.dropTableIfExists('invoice_reruns');
}
