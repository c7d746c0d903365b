import type { Knex } from 'knex';

/**
 * The ends of open periods, for the worker's check for periods left open past their end
 * (`tenantsPastPeriodEnd`): each active tenant has one open period, so the index stays as small
 * as the tenant list, however many closed periods the table holds.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`CREATE INDEX periods_open_end ON periods ("end") WHERE status = 'open'`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('DROP INDEX periods_open_end');
}
