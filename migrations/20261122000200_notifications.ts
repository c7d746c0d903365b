import type { Knex } from 'knex';

/**
 * Delivery bookkeeping for email and webhooks: which event type a delivery carries, when it was
 * last tried, and a short lease (`locked_until`) so two overlapping attempts of the same activity
 * (one timed out but still running) can never both send the same event to the same target.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('notification_deliveries', (t) => {
    t.text('event_type'); // alert.triggered | invoice.finalized | invoice.voided
    t.timestamp('last_attempt_at', { useTz: true });
    t.timestamp('locked_until', { useTz: true });
    t.index(['tenant_id', 'created_at']);
  });
}

/** Removes what `up` added. */
export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('notification_deliveries', (t) => {
    t.dropIndex(['tenant_id', 'created_at']);
    t.dropColumn('locked_until');
    t.dropColumn('last_attempt_at');
    t.dropColumn('event_type');
  });
}
