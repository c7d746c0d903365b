import type { Knex } from 'knex';

/**
 * Claims by watermark, and `pending_events` without counting the backlog
 * (docs/design/core-v2.md, "Claims").
 *
 * - `tenant_event_totals`: per tenant, `claimed_through_seq`, the watermark: every stored event
 *   of the tenant with `seq` at or below it is counted, none above it. A claim moves it forward
 *   in the transaction that adds the events to `period_counters`, so counting an event writes
 *   its row never again (it used to be updated with a claim id, a second write of the row and of
 *   every index on it). Also the events stored (receipts folded so far) and counted.
 * - `event_receipts`: one row per ingest transaction and tenant, with how many events it
 *   stored. Ingest only appends (concurrent batches of one tenant never wait on a shared row);
 *   a claim folds the receipts it sees into the totals. `pending_events` = stored − counted +
 *   the receipts not folded yet: one row and a few receipts however many events wait.
 * - `ledger_claims`: what each claim counted (the watermark it left, the barrier it counted up
 *   to, the periods and metrics it touched), so a retried claim answers for the attempt that
 *   committed.
 * - `usage_events (tenant_id, seq)` replaces the partial index of unclaimed events and the
 *   claim-id index; `claim_id` goes.
 *
 * Events stored before this migration and not counted yet are given fresh receive-order numbers
 * (in their order), so they sit above their tenant's watermark: the next claim counts them.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('tenant_event_totals', (t) => {
    t.text('tenant_id').primary();
    t.bigInteger('claimed_through_seq').notNullable().defaultTo(0);
    t.bigInteger('stored').notNullable().defaultTo(0);
    t.bigInteger('claimed').notNullable().defaultTo(0);
    t.timestamp('updated_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
  });
  await knex.schema.createTable('event_receipts', (t) => {
    t.bigIncrements('id');
    t.text('tenant_id').notNullable();
    t.integer('events').notNullable();
    t.timestamp('received_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.index(['tenant_id'], 'event_receipts_tenant');
  });
  await knex.schema.createTable('ledger_claims', (t) => {
    t.text('tenant_id').notNullable();
    t.text('claim_id').notNullable();
    t.bigInteger('through_seq').notNullable();
    t.bigInteger('barrier_seq').notNullable();
    t.integer('claimed').notNullable();
    t.boolean('more').notNullable();
    t.jsonb('touched').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.primary(['tenant_id', 'claim_id']);
    t.index(['tenant_id', 'created_at'], 'ledger_claims_tenant_created');
  });

  await knex.raw(`
    UPDATE usage_events u SET seq = renumbered.seq
      FROM (SELECT tenant_id, event_id, nextval(pg_get_serial_sequence('usage_events', 'seq')) AS seq
              FROM (SELECT tenant_id, event_id FROM usage_events WHERE claim_id IS NULL ORDER BY seq) waiting) renumbered
     WHERE u.tenant_id = renumbered.tenant_id AND u.event_id = renumbered.event_id`);
  await knex.raw(`
    INSERT INTO tenant_event_totals (tenant_id, claimed_through_seq, stored, claimed)
    SELECT tenant_id, coalesce(max(seq) FILTER (WHERE claim_id IS NOT NULL), 0), count(*), count(claim_id)
      FROM usage_events GROUP BY tenant_id`);

  await knex.raw('CREATE INDEX usage_events_tenant_seq ON usage_events (tenant_id, seq)');
  await knex.raw('DROP INDEX IF EXISTS usage_events_unclaimed');
  await knex.raw('DROP INDEX IF EXISTS usage_events_claim_id');
  await knex.schema.alterTable('usage_events', (t) => {
    t.dropColumn('claim_id');
  });
}

/** Back to claim ids: events at or below their tenant's watermark are claimed by "migration". */
export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('usage_events', (t) => {
    t.text('claim_id');
  });
  await knex.raw(`
    UPDATE usage_events u SET claim_id = 'migration'
      FROM tenant_event_totals t WHERE t.tenant_id = u.tenant_id AND u.seq <= t.claimed_through_seq`);
  await knex.raw('CREATE INDEX usage_events_unclaimed ON usage_events (tenant_id, seq) WHERE claim_id IS NULL');
  await knex.raw('CREATE INDEX usage_events_claim_id ON usage_events (claim_id) WHERE claim_id IS NOT NULL');
  await knex.raw('DROP INDEX IF EXISTS usage_events_tenant_seq');
  await knex.schema.dropTableIfExists('ledger_claims');
  await knex.schema.dropTableIfExists('event_receipts');
  await knex.schema.dropTableIfExists('tenant_event_totals');
}
