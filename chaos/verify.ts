/**
 * The end-of-run checks: BILLING.md's five invariants and the balance invariant (grants, the
 * credit they gave, the invoices and `GET …/balance` agree to the cent), judged against the load
 * generator's ledger, PostgreSQL and the tenant workflows, once the stack is up again and has
 * caught up.
 *
 * Counting is checked on both sides of core v2: the read model (`period_counters`, which every
 * claim moves and `GET …/usage` serves) and the tenant workflow's own books (`state` query),
 * each against the stored events, aggregated here independently of both.
 */
import type { Client } from '@temporalio/client';
import type { Db } from '../src/db/knex';
import { aggregateStoredUsage, normalizeDecimal } from '../src/db/usage';
import { COUNTED, readPeriodCounters } from '../src/db/ledger';
import { findPlanVersion } from '../src/db/plans';
import type { InvoiceRow, PeriodRow } from '../src/db/invoices';
import type { AlertRow } from '../src/db/alerts';
import { counterFromAggregates } from '../src/domain/aggregation';
import { Dec } from '../src/domain/decimal';
import type { PlanVersion } from '../src/domain/plan';
import { ratePeriod } from '../src/domain/rating';
import { usagePercent } from '../src/domain/thresholds';
import { COST_SUBJECT, stateQuery, tenantWorkflowId, type TenantStateView } from '../src/workflows/messages';
import type { AckedEvent, BatchRecord } from './load';
import type { HttpClient } from '../bench/http';

/** A closed period the driver knows of (a finance close answered 200, or an anniversary passed). */
export interface KnownClose {
  tenant_id: string;
  start: string;
  /** A finance close's `Idempotency-Key`: the closed period must be the one stored with it. */
  idempotency_key?: string;
}

/** One `DELETE /v1/tenants/{id}` the driver sent while the load kept posting to the tenant. */
export interface CancelRecord {
  tenant_id: string;
  /** Seconds after the load started. */
  t: number;
  requested_at: number;
  /**
   * When the cancellation was known done (epoch ms): a 200, or a 409 `conflict` ("already
   * cancelled") to a retry after an attempt whose answer was lost. Unset: never confirmed.
   */
  answered_at?: number;
  /** The last answer (a status, or the transport error). */
  status: number | string;
  attempts: number;
  /** Every attempt's answer, counted. */
  answers: Record<string, number>;
  final_invoice_id?: string;
  closed_period?: { start: string; end: string };
  /** Late events sent once the DELETE was confirmed (accepted while the grace lasts) and once the grace had passed (refused). */
  probes: { at_answer?: BatchRecord; after_grace?: BatchRecord };
}

/** A prepaid credit grant the driver sent (idempotent on its id, so resent after a lost answer). */
export interface GrantRecord {
  id: string;
  amount: string;
  /** A 200 or 201 answered it. */
  confirmed: boolean;
  /** The refusal, when the API refused it (a cancelled tenant answers 409). */
  refused?: string;
}

export interface VerifyInput {
  db: Db;
  temporal: Client;
  api: HttpClient;
  tenants: string[];
  acked: Map<string, Map<string, AckedEvent>>;
  sent: Map<string, Set<string>>;
  /** Batches finally refused, and every batch for a cancelled tenant (chaos/load.ts). */
  batchLog: BatchRecord[];
  cancels: CancelRecord[];
  /** The grace of the cancelled tenants' plan: their final invoice finalizes once it has passed. */
  cancelGraceSeconds: number;
  knownCloses: KnownClose[];
  /** Webhook deliveries received, by `<type> <event id>` (alert.triggered, invoice.finalized). */
  webhooks: Map<string, number>;
  /** Prepaid credit grants sent, by tenant and grant id. */
  grants: Map<string, Map<string, GrantRecord>>;
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
  /** Null while the event waits to be counted. */
  /** At or below its tenant's watermark: claimed. */
  counted: boolean;
  /** Receive order (bigint as text): breaks ties between equal timestamps for `latest`. */
  seq: string;
}

/** What a period's stored events of one metric add up to, computed here from the rows. */
interface Aggregate {
  total: Dec;
  events: number;
  largest: Dec;
  latest: Dec;
  latestAt: number;
  latestSeq: bigint;
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
    .select<StoredRow[]>('tenant_id', 'event_id', 'metric', db.raw('quantity::text AS quantity'), 'timestamp', 'period_start', db.raw(`${COUNTED()} AS counted`), db.raw('seq::text AS seq'));
  const tenantStatus = new Map(
    (await db('tenants').whereIn('id', tenants).select<Array<{ id: string; status: string }>>('id', 'status')).map((r) => [r.id, r.status]),
  );
  const cancelledTenants = new Set(tenants.filter((t) => tenantStatus.get(t) === 'cancelled' || input.cancels.some((c) => c.tenant_id === t)));
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
  // A 202 means committed: an acknowledged event missing from usage_events was lost, whatever
  // the core did after (there is nowhere else an acknowledged event may wait).
  let acknowledged = 0;
  let storedAcknowledged = 0;
  let counted = 0;
  let lost = 0;
  let duplicatedRows = 0;
  let mismatched = 0;
  const lostByTenant: Record<string, number> = {};
  for (const [tenant, events] of input.acked) {
    for (const [id, ack] of events) {
      acknowledged += 1;
      const rows = storedById.get(`${tenant}|${id}`);
      if (!rows || rows.length === 0) {
        lost += 1;
        lostByTenant[tenant] = (lostByTenant[tenant] ?? 0) + 1;
        note('lost', { tenant, id, ...ack, acked_at: new Date(ack.acked_at).toISOString(), tenant_cancelled: cancelledTenants.has(tenant) });
        continue;
      }
      storedAcknowledged += 1;
      if (rows.some((r) => r.counted)) counted += 1;
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
  let unclaimed = 0;
  for (const row of stored) {
    if (row.counted) continue;
    unclaimed += 1;
    note('unclaimed', { tenant: row.tenant_id, id: row.event_id, period_start: row.period_start, timestamp: row.timestamp });
  }
  // A batch refused at its only attempt (no attempt whose fate is unknown) must have stored nothing.
  let refusedButStored = 0;
  for (const batch of input.batchLog) {
    if (batch.outcome === 'acked' || batch.outcome === 'abandoned' || batch.ambiguous) continue;
    if (batch.kind !== 'new' && batch.kind !== 'multi' && batch.kind !== 'probe') continue;
    const storedIds = batch.events.filter((e) => storedById.has(`${e.tenant_id}|${e.id}`));
    if (storedIds.length > 0) {
      refusedButStored += storedIds.length;
      note('refused_but_stored', { outcome: batch.outcome, kind: batch.kind, first_sent_at: new Date(batch.first_sent_at).toISOString(), stored: storedIds.slice(0, 5) });
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
    // A cancelled subscription has no open period left; any other has exactly one, its latest.
    const open = list.filter((p) => p.status === 'open');
    const ok = cancelledTenants.has(tenant) ? open.length === 0 && list.length > 0 : open.length === 1 && open[0] === list[list.length - 1];
    if (!ok) {
      openPeriodProblems += 1;
      note('open_period', { tenant, cancelled: cancelledTenants.has(tenant), periods: list.map((p) => ({ start: p.start, end: p.end, status: p.status })) });
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
  // The reference every counter is held to: SQL over the stored rows (what invoices are rated from).
  const totals = new Map<string, Record<string, string>>();
  for (const p of periods) totals.set(key(p.tenant_id, p.start), await aggregateStoredUsage(db, p.tenant_id, p.start, (await planOf(p)).meters));

  // Every aggregate of every (tenant, period, metric), recomputed here from the rows, for the
  // read model's rows field by field (a meter reads one field; the others must hold too).
  const aggregates = new Map<string, Aggregate>();
  for (const row of stored) {
    const k = `${key(row.tenant_id, row.period_start)}|${row.metric}`;
    const quantity = new Dec(row.quantity);
    const at = new Date(row.timestamp).getTime();
    const seq = BigInt(row.seq);
    const a = aggregates.get(k);
    if (!a) {
      aggregates.set(k, { total: quantity, events: 1, largest: quantity, latest: quantity, latestAt: at, latestSeq: seq });
      continue;
    }
    a.total = a.total.plus(quantity);
    a.events += 1;
    if (quantity.greaterThan(a.largest)) a.largest = quantity;
    if (at > a.latestAt || (at === a.latestAt && seq > a.latestSeq)) {
      a.latest = quantity;
      a.latestAt = at;
      a.latestSeq = seq;
    }
  }
  let readModelMismatches = 0;
  const readModelSeen = new Set<string>();
  for (const tenant of tenants) {
    const list = periodsByTenant.get(tenant) ?? [];
    const counters = await readPeriodCounters(db, tenant, list.map((p) => p.start));
    for (const c of counters) {
      const k = `${key(tenant, c.period_start)}|${c.metric}`;
      readModelSeen.add(k);
      const a = aggregates.get(k);
      const same = a !== undefined && a.events === c.events && a.total.equals(c.total) && a.largest.equals(c.largest) && a.latest.equals(c.latest);
      if (!same) {
        readModelMismatches += 1;
        note('read_model_mismatch', {
          tenant,
          period_start: c.period_start,
          metric: c.metric,
          read_model: c,
          stored: a ? { total: a.total.toString(), events: a.events, largest: a.largest.toString(), latest: a.latest.toString() } : null,
        });
      }
    }
    // Each meter as the API reads it (counterFromAggregates over the read model), per period.
    for (const p of list) {
      const plan = await planOf(p);
      const start = p.start.toISOString();
      const expected = totals.get(key(tenant, p.start)) ?? {};
      for (const meter of plan.meters) {
        const fromReadModel = counterFromAggregates(
          counters.find((c) => c.period_start === start && c.metric === meter.metric),
          meter.aggregation,
        );
        if (!new Dec(fromReadModel).equals(expected[meter.metric] ?? '0')) {
          readModelMismatches += 1;
          note('read_model_mismatch', { tenant, period_start: start, metric: meter.metric, read_model: fromReadModel, stored: expected[meter.metric] ?? '0' });
        }
      }
    }
  }
  for (const [k, a] of aggregates) {
    if (readModelSeen.has(k)) continue;
    readModelMismatches += 1;
    note('read_model_mismatch', { key: k, problem: 'stored events without a read-model row', events: a.events });
  }

  let counterMismatches = 0;
  let bookEventMismatches = 0;
  let usageAnswered = 0;
  let usageExpected = 0;
  let workflowAlertDuplicates = 0;
  let workflowPendingNonzero = 0;
  let cancelledWorkflowsRunning = 0;
  for (const tenant of tenants) {
    const handle = input.temporal.workflow.getHandle(tenantWorkflowId(tenant));
    if (cancelledTenants.has(tenant)) {
      // A cancelled subscription's workflow ends once its final period has settled; its books
      // are then the read model's (checked above). A run still going would keep billing it.
      const status = await handle.describe().then(
        (d) => d.status.name,
        (err: unknown) => `unknown (${String(err)})`,
      );
      if (status !== 'COMPLETED') {
        cancelledWorkflowsRunning += 1;
        note('cancelled_workflow_running', { tenant, status });
      }
      continue;
    }
    usageExpected += 1;
    const usage = await input.api.attempt('GET', `/v1/tenants/${tenant}/usage?consistent=true`, undefined, 30_000);
    if (usage.status === 200) usageAnswered += 1;
    else note('usage_not_answered', { tenant, status: usage.status, body: usage.body, error: usage.error });
    let state: TenantStateView;
    try {
      state = await handle.query(stateQuery);
    } catch (err) {
      counterMismatches += 1;
      note('counter_mismatch', { tenant, error: String(err) });
      continue;
    }
    const period = periodByKey.get(key(tenant, state.period.start));
    if (!period || period.status !== 'open' || state.cancelled !== null || state.books[0]?.period.start !== state.period.start) {
      counterMismatches += 1;
      note('counter_mismatch', {
        tenant,
        problem: 'the workflow period is not the open period in PostgreSQL, or its first book is not that period',
        workflow: state.period,
        first_book: state.books[0]?.period,
        cancelled: state.cancelled,
        db: period,
      });
    }
    if (state.pending_events !== 0) {
      workflowPendingNonzero += 1;
      note('workflow_pending_nonzero', { tenant, pending_events: state.pending_events, run: state.run });
    }
    // books[0] is the current period; the others are closed periods still in their grace.
    for (const [index, book] of state.books.entries()) {
      const expected = totals.get(key(tenant, book.period.start)) ?? {};
      for (const meter of book.plan.meters) {
        const inWorkflow = counterFromAggregates(
          book.counters.find((c) => c.metric === meter.metric),
          meter.aggregation,
        );
        const fromEvents = expected[meter.metric] ?? '0';
        const fromUsage = index === 0 && usage.status === 200 ? usage.body?.metrics?.[meter.metric]?.used : undefined;
        const usageOk = fromUsage === undefined || new Dec(fromUsage).equals(fromEvents);
        if (!new Dec(inWorkflow).equals(fromEvents) || !usageOk) {
          counterMismatches += 1;
          note('counter_mismatch', { tenant, period: book.period, current: index === 0, metric: meter.metric, workflow: inWorkflow, usage: fromUsage, stored: fromEvents });
        }
      }
      const inBook = book.counters.reduce((n, c) => n + c.events, 0);
      const storedInPeriod = storedCount.get(key(tenant, book.period.start)) ?? 0;
      if (inBook !== storedInPeriod) {
        bookEventMismatches += 1;
        note('book_events_mismatch', { tenant, period: book.period, current: index === 0, in_book: inBook, stored: storedInPeriod });
      }
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
      // When it fired against when its period closed tells a counter that later shrank (events
      // moved out of the period by its rollover) from one that was wrong outright.
      const a = rows[0]!;
      const p = periodByKey.get(key(a.tenant_id, a.period_start));
      note('alert_unexpected', {
        key: k,
        status: a.status,
        used: normalizeDecimal(a.used),
        limit: normalizeDecimal(a.limit),
        fired_at: a.fired_at,
        period: p && { start: p.start, end: p.end, status: p.status, closed_at: p.closed_at },
        stored_now: a.subject === COST_SUBJECT ? undefined : totals.get(key(a.tenant_id, a.period_start))?.[a.subject],
      });
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
  let closeKeyMismatches = 0;
  for (const c of input.knownCloses) {
    const k = key(c.tenant_id, c.start);
    if (c.idempotency_key !== undefined) {
      const stored = await db('period_close_keys').where({ tenant_id: c.tenant_id, idempotency_key: c.idempotency_key }).select<Array<{ start: Date }>>('period_start as start');
      if (stored.length !== 1 || stored[0]!.start.toISOString() !== new Date(c.start).toISOString()) {
        closeKeyMismatches += 1;
        note('close_key_mismatch', { tenant: c.tenant_id, key: c.idempotency_key, answered_start: c.start, stored_starts: stored.map((r) => r.start.toISOString()) });
      }
    }
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

  // ---- issue 17: DELETE during ingest ---------------------------------------------------------
  // Every event acknowledged for a cancelled tenant (before the DELETE answered, or a late one
  // within the grace after it) is billed on a finalized invoice; an event stamped after the
  // DELETE answered falls after the final period and is refused, never stored; the final invoice
  // finalizes once the grace has passed, and the workflow ends.
  const graceMs = input.cancelGraceSeconds * 1000;
  let cancelConfirmed = 0;
  let cancelProblems = 0;
  let cancelAcked = 0;
  let cancelAckedBeforeDelete = 0;
  let cancelAckedAfterDelete = 0;
  let cancelBilled = 0;
  let cancelStoredAfter = 0;
  let cancelBatchesAfter = 0;
  let cancelAckedBatchesAfter = 0;
  const cancelRefusedAfter: Record<string, number> = {};
  const lateProbes: Record<string, number> = {};
  const invoicedStarts = new Set([...finalizedByKey.entries()].filter(([, list]) => list.length === 1).map(([k]) => k));
  const answeredAt = new Map<string, number>();
  for (const c of input.cancels) {
    if (c.answered_at === undefined) {
      cancelProblems += 1;
      note('cancel_problem', { tenant: c.tenant_id, problem: 'the DELETE was never confirmed', status: c.status, attempts: c.attempts });
      continue;
    }
    cancelConfirmed += 1;
    answeredAt.set(c.tenant_id, c.answered_at);
    const list = periodsByTenant.get(c.tenant_id) ?? [];
    const final = list[list.length - 1];
    const problems: string[] = [];
    if (tenantStatus.get(c.tenant_id) !== 'cancelled') problems.push(`tenant status ${tenantStatus.get(c.tenant_id)}`);
    if (!final) problems.push('no period');
    else {
      if (final.status !== 'invoiced') problems.push(`final period ${final.status}`);
      if (c.closed_period && c.closed_period.start !== final.start.toISOString()) problems.push(`the DELETE closed ${c.closed_period.start}, the last period starts ${final.start.toISOString()}`);
      if (!final.grace_ends_at || final.grace_ends_at.getTime() - final.end.getTime() !== graceMs) problems.push(`grace ends ${final.grace_ends_at?.toISOString()} for an end ${final.end.toISOString()}`);
      if (final.end.getTime() > c.answered_at) problems.push(`final period ends ${final.end.toISOString()}, after the DELETE answered`);
      const invoicesOfFinal = finalizedByKey.get(key(c.tenant_id, final.start)) ?? [];
      if (invoicesOfFinal.length !== 1) problems.push(`${invoicesOfFinal.length} finalized invoices for the final period`);
      for (const inv of invoicesOfFinal) {
        if (c.final_invoice_id && inv.id !== c.final_invoice_id) problems.push(`final invoice ${inv.id}, the DELETE answered ${c.final_invoice_id}`);
        if (final.grace_ends_at && (!inv.finalized_at || inv.finalized_at.getTime() < final.grace_ends_at.getTime())) {
          problems.push(`final invoice finalized at ${inv.finalized_at?.toISOString()}, before its grace ended (${final.grace_ends_at.toISOString()})`);
        }
      }
    }
    if (problems.length > 0) {
      cancelProblems += 1;
      note('cancel_problem', { tenant: c.tenant_id, problems, periods: list.map((p) => ({ start: p.start, end: p.end, status: p.status, grace_ends_at: p.grace_ends_at })) });
    }
    for (const [id, ack] of input.acked.get(c.tenant_id) ?? []) {
      cancelAcked += 1;
      if (ack.acked_at < c.answered_at) cancelAckedBeforeDelete += 1;
      else cancelAckedAfterDelete += 1;
      const row = storedById.get(`${c.tenant_id}|${id}`)?.[0];
      if (row && invoicedStarts.has(key(c.tenant_id, row.period_start))) cancelBilled += 1;
      else note('cancel_unbilled', { tenant: c.tenant_id, id, ...ack, acked_at: new Date(ack.acked_at).toISOString(), stored_in: row?.period_start ?? null });
    }
    for (const row of stored) {
      if (row.tenant_id !== c.tenant_id || new Date(row.timestamp).getTime() < c.answered_at) continue;
      cancelStoredAfter += 1;
      note('cancel_stored_after', { tenant: c.tenant_id, id: row.event_id, timestamp: row.timestamp, delete_answered_at: new Date(c.answered_at).toISOString() });
    }
    for (const [which, probe] of Object.entries(c.probes)) {
      if (!probe) continue;
      const k = `${which}: ${probe.outcome}`;
      lateProbes[k] = (lateProbes[k] ?? 0) + 1;
      // Sent once the grace had passed: a 202 would take an event after the final invoice.
      const afterGrace = final?.grace_ends_at ? probe.first_sent_at >= final.grace_ends_at.getTime() : which === 'after_grace';
      if (afterGrace && probe.outcome === 'acked') {
        cancelProblems += 1;
        note('cancel_problem', { tenant: c.tenant_id, problem: 'a late event sent after the grace ended was accepted', which, probe });
      }
    }
  }
  for (const batch of input.batchLog) {
    // After the DELETE: the batch carries a cancelled tenant's event stamped after its answer.
    const after = batch.events.some((e) => answeredAt.has(e.tenant_id) && Date.parse(e.timestamp) >= answeredAt.get(e.tenant_id)!);
    if (!after) continue;
    cancelBatchesAfter += 1;
    if (batch.outcome === 'acked') {
      cancelAckedBatchesAfter += 1;
      note('cancel_acked_after', { kind: batch.kind, first_sent_at: new Date(batch.first_sent_at).toISOString(), events: batch.events.slice(0, 5) });
    } else cancelRefusedAfter[batch.outcome] = (cancelRefusedAfter[batch.outcome] ?? 0) + 1;
  }
  const refusedAfterOk = Object.keys(cancelRefusedAfter).every((code) => code === 'abandoned' || code.startsWith('409') || code.startsWith('422'));

  // ---- the balance: grants, the credit they gave and the invoices agree to the cent ------------
  const grantRows = await db('credit_grants')
    .whereIn('tenant_id', tenants)
    .select<Array<{ tenant_id: string; id: string; amount: string; remaining: string }>>('tenant_id', 'id', db.raw('amount::text AS amount'), db.raw('remaining::text AS remaining'));
  const applications = await db('credit_applications')
    .whereIn('tenant_id', tenants)
    .select<Array<{ tenant_id: string; grant_id: string; invoice_id: string; amount: string; reversed_at: Date | null }>>('tenant_id', 'grant_id', 'invoice_id', db.raw('amount::text AS amount'), 'reversed_at');
  const activeBy = (field: 'grant_id' | 'invoice_id', tenant: string, id: string) =>
    applications.filter((a) => a.tenant_id === tenant && a[field] === id && a.reversed_at === null).reduce((sum, a) => sum.plus(a.amount), new Dec(0));
  let grantProblems = 0;
  let balanceMismatches = 0;
  let creditApplied = new Dec(0);
  for (const [tenant, sentGrants] of input.grants) {
    for (const grant of sentGrants.values()) {
      const row = grantRows.find((r) => r.tenant_id === tenant && r.id === grant.id);
      if (grant.confirmed && !row) {
        grantProblems += 1;
        note('grant_problem', { tenant, grant, problem: 'confirmed, not stored' });
      } else if (row && !new Dec(row.amount).equals(grant.amount)) {
        grantProblems += 1;
        note('grant_problem', { tenant, grant, stored: row.amount, problem: 'stored with another amount' });
      }
    }
  }
  for (const row of grantRows) {
    if (!input.grants.get(row.tenant_id)?.has(row.id)) {
      grantProblems += 1;
      note('grant_problem', { tenant: row.tenant_id, id: row.id, problem: 'stored, never sent' });
    }
    const expected = new Dec(row.amount).minus(activeBy('grant_id', row.tenant_id, row.id));
    if (!expected.equals(row.remaining) || expected.isNegative()) {
      balanceMismatches += 1;
      note('balance_mismatch', { tenant: row.tenant_id, grant: row.id, amount: row.amount, remaining: row.remaining, expected: expected.toString() });
    }
  }
  for (const invoice of invoices) {
    const applied = activeBy('invoice_id', invoice.tenant_id, invoice.id);
    creditApplied = creditApplied.plus(applied);
    const problems: string[] = [];
    if (invoice.status === 'finalized') {
      if (!applied.equals(invoice.credits_applied)) problems.push(`credits_applied ${invoice.credits_applied}, its grants gave ${applied.toString()}`);
      if (applied.greaterThan(invoice.total)) problems.push(`credit ${applied.toString()} above the total ${invoice.total}`);
      if (invoice.amount_due === null || !new Dec(invoice.total).minus(invoice.credits_applied).equals(invoice.amount_due)) problems.push(`amount_due ${invoice.amount_due} for total ${invoice.total} and credit ${invoice.credits_applied}`);
    } else if (!applied.isZero()) problems.push(`${invoice.status} invoice still holds ${applied.toString()} of credit`);
    if (problems.length > 0) {
      balanceMismatches += 1;
      note('balance_mismatch', { invoice: invoice.id, status: invoice.status, problems });
    }
  }
  // What GET …/balance answers for each tenant with credit, against the grants minus the credit
  // its finalized invoices took (no grant here expires).
  let balanceAnswers = 0;
  for (const tenant of input.grants.keys()) {
    const res = await input.api.attempt('GET', `/v1/tenants/${tenant}/balance`, undefined, 10_000);
    if (res.status !== 200) continue;
    balanceAnswers += 1;
    const granted = grantRows.filter((r) => r.tenant_id === tenant).reduce((sum, r) => sum.plus(r.amount), new Dec(0));
    const charged = invoices.filter((i) => i.tenant_id === tenant && i.status === 'finalized').reduce((sum, i) => sum.plus(i.credits_applied), new Dec(0));
    if (!granted.minus(charged).equals(res.body.balance) || !charged.equals(res.body.total_charged)) {
      balanceMismatches += 1;
      note('balance_mismatch', { tenant, answered: { balance: res.body.balance, total_charged: res.body.total_charged }, expected: { balance: granted.minus(charged).toString(), total_charged: charged.toString() } });
    }
  }

  // A tenant run that failed could not replay its history (src/workers/worker.ts): a new run
  // billed the tenant on, but a determinism bug is a bug, so it is reported like the rest.
  const ownWorkflows = new Set(tenants.map(tenantWorkflowId));
  let tenantRunsFailed = 0;
  for await (const run of input.temporal.workflow.list({ query: `WorkflowType = 'tenantBilling' AND ExecutionStatus = 'Failed'` })) {
    if (!ownWorkflows.has(run.workflowId)) continue;
    tenantRunsFailed += 1;
    const last = (await input.temporal.workflow.getHandle(run.workflowId, run.runId).fetchHistory()).events?.at(-1);
    note('tenant_run_failed', { workflow_id: run.workflowId, run_id: run.runId, failure: last?.workflowExecutionFailedEventAttributes?.failure?.message });
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
    stored_acknowledged: storedAcknowledged,
    unclaimed_events: unclaimed,
    refused_but_stored: refusedButStored,
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
    book_event_mismatches: bookEventMismatches,
    read_model_mismatches: readModelMismatches,
    workflow_pending_nonzero: workflowPendingNonzero,
    usage_consistent_expected: usageExpected,
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
    cancel_tenants: input.cancels.length,
    cancel_confirmed: cancelConfirmed,
    cancel_problems: cancelProblems,
    cancel_acked: cancelAcked,
    cancel_acked_before_delete: cancelAckedBeforeDelete,
    cancel_acked_after_delete: cancelAckedAfterDelete,
    cancel_billed: cancelBilled,
    cancel_batches_after: cancelBatchesAfter,
    cancel_acked_batches_after: cancelAckedBatchesAfter,
    cancel_stored_after: cancelStoredAfter,
    cancelled_workflows_running: cancelledWorkflowsRunning,
    tenant_runs_failed: tenantRunsFailed,
    grants_sent: [...input.grants.values()].reduce((n, m) => n + m.size, 0),
    grants_stored: grantRows.length,
    grant_problems: grantProblems,
    credit_applied: Number(creditApplied.toString()),
    balance_answers: balanceAnswers,
    balance_mismatches: balanceMismatches,
  };


  const violations: string[] = [];
  const must = (ok: boolean, text: string) => {
    if (!ok) violations.push(text);
  };
  must(lost === 0, `(2) ${lost} acknowledged events are not stored (by tenant: ${JSON.stringify(lostByTenant)})`);
  must(duplicatedRows === 0, `(3) ${duplicatedRows} extra stored rows for one event id`);
  must(mismatched === 0, `(3) ${mismatched} stored events differ from what was acknowledged`);
  must(phantom === 0, `${phantom} stored events were never sent`);
  must(refusedButStored === 0, `${refusedButStored} events of batches refused at their only attempt are stored`);
  must(counted === acknowledged && unclaimed === 0, `(1) ${acknowledged} acknowledged, ${storedAcknowledged} stored, ${counted} counted; ${unclaimed} stored events never claimed`);
  must(readModelMismatches === 0, `(1) ${readModelMismatches} read-model counters (period_counters) differ from the stored events`);
  must(counterMismatches === 0 && bookEventMismatches === 0, `(1) ${counterMismatches} workflow counters and ${bookEventMismatches} workflow event counts differ from the stored events`);
  must(usageAnswered === usageExpected, `${usageExpected - usageAnswered} active tenants did not answer GET usage?consistent=true`);
  must(figures.alerts_duplicated === 0, `(4) ${figures.alerts_duplicated} alerts fired more than once`);
  must(alertsMissing === 0, `(4) ${alertsMissing} crossed thresholds have no alert (fired or superseded)`);
  must(alertsUnexpected === 0, `(4) ${alertsUnexpected} alerts for thresholds the stored usage does not cross`);
  must(alertsUndelivered === 0, `(4) ${alertsUndelivered} notified alerts have no delivery`);
  must(invoicesFinalized === expectedInvoices.size && invoicesMultiple === 0, `(5) ${invoicesFinalized} of ${expectedInvoices.size} closed periods have exactly one finalized invoice (${invoicesMissing} missing, ${invoicesMultiple} extra)`);
  must(invoiceMismatches === 0, `(5) ${invoiceMismatches} finalized invoices differ from a recomputation from the stored events`);
  must(closeKeyMismatches === 0, `(5) ${closeKeyMismatches} closes answered a period other than the one stored with their Idempotency-Key`);
  must(periodGaps === 0 && openPeriodProblems === 0 && orphanPeriod === 0, `periods: ${periodGaps} gaps/overlaps, ${openPeriodProblems} tenants without exactly one open (latest) period (none once cancelled), ${orphanPeriod} events outside any period row`);
  must(misplaced === 0, `${misplaced} stored events are counted in a period that does not contain their timestamp`);
  must(cancelConfirmed === input.cancels.length && cancelProblems === 0, `cancel: ${input.cancels.length - cancelConfirmed} DELETEs never confirmed, ${cancelProblems} cancelled tenants with a wrong final period, invoice or late-event answer`);
  must(cancelBilled === cancelAcked, `cancel: ${cancelAcked - cancelBilled} of ${cancelAcked} acknowledged events of cancelled tenants are not on a finalized invoice`);
  must(cancelAckedBatchesAfter === 0 && cancelStoredAfter === 0 && refusedAfterOk, `cancel: after the DELETE answered ${cancelAckedBatchesAfter} batches were acknowledged and ${cancelStoredAfter} events stored (refusals ${JSON.stringify(cancelRefusedAfter)})`);
  must(grantProblems === 0, `balance: ${grantProblems} grants missing, stored twice, with another amount or never sent`);
  must(balanceMismatches === 0, `balance: ${balanceMismatches} grants, invoices or balance answers disagree with the credit applied`);
  must(cancelledWorkflowsRunning === 0, `cancel: ${cancelledWorkflowsRunning} cancelled tenants' workflows have not ended`);
  must(tenantRunsFailed === 0, `${tenantRunsFailed} tenant runs failed (their history could not be replayed); the next run billed on`);

  return { figures, details: { lost_by_tenant: lostByTenant, cancel_refused_after: cancelRefusedAfter, late_probes: lateProbes, examples }, violations };
}
