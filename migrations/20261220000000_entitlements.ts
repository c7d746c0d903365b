import type { Knex } from 'knex';

/**
 * Entitlements (issue 13, docs/billing.md):
 *
 * - `tenants.limit_overrides`: the tenant's own limits, `{ "<metric>" | "$cost": "<decimal>" }`,
 *   which replace the plan's from the moment they are stored until they are removed. The tenant's
 *   workflow reads them when told of a change, at a rollover and on a restore.
 * - `tenants.low_balance_threshold`: the tenant's own `balance.low` threshold (the plan's when null).
 * - `credit_grants`: prepaid credit, one row per grant, idempotent on the client's id per tenant.
 *   `remaining` is what is left of it; `amount` and `remaining` can never go negative.
 * - `credit_applications`: credit taken from a grant for an invoice at its finalization.
 *   A voided invoice gives it back (`reversed_at`), and its rerun takes credit again.
 * - `invoices.credits_applied`, `invoices.amount_due`: the credit applied at finalization and what
 *   is left to pay (`total` for invoices written before).
 * - `packs`: add-on packs, idempotent on the client's id per tenant; `pack_draws`: the units drawn
 *   from each pack for each period (absolute, one row per pack and period), so a unit is drawn
 *   at most once across periods and reruns.
 * - `invoice_lines.kind` (`usage`, `base_fee`, `pack`; null on lines written before: derived) and
 *   `invoice_lines.pack_draws` (the units drawn per pack on a usage line), and
 *   `invoice_lines.group_values` (a dimensioned meter's line: the group's properties).
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('tenants', (t) => {
    t.jsonb('limit_overrides').notNullable().defaultTo('{}');
    t.specificType('low_balance_threshold', 'numeric');
  });
  await knex.schema.createTable('credit_grants', (t) => {
    t.text('tenant_id').notNullable().references('tenants.id');
    t.text('id').notNullable();
    t.text('currency').notNullable();
    t.specificType('amount', 'numeric').notNullable();
    t.specificType('remaining', 'numeric').notNullable();
    t.text('description');
    t.timestamp('expires_at', { useTz: true });
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.primary(['tenant_id', 'id']);
    t.check('amount > 0', [], 'credit_grants_amount_positive');
    t.check('remaining >= 0 AND remaining <= amount', [], 'credit_grants_remaining_bounds');
  });
  await knex.schema.createTable('credit_applications', (t) => {
    t.bigIncrements('id');
    t.text('tenant_id').notNullable();
    t.text('grant_id').notNullable();
    t.text('invoice_id').notNullable().references('invoices.id');
    t.specificType('amount', 'numeric').notNullable();
    t.timestamp('applied_at', { useTz: true }).notNullable();
    t.timestamp('reversed_at', { useTz: true });
    t.foreign(['tenant_id', 'grant_id']).references(['tenant_id', 'id']).inTable('credit_grants');
    t.index(['invoice_id']);
    t.index(['tenant_id', 'grant_id']);
    t.check('amount > 0', [], 'credit_applications_amount_positive');
  });
  await knex.schema.alterTable('invoices', (t) => {
    t.specificType('credits_applied', 'numeric').notNullable().defaultTo(0);
    t.specificType('amount_due', 'numeric');
  });
  await knex.raw('UPDATE invoices SET amount_due = total');
  await knex.schema.createTable('packs', (t) => {
    t.text('tenant_id').notNullable().references('tenants.id');
    t.text('id').notNullable();
    t.text('metric').notNullable();
    t.specificType('units', 'numeric').notNullable();
    t.specificType('price', 'numeric');
    t.text('currency').notNullable();
    t.timestamp('purchased_at', { useTz: true }).notNullable();
    t.timestamp('expires_at', { useTz: true }).notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.primary(['tenant_id', 'id']);
    t.check('units > 0', [], 'packs_units_positive');
    t.check('price IS NULL OR price >= 0', [], 'packs_price_not_negative');
    t.check('expires_at > purchased_at', [], 'packs_expire_after_purchase');
  });
  await knex.schema.createTable('pack_draws', (t) => {
    t.text('tenant_id').notNullable();
    t.text('pack_id').notNullable();
    t.timestamp('period_start', { useTz: true }).notNullable();
    t.specificType('units', 'numeric').notNullable();
    t.timestamp('updated_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.primary(['tenant_id', 'pack_id', 'period_start']);
    t.foreign(['tenant_id', 'pack_id']).references(['tenant_id', 'id']).inTable('packs');
    t.check('units >= 0', [], 'pack_draws_units_not_negative');
  });
  await knex.schema.alterTable('invoice_lines', (t) => {
    t.text('kind');
    t.jsonb('pack_draws');
    t.jsonb('group_values');
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('invoice_lines', (t) => {
    t.dropColumn('group_values');
    t.dropColumn('pack_draws');
    t.dropColumn('kind');
  });
  await knex.schema.dropTable('pack_draws');
  await knex.schema.dropTable('packs');
  await knex.schema.alterTable('invoices', (t) => {
    t.dropColumn('amount_due');
    t.dropColumn('credits_applied');
  });
  await knex.schema.dropTable('credit_applications');
  await knex.schema.dropTable('credit_grants');
  await knex.schema.alterTable('tenants', (t) => {
    t.dropColumn('low_balance_threshold');
    t.dropColumn('limit_overrides');
  });
}
