import type { Knex } from 'knex';

/**
 * Cheaper claims (docs/design/core-v2.md, "Claims" and "Running figures").
 *
 * - `ledger_stored_through(tenant)`: a claim's barrier in one statement. It takes the tenant's
 *   ledger lock exclusively (the advisory lock ingest holds shared: class 0x7a11 = 31249, key
 *   `hashtext(tenant)`, src/db/ingest.ts) and then reads the highest stored `seq`. A function,
 *   because its second statement takes its snapshot after the lock is granted, where a single
 *   query would read from a snapshot taken before it waited; called on its own, the lock ends
 *   with the call's implicit transaction.
 * - `tenant_event_totals.figures_through_seq`: the watermark the tenant's running figures
 *   (`period_figures`) and its rows of `monthly_summaries` were last rated at. A claim moves
 *   `claimed_through_seq` only; a tenant whose figures are behind its watermark is due, and the
 *   worker's figures refresher rates it (src/db/summaries.ts, `refreshDueFigures`), many tenants
 *   per transaction.
 * - `tenant_event_totals_figures_due`: those tenants, in id order, without reading the others.
 *
 * Until now each claim rated its periods itself, so every tenant's figures stand at its
 * watermark: none is due.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    CREATE OR REPLACE FUNCTION ledger_stored_through(tenant text) RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$
    DECLARE
      through bigint;
    BEGIN
      PERFORM pg_advisory_xact_lock(31249, hashtext(tenant));
      SELECT coalesce(max(seq), 0) INTO through FROM usage_events WHERE tenant_id = tenant;
      RETURN through;
    END
    $$`);
  await knex.raw('ALTER TABLE tenant_event_totals ADD COLUMN IF NOT EXISTS figures_through_seq bigint NOT NULL DEFAULT 0');
  await knex.raw('UPDATE tenant_event_totals SET figures_through_seq = claimed_through_seq');
  await knex.raw(
    'CREATE INDEX IF NOT EXISTS tenant_event_totals_figures_due ON tenant_event_totals (tenant_id) WHERE claimed_through_seq > figures_through_seq',
  );
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('DROP FUNCTION IF EXISTS ledger_stored_through(text)');
  await knex.raw('DROP INDEX IF EXISTS tenant_event_totals_figures_due');
  await knex.raw('ALTER TABLE tenant_event_totals DROP COLUMN IF EXISTS figures_through_seq');
}
