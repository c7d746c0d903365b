import type { Knex } from 'knex';

/**
 * PostgreSQL as the event ledger (docs/design/core-v2.md).
 *
 * - `usage_events.claim_id`: null while an acknowledged event waits to be counted; the tenant
 *   workflow's claim sets it once, in the same transaction that adds the event to
 *   `period_counters`. Rows stored before this migration were counted when they were written,
 *   so they are claimed by the batch that wrote them.
 * - `usage_events_unclaimed`: a partial index holding only the rows still to be counted, so a
 *   claim and `pending_events` read a handful of index entries however large the table grows.
 * - `periods.close_idempotency_key`: the key of the finance close that ended the period.
 * - `period_counters`: the read model, one row per tenant, period and metric, with every
 *   aggregate a meter may use (sum, count, max, and the latest quantity with the timestamp and
 *   receive order behind it). Counters are unconstrained `numeric`: a sum of admissible
 *   quantities never overflows them.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('usage_events', (t) => {
    t.text('claim_id');
  });
  await knex.raw('UPDATE usage_events SET claim_id = batch_id');
  await knex.raw('CREATE INDEX usage_events_unclaimed ON usage_events (tenant_id, seq) WHERE claim_id IS NULL');
  await knex.raw('CREATE INDEX usage_events_claim_id ON usage_events (claim_id) WHERE claim_id IS NOT NULL');

  // A finance close retried with the same Idempotency-Key answers the close it made, never a second one.
  await knex.schema.alterTable('periods', (t) => {
    t.text('close_idempotency_key');
    t.unique(['tenant_id', 'close_idempotency_key']);
  });

  await knex.schema.createTable('period_counters', (t) => {
    t.text('tenant_id').notNullable();
    t.timestamp('period_start', { useTz: true }).notNullable();
    t.text('metric').notNullable();
    t.specificType('total', 'numeric').notNullable();
    t.bigInteger('events').notNullable();
    t.specificType('largest', 'numeric').notNullable();
    t.specificType('latest', 'numeric').notNullable();
    t.timestamp('latest_at', { useTz: true }).notNullable();
    t.bigInteger('latest_seq').notNullable();
    t.timestamp('updated_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.primary(['tenant_id', 'period_start', 'metric']);
  });
  await knex.raw(`
    INSERT INTO period_counters (tenant_id, period_start, metric, total, events, largest, latest, latest_at, latest_seq)
    SELECT tenant_id, period_start, metric, sum(quantity), count(*), max(quantity),
           (array_agg(quantity ORDER BY "timestamp" DESC, seq DESC))[1],
           max("timestamp"),
           (array_agg(seq ORDER BY "timestamp" DESC, seq DESC))[1]
      FROM usage_events
     GROUP BY tenant_id, period_start, metric`);
}

/** Drops the read model and the claim column (claimed or not, every stored event stays). */
export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists('period_counters');
  await knex.schema.alterTable('periods', (t) => {
    t.dropUnique(['tenant_id', 'close_idempotency_key']);
    t.dropColumn('close_idempotency_key');
  });
  await knex.raw('DROP INDEX IF EXISTS usage_events_claim_id');
  await knex.raw('DROP INDEX IF EXISTS usage_events_unclaimed');
  await knex.schema.alterTable('usage_events', (t) => {
    t.dropColumn('claim_id');
  });
}
