import type { Db } from './knex';
import { keysetPage, type Page, type PageRequest } from './pagination';
import type { RuleChannel } from '../notifications/alerts';
import type { AlertRecord } from '../contracts/ledger';
import { COST_SUBJECT } from '../contracts/ids';
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

/** A row of `alerts` as the alert lists show it: with its channels and triage state. */
export interface ListedAlertRow extends Omit<AlertRow, 'status'> {
  status: 'notified' | 'superseded' | 'failed';
  channels: Array<string | { type: string; target?: string; status?: string }> | null;
  acknowledged_at: Date | null;
}

/** A row of `alert_rules`: a threshold of a metric (or of the cost when `metric` is null) and its channel. */
export interface AlertRuleRow {
  id: string;
  tenant_id: string;
  metric: string | null;
  threshold: string;
  channel: RuleChannel;
  created_at: Date;
  deleted_at: Date | null;
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
export async function insertAlertRuleWithinCap(db: Db, row: AlertRuleRow): Promise<boolean> {
  return db.transaction(async (trx) => {
    await trx('tenants').where({ id: row.tenant_id }).forUpdate().first('id');
    const held = await trx('alert_rules').where({ tenant_id: row.tenant_id }).whereNull('deleted_at').count<{ n: string }[]>({ n: '*' });
    if (Number(held[0]!.n) >= MAX_ALERT_RULES_PER_TENANT) return false;
    await trx('alert_rules').insert({ ...row, channel: JSON.stringify(row.channel) });
    return true;
  });
}

/** Withdraws a rule just stored, which its tenant's run never heard of. */
export async function removeAlertRule(db: Db, ruleId: string): Promise<void> {
  await db('alert_rules').where({ id: ruleId }).delete();
}

/** A rule of the tenant still in force, or undefined (deleted rules and other tenants' included). */
export async function findAlertRule(db: Db, tenantId: string, ruleId: string): Promise<AlertRuleRow | undefined> {
  return db('alert_rules').where({ id: ruleId, tenant_id: tenantId }).whereNull('deleted_at').first<AlertRuleRow | undefined>();
}

/** A page of the tenant's rules in force, newest first. */
export async function listAlertRules(db: Db, tenantId: string, page: PageRequest): Promise<Page<AlertRuleRow>> {
  return keysetPage<AlertRuleRow>(db('alert_rules').where({ tenant_id: tenantId }).whereNull('deleted_at').select('*'), page, {
    sort: ['created_at', 'id'],
    idColumn: 'id',
  });
}

/** Takes a rule out of force at `at` (kept as a row: its alerts still name it). */
export async function retireAlertRule(db: Db, ruleId: string, at: Date): Promise<void> {
  await db('alert_rules').where({ id: ruleId }).whereNull('deleted_at').update({ deleted_at: at });
}

/** Puts back in force a rule retired at `at`, when its tenant's run could not be told. */
export async function reinstateAlertRule(db: Db, ruleId: string, at: Date): Promise<void> {
  await db('alert_rules').where({ id: ruleId, deleted_at: at }).update({ deleted_at: null });
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

/** A notified alert with what its delivery needs: its tenant's contact, its period's plan, and the rules it goes to. */
export interface AlertToDeliver {
  alert: AlertRow;
  /** The tenant's channels, and the secret its webhooks are signed with (read here, so a delivery reads it once). */
  tenant: { id: string; name: string; email: string | null; webhook_url: string | null; webhook_secret: string | null };
  /** The plan version of the alert's period (undefined if the period is gone). */
  plan?: { id: string; version: number };
  /** The thresholds it covers (one batch may jump over several); its own when none is stored. */
  covers: number[];
  /**
   * The tenant's rules it goes to: on the alert's subject (its metric, or the cost), at one of
   * the thresholds it covers, and in force when it fired (a rule deleted afterwards still gets its
   * alert).
   */
  rules: Array<Pick<AlertRuleRow, 'id' | 'channel'>>;
}

/** One recorded alert and what its delivery needs, in one statement; undefined when there is no such alert. */
export async function findAlertToDeliver(db: Db, alertId: string): Promise<AlertToDeliver | undefined> {
  const result = await db.raw<{ rows: Array<AlertRow & { tenant_name: string; email: string | null; webhook_url: string | null; webhook_secret: string | null; plan_id: string | null; plan_version: number | null; rules: AlertToDeliver['rules'] }> }>(
    `WITH a AS (
       SELECT *, CASE WHEN jsonb_typeof(covers) = 'array' AND jsonb_array_length(covers) > 0 THEN covers ELSE jsonb_build_array(threshold) END AS covered
         FROM alerts WHERE id = :id
     )
     SELECT a.id, a.tenant_id, a.period_start, a.subject, a.threshold, a.level, a.status, a.used, a."limit", a.covered AS covers, a.rule_id, a.fired_at,
            t.name AS tenant_name, t.email, t.webhook_url, t.webhook_secret, p.plan_id, p.plan_version,
            (SELECT coalesce(json_agg(json_build_object('id', r.id, 'channel', r.channel) ORDER BY r.created_at, r.id), '[]')
               FROM alert_rules r
              WHERE r.tenant_id = a.tenant_id
                AND (CASE WHEN a.subject = :cost THEN r.metric IS NULL ELSE r.metric = a.subject END)
                AND r.threshold IN (SELECT x::numeric FROM jsonb_array_elements_text(a.covered) x)
                AND (r.deleted_at IS NULL OR r.deleted_at > a.fired_at)) AS rules
       FROM a JOIN tenants t ON t.id = a.tenant_id
       LEFT JOIN periods p ON p.tenant_id = a.tenant_id AND p.start = a.period_start`,
    { id: alertId, cost: COST_SUBJECT },
  );
  const row = result.rows[0];
  if (!row) return undefined;
  const { tenant_name, email, webhook_url, webhook_secret, plan_id, plan_version, rules, ...alert } = row;
  return {
    alert,
    tenant: { id: alert.tenant_id, name: tenant_name, email, webhook_url, webhook_secret },
    ...(plan_id !== null && plan_version !== null ? { plan: { id: plan_id, version: plan_version } } : {}),
    covers: (alert.covers ?? []).map(Number),
    rules,
  };
}

/**
 * Writes where a notified alert went: its channel types (`alerts.channels`, e.g.
 * `["email","webhook"]`), and status `failed` when a channel was given up. A superseded alert is
 * left as it is.
 */
export async function recordAlertChannels(db: Db, alertId: string, channels: string[], failed: boolean): Promise<void> {
  await db('alerts')
    .where({ id: alertId })
    .whereNot({ status: 'superseded' })
    .update({ channels: JSON.stringify(channels), ...(failed ? { status: 'failed' } : {}) });
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
export async function acknowledgeAlert(db: Db, tenantId: string, alertId: string, at: Date): Promise<ListedAlertRow | undefined> {
  const [row] = await db('alerts')
    .where({ id: alertId, tenant_id: tenantId })
    .update({ acknowledged_at: db.raw('coalesce(acknowledged_at, ?)', [at]) })
    .returning<ListedAlertRow[]>('*');
  return row;
}

/**
 * Alerts decided by one claim share `fired_at`: within it the highest threshold (the notified
 * one) comes first. Alert ids are unique across tenants, so one order serves every list.
 */
const ALERTS_NEWEST_FIRST = { sort: ['fired_at', 'threshold', 'id'], idColumn: 'id' };

/** A page of the tenant's alerts, newest first. */
export async function listTenantAlerts(db: Db, tenantId: string, page: PageRequest): Promise<Page<ListedAlertRow>> {
  return keysetPage<ListedAlertRow>(db('alerts').where({ tenant_id: tenantId }).select('*'), page, ALERTS_NEWEST_FIRST);
}

/**
 * A page of every tenant's alerts for triage, newest first, without the superseded ones (they
 * are covered by the notified alert of the same claim). `acknowledged: false` reads the partial
 * index of open alerts.
 */
export async function listAlertsForTriage(db: Db, acknowledged: boolean | undefined, page: PageRequest): Promise<Page<ListedAlertRow>> {
  const query = db('alerts').whereNot('status', 'superseded').select('*');
  if (acknowledged === false) query.whereNull('acknowledged_at');
  if (acknowledged === true) query.whereNotNull('acknowledged_at');
  return keysetPage<ListedAlertRow>(query, page, ALERTS_NEWEST_FIRST);
}
