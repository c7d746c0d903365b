import type { Knex } from 'knex';

/**
 * Ingest in a few round trips whatever the number of tenants in a transaction
 * (src/db/ingest.ts, `storeUsageRequests`).
 *
 * `ledger_ingest_context(tenants)`: for each tenant in the order given (callers sort them, so
 * transactions lock tenants in one order and never deadlock), takes the tenant's ledger lock
 * shared (class 0x7a11 = 31249, as `ledger_stored_through` takes it exclusively), then reads the
 * tenant, the periods that take events (open, or closed within grace) with the latest three
 * invoiced ones, and its acknowledged events not counted yet (`pending`). A function, because
 * each of its queries takes its snapshot after the lock is granted, so a close that held the
 * lock is seen; a single query would read from a snapshot taken before it waited. A tenant that
 * does not exist has no row. The locks are held until the caller's transaction ends.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    CREATE OR REPLACE FUNCTION ledger_ingest_context(tenants text[])
    RETURNS TABLE(tenant_id text, tenant_plan_id text, billing_anchor timestamptz, timezone text, pending bigint,
                  start timestamptz, "end" timestamptz, status text, grace_ends_at timestamptz, plan_id text, plan_version integer)
    LANGUAGE plpgsql VOLATILE AS $$
    #variable_conflict use_column
    DECLARE
      tenant text;
    BEGIN
      FOREACH tenant IN ARRAY tenants LOOP
        PERFORM pg_advisory_xact_lock_shared(31249, hashtext(tenant));
        RETURN QUERY
          SELECT t.id, t.plan_id, t.billing_anchor, t.timezone,
                 (coalesce((SELECT x.stored - x.claimed FROM tenant_event_totals x WHERE x.tenant_id = t.id), 0)
                  + coalesce((SELECT sum(r.events) FROM event_receipts r WHERE r.tenant_id = t.id), 0))::bigint,
                 p.start, p."end", p.status, p.grace_ends_at, p.plan_id, p.plan_version
            FROM tenants t
            LEFT JOIN LATERAL (
              (SELECT q.start, q."end", q.status, q.grace_ends_at, q.plan_id, q.plan_version FROM periods q WHERE q.tenant_id = t.id AND q.status <> 'invoiced')
              UNION ALL
              (SELECT q.start, q."end", q.status, q.grace_ends_at, q.plan_id, q.plan_version FROM periods q WHERE q.tenant_id = t.id AND q.status = 'invoiced' ORDER BY q.start DESC LIMIT 3)
            ) p ON true
           WHERE t.id = tenant;
      END LOOP;
    END
    $$`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('DROP FUNCTION IF EXISTS ledger_ingest_context(text[])');
}
