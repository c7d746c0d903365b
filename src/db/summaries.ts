import type { Knex } from 'knex';
import type { Db } from './knex';
import { findPlanVersion } from './plans';
import { normalizeDecimal } from './numeric';
import { counterFromAggregates } from '../domain/aggregation';
import { Dec, roundMoney, toDecimalString } from '../domain/decimal';
import type { PlanVersion } from '../domain/plan';
import { BASE_FEE_METRIC, ratePeriod } from '../domain/rating';

/**
 * Monthly summaries (BILLING.md, "Retention and summaries"): per tenant, the totals of the periods
 * that started in a calendar month (UTC), served from stored per-period figures, never from raw
 * events, so a month stays readable after retention has purged its events:
 *
 * - a period with a **finalized invoice** counts with it (after a rerun, the new version);
 * - a period **not invoiced yet** (open, or closed and in its grace) counts with its running
 *   figure in `period_figures`: its `period_counters` rated with the period's plan version, by
 *   the transaction that opens or moves the period (a rollover, the tenant's creation:
 *   `storePeriodFigures`) or, after claims, by the worker's figures refresher about a second
 *   later (`refreshDueFigures`). Its figures still move, and the row says so (`final: false`).
 *
 * `monthly_summaries` holds, per month, tenant and currency, those figures added up (total,
 * per-metric usage and amount, how many periods), rewritten by `refreshSummaries` in each
 * transaction that stores a running figure or finalizes or reruns an invoice. Nothing is added
 * up or rated per request: every month, the current one too, is one index walk of
 * `monthly_summaries_month_total` for a page sorted by total. Sorted by a metric, the page walks
 * `monthly_summary_usage_ranking`: `monthly_summary_usage` holds each row's usage per metric,
 * rewritten in the statement that rewrites the row; a row without the metric sorts as 0 and is
 * read, by id, only when the month has such rows and the page reaches 0 (`metricPage`).
 * `total_count` is counted from an index alone. A tenant whose periods in one month were billed
 * in two currencies gets one row per currency: amounts in different currencies are never added.
 */
/** One tenant's month in one currency. */
export interface MonthlySummary {
  /** `<tenant>/<currency>`: the row's cursor for `starting_after`. */
  id: string;
  tenant_id: string;
  month: string;
  /** Per metric: usage (the periods' billed quantities added up) and the rounded amounts added up. */
  metrics: Record<string, { used: string; amount: string }>;
  total: string;
  currency: string;
  /** Against the same tenant and currency the month before (absent: 0). `percent`: null from 0. */
  change: { total: string; percent: number | null };
  /** Every period of the row is invoiced: its figures no longer move. */
  final: boolean;
}

/** How `GET /v1/summaries` orders rows: by total or by one metric's usage, descending with `-`. */
export interface SummaryOrder {
  by: 'total' | { metric: string };
  descending: boolean;
}

/** What to read: the month, the order, an optional metric, and a page (no `limit`: every row). */
export interface SummaryQuery {
  month: string;
  order: SummaryOrder;
  metric?: string;
  limit?: number;
  /** A row id from a previous page. */
  startingAfter?: string;
}

/** A page of summaries; `unknownCursor` when `startingAfter` names no row of the month. */
export interface SummaryPage {
  data: MonthlySummary[];
  has_more: boolean;
  total_count: number;
  unknownCursor: boolean;
}

/** The UTC month `YYYY-MM` as a half-open range, and the month before it. */
export function monthRange(month: string): { start: Date; end: Date; previous: { start: Date; end: Date } } {
  const [year, m] = month.split('-').map(Number) as [number, number];
  const start = new Date(Date.UTC(year, m - 1, 1));
  return { start, end: new Date(Date.UTC(year, m, 1)), previous: { start: new Date(Date.UTC(year, m - 2, 1)), end: start } };
}

/** Per metric: usage and amount, as decimal strings (the base fee is in the total only). */
type MetricFigures = Record<string, { used: string; amount: string }>;

/** A period not invoiced yet, joined with one of its counters (null columns: nothing counted). */
interface UninvoicedRow {
  tenant_id: string;
  start: Date;
  plan_id: string;
  plan_version: number;
  metric: string | null;
  total: string | null;
  events: string | null;
  largest: string | null;
  latest: string | null;
}

/** One period's running figure as `period_figures` holds it. */
interface PeriodFigures {
  tenant_id: string;
  period_start: Date;
  currency: string;
  total: string;
  metrics: MetricFigures;
}

/** A period rated from its counters with its plan version: each meter's pricing and the base fee. */
function rateCounters(plan: PlanVersion, period: UninvoicedRow, counters: UninvoicedRow[]): PeriodFigures {
  const values: Record<string, string> = {};
  for (const meter of plan.meters) {
    const c = counters.find((r) => r.metric === meter.metric);
    values[meter.metric] = counterFromAggregates(
      c && { total: normalizeDecimal(c.total!), events: Number(c.events), largest: normalizeDecimal(c.largest!), latest: normalizeDecimal(c.latest!) },
      meter.aggregation,
    );
  }
  const rated = ratePeriod(plan, values);
  const metrics: MetricFigures = {};
  for (const line of rated.lines) if (line.metric !== BASE_FEE_METRIC) metrics[line.metric] = { used: line.quantity, amount: line.amount };
  return { tenant_id: period.tenant_id, period_start: period.start, currency: plan.currency, total: rated.total, metrics };
}

/**
 * Rates the given periods (those not invoiced yet; the others are left alone) from their counters
 * as they stand in this transaction, and stores their running figures: one read, one upsert.
 * `keep` leaves a figure already stored untouched (a backfill beside live claims).
 */
async function rateAndStore(trx: Db | Knex.Transaction, periods: Array<{ tenant_id: string; start: string | Date }>, onConflict: 'replace' | 'keep'): Promise<void> {
  if (periods.length === 0) return;
  const { rows } = await trx.raw<{ rows: UninvoicedRow[] }>(
    `SELECT p.tenant_id, p.start, p.plan_id, p.plan_version, c.metric, c.total::text AS total, c.events, c.largest::text AS largest, c.latest::text AS latest
       FROM unnest(?::text[], ?::timestamptz[]) AS k(tenant_id, start)
       JOIN periods p ON p.tenant_id = k.tenant_id AND p.start = k.start
       LEFT JOIN period_counters c ON c.tenant_id = p.tenant_id AND c.period_start = p.start
      WHERE p.status <> 'invoiced'`,
    [periods.map((p) => p.tenant_id), periods.map((p) => new Date(p.start).toISOString())] as unknown as Knex.RawBinding[],
  );
  const byPeriod = new Map<string, UninvoicedRow[]>();
  for (const row of rows) {
    const key = `${row.tenant_id}/${row.start.toISOString()}`;
    const list = byPeriod.get(key);
    if (list) list.push(row);
    else byPeriod.set(key, [row]);
  }
  const figures: PeriodFigures[] = [];
  for (const counters of byPeriod.values()) {
    const period = counters[0]!;
    const plan = await findPlanVersion(trx as Db, period.plan_id, period.plan_version);
    if (plan) figures.push(rateCounters(plan, period, counters));
  }
  if (figures.length === 0) return;
  await trx.raw(
    `INSERT INTO period_figures (tenant_id, period_start, currency, total, metrics)
     SELECT * FROM unnest(?::text[], ?::timestamptz[], ?::text[], ?::numeric[], ?::jsonb[])
     ON CONFLICT (tenant_id, period_start) ${
       onConflict === 'keep'
         ? 'DO NOTHING'
         : 'DO UPDATE SET currency = EXCLUDED.currency, total = EXCLUDED.total, metrics = EXCLUDED.metrics, updated_at = now()'
     }`,
    [
      figures.map((f) => f.tenant_id),
      figures.map((f) => f.period_start.toISOString()),
      figures.map((f) => f.currency),
      figures.map((f) => f.total),
      figures.map((f) => JSON.stringify(f.metrics)),
    ] as unknown as Knex.RawBinding[],
  );
}

/**
 * Keeps the running figures of one tenant's periods current, and the tenant's summary rows of
 * their months, in the caller's transaction (the one that moved their counters or opened them:
 * a rollover, the tenant's creation). It holds the tenant's figures lock until that transaction
 * ends, as the figures refresher does while it rates, so two ratings of one tenant's periods
 * never overlap: the figure stored last is rated from the latest counters.
 */
export async function storePeriodFigures(trx: Knex.Transaction, tenantId: string, periodStarts: Array<string | Date>): Promise<void> {
  if (periodStarts.length === 0) return;
  await trx.raw('SELECT pg_advisory_xact_lock(?, hashtext(?))', [FIGURES_LOCK_CLASS, tenantId]);
  const periods = periodStarts.map((start) => ({ tenant_id: tenantId, start }));
  await rateAndStore(trx, periods, 'replace');
  await refreshSummaries(trx, periods, { lock: true });
}

/** Advisory-lock class of a tenant's figures lock (the tenant id's hash is the second key). */
const FIGURES_LOCK_CLASS = 0x7a12;

/**
 * Rates every period not invoiced yet that has no running figure, and rewrites the summary rows
 * of their months (migration 20261222000000_period_figures), in batches; a figure a claim stored
 * meanwhile is kept.
 */
export async function backfillPeriodFigures(db: Db | Knex.Transaction, batch = 1_000): Promise<number> {
  let stored = 0;
  for (;;) {
    const missing = await db.raw<{ rows: Array<{ tenant_id: string; start: Date }> }>(
      `SELECT p.tenant_id, p.start FROM periods p
        WHERE p.status <> 'invoiced'
          AND NOT EXISTS (SELECT 1 FROM period_figures f WHERE f.tenant_id = p.tenant_id AND f.period_start = p.start)
          AND EXISTS (SELECT 1 FROM plan_versions v WHERE v.plan_id = p.plan_id AND v.version = p.plan_version)
        LIMIT ?`,
      [batch],
    );
    if (missing.rows.length === 0) return stored;
    await rateAndStore(db, missing.rows, 'keep');
    await refreshSummaries(db, missing.rows, { lock: false });
    stored += missing.rows.length;
  }
}

/**
 * Recomputes one tenant's summary of the month `periodStart` falls in, in the caller's
 * transaction (the one that finalizes or reruns an invoice).
 */
export async function refreshMonthlySummary(trx: Knex.Transaction, tenantId: string, periodStart: string | Date): Promise<void> {
  await refreshSummaries(trx, [{ tenant_id: tenantId, start: periodStart }], { lock: true });
}

/** The UTC month a period start falls in, as `monthly_summaries` keys it, with its bounds. */
function monthOf(start: string | Date): { month: string; start: string; end: string } {
  const at = new Date(start);
  const first = new Date(Date.UTC(at.getUTCFullYear(), at.getUTCMonth(), 1));
  return { month: monthKey(first), start: first.toISOString(), end: new Date(Date.UTC(at.getUTCFullYear(), at.getUTCMonth() + 1, 1)).toISOString() };
}

/**
 * Rewrites the summary rows of the tenants' months these periods fall in, from what is stored:
 * a period with a finalized invoice counts with it, any other with its running figure. One row
 * per currency; a currency with nothing left loses its row. The same statement rewrites the rows'
 * `monthly_summary_usage` (one per metric a row holds; a metric the row no longer holds loses
 * its), so the two tables never disagree. With `lock`, a transaction-scoped
 * advisory lock per tenant and month (taken in one order) serializes two rewrites of one row, so
 * the later one reads the earlier one's invoice or figure.
 */
async function refreshSummaries(trx: Db | Knex.Transaction, periods: Array<{ tenant_id: string; start: string | Date }>, options: { lock: boolean }): Promise<void> {
  const keys = new Map<string, { tenant_id: string; month: string; start: string; end: string }>();
  for (const period of periods) {
    const month = monthOf(period.start);
    keys.set(`monthly_summary:${period.tenant_id}:${month.start}`, { tenant_id: period.tenant_id, ...month });
  }
  if (options.lock) {
    await trx.raw('SELECT pg_advisory_xact_lock(hashtext(key)) FROM (SELECT unnest(?::text[]) AS key ORDER BY 1) keys', [[...keys.keys()].sort()] as unknown as Knex.RawBinding[]);
  }
  const rows = [...keys.values()];
  await trx.raw(
    `WITH keys AS (
       SELECT * FROM unnest(:tenants::text[], :months::date[], :starts::timestamptz[], :ends::timestamptz[]) AS k(tenant_id, month, start_at, end_at)
     ), inv AS (
       SELECT k.tenant_id, k.month, i.id, i.currency, i.total FROM keys k
         JOIN invoices i ON i.tenant_id = k.tenant_id AND i.status = 'finalized' AND i.period_start >= k.start_at AND i.period_start < k.end_at
     ), running AS (
       SELECT k.tenant_id, k.month, f.currency, f.total, f.metrics FROM keys k
         JOIN periods p ON p.tenant_id = k.tenant_id AND p.start >= k.start_at AND p.start < k.end_at AND p.status <> 'invoiced'
         JOIN period_figures f ON f.tenant_id = p.tenant_id AND f.period_start = p.start
        WHERE NOT EXISTS (SELECT 1 FROM invoices i WHERE i.tenant_id = p.tenant_id AND i.period_start = p.start AND i.status = 'finalized')
     ), per_currency AS (
       SELECT tenant_id, month, currency, sum(total) AS total, count(*) AS periods, bool_and(invoiced) AS final FROM (
         SELECT tenant_id, month, currency, total, true AS invoiced FROM inv
         UNION ALL
         SELECT tenant_id, month, currency, total, false FROM running
       ) figures GROUP BY tenant_id, month, currency
     ), lines AS (
       SELECT tenant_id, month, currency, metric, sum(used) AS used, sum(amount) AS amount FROM (
         SELECT inv.tenant_id, inv.month, inv.currency, l.metric, l.quantity AS used, l.amount
           FROM inv JOIN invoice_lines l ON l.invoice_id = inv.id WHERE l.metric <> :baseFee
         UNION ALL
         SELECT r.tenant_id, r.month, r.currency, m.key, (m.value ->> 'used')::numeric, (m.value ->> 'amount')::numeric
           FROM running r CROSS JOIN LATERAL jsonb_each(r.metrics) m
       ) figures GROUP BY tenant_id, month, currency, metric
     ), line_sets AS (
       SELECT tenant_id, month, currency, jsonb_object_agg(metric, jsonb_build_object('used', used::text, 'amount', amount::text)) AS metrics
         FROM lines GROUP BY tenant_id, month, currency
     ), summary AS (
       SELECT c.tenant_id, c.month, c.currency, c.total, c.periods, c.final, coalesce(s.metrics, '{}'::jsonb) AS metrics
         FROM per_currency c LEFT JOIN line_sets s ON s.tenant_id = c.tenant_id AND s.month = c.month AND s.currency = c.currency
     ), gone AS (
       DELETE FROM monthly_summaries m USING keys k
        WHERE m.month = k.month AND m.tenant_id = k.tenant_id
          AND NOT EXISTS (SELECT 1 FROM summary s WHERE s.tenant_id = m.tenant_id AND s.month = m.month AND s.currency = m.currency)
     ), usage_gone AS (
       DELETE FROM monthly_summary_usage u USING keys k
        WHERE u.month = k.month AND u.tenant_id = k.tenant_id
          AND NOT EXISTS (SELECT 1 FROM lines l WHERE l.tenant_id = u.tenant_id AND l.month = u.month AND l.currency = u.currency AND l.metric = u.metric)
     ), usage_kept AS (
       INSERT INTO monthly_summary_usage (month, tenant_id, currency, metric, used)
       SELECT month, tenant_id, currency, metric, coalesce(used, 0) FROM lines
       ON CONFLICT (month, tenant_id, currency, metric) DO UPDATE SET used = EXCLUDED.used
        WHERE monthly_summary_usage.used IS DISTINCT FROM EXCLUDED.used
     )
     INSERT INTO monthly_summaries (month, tenant_id, currency, total, metrics, periods, final, updated_at)
     SELECT month, tenant_id, currency, total, metrics, periods, final, now() FROM summary
     ON CONFLICT (month, tenant_id, currency)
     DO UPDATE SET total = EXCLUDED.total, metrics = EXCLUDED.metrics, periods = EXCLUDED.periods, final = EXCLUDED.final, updated_at = now()`,
    {
      tenants: rows.map((r) => r.tenant_id),
      months: rows.map((r) => r.month),
      starts: rows.map((r) => r.start),
      ends: rows.map((r) => r.end),
      baseFee: BASE_FEE_METRIC,
    } as unknown as Record<string, Knex.RawBinding>,
  );
}

/** A row of a page as the query returns it. */
interface PageRow {
  tenant_id: string;
  currency: string;
  total: string;
  /** The month before's total (0 without a row). */
  previous: string;
  final: boolean;
  /** `{ metric: { used, amount } }` as decimal strings. */
  metrics: MetricFigures;
}

/**
 * One page of a month's summaries, sorted, with the change against the month before. Ties in
 * the sort go by id in the same direction. Sorted by total: a walk of
 * `monthly_summaries_month_total` after the cursor row's key. Sorted by a metric: see
 * `metricPage`. `total_count` and the cursor come from index lookups, never from the month's rows.
 */
export async function monthlySummaries(db: Db, query: SummaryQuery): Promise<SummaryPage> {
  const range = monthRange(query.month);
  const [cursorTenant, cursorCurrency] = query.startingAfter === undefined ? [null, null] : splitId(query.startingAfter);
  const scope: PageScope = {
    month: monthKey(range.start),
    previous: monthKey(range.previous.start),
    filterMetric: query.metric ?? null,
    cursorTenant,
    cursorCurrency,
    take: query.limit === undefined ? null : query.limit + 1,
  };
  const sortMetric = query.order.by === 'total' ? null : query.order.by.metric;
  let rows: PageRow[];
  let count: number;
  let cursor: CursorRow | undefined;
  if (sortMetric === null) {
    [rows, count, cursor] = await Promise.all([totalPage(db, scope, query.order.descending), countOf(db, scope), cursorOf(db, scope, null)]);
  } else {
    // The page starts from the cursor's usage of the metric.
    cursor = await cursorOf(db, scope, sortMetric);
    [rows, count] = await Promise.all([cursor ? metricPage(db, scope, sortMetric, query.order.descending, cursor) : [], countOf(db, scope)]);
  }
  const page = query.limit === undefined ? rows : rows.slice(0, query.limit);
  return {
    data: page.map((row) => summaryOf(query.month, row, query.metric)),
    has_more: query.limit !== undefined && rows.length > query.limit,
    total_count: count,
    unknownCursor: cursor === undefined,
  };
}

/** What a page query is bound to: the month and the one before, the filter, the cursor, LIMIT. */
interface PageScope {
  month: string;
  previous: string;
  filterMetric: string | null;
  cursorTenant: string | null;
  cursorCurrency: string | null;
  /** One more than the page, to tell `has_more`; null: every row. */
  take: number | null;
}

/** A page sorted by total: `monthly_summaries_month_total` walked after the cursor row's key. */
async function totalPage(db: Db, scope: PageScope, descending: boolean): Promise<PageRow[]> {
  const [op, direction] = descending ? ['<', 'DESC'] : ['>', 'ASC'];
  const { rows } = await db.raw<{ rows: PageRow[] }>(
    `SELECT page.tenant_id, page.currency, page.total::text AS total, coalesce(p.total, 0)::text AS previous, page.final, page.metrics
       FROM (SELECT s.tenant_id, s.currency, s.total, s.final, s.metrics
               FROM monthly_summaries s
              WHERE s.month = :month AND (:filterMetric::text IS NULL OR s.metrics -> :filterMetric IS NOT NULL)
                AND (:cursorTenant::text IS NULL OR (s.total, s.tenant_id, s.currency) ${op} (
                      SELECT c.total, c.tenant_id, c.currency FROM monthly_summaries c
                       WHERE c.month = :month AND c.tenant_id = :cursorTenant AND c.currency = :cursorCurrency))
              ORDER BY s.total ${direction}, s.tenant_id ${direction}, s.currency ${direction}
              LIMIT :take) page
       LEFT JOIN monthly_summaries p ON p.month = :previous AND p.tenant_id = page.tenant_id AND p.currency = page.currency
      ORDER BY page.total ${direction}, page.tenant_id ${direction}, page.currency ${direction}`,
    scope as unknown as Record<string, Knex.RawBinding>,
  );
  return rows;
}

/** The rows in scope (the month's, or those holding the filter's metric), counted from an index alone. */
async function countOf(db: Db, scope: PageScope): Promise<number> {
  const { rows } = await db.raw<{ rows: Array<{ count: string }> }>(
    scope.filterMetric === null
      ? 'SELECT count(*) AS count FROM monthly_summaries WHERE month = :month'
      : 'SELECT count(*) AS count FROM monthly_summary_usage WHERE month = :month AND metric = :filterMetric',
    scope as unknown as Record<string, Knex.RawBinding>,
  );
  return Number(rows[0]!.count);
}

/** The cursor row, with its usage of the sort metric (0 without it). */
interface CursorRow {
  used: string;
}

/**
 * The cursor row, if it is in scope (with a filter, it holds the filter's metric); no cursor
 * counts as found.
 */
async function cursorOf(db: Db, scope: PageScope, sortMetric: string | null): Promise<CursorRow | undefined> {
  if (scope.cursorTenant === null) return { used: '0' };
  const { rows } = await db.raw<{ rows: CursorRow[] }>(
    `SELECT coalesce(u.used, 0)::text AS used FROM monthly_summaries c
       LEFT JOIN monthly_summary_usage u ON u.month = c.month AND u.metric = :sortMetric AND u.tenant_id = c.tenant_id AND u.currency = c.currency
      WHERE c.month = :month AND c.tenant_id = :cursorTenant AND c.currency = :cursorCurrency
        AND (:filterMetric::text IS NULL OR EXISTS (
              SELECT 1 FROM monthly_summary_usage f
               WHERE f.month = c.month AND f.metric = :filterMetric AND f.tenant_id = c.tenant_id AND f.currency = c.currency))`,
    { ...scope, sortMetric } as unknown as Record<string, Knex.RawBinding>,
  );
  return rows[0];
}

/**
 * A page sorted by a metric's usage; a row without the metric sorts as 0. Two branches, each in
 * index order and cut at the page size, then merged:
 *
 * - the rows holding the metric: `monthly_summary_usage_ranking` walked after the cursor's key
 *   (with a `metric=` filter of another metric, only rows holding that one too);
 * - the rows without it, all at 0, by id: the month's `monthly_summaries` primary key walked,
 *   probing `monthly_summary_usage`'s for the metric (and the filter's). Read only when the cursor is not past 0, the first branch leaves
 *   room at or past 0 in the page, and (counted from the indexes alone, only then) the month has
 *   rows without the metric: the pages before the 0 boundary, and a month where every row holds
 *   the metric, never read them.
 *
 * The page's rows are then joined to their summary rows and the month before's by key.
 */
async function metricPage(db: Db, scope: PageScope, sortMetric: string, descending: boolean, cursor: CursorRow): Promise<PageRow[]> {
  const [op, direction, reach] = descending ? ['<', 'DESC', 'min(sort_key) <= 0'] : ['>', 'ASC', 'max(sort_key) >= 0'];
  const holdsFilter = (alias: string) =>
    `EXISTS (SELECT 1 FROM monthly_summary_usage f WHERE f.month = ${alias}.month AND f.metric = :filterMetric AND f.tenant_id = ${alias}.tenant_id AND f.currency = ${alias}.currency)`;
  const hasCursor = scope.cursorTenant !== null;
  // Where the cursor stands against 0 in the walking direction: past it (1), at it (0), before it (-1).
  const cursorSide = hasCursor ? new Dec(cursor.used).comparedTo(0) * (descending ? -1 : 1) : -1;
  // With the sort metric as the filter, every row in scope holds it.
  const withoutBranch = scope.filterMetric !== sortMetric && cursorSide <= 0;
  const gates = [
    scope.take === null ? '' : `(SELECT count(*) < :take OR ${reach} FROM with_metric)`,
    scope.filterMetric === null
      ? `(SELECT count(*) FROM monthly_summaries WHERE month = :month) > (SELECT count(*) FROM monthly_summary_usage WHERE month = :month AND metric = :sortMetric)`
      : '',
  ].filter(Boolean);
  const withMetric = `
    SELECT u.used AS sort_key, u.tenant_id, u.currency FROM monthly_summary_usage u
     WHERE u.month = :month AND u.metric = :sortMetric
       ${hasCursor ? `AND (u.used, u.tenant_id, u.currency) ${op} (:cursorUsed::numeric, :cursorTenant::text, :cursorCurrency::text)` : ''}
       ${scope.filterMetric === null || scope.filterMetric === sortMetric ? '' : `AND ${holdsFilter('u')}`}
     ORDER BY u.used ${direction}, u.tenant_id ${direction}, u.currency ${direction}
     LIMIT :take`;
  const withoutMetric = `
    SELECT 0::numeric AS sort_key, s.tenant_id, s.currency FROM monthly_summaries s
     WHERE s.month = :month ${scope.filterMetric === null ? '' : `AND ${holdsFilter('s')}`}
       ${cursorSide === 0 ? `AND (s.tenant_id, s.currency) ${op} (:cursorTenant::text, :cursorCurrency::text)` : ''}
       AND NOT EXISTS (SELECT 1 FROM monthly_summary_usage u WHERE u.month = s.month AND u.metric = :sortMetric AND u.tenant_id = s.tenant_id AND u.currency = s.currency)
       ${gates.map((gate) => `AND ${gate}`).join(' ')}
     ORDER BY s.tenant_id ${direction}, s.currency ${direction}
     LIMIT :take`;
  const { rows } = await db.raw<{ rows: PageRow[] }>(
    `WITH with_metric AS (${withMetric})${withoutBranch ? `, without_metric AS (${withoutMetric})` : ''}
     SELECT page.tenant_id, page.currency, s.total::text AS total, coalesce(p.total, 0)::text AS previous, s.final, s.metrics
       FROM (SELECT * FROM with_metric ${withoutBranch ? 'UNION ALL SELECT * FROM without_metric' : ''}
              ORDER BY sort_key ${direction}, tenant_id ${direction}, currency ${direction}
              LIMIT :take) page
       JOIN monthly_summaries s ON s.month = :month AND s.tenant_id = page.tenant_id AND s.currency = page.currency
       LEFT JOIN monthly_summaries p ON p.month = :previous AND p.tenant_id = page.tenant_id AND p.currency = page.currency
      ORDER BY page.sort_key ${direction}, page.tenant_id ${direction}, page.currency ${direction}`,
    { ...scope, sortMetric, cursorUsed: cursor.used } as unknown as Record<string, Knex.RawBinding>,
  );
  return rows;
}

/** `<tenant>/<currency>` apart; tenant ids never hold a `/`. */
function splitId(id: string): [string, string] {
  const at = id.lastIndexOf('/');
  return at < 0 ? [id, ''] : [id.slice(0, at), id.slice(at + 1)];
}

const monthKey = (d: Date) => d.toISOString().slice(0, 10);

/** A page row as the API shows it: its metrics (or the one asked for), the change in money. */
function summaryOf(month: string, row: PageRow, metric: string | undefined): MonthlySummary {
  const previous = new Dec(row.previous);
  const total = new Dec(row.total);
  const change = total.minus(previous);
  return {
    id: `${row.tenant_id}/${row.currency}`,
    tenant_id: row.tenant_id,
    month,
    metrics: Object.fromEntries(
      Object.entries(row.metrics)
        .filter(([name]) => metric === undefined || name === metric)
        .sort(([a], [b]) => (a < b ? -1 : 1))
        .map(([name, figures]) => [name, { used: toDecimalString(new Dec(figures.used)), amount: roundMoney(figures.amount, row.currency) }]),
    ),
    total: roundMoney(total, row.currency),
    currency: row.currency,
    change: {
      total: roundMoney(change, row.currency),
      percent: previous.isZero() ? null : change.times(100).dividedBy(previous).toDecimalPlaces(2, Dec.ROUND_HALF_UP).toNumber(),
    },
    final: row.final,
  };
}

/**
 * Rates the running figures of up to `batch` tenants whose figures are behind their watermark
 * (claims moved it since), in tenant id order from just after `after`, rewrites their months'
 * summary rows, and marks them rated; answers how many were due in that batch, how many it rated,
 * and the last tenant it looked at (where the next batch starts, so tenants with high ids are not
 * starved while low ones keep becoming due). It never waits for a claim, and a claim never waits
 * for it:
 * - the tenants are rated under their figures lock (`storePeriodFigures` takes it too), tried
 *   and skipped when another refresher or a rollover holds it, and their counters are read after
 *   it is held, so the figure stored last is always the newest;
 * - the mark (`figures_through_seq`, the watermark read before the counters) is written after
 *   the figures commit, skipping a tenant whose totals row a claim holds right now: it stays due
 *   and is rated again, which costs a rating and loses nothing.
 */
export async function refreshDueFigures(db: Db, batch = 200, after = ''): Promise<{ due: number; rated: number; last: string | undefined }> {
  const due = await db.raw<{ rows: Array<{ tenant_id: string; through: string }> }>(
    `SELECT tenant_id, claimed_through_seq::text AS through FROM tenant_event_totals
      WHERE claimed_through_seq > figures_through_seq AND tenant_id > ? ORDER BY tenant_id LIMIT ?`,
    [after, batch],
  );
  const found = { due: due.rows.length, last: due.rows.at(-1)?.tenant_id };
  if (due.rows.length === 0) return { ...found, rated: 0 };
  const rated = await db.transaction(async (trx) => {
    const held = await trx.raw<{ rows: Array<{ tenant_id: string }> }>(
      'SELECT tenant_id FROM unnest(?::text[]) AS t(tenant_id) WHERE pg_try_advisory_xact_lock(?, hashtext(tenant_id))',
      [due.rows.map((r) => r.tenant_id), FIGURES_LOCK_CLASS] as unknown as Knex.RawBinding[],
    );
    const tenants = held.rows.map((r) => r.tenant_id);
    if (tenants.length === 0) return [];
    const periods = await trx.raw<{ rows: Array<{ tenant_id: string; start: Date }> }>(
      `SELECT tenant_id, start FROM periods WHERE tenant_id = ANY(?::text[]) AND status <> 'invoiced'`,
      [tenants] as unknown as Knex.RawBinding[],
    );
    if (periods.rows.length > 0) {
      await rateAndStore(trx, periods.rows, 'replace');
      await refreshSummaries(trx, periods.rows, { lock: true });
    }
    return tenants;
  });
  if (rated.length === 0) return { ...found, rated: 0 };
  const through = new Map(due.rows.map((r) => [r.tenant_id, r.through]));
  await db.raw(
    `UPDATE tenant_event_totals t SET figures_through_seq = GREATEST(t.figures_through_seq, d.through)
       FROM unnest(?::text[], ?::bigint[]) AS d(tenant_id, through)
      WHERE t.tenant_id = d.tenant_id
        AND t.tenant_id IN (SELECT tenant_id FROM tenant_event_totals WHERE tenant_id = ANY(?::text[]) ORDER BY tenant_id FOR UPDATE SKIP LOCKED)`,
    [rated, rated.map((t) => through.get(t)!), rated] as unknown as Knex.RawBinding[],
  );
  return { ...found, rated: rated.length };
}
