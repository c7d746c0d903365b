import { inOneSnapshot, type Db } from './knex';
import { readPeriodCounters } from './ledger';
import { findPlanVersion } from './plans';
import type { PeriodBounds } from './invoices';
import { normalizeDecimal } from './numeric';
import { alertView, type AlertRow } from './alerts';
import type { AlertRuleInput, AlertView, BookSnapshot, LedgerSnapshot } from '../contracts/ledger';
import { COST_SUBJECT, invoiceId } from '../contracts/ids';
import { readLimitOverrides } from './entitlements';
import { readBalanceAlertState, readBalanceFacts } from './credits';
import { readPacks } from './packs';
import { countedGroupsOfPeriods } from './dimensions';

/**
 * A tenant's ledger rebuilt from PostgreSQL: what a tenant workflow starts from when no earlier
 * run handed it one (its first run, or a run started again after one ended unexpectedly). The
 * counters are the read model's, the decided thresholds the stored alerts; nothing the
 * workflow ever decided is lost with its history, only its answers to earlier authorize ids.
 */


/** The tenant's alert rules that are in force. */
export async function activeAlertRules(db: Db, tenantId: string): Promise<AlertRuleInput[]> {
  const rules = await db('alert_rules')
    .where({ tenant_id: tenantId })
    .whereNull('deleted_at')
    .orderBy('created_at')
    .select<Array<{ id: string; metric: string | null; threshold: string }>>('id', 'metric', 'threshold');
  return rules.map((r) => ({ id: r.id, subject: r.metric ?? COST_SUBJECT, threshold: Number(r.threshold) }));
}

/**
 * The ledger of a tenant, or null when there is no such tenant (or it never had a period). Read
 * as of one commit ({@link inOneSnapshot}): a claim, a close or a finalization that commits while
 * it reads shows in all of its figures or in none.
 */
export function loadLedger(db: Db, tenantId: string): Promise<LedgerSnapshot | null> {
  return inOneSnapshot(db, (trx) => ledgerIn(trx, tenantId));
}

async function ledgerIn(db: Db, tenantId: string): Promise<LedgerSnapshot | null> {
  const tenant = await db('tenants')
    .where({ id: tenantId })
    .first<{ id: string; name: string; timezone: string; billing_anchor: Date; status: 'active' | 'cancelled' } | undefined>(
      'id',
      'name',
      'timezone',
      'billing_anchor',
      'status',
    );
  if (!tenant) return null;
  const periods = await db('periods')
    .where({ tenant_id: tenantId })
    .whereNot({ status: 'invoiced' })
    .orderBy('start')
    .select<PeriodBounds[]>('start', 'end', 'status', 'grace_ends_at', 'plan_id', 'plan_version');
  const open = periods.find((p) => p.status === 'open');
  const closed = periods.filter((p) => p.status === 'closed');
  // A cancelled subscription has no open period: its last period stands in as the (inert) current one.
  const current =
    open ?? closed[closed.length - 1] ?? (await db('periods').where({ tenant_id: tenantId }).orderBy('start', 'desc').first<PeriodBounds | undefined>());
  if (!current) return null;

  const starts = [...new Set([current, ...closed].map((p) => p.start.toISOString()))];
  const counters = await readPeriodCounters(db, tenantId, starts);
  const alerts = await db('alerts').where({ tenant_id: tenantId }).whereIn('period_start', starts).orderBy('fired_at').select<AlertRow[]>();

  const groups = await countedGroupsOfPeriods(db, tenantId, starts);
  const book = async (row: PeriodBounds): Promise<BookSnapshot> => {
    const start = row.start.toISOString();
    const own = groups.find((g) => g.period_start === start);
    const plan = await findPlanVersion(db, row.plan_id, row.plan_version);
    if (!plan) throw new Error(`plan ${row.plan_id} v${row.plan_version} is missing`);
    const decided = new Map<string, number[]>();
    for (const a of alerts.filter((a) => a.period_start.toISOString() === start)) {
      decided.set(a.subject, [...(decided.get(a.subject) ?? []), Number(normalizeDecimal(a.threshold))]);
    }
    return {
      period: { start, end: row.end.toISOString() },
      plan,
      ...(row.status === 'closed' ? { grace_ends_at: (row.grace_ends_at ?? row.end).toISOString() } : {}),
      counters: counters.filter((c) => c.period_start === start),
      decided: [...decided.entries()],
      ...(own ? { groups: own.groups } : {}),
    };
  };

  const currentStart = current.start.toISOString();
  const overrides = await readLimitOverrides(db, tenantId);
  const view: AlertView[] = open ? alerts.filter((a) => a.period_start.toISOString() === currentStart).map(alertView) : [];
  return {
    tenant: { id: tenant.id, name: tenant.name, timezone: tenant.timezone, billing_anchor: tenant.billing_anchor.toISOString() },
    alert_rules: await activeAlertRules(db, tenantId),
    current: { ...(await book(current)), ...(Object.keys(overrides).length > 0 ? { limit_overrides: overrides } : {}) },
    alerts: view,
    closing: await Promise.all(closed.map(book)),
    authorizations: [],
    ...(tenant.status === 'cancelled' && !open ? { cancelled: { final_invoice_id: invoiceId(tenantId, currentStart, 1) } } : {}),
    balance: await readBalanceFacts(db, tenantId, new Date()),
    balance_alerts: await readBalanceAlertState(db, tenantId),
    packs: await readPacks(db, tenantId),
  };
}
