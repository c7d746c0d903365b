import type { Knex } from 'knex';
import { up as ingestContextUp } from './20261227000000_ingest_context';

/**
 * Ingest in one statement (src/db/ingest.ts, `storeUsageRequests`).
 *
 * The API places events against each tenant's placement context (the tenant, and the periods
 * that take events with the latest three invoiced ones), read before without a lock and kept
 * by the process. The statement that stores them first checks, under each tenant's ledger lock,
 * that the context is still the one the events were placed against. So a close, a cancellation
 * or a finalization (which take the lock exclusively) is still either entirely before a batch or
 * entirely after it, as when the context was read under the lock; but a batch needs one round
 * trip instead of four (`BEGIN`, the context, the insert, `COMMIT`).
 *
 * - `tenants.placement_version`: changes whenever anything placement reads changes: the tenant's
 *   plan, anchor or time zone (a trigger on `tenants`), or any of its periods' bounds, status,
 *   grace end or plan version (a trigger on `periods`, which bumps the tenant's row). Triggers,
 *   so no writer can forget it. Each value comes from one sequence, so a tenant deleted and
 *   created again never shows a version a process kept from before.
 * - `ledger_placement_periods(tenant)`: the periods placement uses.
 * - `ledger_pending_events(tenant)`: acknowledged events not counted yet, for back-pressure.
 * - `ledger_ingest_check(tenants, versions, storing, max_pending)`: for each tenant in the order
 *   given (callers sort them, so statements lock tenants in one order and never deadlock), takes
 *   the ledger lock shared and raises SQLSTATE `TL001` when the tenant's placement version is
 *   not the one given (null: no such tenant), and `TL002` when a tenant in `storing` has more
 *   than `max_pending` events waiting (0: no limit). Answers each tenant's pending events when
 *   there is a limit. A function, because each of its queries takes its snapshot after the lock
 *   is granted, so a close that held the lock is seen. The locks are held until the caller's
 *   transaction ends.
 *
 * `ledger_ingest_context`, which read the context under the lock inside a transaction, goes.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    CREATE SEQUENCE tenant_placement_versions;
    ALTER TABLE tenants ADD COLUMN placement_version bigint NOT NULL DEFAULT nextval('tenant_placement_versions');

    CREATE FUNCTION tenant_placement_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      NEW.placement_version := nextval('tenant_placement_versions');
      RETURN NEW;
    END
    $$;
    CREATE TRIGGER tenants_placement_version BEFORE UPDATE ON tenants FOR EACH ROW
      WHEN ((OLD.plan_id, OLD.billing_anchor, OLD.timezone) IS DISTINCT FROM (NEW.plan_id, NEW.billing_anchor, NEW.timezone))
      EXECUTE FUNCTION tenant_placement_changed();

    CREATE FUNCTION period_placement_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      UPDATE tenants SET placement_version = nextval('tenant_placement_versions')
       WHERE id = CASE WHEN TG_OP = 'DELETE' THEN OLD.tenant_id ELSE NEW.tenant_id END;
      RETURN NULL;
    END
    $$;
    CREATE TRIGGER periods_placement_version_written AFTER INSERT OR DELETE ON periods FOR EACH ROW
      EXECUTE FUNCTION period_placement_changed();
    CREATE TRIGGER periods_placement_version_changed AFTER UPDATE ON periods FOR EACH ROW
      WHEN ((OLD.tenant_id, OLD.start, OLD."end", OLD.status, OLD.grace_ends_at, OLD.plan_id, OLD.plan_version)
            IS DISTINCT FROM (NEW.tenant_id, NEW.start, NEW."end", NEW.status, NEW.grace_ends_at, NEW.plan_id, NEW.plan_version))
      EXECUTE FUNCTION period_placement_changed();
  `);
  await knex.raw(`
    CREATE OR REPLACE FUNCTION ledger_placement_periods(tenant text)
    RETURNS TABLE(start timestamptz, "end" timestamptz, status text, grace_ends_at timestamptz, plan_id text, plan_version integer)
    LANGUAGE sql STABLE AS $$
      (SELECT q.start, q."end", q.status, q.grace_ends_at, q.plan_id, q.plan_version FROM periods q WHERE q.tenant_id = tenant AND q.status <> 'invoiced')
      UNION ALL
      (SELECT q.start, q."end", q.status, q.grace_ends_at, q.plan_id, q.plan_version FROM periods q WHERE q.tenant_id = tenant AND q.status = 'invoiced' ORDER BY q.start DESC LIMIT 3)
    $$`);
  await knex.raw(`
    CREATE OR REPLACE FUNCTION ledger_pending_events(tenant text) RETURNS bigint
    LANGUAGE sql STABLE AS $$
      SELECT (coalesce((SELECT x.stored - x.claimed FROM tenant_event_totals x WHERE x.tenant_id = tenant), 0)
              + coalesce((SELECT sum(r.events) FROM event_receipts r WHERE r.tenant_id = tenant), 0))::bigint
    $$`);
  await knex.raw(`
    CREATE OR REPLACE FUNCTION ledger_ingest_check(tenants text[], versions bigint[], storing text[], max_pending bigint)
    RETURNS TABLE(tenant_id text, pending bigint)
    LANGUAGE plpgsql VOLATILE AS $$
    DECLARE
      current bigint;
    BEGIN
      FOR i IN 1 .. coalesce(array_length(tenants, 1), 0) LOOP
        PERFORM pg_advisory_xact_lock_shared(31249, hashtext(tenants[i]));
        SELECT t.placement_version INTO current FROM tenants t WHERE t.id = tenants[i];
        IF current IS DISTINCT FROM versions[i] THEN
          RAISE EXCEPTION 'the placement context of tenant % changed', tenants[i] USING ERRCODE = 'TL001';
        END IF;
        tenant_id := tenants[i];
        pending := NULL;
        IF max_pending > 0 THEN
          pending := ledger_pending_events(tenants[i]);
          IF pending > max_pending AND tenants[i] = ANY (storing) THEN
            RAISE EXCEPTION 'tenant % has % events waiting to be counted', tenants[i], pending USING ERRCODE = 'TL002';
          END IF;
        END IF;
        RETURN NEXT;
      END LOOP;
    END
    $$`);
  await knex.raw('DROP FUNCTION IF EXISTS ledger_ingest_context(text[])');
}

export async function down(knex: Knex): Promise<void> {
  await ingestContextUp(knex);
  await knex.raw(`
    DROP FUNCTION IF EXISTS ledger_ingest_check(text[], bigint[], text[], bigint);
    DROP FUNCTION IF EXISTS ledger_pending_events(text);
    DROP FUNCTION IF EXISTS ledger_placement_periods(text);
    DROP TRIGGER IF EXISTS periods_placement_version_changed ON periods;
    DROP TRIGGER IF EXISTS periods_placement_version_written ON periods;
    DROP FUNCTION IF EXISTS period_placement_changed();
    DROP TRIGGER IF EXISTS tenants_placement_version ON tenants;
    DROP FUNCTION IF EXISTS tenant_placement_changed();
    ALTER TABLE tenants DROP COLUMN IF EXISTS placement_version;
    DROP SEQUENCE IF EXISTS tenant_placement_versions;
  `);
}
