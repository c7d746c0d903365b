import type { Knex } from 'knex';
import type { Db } from './knex';
import { lockTenantLedger } from './ingest';
import { COUNTED, countedThrough, readPeriodCounters, type PeriodCounter } from './ledger';
import { findPlanVersion } from './plans';
import { storePeriodFigures } from './summaries';
import { writePeriodInvoice, type PeriodBounds } from './invoices';
import { periodAfterEarlyClose, type Period } from '../domain/periods';
import type { PlanVersion } from '../domain/plan';
import type { AlertRuleInput } from '../contracts/ledger';
import { invoiceId } from '../contracts/ids';
import { activeAlertRules } from './ledger-restore';
import { readLimitOverrides } from './entitlements';
import { countedGroupsOfPeriods } from './dimensions';
import type { MeterGroup } from '../domain/dimensions';

/**
 * A rollover as one transaction under the tenant's exclusive ledger lock (docs/design/core-v2.md):
 * the period closes, events stamped at or after the close move to the next period, the next
 * period opens on the tenant's plan as it stands now, and the closed period's draft invoice is
 * written. Ingest waits for the lock, so every batch is placed either entirely before the close
 * or entirely after it. A retry after the commit finds the period closed and answers the same.
 */

/** What to close. */
export interface RolloverRequest {
  tenant_id: string;
  period_start: string;
  /** The instant the period ends (its anniversary, or the instant finance closed it). */
  close_at: string;
  /** Late events are accepted until `close_at` plus this (0: the invoice finalizes at once). */
  grace_seconds: number;
  /**
   * A cancellation: no next period; the final period holds every event stored for it, so it
   * ends after the latest of them if one is stamped past `close_at`.
   */
  cancel: boolean;
  /** The `Idempotency-Key` of the finance close, stored with the closed period (a retry finds it). */
  idempotency_key?: string;
}

/** The closed period as stored, and the one that follows it (none after a cancellation). */
export interface RolloverResult {
  closed: Period & { grace_ends_at: string };
  closed_counters: PeriodCounter[];
  invoice_id: string;
  closed_groups: Record<string, MeterGroup[]>;
  next: null | {
    period: Period;
    plan: PlanVersion;
    alert_rules: AlertRuleInput[];
    counters: PeriodCounter[];
    limit_overrides: Record<string, string>;
    groups: Record<string, MeterGroup[]>;
  };
}


export async function rollOverPeriod(db: Db, request: RolloverRequest): Promise<RolloverResult> {
  return db.transaction(async (trx) => {
    await lockTenantLedger(trx, request.tenant_id, 'exclusive');
    const period = await trx('periods').where({ tenant_id: request.tenant_id, start: request.period_start }).first<PeriodBounds | undefined>();
    if (!period) throw new Error(`no period ${request.period_start} for tenant ${request.tenant_id}`);
    if (period.status !== 'open') return storedRollover(trx, request.tenant_id, period);

    const tenant = await trx('tenants')
      .where({ id: request.tenant_id })
      .first<{ plan_id: string; billing_anchor: Date; timezone: string }>('plan_id', 'billing_anchor', 'timezone');
    let end = new Date(request.close_at);
    // Which events are counted decides which counters a move changes; no claim moves it meanwhile.
    const counted = await countedThrough(trx, request.tenant_id, { lock: true });
    if (request.cancel) {
      // Events already placed past this period (stamped after its end while its rollover was
      // due) have no later period to go to: they are the final period's too.
      const absorbed = await trx('usage_events')
        .where({ tenant_id: request.tenant_id })
        .andWhere('period_start', '>', period.start)
        .update({ period_start: period.start })
        .returning<Array<{ seq: string }>>('seq');
      if (absorbed.some((m) => BigInt(m.seq) <= counted)) {
        await trx('period_counters').where({ tenant_id: request.tenant_id }).andWhere('period_start', '>', period.start).delete();
        await recountPeriod(trx, request.tenant_id, period.start);
      }
      const latest = await trx('usage_events')
        .where({ tenant_id: request.tenant_id, period_start: period.start })
        .max<{ latest: Date | null }>('timestamp as latest')
        .first();
      if (latest?.latest && latest.latest >= end) end = new Date(latest.latest.getTime() + 1);
    } else {
      // The tenant's run decides its alerts and authorizations on the events it counts, and its
      // clock stands still within a workflow task: a claim in the task that reads the close
      // instant may have counted events stamped after that instant, though before this
      // transaction. Those stay in the period they were decided in: the close ends 1 ms after the
      // latest of them. Events stamped after this transaction's clock are future-stamped, and
      // move to the next period whether counted or not (a close is never pushed into the future).
      const latestCounted = await trx('usage_events')
        .where({ tenant_id: request.tenant_id, period_start: period.start })
        .andWhere('timestamp', '>=', end)
        .andWhere('timestamp', '<', trx.raw('now()'))
        .andWhereRaw(COUNTED())
        .max<{ latest: Date | null }>('timestamp as latest')
        .first();
      if (latestCounted?.latest) end = new Date(Math.min(latestCounted.latest.getTime() + 1, period.end.getTime()));
    }
    const graceEndsAt = new Date(end.getTime() + request.grace_seconds * 1000);
    await trx('periods')
      .where({ tenant_id: request.tenant_id, start: period.start })
      .update({ end, status: 'closed', grace_ends_at: graceEndsAt, closed_at: new Date() });
    if (request.idempotency_key) await storeCloseKey(trx, request.tenant_id, request.idempotency_key, period.start);

    // Running figures to rate again: the closed period (events may have moved out of it) and the
    // next one (its base fee, and events already counted for it).
    const rated: Array<Date | string> = [period.start];
    if (request.cancel) {
      await trx('tenants').where({ id: request.tenant_id }).update({ status: 'cancelled', cancelled_at: new Date(), updated_at: new Date() });
    } else {
      const plan = await findPlanVersion(trx, tenant.plan_id);
      if (!plan) throw new Error(`plan ${tenant.plan_id} not found`);
      // The next plan's interval decides the next period, tiled from the end of this one.
      const next = periodAfterEarlyClose(tenant.billing_anchor.toISOString(), plan.interval, tenant.timezone, end.toISOString());
      await trx('periods')
        .insert({ tenant_id: request.tenant_id, start: next.start, end: next.end, plan_id: plan.id, plan_version: plan.version, status: 'open' })
        .onConflict(['tenant_id', 'start'])
        .ignore();
      const moved = await trx('usage_events')
        .where({ tenant_id: request.tenant_id, period_start: period.start })
        .andWhere('timestamp', '>=', end)
        .update({ period_start: next.start })
        .returning<Array<{ seq: string }>>('seq');
      // Events ingest already placed past this period (stamped after its end, within the future
      // tolerance) were placed by the tiling it expected; an early close may tile otherwise
      // (a plan change to another interval): place them again by the periods that will exist.
      const ahead = await trx('usage_events')
        .where({ tenant_id: request.tenant_id })
        .andWhere('period_start', '>', period.start)
        .select<Array<{ event_id: string; timestamp: Date; period_start: Date; seq: string }>>('event_id', 'timestamp', 'period_start', 'seq');
      const touched = new Set<number>(moved.some((m) => BigInt(m.seq) <= counted) ? [period.start.getTime(), Date.parse(next.start)] : []);
      for (const row of ahead) {
        let home: Period = next;
        while (row.timestamp.getTime() >= Date.parse(home.end)) home = periodAfterEarlyClose(tenant.billing_anchor.toISOString(), plan.interval, tenant.timezone, home.end);
        if (Date.parse(home.start) === row.period_start.getTime()) continue;
        await trx('usage_events').where({ tenant_id: request.tenant_id, event_id: row.event_id }).update({ period_start: home.start });
        if (BigInt(row.seq) <= counted) for (const at of [row.period_start.getTime(), Date.parse(home.start)]) touched.add(at);
      }
      for (const at of touched) await recountPeriod(trx, request.tenant_id, new Date(at));
      rated.push(next.start);
    }
    await storePeriodFigures(trx, request.tenant_id, rated);
    await writePeriodInvoice(trx, { tenant_id: request.tenant_id, period_start: period.start.toISOString(), version: 1 }, false);
    const closed = await trx('periods').where({ tenant_id: request.tenant_id, start: period.start }).first<PeriodBounds>();
    return storedRollover(trx, request.tenant_id, closed);
  });
}

/** The close that answered a finance request with this `Idempotency-Key`, or undefined when none did. */
export async function closeByIdempotencyKey(db: Db, tenantId: string, key: string): Promise<RolloverResult | undefined> {
  return db.transaction(async (trx) => {
    const closed = await trx('periods')
      .join('period_close_keys', function joinKey() {
        this.on('period_close_keys.tenant_id', '=', 'periods.tenant_id').andOn('period_close_keys.period_start', '=', 'periods.start');
      })
      .where({ 'periods.tenant_id': tenantId, 'period_close_keys.idempotency_key': key })
      .first<PeriodBounds | undefined>('periods.*');
    return closed ? storedRollover(trx, tenantId, closed) : undefined;
  });
}

/**
 * Stores a close's `Idempotency-Key` with the period whose close answered it: the rollover's own
 * key in its transaction, and a key whose close shared another's rollover before its answer. A
 * key is stored once; storing it again (a retried activity) changes nothing.
 */
export async function storeCloseKey(db: Db | Knex.Transaction, tenantId: string, key: string, periodStart: Date | string): Promise<void> {
  await db('period_close_keys').insert({ tenant_id: tenantId, idempotency_key: key, period_start: periodStart }).onConflict(['tenant_id', 'idempotency_key']).ignore();
}

/** The rollover as stored: what a first attempt answers, and what a retry reads back. */
async function storedRollover(trx: Knex.Transaction, tenantId: string, closed: PeriodBounds): Promise<RolloverResult> {
  const nextRow = await trx('periods').where({ tenant_id: tenantId, start: closed.end }).first<PeriodBounds | undefined>();
  const counters = await readPeriodCounters(trx, tenantId, nextRow ? [closed.start, nextRow.start] : [closed.start]);
  const start = closed.start.toISOString();
  let next: RolloverResult['next'] = null;
  if (nextRow) {
    const plan = await findPlanVersion(trx, nextRow.plan_id, nextRow.plan_version);
    if (!plan) throw new Error(`plan ${nextRow.plan_id} v${nextRow.plan_version} is missing`);
    const nextStart = nextRow.start.toISOString();
    next = {
      period: { start: nextStart, end: nextRow.end.toISOString() },
      plan,
      alert_rules: await activeAlertRules(trx, tenantId),
      counters: counters.filter((c) => c.period_start === nextStart),
      limit_overrides: await readLimitOverrides(trx, tenantId),
      groups: (await countedGroupsOfPeriods(trx, tenantId, [nextStart]))[0]?.groups ?? {},
    };
  }
  return {
    closed: { start, end: closed.end.toISOString(), grace_ends_at: (closed.grace_ends_at ?? closed.end).toISOString() },
    closed_counters: counters.filter((c) => c.period_start === start),
    closed_groups: (await countedGroupsOfPeriods(trx, tenantId, [start]))[0]?.groups ?? {},
    invoice_id: invoiceId(tenantId, start, 1),
    next,
  };
}

/** Rebuilds one period's read-model counters from its counted events. */
async function recountPeriod(trx: Knex.Transaction, tenantId: string, periodStart: Date): Promise<void> {
  await trx('period_counters').where({ tenant_id: tenantId, period_start: periodStart }).delete();
  await trx.raw(
    `INSERT INTO period_counters (tenant_id, period_start, metric, total, events, largest, latest, latest_at, latest_seq)
     SELECT tenant_id, period_start, metric, sum(quantity), count(*), max(quantity),
            (array_agg(quantity ORDER BY "timestamp" DESC, seq DESC))[1],
            max("timestamp"),
            (array_agg(seq ORDER BY "timestamp" DESC, seq DESC))[1]
       FROM usage_events
      WHERE tenant_id = ? AND period_start = ? AND ${COUNTED()}
      GROUP BY tenant_id, period_start, metric`,
    [tenantId, periodStart],
  );
}
