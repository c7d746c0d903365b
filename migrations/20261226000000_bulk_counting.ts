import type { Knex } from 'knex';

/**
 * Bulk counting (docs/design/core-v2.md, "Bulk counting").
 *
 * - `tenant_event_totals.decision_points`: where the tenant's ledger next has something to
 *   decide in its current period (`DecisionPoints`, src/contracts/ledger.ts), written by its
 *   workflow's claims. The worker's counter counts a tenant's waiting events without its
 *   workflow while they stay below these points. Null: the workflow counts everything itself.
 * - `tenant_event_totals_waiting`: tenants a claim left with events it could not count in one
 *   go, found without reading the others.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw('ALTER TABLE tenant_event_totals ADD COLUMN IF NOT EXISTS decision_points jsonb');
  await knex.raw('CREATE INDEX IF NOT EXISTS tenant_event_totals_waiting ON tenant_event_totals (tenant_id) WHERE stored > claimed');
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('DROP INDEX IF EXISTS tenant_event_totals_waiting');
  await knex.raw('ALTER TABLE tenant_event_totals DROP COLUMN IF EXISTS decision_points');
}
