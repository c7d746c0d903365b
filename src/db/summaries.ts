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
 * - an **invoiced** period counts with its finalized invoice. `monthly_summaries` holds, per
 *   month, tenant and currency, the sum of those invoices (total, per-metric quantities and
 *   amounts), refreshed by `refreshMonthlySummary` in the very transaction that finalizes or
 *   reruns an invoice (a rerun's version replaces the voided one);
 * - a period **not invoiced yet** (open, or closed and in its grace) counts with its
 *   `period_counters` read model, rated with the period's plan version like the usage view; its
 *   figures still move, and the row says so (`final: false`).
 *
 * A month whose periods are all invoiced (every month but the latest one or two) is one index
 * walk of `monthly_summaries_month_total` for a page sorted by total: nothing is added up per
 * request. A month with periods not invoiced yet rates those periods here and ranks every row
 * of the month in SQL, with them handed over as JSON. A tenant whose periods in one month were
 * billed in two currencies gets one row per currency: amounts in different currencies are never
 * added.
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

/** Figures of the periods not invoiced yet, rated here, as the query takes them (JSON). */
interface LiveFigures {
  totals: Array<{ tenant_id: string; currency: string; month: 'current' | 'previous'; total: string }>;
  lines: Array<{ tenant_id: string; currency: string; metric: string; used: string; amount: string }>;
}

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

/**
 * Rates the periods not invoiced yet that started in either month from the read model, as the
 * usage view does. Meter lines only of the month asked for (the month before needs its totals).
 */
async function liveFigures(db: Db, range: ReturnType<typeof monthRange>): Promise<LiveFigures> {
  const counted = await db('periods as p')
    .leftJoin('period_counters as c', function joinCounters() {
      this.on('c.tenant_id', '=', 'p.tenant_id').andOn('c.period_start', '=', 'p.start');
    })
    .whereNot('p.status', 'invoiced')
    .where('p.start', '>=', range.previous.start)
    .where('p.start', '<', range.end)
    .select<UninvoicedRow[]>(
      'p.tenant_id',
      'p.start',
      'p.plan_id',
      'p.plan_version',
      'c.metric',
      db.raw('c.total::text AS total'),
      'c.events',
      db.raw('c.largest::text AS largest'),
      db.raw('c.latest::text AS latest'),
    );
  const periods = new Map<string, UninvoicedRow[]>();
  for (const row of counted) {
    const key = `${row.tenant_id}/${row.start.toISOString()}`;
    const list = periods.get(key);
    if (list) list.push(row);
    else periods.set(key, [row]);
  }
  const figures: LiveFigures = { totals: [], lines: [] };
  const plans = new Map<string, Promise<PlanVersion | undefined>>();
  for (const counters of periods.values()) {
    const period = counters[0] as UninvoicedRow;
    const planKey = `${period.plan_id}@${period.plan_version}`;
    if (!plans.has(planKey)) plans.set(planKey, findPlanVersion(db, period.plan_id, period.plan_version));
    const plan = await plans.get(planKey);
    if (!plan) continue;
    const values: Record<string, string> = {};
    for (const meter of plan.meters) {
      const c = counters.find((r) => r.metric === meter.metric);
      values[meter.metric] = counterFromAggregates(
        c && { total: normalizeDecimal(c.total!), events: Number(c.events), largest: normalizeDecimal(c.largest!), latest: normalizeDecimal(c.latest!) },
        meter.aggregation,
      );
    }
    const rated = ratePeriod(plan, values);
    const month = period.start < range.start ? 'previous' : 'current';
    figures.totals.push({ tenant_id: period.tenant_id, currency: plan.currency, month, total: rated.total });
    if (month === 'previous') continue;
    for (const line of rated.lines) {
      if (line.metric !== BASE_FEE_METRIC) figures.lines.push({ tenant_id: period.tenant_id, currency: plan.currency, metric: line.metric, used: line.quantity, amount: line.amount });
    }
  }
  return figures;
}

/**
 * Recomputes one tenant's stored summary of the month `periodStart` falls in from its finalized
 * invoices of that month, in the caller's transaction (the one that finalizes or reruns an
 * invoice). A transaction-scoped advisory lock per tenant and month serializes two refreshes, so
 * the later one reads the earlier one's invoice.
 */
export async function refreshMonthlySummary(trx: Knex.Transaction, tenantId: string, periodStart: string | Date): Promise<void> {
  const start = new Date(periodStart);
  const month = new Date(Date.UTC(start.getUTCFullYear(), start.getUTCMonth(), 1));
  const end = new Date(Date.UTC(start.getUTCFullYear(), start.getUTCMonth() + 1, 1));
  await trx.raw('SELECT pg_advisory_xact_lock(hashtext(?))', [`monthly_summary:${tenantId}:${month.toISOString()}`]);
  await trx.raw(
    `WITH inv AS (
       SELECT id, currency, total FROM invoices
        WHERE tenant_id = :tenant AND status = 'finalized' AND period_start >= :start AND period_start < :end
     ), per_currency AS (
       SELECT currency, sum(total) AS total, count(*) AS periods FROM inv GROUP BY currency
     ), lines AS (
       SELECT inv.currency, l.metric, sum(l.quantity) AS used, sum(l.amount) AS amount
         FROM inv JOIN invoice_lines l ON l.invoice_id = inv.id
        WHERE l.metric <> :baseFee
        GROUP BY inv.currency, l.metric
     ), summary AS (
       SELECT p.currency, p.total, p.periods,
              coalesce((SELECT jsonb_object_agg(metric, jsonb_build_object('used', used::text, 'amount', amount::text))
                          FROM lines WHERE lines.currency = p.currency), '{}'::jsonb) AS metrics
         FROM per_currency p
     ), gone AS (
       DELETE FROM monthly_summaries s
        WHERE s.month = :month AND s.tenant_id = :tenant AND s.currency NOT IN (SELECT currency FROM summary)
     )
     INSERT INTO monthly_summaries (month, tenant_id, currency, total, metrics, periods, updated_at)
     SELECT :month, :tenant, currency, total, metrics, periods, now() FROM summary
     ON CONFLICT (month, tenant_id, currency)
     DO UPDATE SET total = EXCLUDED.total, metrics = EXCLUDED.metrics, periods = EXCLUDED.periods, updated_at = now()`,
    { tenant: tenantId, start: month, end, month: month.toISOString().slice(0, 10), baseFee: BASE_FEE_METRIC },
  );
}

/** A row of a page as the queries return it. */
interface PageRow {
  tenant_id: string;
  currency: string;
  total: string;
  previous: string;
  final: boolean;
  /** The stored metrics: `{ metric: { used, amount } }` as decimal strings. */
  metrics: Record<string, { used: string; amount: string }> | null;
}

/** What one page query found. */
interface FoundPage {
  rows: PageRow[];
  total_count: number;
  unknownCursor: boolean;
  /** `previous` already holds the month before's periods not invoiced yet. */
  previousHasLive: boolean;
}

/**
 * One page of a month's summaries, sorted, with the change against the month before. Ties in
 * the sort go by id in the same direction. The metrics of the page's rows only are put together.
 */
export async function monthlySummaries(db: Db, query: SummaryQuery): Promise<SummaryPage> {
  const range = monthRange(query.month);
  const live = await liveFigures(db, range);
  const found = live.totals.some((t) => t.month === 'current') ? await rankedWithLive(db, query, range, live) : await storedPage(db, query, range);
  const page = query.limit === undefined ? found.rows : found.rows.slice(0, query.limit);
  return {
    data: page.map((row) => summaryOf(query.month, row, live, { metric: query.metric, previousHasLive: found.previousHasLive })),
    has_more: query.limit !== undefined && found.rows.length > query.limit,
    total_count: found.total_count,
    unknownCursor: found.unknownCursor,
  };
}

/** `<tenant>/<currency>` apart; tenant ids never hold a `/`. */
function splitId(id: string): [string, string] {
  const at = id.lastIndexOf('/');
  return at < 0 ? [id, ''] : [id.slice(0, at), id.slice(at + 1)];
}

const monthKey = (d: Date) => d.toISOString().slice(0, 10);

/** The bindings both page queries share: the months, the sort and filter metrics, the cursor, the page size. */
function pageBindings(query: SummaryQuery, range: ReturnType<typeof monthRange>) {
  const [cursorTenant, cursorCurrency] = query.startingAfter === undefined ? [null, null] : splitId(query.startingAfter);
  return {
    month: monthKey(range.start),
    previous: monthKey(range.previous.start),
    sortMetric: query.order.by === 'total' ? null : query.order.by.metric,
    filterMetric: query.metric ?? null,
    cursorTenant,
    cursorCurrency,
    take: query.limit === undefined ? null : query.limit + 1,
  };
}

/**
 * A month with every period invoiced: a page of `monthly_summaries` in index order (by total), or
 * sorted by a metric's stored usage, after the cursor row's key; the month before joined by key.
 */
async function storedPage(db: Db, query: SummaryQuery, range: ReturnType<typeof monthRange>): Promise<FoundPage> {
  const sortMetric = query.order.by === 'total' ? undefined : query.order.by.metric;
  const key = (alias: string) => (sortMetric === undefined ? `${alias}.total` : `coalesce((${alias}.metrics -> :sortMetric ->> 'used')::numeric, 0)`);
  const [op, direction] = query.order.descending ? ['<', 'DESC'] : ['>', 'ASC'];
  const bindings = pageBindings(query, range);
  const scope = `s.month = :month AND (:filterMetric::text IS NULL OR s.metrics -> :filterMetric IS NOT NULL)`;
  const [page, counted] = await Promise.all([
    db.raw<{ rows: PageRow[] }>(
      // The page first (an index walk when sorted by total), then the month before of its rows only.
      `SELECT page.tenant_id, page.currency, page.total::text AS total, coalesce(p.total, 0)::text AS previous, true AS final, page.metrics
         FROM (SELECT s.tenant_id, s.currency, s.total, s.metrics, ${key('s')} AS sort_key
                 FROM monthly_summaries s
                WHERE ${scope}
                  AND (:cursorTenant::text IS NULL OR (${key('s')}, s.tenant_id, s.currency) ${op} (
                        SELECT ${key('c')}, c.tenant_id, c.currency FROM monthly_summaries c
                         WHERE c.month = :month AND c.tenant_id = :cursorTenant AND c.currency = :cursorCurrency))
                ORDER BY ${key('s')} ${direction}, s.tenant_id ${direction}, s.currency ${direction}
                LIMIT :take) page
         LEFT JOIN monthly_summaries p ON p.month = :previous AND p.tenant_id = page.tenant_id AND p.currency = page.currency
        ORDER BY page.sort_key ${direction}, page.tenant_id ${direction}, page.currency ${direction}`,
      bindings,
    ),
    db.raw<{ rows: Array<{ count: string; cursor: boolean }> }>(
      `SELECT count(*) AS count,
              (:cursorTenant::text IS NULL OR bool_or(s.tenant_id = :cursorTenant AND s.currency = :cursorCurrency)) AS cursor
         FROM monthly_summaries s WHERE ${scope}`,
      bindings,
    ),
  ]);
  const count = counted.rows[0];
  return { rows: page.rows, total_count: Number(count?.count ?? 0), unknownCursor: count?.cursor !== true, previousHasLive: false };
}

/** A ranked row as the live query returns it (null columns: an empty page after the cursor). */
type RankedRow = { [K in keyof PageRow]: PageRow[K] | null } & { total_count: string | null; cursor_rank: string };

/**
 * A month with periods not invoiced yet: the stored rows and the live figures are added up per
 * tenant and currency, ranked, and paged after the cursor's rank, all in one statement.
 */
async function rankedWithLive(db: Db, query: SummaryQuery, range: ReturnType<typeof monthRange>, live: LiveFigures): Promise<FoundPage> {
  const sortMetric = query.order.by === 'total' ? undefined : query.order.by.metric;
  const direction = query.order.descending ? 'DESC' : 'ASC';
  const sortKey = sortMetric === undefined ? 'c.total' : 'c.used';
  const { rows } = await db.raw<{ rows: RankedRow[] }>(
    `WITH live AS (
       SELECT * FROM jsonb_to_recordset(:live::jsonb) AS x(tenant_id text, currency text, month text, total numeric)
     ), live_lines AS (
       SELECT * FROM jsonb_to_recordset(:liveLines::jsonb) AS x(tenant_id text, currency text, metric text, used numeric)
     ), current_month AS (
       SELECT tenant_id, currency, sum(total) AS total, bool_and(final) AS final, sum(used) AS used, bool_or(has_metric) AS has_metric FROM (
         SELECT tenant_id, currency, total, true AS final,
                coalesce((metrics -> :sortMetric ->> 'used')::numeric, 0) AS used, metrics -> :filterMetric IS NOT NULL AS has_metric
           FROM monthly_summaries WHERE month = :month
         UNION ALL
         SELECT tenant_id, currency, total, false, 0, false FROM live WHERE month = 'current'
         UNION ALL
         SELECT tenant_id, currency, 0, true, CASE WHEN metric = :sortMetric THEN used ELSE 0 END, metric = :filterMetric FROM live_lines
       ) figures GROUP BY tenant_id, currency
     ), previous_month AS (
       SELECT tenant_id, currency, sum(total) AS total FROM (
         SELECT tenant_id, currency, total FROM monthly_summaries WHERE month = :previous
         UNION ALL
         SELECT tenant_id, currency, total FROM live WHERE month = 'previous'
       ) figures GROUP BY tenant_id, currency
     ), ranked AS (
       SELECT c.tenant_id, c.currency, c.total, c.final, coalesce(p.total, 0) AS previous, s.metrics,
              row_number() OVER (ORDER BY ${sortKey} ${direction}, c.tenant_id ${direction}, c.currency ${direction}) AS rank,
              count(*) OVER () AS total_count
         FROM current_month c
         LEFT JOIN previous_month p ON p.tenant_id = c.tenant_id AND p.currency = c.currency
         LEFT JOIN monthly_summaries s ON s.month = :month AND s.tenant_id = c.tenant_id AND s.currency = c.currency
        WHERE :filterMetric::text IS NULL OR c.has_metric
     ), cursor AS (
       SELECT CASE WHEN :cursorTenant::text IS NULL THEN 0
                   ELSE coalesce((SELECT rank FROM ranked WHERE tenant_id = :cursorTenant AND currency = :cursorCurrency), -1) END AS rank
     )
     SELECT r.tenant_id, r.currency, r.total::text AS total, r.previous::text AS previous, r.final, r.metrics, r.total_count, cursor.rank AS cursor_rank
       FROM cursor LEFT JOIN ranked r ON cursor.rank >= 0 AND r.rank > cursor.rank
      ORDER BY r.rank
      LIMIT :take`,
    { ...pageBindings(query, range), live: JSON.stringify(live.totals), liveLines: JSON.stringify(live.lines) },
  );
  const found = rows.filter((r): r is RankedRow & PageRow => r.tenant_id !== null);
  return { rows: found, total_count: Number(found[0]?.total_count ?? 0), unknownCursor: Number(rows[0]?.cursor_rank ?? 0) < 0, previousHasLive: true };
}

/** A page row as the API shows it: stored and live metrics together, the change in money. */
function summaryOf(month: string, row: PageRow, live: LiveFigures, options: { metric?: string; previousHasLive: boolean }): MonthlySummary {
  const { metric } = options;
  const metrics = new Map<string, { used: Dec; amount: Dec }>();
  const add = (name: string, used: Dec.Value, amount: Dec.Value) => {
    if (metric !== undefined && name !== metric) return;
    const current = metrics.get(name) ?? { used: new Dec(0), amount: new Dec(0) };
    metrics.set(name, { used: current.used.plus(used), amount: current.amount.plus(amount) });
  };
  for (const [name, figures] of Object.entries(row.metrics ?? {})) add(name, figures.used, figures.amount);
  for (const l of live.lines) if (l.tenant_id === row.tenant_id && l.currency === row.currency) add(l.metric, l.used, l.amount);
  // A stored page leaves the month before's periods not invoiced yet to here (a live page adds them in SQL).
  let previous = new Dec(row.previous);
  if (!options.previousHasLive) {
    for (const t of live.totals) if (t.month === 'previous' && t.tenant_id === row.tenant_id && t.currency === row.currency) previous = previous.plus(t.total);
  }
  const total = new Dec(row.total);
  const change = total.minus(previous);
  return {
    id: `${row.tenant_id}/${row.currency}`,
    tenant_id: row.tenant_id,
    month,
    metrics: Object.fromEntries(
      [...metrics].sort(([a], [b]) => (a < b ? -1 : 1)).map(([name, figures]) => [name, { used: toDecimalString(figures.used), amount: roundMoney(figures.amount, row.currency) }]),
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
