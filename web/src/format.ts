/**
 * The dashboard's display rules, pure (no DOM), so unit tests pin them: quantities per unit,
 * costs, meter colours and the pager's window. Money stays a decimal string end to end
 * (decimal.js); only quantities, which the API sends as JSON numbers, are numbers here.
 */
import Decimal from 'decimal.js';

/** How a meter's quantity reads: what the metric's name says it counts. */
export type QuantityUnit = { kind: 'tokens' } | { kind: 'duration'; secondsPerUnit: number } | { kind: 'storage'; bytesPerUnit: number } | { kind: 'count' };

/**
 * Plans carry no unit, so the metric name decides, by its words: `…tokens…` are tokens;
 * `…seconds`, `…minutes`, `…hours`, `…_ms` are durations; `…bytes`, `…_kb`, `…_mb`, `…_gb`,
 * `…_tb` (and `storage…` without a unit word, taken as bytes) are storage; anything else is a count.
 */
export function unitOf(metric: string): QuantityUnit {
  const words = metric.toLowerCase().split(/[^a-z0-9]+/);
  const has = (...w: string[]) => w.some((x) => words.includes(x));
  if (words.some((w) => w.startsWith('token'))) return { kind: 'tokens' };
  if (has('ms', 'milliseconds')) return { kind: 'duration', secondsPerUnit: 0.001 };
  if (has('seconds', 'secs', 'sec')) return { kind: 'duration', secondsPerUnit: 1 };
  if (has('minutes', 'mins', 'min')) return { kind: 'duration', secondsPerUnit: 60 };
  if (has('hours', 'hrs')) return { kind: 'duration', secondsPerUnit: 3600 };
  if (has('tb')) return { kind: 'storage', bytesPerUnit: 1e12 };
  if (has('gb')) return { kind: 'storage', bytesPerUnit: 1e9 };
  if (has('mb')) return { kind: 'storage', bytesPerUnit: 1e6 };
  if (has('kb')) return { kind: 'storage', bytesPerUnit: 1e3 };
  if (has('bytes', 'storage')) return { kind: 'storage', bytesPerUnit: 1 };
  return { kind: 'count' };
}

const integer = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });
const upToTwo = new Intl.NumberFormat('en-US', { maximumFractionDigits: 2 });
const upToOne = new Intl.NumberFormat('en-US', { minimumFractionDigits: 0, maximumFractionDigits: 1 });

/** A plain number with thousands separators: "4,521", "12.5". */
export function formatNumber(value: number): string {
  return Number.isInteger(value) ? integer.format(value) : upToTwo.format(value);
}

/** A duration in seconds: "45s", "2m 34s", "3h 05m", "0.25s" below a second. */
export function formatDuration(seconds: number): string {
  if (seconds > 0 && seconds < 1) return `${upToTwo.format(seconds)}s`;
  const total = Math.round(seconds);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  if (h > 0) return `${integer.format(h)}h ${String(m).padStart(2, '0')}m`;
  if (m > 0) return `${m}m ${s}s`;
  return `${s}s`;
}

/** Storage in bytes: MB below 1 GB ("3.2 MB", "0 MB"), GB from 1 GB ("1.5 GB", "1,024 GB"). Decimal units. */
export function formatStorage(bytes: number): string {
  if (bytes >= 1e9) return `${upToOne.format(bytes / 1e9)} GB`;
  const mb = bytes / 1e6;
  if (mb > 0 && mb < 0.1) return '< 0.1 MB';
  return `${upToOne.format(mb)} MB`;
}

/** A quantity of `metric` as people read it: "4,521 tokens", "2m 34s", "3.2 MB", "1,250". */
export function formatQuantity(metric: string, value: number): string {
  const unit = unitOf(metric);
  switch (unit.kind) {
    case 'tokens':
      return `${formatNumber(value)} ${value === 1 ? 'token' : 'tokens'}`;
    case 'duration':
      return formatDuration(value * unit.secondsPerUnit);
    case 'storage':
      return formatStorage(value * unit.bytesPerUnit);
    default:
      return formatNumber(value);
  }
}

/** A meter's limit: the quantity, or ∞ when the meter has none. */
export function formatLimit(metric: string, limit: number | null | undefined): string {
  return limit === null || limit === undefined ? '∞' : formatQuantity(metric, limit);
}

const SYMBOLS: Record<string, string> = { USD: '$', EUR: '€', GBP: '£', JPY: '¥' };

/** Groups the integer part of a plain decimal string: "1234567.5" -> "1,234,567.5". */
function groupThousands(plain: string): string {
  const negative = plain.startsWith('-');
  const [whole, fraction] = (negative ? plain.slice(1) : plain).split('.');
  const grouped = whole!.replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  return `${negative ? '-' : ''}${grouped}${fraction !== undefined ? `.${fraction}` : ''}`;
}

/**
 * An amount (exact decimal string): "—" for zero; 2 decimals from 0.01 up (half-up, like the
 * invoices); below 0.01, up to 8 significant digits, so a per-token cost is still visible
 * ("0.00001234"). With a currency, its symbol ("$1,234.50") or code ("1,234.50 CHF").
 */
export function formatCost(amount: string | number | null | undefined, currency?: string): string {
  if (amount === null || amount === undefined || amount === '') return '—';
  let value: Decimal;
  try {
    value = new Decimal(amount);
  } catch {
    return '—';
  }
  if (value.isZero()) return '—';
  const plain = value.abs().gte('0.01')
    ? value.toDecimalPlaces(2, Decimal.ROUND_HALF_UP).toFixed(2)
    : value.toSignificantDigits(8, Decimal.ROUND_HALF_UP).toFixed();
  const text = groupThousands(plain);
  if (!currency) return text;
  const symbol = SYMBOLS[currency];
  if (symbol) return text.startsWith('-') ? `-${symbol}${text.slice(1)}` : `${symbol}${text}`;
  return `${text} ${currency}`;
}

/** A total or a price: like {@link formatCost}, but zero reads "$0.00" (a price of nothing is still a price). */
export function formatMoney(amount: string | number | null | undefined, currency?: string): string {
  const shown = formatCost(amount, currency);
  if (shown !== '—' || amount === null || amount === undefined || amount === '') return shown;
  try {
    if (!new Decimal(amount).isZero()) return shown;
  } catch {
    return shown;
  }
  return formatCost('0.001', currency).replace('0.001', '0.00');
}

/** A meter's colour: green under 80 %, amber from 80 to under 90 %, red from 90 %; none without a limit. */
export type MeterLevel = 'ok' | 'warning' | 'critical' | 'none';

export function meterLevel(percent: number | null | undefined): MeterLevel {
  if (percent === null || percent === undefined || Number.isNaN(percent)) return 'none';
  if (percent >= 90) return 'critical';
  if (percent >= 80) return 'warning';
  return 'ok';
}

/** The badge text of a percent: whole numbers, and "<1%" for a small non-zero use. */
export function formatPercent(percent: number | null | undefined): string {
  if (percent === null || percent === undefined) return '—';
  if (percent > 0 && percent < 1) return '<1%';
  return `${integer.format(Math.floor(percent))}%`;
}

/** The width of a meter's bar, 0..100. */
export function barWidth(percent: number | null | undefined): number {
  if (percent === null || percent === undefined || Number.isNaN(percent)) return 0;
  return Math.max(0, Math.min(100, percent));
}

/** One item of the pager: a page number (1-based) or a gap. */
export type PagerItem = number | 'gap';

/**
 * The page buttons: the first and last page, and the current page ±2, with a gap where pages
 * are left out. A gap of exactly one page shows that page instead (a gap would hide nothing).
 */
export function pageWindow(current: number, pageCount: number): PagerItem[] {
  if (pageCount <= 0) return [];
  const page = Math.min(Math.max(1, current), pageCount);
  const shown = new Set<number>([1, pageCount]);
  for (let p = page - 2; p <= page + 2; p += 1) if (p >= 1 && p <= pageCount) shown.add(p);
  const sorted = [...shown].sort((a, b) => a - b);
  const items: PagerItem[] = [];
  let previous = 0;
  for (const p of sorted) {
    if (p - previous === 2) items.push(previous + 1);
    else if (p - previous > 2) items.push('gap');
    items.push(p);
    previous = p;
  }
  return items;
}

/** "Showing 26–50 of 120" for page 2 of 25 rows; "Showing 0 of 0" when there is nothing. */
export function showingRange(page: number, pageSize: number, total: number): string {
  if (total <= 0) return 'Showing 0 of 0';
  const first = (page - 1) * pageSize + 1;
  const last = Math.min(total, page * pageSize);
  return `Showing ${integer.format(first)}–${integer.format(last)} of ${integer.format(total)}`;
}

/** How many pages `total` rows make. */
export function pageCountOf(total: number, pageSize: number): number {
  return Math.max(1, Math.ceil(total / pageSize));
}

/** Alert levels, lowest first, for sorting tenants by their worst alert. */
export const ALERT_LEVEL_ORDER = ['none', 'warning', 'critical', 'exceeded'] as const;

export function alertLevelRank(level: string | null | undefined): number {
  const rank = ALERT_LEVEL_ORDER.indexOf((level ?? 'none') as (typeof ALERT_LEVEL_ORDER)[number]);
  return rank < 0 ? 0 : rank;
}

/** A date for people, in UTC: "Dec 19, 2026". */
export function formatDate(iso: string | null | undefined): string {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '—';
  return d.toLocaleDateString('en-US', { month: 'short', day: 'numeric', year: 'numeric', timeZone: 'UTC' });
}

/** A date and time for people, in UTC: "Dec 19, 2026, 14:05 UTC". */
export function formatDateTime(iso: string | null | undefined): string {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '—';
  const date = d.toLocaleDateString('en-US', { month: 'short', day: 'numeric', year: 'numeric', timeZone: 'UTC' });
  const time = d.toLocaleTimeString('en-GB', { hour: '2-digit', minute: '2-digit', timeZone: 'UTC' });
  return `${date}, ${time} UTC`;
}

/** The `from`/`to` query instants of a date filter: `to` is exclusive, so a "to" day includes that whole day. */
export function dayRange(fromDay: string, toDay: string): { from?: string; to?: string } {
  const range: { from?: string; to?: string } = {};
  if (/^\d{4}-\d{2}-\d{2}$/.test(fromDay)) range.from = `${fromDay}T00:00:00Z`;
  if (/^\d{4}-\d{2}-\d{2}$/.test(toDay)) {
    const next = new Date(`${toDay}T00:00:00Z`);
    next.setUTCDate(next.getUTCDate() + 1);
    range.to = next.toISOString().replace('.000Z', 'Z');
  }
  return range;
}
