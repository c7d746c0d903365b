/**
 * The end-of-run checks: BILLING.md's five invariants, judged against the load generator's
 * ledger, PostgreSQL and the tenant workflows, once the stack is up again and has caught up.
 */
import type { Client } from '@temporalio/client';
import type { Db } from '../src/db/knex';
import { aggregateStoredUsage, normalizeDecimal } from '../src/db/usage';
import { findPlanVersion } from '../src/db/plans';
import type { InvoiceRow, PeriodRow } from '../src/db/invoices';
import type { AlertRow } from '../src/db/alerts';
import { Dec } from '../src/domain/decimal';
import type { PlanVersion } from '../src/domain/plan';
import { ratePeriod } from '../src/domain/rating';
import { usagePercent } from '../src/domain/thresholds';
import { COST_SUBJECT, stateQuery, tenantWorkflowId, type TenantStateView } from '../src/workflows/messages';
import type { AckedEvent } from './load';
import type { HttpClient } from '../bench/http';

/** A closed period the driver knows of (a finance close answered 200, or an anniversary passed). */
export interface KnownClose {
  tenant_id: string;
  start: string;
}

export interface VerifyInput {
  db: Db;
  temporal: Client;
  api: HttpClient;
  tenants: string[];
  acked: Map<string, Map<string, AckedEvent>>;
  sent: Map<string, Set<string>>;
  knownCloses: KnownClose[];
  /** Webhook deliveries received, by `<type> <event id>` (alert.triggered, invoice.finalized). */
  webhooks: Map<string, number>;
  /** How many examples of each problem to keep in the report. */
  examples?: number;
}

interface StoredRow {
  tenant_id: string;
  event_id: string;
  metric: string;
  quantity: string;
  timestamp: Date;
  period_start: Date;
}


/** What the checks found; `violations` lists every failed check in words. */
export interface Verdict {
  figures: Record<string, number>;
  details: Record<string, unknown>;
  violations: string[];
}

const key = (tenant: string, start: Date | string) => `${tenant}|${new Date(start).toISOString()}`;

export async function verify(input: VerifyInput): Promise<Verdict> {
  const { db, tenants } = input;
  const keep = input.examples ?? 10;
  const examples: Record<string, unknown[]> = {};
  const note = (kind: string, example: unknown) => {
    const list = (examples[kind] ??= []);
    if (list.length < keep) list.push(example);
  };

  const stored = await db('usage_events')
    .whereIn('tenant_id', tenants)
    .select<StoredRow[]>('tenant_id', 'event_id', 'metric', db.raw('quantity::text AS quantity'), 'timestamp', 'period_start');
  const rejected = await db('rejected_events')
    .whereIn('tenant_id', tenants)
    .select<Array<{ tenant_id: string; event_id: string; reason: string }>>('tenant_id', 'event_id', 'reason');
  const periods = await db('periods').whereIn('tenant_id', tenants).orderBy(['tenant_id', 'start']).select<PeriodRow[]>('*');
  const alerts = await db('alerts').whereIn('tenant_id', tenants).select<AlertRow[]>('*');
  const invoices = await db('invoices').whereIn('tenant_id', tenants).select<InvoiceRow[]>('*');
  const deliveries = await db('notification_deliveries')
    .whereIn('tenant_id', tenants)
    .select<Array<{ event_id: string; channel: string; target: string; status: string }>>('event_id', 'channel', 'target', 'status');

  // ---- (2) and (3): acknowledged events stored, exactly once, as acknowledged ----------------
  const storedById = new Map<string, StoredRow[]>();
  for (const row of stored) {
    const k = `${row.tenant_id}|${row.event_id}`;
    const list = storedById.get(k) ?? [];
    list.push(row);
    storedById.set(k, list);
  }
  const rejectedById = new Map(rejected.map((r) => [`${r.tenant_id}|${r.event_id}`, r.reason]));
  let acknowledged = 0;
  let counted = 0;
  let lost = 0;
  let duplicatedRows = 0;
  let mismatched = 0;
  const lostByReason: Record<string, number> = {};
  const lostByTenant: Record<string, number> = {};
  for (const [tenant, events] of input.acked) {
    for (const [id, ack] of events) {
      acknowledged += 1;
      const rows = storedById.get(`${tenant}|${id}`);
      if (!rows || rows.length === 0) {
        lost += 1;
        const reason = rejectedById.get(`${tenant}|${id}`) ?? 'nowhere';
        lostByReason[reason] = (lostByReason[reason] ?? 0) + 1;
        lostByTenant[tenant] = (lostByTenant[tenant] ?? 0) + 1;
        note('lost', { tenant, id, ...ack, in_rejected_events: rejectedById.get(`${tenant}|${id}`) ?? null });
        continue;
      }
      counted += 1;
      if (rows.length > 1) duplicatedRows += rows.length - 1;
      const row = rows[0]!;
      const same =
        row.metric === ack.metric &&
        new Dec(row.quantity).equals(ack.quantity) &&
        new Date(row.timestamp).getTime() === Date.parse(ack.timestamp);
      if (!same) {
        mismatched += 1;
        note('mismatched', { tenant, id, acknowledged: ack, stored: { metric: row.metric, quantity: normalizeDecimal(row.quantity), timestamp: row.timestamp } });
      }
    }
  }
  let storedUnacknowledged = 0;
  let phantom = 0;
  for (const row of stored) {
    if (input.acked.get(row.tenant_id)?.has(row.event_id)) continue;
    if (input.sent.get(row.tenant_id)?.has(row.event_id)) storedUnacknowledged += 1;
    else {
      phantom += 1;
      note('phantom', row);
    }
  }

  // ---- periods: tiling, and where each stored event sits ------------------------------------
  const periodsByTenant = new Map<string, PeriodRow[]>();
  for (const p of periods) {
    const list = periodsByTenant.get(p.tenant_id) ?? [];
    list.push(p);
    periodsByTenant.set(p.tenant_id, list);
  }
  let periodGaps = 0;
  let openPeriodProblems = 0;
  for (const tenant of tenants) {
    const list = periodsByTenant.get(tenant) ?? [];
    for (let i = 1; i < list.length; i++) {
      if (list[i]!.start.getTime() !== list[i - 1]!.end.getTime()) {
        periodGaps += 1;
        note('period_gap', { tenant, previous: list[i - 1], next: list[i] });
      }
    }
    const open = list.filter((p) => p.status === 'open');
    if (open.length !== 1 || open[0] !== list[list.length - 1]) {
      openPeriodProblems += 1;
      note('open_period', { tenant, periods: list.map((p) => ({ start: p.start, end: p.end, status: p.status })) });
    }
  }
  const periodByKey = new Map(periods.map((p) => [key(p.tenant_id, p.start), p]));
  let misplaced = 0;
  let orphanPeriod = 0;
  for (const row of stored) {
    const p = periodByKey.get(key(row.tenant_id, row.period_start));
    if (!p) {
      orphanPeriod += 1;
      note('event_without_period', row);
      continue;
    }
    const at = new Date(row.timestamp).getTime();
    if (at < p.start.getTime() || at >= p.end.getTime()) {
      misplaced += 1;
      note('misplaced', { tenant: row.tenant_id, id: row.event_id, timestamp: row.timestamp, period: { start: p.start, end: p.end, status: p.status } });
    }
  }

  // ---- (1): counters equal the aggregation of the stored events ------------------------------
  const plans = new Map<string, PlanVersion>();
  const planOf = async (p: PeriodRow): Promise<PlanVersion> => {
    const k = `${p.plan_id}@${p.plan_version}`;
    let plan = plans.get(k);
    if (!plan) {
      plan = (await findPlanVersion(db, p.plan_id, p.plan_version))!;
      plans.set(k, plan);
    }
    return plan;
  };
  const storedCount = new Map<string, number>();
  for (const row of stored) storedCount.set(key(row.tenant_id, row.period_start), (storedCount.get(key(row.tenant_id, row.period_start)) ?? 0) + 1);
  const totals = new Map<string, Record<string, string>>();
  for (const p of periods) totals.set(key(p.tenant_id, p.start), await aggregateStoredUsage(db, p.tenant_id, p.start, (await planOf(p)).meters));

  let counterMismatches = 0;
  let countedMismatches = 0;
  let usageAnswered = 0;
  let workflowAlertDuplicates = 0;
  for (const tenant of tenants) {
    const usage = await input.api.attempt('GET', `/v1/tenants/${tenant}/usage?consistent=true`, undefined, 30_000);
    if (usage.status === 200) usageAnswered += 1;
    else note('usage_not_answered', { tenant, status: usage.status, body: usage.body, error: usage.error });
    let state: TenantStateView;
    try {
      state = await input.temporal.workflow.getHandle(tenantWorkflowId(tenant)).query(stateQuery);
    } catch (err) {
      counterMismatches += 1;
      note('counter_mismatch', { tenant, error: String(err) });
      continue;
    }
    const period = periodByKey.get(key(tenant, state.period.start));
    const expected = totals.get(key(tenant, state.period.start)) ?? {};
    if (!period || period.status !== 'open') {
      counterMismatches += 1;
      note('counter_mismatch', { tenant, problem: 'the workflow period is not the open period in PostgreSQL', workflow: state.period, db: period });
    }
    for (const meter of state.plan.meters) {
      const inWorkflow = state.counters[meter.metric]?.value ?? '0';
      const fromEvents = expected[meter.metric] ?? '0';
      const fromUsage = usage.status === 200 ? usage.body?.metrics?.[meter.metric]?.used : undefined;
      const usageOk = fromUsage === undefined || new Dec(fromUsage).equals(fromEvents);
      if (!new Dec(inWorkflow).equals(fromEvents) || !usageOk) {
        counterMismatches += 1;
        note('counter_mismatch', { tenant, period: state.period, metric: meter.metric, workflow: inWorkflow, usage: fromUsage, stored: fromEvents });
      }
    }
    const storedInPeriod = storedCount.get(key(tenant, state.period.start)) ?? 0;
    if (state.events_counted !== storedInPeriod || state.pending_events !== 0 || state.deferred_events !== 0) {
      countedMismatches += 1;
      note('events_counted_mismatch', { tenant, events_counted: state.events_counted, stored: storedInPeriod, pending: state.pending_events, deferred: state.deferred_events });
    }
    if (usage.status === 200 && Array.isArray(usage.body?.alerts)) {
      const ids = usage.body.alerts.map((a: { id: string }) => a.id);
      const extra = ids.length - new Set(ids).size;
      if (extra > 0) {
        workflowAlertDuplicates += extra;
        note('alert_duplicated', { tenant, where: 'usage view', ids });
      }
    }
  }

  // ---- (4): alerts ---------------------------------------------------------------------------
  const alertsByKey = new Map<string, AlertRow[]>();
  for (const a of alerts) {
    const k = `${key(a.tenant_id, a.period_start)}|${a.subject}|${Number(a.threshold)}`;
    const list = alertsByKey.get(k) ?? [];
    list.push(a);
    alertsByKey.set(k, list);
  }
  let alertsExpected = 0;
  let alertsMissing = 0;
  let alertsUnexpected = 0;
  const expectedKeys = new Set<string>();
  for (const p of periods) {
    const plan = await planOf(p);
    const counters = totals.get(key(p.tenant_id, p.start))!;
    const subjects: Array<{ subject: string; used: string; limit: string }> = [];
    for (const meter of plan.meters) {
      if (meter.limit !== undefined && meter.limit > 0) subjects.push({ subject: meter.metric, used: counters[meter.metric] ?? '0', limit: String(meter.limit) });
    }
    if (plan.cost_limit !== undefined && new Dec(plan.cost_limit).greaterThan(0)) {
      subjects.push({ subject: COST_SUBJECT, used: ratePeriod(plan, counters).total, limit: plan.cost_limit });
    }
    for (const s of subjects) {
      const percent = new Dec(usagePercent(s.used, s.limit));
      for (const t of plan.alert_thresholds) {
        const k = `${key(p.tenant_id, p.start)}|${s.subject}|${t}`;
        if (!percent.greaterThanOrEqualTo(t)) continue;
        alertsExpected += 1;
        expectedKeys.add(k);
        if (!alertsByKey.has(k)) {
          alertsMissing += 1;
          note('alert_missing', { tenant: p.tenant_id, period: { start: p.start, end: p.end, status: p.status }, subject: s.subject, threshold: t, used: s.used, limit: s.limit });
        }
      }
    }
  }
  let alertsDuplicatedRows = 0;
  for (const [k, rows] of alertsByKey) {
    if (rows.length > 1) {
      alertsDuplicatedRows += rows.length - 1;
      note('alert_duplicated', { key: k, rows: rows.length });
    }
    // Every meter of these plans only grows within a period, so an alert must match the final total.
    if (!expectedKeys.has(k)) {
      alertsUnexpected += rows.length;
      note('alert_unexpected', { key: k, used: rows[0]!.used });
    }
  }
  const deliveryKeys = new Map<string, number>();
  for (const d of deliveries) {
    const k = `${d.event_id}|${d.channel}|${d.target}`;
    deliveryKeys.set(k, (deliveryKeys.get(k) ?? 0) + 1);
  }
  let deliveryDuplicates = 0;
  for (const [k, n] of deliveryKeys) {
    if (n > 1) {
      deliveryDuplicates += n - 1;
      note('alert_duplicated', { where: 'notification_deliveries', key: k, rows: n });
    }
  }
  const notified = alerts.filter((a) => a.status !== 'superseded');
  const deliveredIds = new Set(deliveries.filter((d) => d.status === 'delivered' || d.status === 'recorded').map((d) => d.event_id));
  let alertsUndelivered = 0;
  for (const a of notified) {
    if (!deliveredIds.has(a.id)) {
      alertsUndelivered += 1;
      note('alert_undelivered', { id: a.id, status: a.status });
    }
  }
  let webhookDuplicates = 0;
  for (const [id, n] of input.webhooks) {
    if (n > 1) {
      webhookDuplicates += n - 1;
      note('webhook_received_twice', { event: id, times: n });
    }
  }

  // ---- (5): one finalized invoice per closed period, equal to a recomputation ----------------
  const expectedInvoices = new Map<string, PeriodRow>();
  const now = Date.now();
  for (const p of periods) {
    if (p.status !== 'open' || p.end.getTime() <= now) expectedInvoices.set(key(p.tenant_id, p.start), p);
  }
  for (const c of input.knownCloses) {
    const k = key(c.tenant_id, c.start);
    if (!expectedInvoices.has(k)) {
      const p = periodByKey.get(k);
      if (p) expectedInvoices.set(k, p);
      else note('invoice_missing', { tenant: c.tenant_id, period_start: c.start, problem: 'closed by the driver, but no period row' });
    }
  }
  const finalizedByKey = new Map<string, InvoiceRow[]>();
  for (const inv of invoices.filter((i) => i.status === 'finalized')) {
    const k = key(inv.tenant_id, inv.period_start);
    const list = finalizedByKey.get(k) ?? [];
    list.push(inv);
    finalizedByKey.set(k, list);
  }
  let invoicesFinalized = 0;
  let invoicesMissing = 0;
  let invoicesMultiple = 0;
  let invoiceMismatches = 0;
  for (const [k, p] of expectedInvoices) {
    const list = finalizedByKey.get(k) ?? [];
    if (list.length === 0) {
      invoicesMissing += 1;
      note('invoice_missing', { tenant: p.tenant_id, period: { start: p.start, end: p.end, status: p.status }, drafts: invoices.filter((i) => key(i.tenant_id, i.period_start) === k).map((i) => i.status) });
      continue;
    }
    if (list.length > 1) {
      invoicesMultiple += 1;
      note('invoice_multiple', { key: k, ids: list.map((i) => i.id) });
      continue;
    }
    invoicesFinalized += 1;
    const inv = list[0]!;
    const plan = await findPlanVersion(db, inv.plan_id, inv.plan_version);
    const rated = ratePeriod(plan!, await aggregateStoredUsage(db, p.tenant_id, p.start, plan!.meters));
    const lines = await db('invoice_lines').where({ invoice_id: inv.id }).orderBy('position').select<Array<{ metric: string; quantity: string; amount: string }>>('metric', 'quantity', 'amount');
    const linesEqual =
      lines.length === rated.lines.length &&
      lines.every((l, i) => l.metric === rated.lines[i]!.metric && new Dec(l.quantity).equals(rated.lines[i]!.quantity) && new Dec(l.amount).equals(rated.lines[i]!.amount));
    const planOk = inv.plan_id === p.plan_id && inv.plan_version === p.plan_version && inv.period_end.getTime() === p.end.getTime();
    if (!new Dec(inv.total).equals(rated.total) || !linesEqual || !planOk) {
      invoiceMismatches += 1;
      note('invoice_mismatch', { id: inv.id, total: normalizeDecimal(inv.total), recomputed: rated.total, lines, recomputed_lines: rated.lines.map((l) => ({ metric: l.metric, quantity: l.quantity, amount: l.amount })) });
    }
  }
  for (const [k, list] of finalizedByKey) {
    if (!expectedInvoices.has(k)) {
      invoicesMultiple += list.length;
      note('invoice_unexpected', { key: k, ids: list.map((i) => i.id) });
    }
  }

  const figures = {
    acknowledged,
    counted,
    lost,
    duplicated: duplicatedRows + mismatched,
    alerts_expected: alertsExpected,
    alerts_fired: alerts.length,
    alerts_duplicated: alertsDuplicatedRows + deliveryDuplicates + workflowAlertDuplicates,
    invoices_expected: expectedInvoices.size,
    invoices_finalized: invoicesFinalized,
    // breakdowns and the further checks
    duplicated_rows: duplicatedRows,
    mismatched,
    stored_events: stored.length,
    stored_unacknowledged: storedUnacknowledged,
    phantom_events: phantom,
    misplaced_events: misplaced,
    events_without_period: orphanPeriod,
    period_gaps: periodGaps,
    open_period_problems: openPeriodProblems,
    counter_mismatches: counterMismatches,
    events_counted_mismatches: countedMismatches,
    usage_consistent_answered: usageAnswered,
    alerts_notified: notified.length,
    alerts_superseded: alerts.length - notified.length,
    alerts_missing: alertsMissing,
    alerts_unexpected: alertsUnexpected,
    alerts_undelivered: alertsUndelivered,
    webhooks_received: [...input.webhooks.values()].reduce((a, b) => a + b, 0),
    webhooks_duplicated: webhookDuplicates,
    invoices_missing: invoicesMissing,
    invoices_multiple: invoicesMultiple,
    invoice_mismatches: invoiceMismatches,
    periods_closed: periods.filter((p) => p.status !== 'open').length,
  };

  const violations: string[] = [];
  const must = (ok: boolean, text: string) => {
    if (!ok) violations.push(text);
  };
  must(lost === 0, `(2) ${lost} acknowledged events are not stored (${JSON.stringify(lostByReason)})`);
  must(duplicatedRows === 0, `(3) ${duplicatedRows} extra stored rows for one event id`);
  must(mismatched === 0, `(3) ${mismatched} stored events differ from what was acknowledged`);
  must(phantom === 0, `${phantom} stored events were never sent`);
  must(counterMismatches === 0 && countedMismatches === 0, `(1) ${counterMismatches} counters and ${countedMismatches} event counts differ from the stored events`);
  must(usageAnswered === tenants.length, `${tenants.length - usageAnswered} tenants did not answer GET usage?consistent=true`);
  must(figures.alerts_duplicated === 0, `(4) ${figures.alerts_duplicated} alerts fired more than once`);
  must(alertsMissing === 0, `(4) ${alertsMissing} crossed thresholds have no alert (fired or superseded)`);
  must(alertsUnexpected === 0, `(4) ${alertsUnexpected} alerts for thresholds the stored usage does not cross`);
  must(alertsUndelivered === 0, `(4) ${alertsUndelivered} notified alerts have no delivery`);
  must(invoicesFinalized === expectedInvoices.size && invoicesMultiple === 0, `(5) ${invoicesFinalized} of ${expectedInvoices.size} closed periods have exactly one finalized invoice (${invoicesMissing} missing, ${invoicesMultiple} extra)`);
  must(invoiceMismatches === 0, `(5) ${invoiceMismatches} finalized invoices differ from a recomputation from the stored events`);
  must(periodGaps === 0 && openPeriodProblems === 0 && orphanPeriod === 0, `periods: ${periodGaps} gaps/overlaps, ${openPeriodProblems} tenants without exactly one open (latest) period, ${orphanPeriod} events outside any period row`);
  must(misplaced === 0, `${misplaced} stored events are counted in a period that does not contain their timestamp`);

  return { figures, details: { lost_by_reason: lostByReason, lost_by_tenant: lostByTenant, examples }, violations };
}
