import type { Knex } from 'knex';

/**
 * The whole billing schema. Money and quantities are exact `numeric`; uniqueness constraints
 * carry the billing invariants (an event counted once per tenant, one invoice per
 * tenant/period/version, one alert per tenant/period/subject/threshold), so a retried
 * activity can never write a second row.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('plans', (t) => {
    t.text('id').primary();
    t.integer('latest_version').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
  });

  await knex.schema.createTable('plan_versions', (t) => {
    t.text('plan_id').notNullable().references('plans.id');
    t.integer('version').notNullable();
    t.text('name').notNullable();
    t.text('currency').notNullable();
    t.text('interval').notNullable();
    t.decimal('base_fee', 28, 10).notNullable();
    t.decimal('cost_limit', 28, 10);
    t.integer('grace_period_seconds').notNullable();
    t.jsonb('definition').notNullable(); // the full PlanVersion JSON, as the workflow uses it
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.primary(['plan_id', 'version']);
  });

  await knex.schema.createTable('tenants', (t) => {
    t.text('id').primary();
    t.text('name').notNullable();
    t.text('plan_id').notNullable().references('plans.id');
    t.text('email');
    t.text('webhook_url');
    t.text('webhook_secret');
    t.text('timezone').notNullable().defaultTo('UTC');
    t.timestamp('billing_anchor', { useTz: true }).notNullable();
    t.text('status').notNullable().defaultTo('active'); // active | cancelled
    t.integer('last_invoice_number').notNullable().defaultTo(0);
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('updated_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('cancelled_at', { useTz: true });
  });

  await knex.schema.createTable('api_keys', (t) => {
    t.text('id').primary();
    t.text('tenant_id').references('tenants.id'); // null: an admin key
    t.text('key_hash').notNullable().unique(); // sha-256 of the key; the key itself is never stored
    t.text('prefix').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('revoked_at', { useTz: true });
    t.index(['tenant_id']);
  });

  await knex.schema.createTable('periods', (t) => {
    t.text('tenant_id').notNullable().references('tenants.id');
    t.timestamp('start', { useTz: true }).notNullable();
    t.timestamp('end', { useTz: true }).notNullable();
    t.text('plan_id').notNullable();
    t.integer('plan_version').notNullable();
    t.text('status').notNullable().defaultTo('open'); // open | closed | invoiced
    t.jsonb('counters'); // snapshot at close: { metric: "decimal" }
    t.timestamp('grace_ends_at', { useTz: true });
    t.timestamp('closed_at', { useTz: true });
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.primary(['tenant_id', 'start']);
  });

  await knex.schema.createTable('usage_events', (t) => {
    t.text('tenant_id').notNullable();
    t.text('event_id').notNullable();
    t.text('metric').notNullable();
    t.decimal('quantity', 30, 6).notNullable();
    t.timestamp('timestamp', { useTz: true }).notNullable();
    t.timestamp('period_start', { useTz: true }).notNullable();
    t.jsonb('properties');
    t.text('batch_id').notNullable(); // the workflow's chunk that counted it: retries return the same set
    t.bigIncrements('seq', { primaryKey: false }); // received order, for `latest` ties
    t.timestamp('received_at', { useTz: true }).notNullable();
    t.primary(['tenant_id', 'event_id']);
    t.index(['tenant_id', 'period_start', 'metric']);
    t.index(['tenant_id', 'timestamp']);
    t.index(['batch_id']);
  });

  await knex.schema.createTable('invoices', (t) => {
    t.text('id').primary(); // deterministic from (tenant, period start, version)
    t.text('tenant_id').notNullable().references('tenants.id');
    t.integer('number'); // sequential per tenant, assigned at finalization
    t.integer('version').notNullable();
    t.text('status').notNullable(); // draft | finalized | void
    t.timestamp('period_start', { useTz: true }).notNullable();
    t.timestamp('period_end', { useTz: true }).notNullable();
    t.text('plan_id').notNullable();
    t.integer('plan_version').notNullable();
    t.text('currency').notNullable();
    t.decimal('subtotal', 28, 10).notNullable();
    t.decimal('total', 28, 10).notNullable();
    t.text('replaces');
    t.text('replaced_by');
    t.text('reason');
    t.text('requested_by');
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('finalized_at', { useTz: true });
    t.timestamp('voided_at', { useTz: true });
    t.unique(['tenant_id', 'period_start', 'version']);
    t.unique(['tenant_id', 'number']);
  });
  // Exactly one finalized invoice per tenant and period, enforced by the database itself.
  await knex.raw(
    `CREATE UNIQUE INDEX invoices_one_finalized ON invoices (tenant_id, period_start) WHERE status = 'finalized'`,
  );

  await knex.schema.createTable('invoice_lines', (t) => {
    t.text('invoice_id').notNullable().references('invoices.id');
    t.integer('position').notNullable();
    t.text('metric').notNullable();
    t.text('description').notNullable();
    t.decimal('quantity', 30, 6).notNullable();
    t.decimal('amount', 28, 10).notNullable();
    t.jsonb('tiers');
    t.primary(['invoice_id', 'position']);
  });

  await knex.schema.createTable('alert_rules', (t) => {
    t.text('id').primary();
    t.text('tenant_id').notNullable().references('tenants.id');
    t.text('metric'); // null: the rule watches cost
    t.decimal('threshold', 10, 4).notNullable();
    t.jsonb('channel').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('deleted_at', { useTz: true });
    t.index(['tenant_id']);
  });

  await knex.schema.createTable('alerts', (t) => {
    t.text('id').primary(); // deterministic from the unique key below
    t.text('tenant_id').notNullable().references('tenants.id');
    t.timestamp('period_start', { useTz: true }).notNullable();
    t.text('subject').notNullable(); // a meter's metric, or `cost`
    t.decimal('threshold', 10, 4).notNullable();
    t.text('level').notNullable();
    t.text('status').notNullable(); // notified | superseded | failed
    t.decimal('used', 30, 6).notNullable();
    t.decimal('limit', 30, 6).notNullable();
    t.jsonb('covers'); // thresholds this notification covers
    t.jsonb('channels').notNullable().defaultTo('[]');
    t.text('rule_id');
    t.timestamp('fired_at', { useTz: true }).notNullable();
    t.unique(['tenant_id', 'period_start', 'subject', 'threshold']);
    t.index(['tenant_id', 'fired_at']);
  });

  await knex.schema.createTable('notification_deliveries', (t) => {
    t.bigIncrements('id');
    t.text('event_id').notNullable(); // alert id or invoice event id: the idempotency key
    t.text('tenant_id').notNullable();
    t.text('channel').notNullable(); // email | webhook | log
    t.text('target').notNullable();
    t.text('status').notNullable(); // pending | delivered | failed | recorded
    t.integer('attempts').notNullable().defaultTo(0);
    t.text('last_error');
    t.jsonb('payload');
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('delivered_at', { useTz: true });
    t.unique(['event_id', 'channel', 'target']);
  });

  await knex.schema.createTable('rejected_events', (t) => {
    // Events that were acknowledged but could not be counted (e.g. their period was invoiced
    // while they were in flight): kept, never silently dropped.
    t.text('tenant_id').notNullable();
    t.text('event_id').notNullable();
    t.text('reason').notNullable();
    t.jsonb('event').notNullable();
    t.timestamp('rejected_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.primary(['tenant_id', 'event_id']);
  });
}

/** Drops everything `up` made, in reverse order of dependency. */
export async function down(knex: Knex): Promise<void> {
  for (const table of [
    'rejected_events',
    'notification_deliveries',
    'alerts',
    'alert_rules',
    'invoice_lines',
    'invoices',
    'usage_events',
    'periods',
    'api_keys',
    'tenants',
    'plan_versions',
    'plans',
  ]) {
    await knex.schema.dropTableIfExists(table);
  }
}
