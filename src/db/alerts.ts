import type { Db } from './knex';
import type { AlertRecord } from '../contracts/ledger';
import type { AlertView } from '../domain/usage-view';
import { normalizeDecimal } from './numeric';

/** A row of `alerts` as pg returns it (decimals as strings, jsonb parsed). */
export interface AlertRow {
  id: string;
  tenant_id: string;
  period_start: Date;
  subject: string;
  threshold: string;
  level: string;
  status: string;
  used: string;
  limit: string;
  covers: number[] | null;
  rule_id: string | null;
  fired_at: Date;
}

/**
 * The most alert rules a tenant may hold at once. Its workflow carries every rule in force
 * across continue-as-new; 100 keeps that a few kilobytes, far below Temporal's payload limit.
 */
export const MAX_ALERT_RULES_PER_TENANT = 100;

/**
 * Stores a new alert rule unless the tenant already holds `MAX_ALERT_RULES_PER_TENANT`; false
 * when it does. The tenant's row is locked meanwhile, so concurrent creations cannot pass the cap.
 */
export async function insertAlertRuleWithinCap(db: Db, row: { id: string; tenant_id: string; channel: unknown }): Promise<boolean> {
  return db.transaction(async (trx) => {
    await trx('tenants').where({ id: row.tenant_id }).forUpdate().first('id');
    const held = await trx('alert_rules').where({ tenant_id: row.tenant_id }).whereNull('deleted_at').count<{ n: string }[]>({ n: '*' });
    if (Number(held[0]!.n) >= MAX_ALERT_RULES_PER_TENANT) return false;
    await trx('alert_rules').insert({ ...row, channel: JSON.stringify(row.channel) });
    return true;
  });
}

/** Stores alerts once per (tenant, period, subject, threshold): a retry or a second writer is a no-op. */
export async function insertAlerts(db: Db, tenantId: string, periodStart: string, alerts: AlertRecord[]): Promise<void> {
  await db('alerts')
    .insert(
      alerts.map((a) => ({
        id: a.id,
        tenant_id: tenantId,
        period_start: periodStart,
        subject: a.subject,
        threshold: a.threshold,
        level: a.level,
        status: a.status,
        used: a.used,
        limit: a.limit,
        covers: JSON.stringify(a.covers),
        rule_id: a.rule_id ?? null,
        fired_at: a.fired_at,
      })),
    )
    // Any conflict, not just the unique key's: two writers of one alert (its recording and its
    // delivery) race on the primary key as well, and either one may win.
    .onConflict()
    .ignore();
}

/** A stored alert as the usage view shows it. */
export function alertView(row: AlertRow): AlertView {
  return {
    id: row.id,
    metric: row.subject,
    threshold: Number(normalizeDecimal(row.threshold)),
    level: row.level as AlertView['level'],
    status: row.status === 'superseded' ? 'superseded' : 'notified',
    used: Number(normalizeDecimal(row.used)),
    limit: Number(normalizeDecimal(row.limit)),
    period_start: row.period_start.toISOString(),
    fired_at: row.fired_at.toISOString(),
  };
}

/**
 * Marks a tenant's alert as seen: `acknowledged_at` is set once, and a repeat keeps the first
 * instant (idempotent). Triage state only: whether an alert fires is decided by the tenant's
 * ledger and the unique key on (tenant, period, subject, threshold), which this never touches.
 * Undefined when the tenant has no such alert (another tenant's alert included).
 */
export async function acknowledgeAlert(db: Db, tenantId: string, alertId: string, at: Date): Promise<Record<string, unknown> | undefined> {
  const [row] = await db('alerts')
    .where({ id: alertId, tenant_id: tenantId })
    .update({ acknowledged_at: db.raw('coalesce(acknowledged_at, ?)', [at]) })
    .returning('*');
  return row as Record<string, unknown> | undefined;
}

/**
 * Every tenant's alerts for triage, newest first, without the superseded ones (they are covered
 * by the notified alert of the same claim). `acknowledged: false` reads the partial index of
 * open alerts. The caller paginates the query.
 */
export function alertsForTriage(db: Db, acknowledged: boolean | undefined) {
  const query = db('alerts').whereNot('status', 'superseded').select('*');
  if (acknowledged === false) query.whereNull('acknowledged_at');
  if (acknowledged === true) query.whereNotNull('acknowledged_at');
  return query;
}
