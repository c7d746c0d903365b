import type { Knex } from 'knex';

/**
 * `period_close_keys`: every finance close's `Idempotency-Key`, with the period whose close
 * answered it. Closes that reach a tenant's run while its rollover is under way share that
 * rollover, so one closed period can answer several keys; `periods.close_idempotency_key` held
 * one, and a retry of any other key closed the next period too. The keys already stored move
 * over.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('period_close_keys', (t) => {
    t.text('tenant_id').notNullable();
    t.text('idempotency_key').notNullable();
    t.timestamp('period_start', { useTz: true }).notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.primary(['tenant_id', 'idempotency_key']);
    t.foreign(['tenant_id', 'period_start']).references(['tenant_id', 'start']).inTable('periods');
  });
  await knex.raw(`
    INSERT INTO period_close_keys (tenant_id, idempotency_key, period_start, created_at)
    SELECT tenant_id, close_idempotency_key, start, coalesce(closed_at, now()) FROM periods WHERE close_idempotency_key IS NOT NULL`);
  await knex.schema.alterTable('periods', (t) => {
    t.dropUnique(['tenant_id', 'close_idempotency_key']);
    t.dropColumn('close_idempotency_key');
  });
}

/** Back to one key per period: the earliest key stored with each. */
export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('periods', (t) => {
    t.text('close_idempotency_key');
    t.unique(['tenant_id', 'close_idempotency_key']);
  });
  await knex.raw(`
    UPDATE periods p SET close_idempotency_key = k.idempotency_key
    FROM (SELECT DISTINCT ON (tenant_id, period_start) tenant_id, period_start, idempotency_key
          FROM period_close_keys ORDER BY tenant_id, period_start, created_at, idempotency_key) k
    WHERE p.tenant_id = k.tenant_id AND p.start = k.period_start`);
  await knex.schema.dropTable('period_close_keys');
}
