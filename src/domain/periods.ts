/**
 * Billing periods and anniversaries (BILLING.md, "Periods and anniversaries").
 *
 * Every boundary is computed from the tenant's recorded anchor, interval and IANA
 * timezone only, never from the wall clock or from a previous period, so workflow code
 * gets the same answer on every replay. Inputs are ISO-8601 instants (an instant without
 * an offset is read as UTC); outputs are `Date#toISOString()` strings in UTC.
 *
 * Local times that do not exist or exist twice in the tenant's timezone are resolved
 * here instead of by luxon, because luxon's `DateTime.fromObject(..., { zone })` does not
 * do what BILLING.md asks (verified with luxon 3.7): in a spring-forward gap it shifts the
 * wall time by the gap's length (New York 02:30 becomes 03:30, not 03:00), and for an
 * ambiguous fall-back time it picks the later instant in some zones (New York) and the
 * earlier in others (Lord Howe). The rules used here:
 * - a local time inside a DST gap moves forward to the first instant that exists, i.e.
 *   the transition itself (New York 02:30 on a spring-forward day becomes 03:00 EDT);
 * - an ambiguous local time (fall back) takes the earlier of its two instants (the one
 *   with the offset in force before the transition);
 * - period 0 of a `month` or `year` interval starts exactly at the anchor instant, even
 *   when the anchor is the later of two ambiguous instants.
 */
import { DateTime, FixedOffsetZone, IANAZone, type Zone } from 'luxon';
import type { Interval } from './plan';

/** A billing period, half-open: it holds `start` and every instant before `end`. */
export interface Period {
  start: string;
  end: string;
}

const MINUTE_MS = 60_000;
const DAY_MS = 86_400_000;

/** Wall-clock fields in a timezone (month 1..12). */
interface LocalDateTime {
  year: number;
  month: number;
  day: number;
  hour: number;
  minute: number;
  second: number;
  millisecond: number;
}

/** Shape of an IANA zone name; rules out fixed offsets and anything Intl might half-accept. */
const TIME_ZONE_NAME = /^[A-Za-z][A-Za-z0-9_+\-/]*$/;

/** The ECMAScript date-time string format with an explicit offset, which Date.parse reads exactly. */
const ECMASCRIPT_INSTANT = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):\d{2}(:\d{2}(\.\d{3})?)?(Z|[+-]\d{2}:\d{2})$/;

/** Parses an ISO-8601 instant to epoch milliseconds; an instant without offset is UTC. */
function parseInstant(iso: string, what: string): number {
  // Fast path for the usual `...Z` strings; V8 would roll Feb 30 over to March, so the
  // calendar fields are checked first and anything unusual is left to luxon.
  const match = ECMASCRIPT_INSTANT.exec(iso);
  if (match) {
    const [year, month, day, hour] = match.slice(1, 5).map(Number) as [number, number, number, number];
    if (month >= 1 && month <= 12 && day >= 1 && day <= daysInMonth(year, month) && hour <= 23) {
      const fast = Date.parse(iso);
      if (Number.isFinite(fast)) return fast;
    }
  }
  const parsed = DateTime.fromISO(iso, { zone: 'utc' });
  if (!parsed.isValid) throw new RangeError(`${what} is not an ISO-8601 instant: ${iso}`);
  return parsed.toMillis();
}

function toIso(ms: number): string {
  return new Date(ms).toISOString();
}

/**
 * Tells whether a string names an IANA timezone this runtime knows ("UTC",
 * "America/New_York"); fixed offsets such as "+05:00" and empty strings are refused.
 * Used to validate a tenant's `timezone` before any period is computed with it.
 */
export function isValidTimeZone(tz: string): boolean {
  return typeof tz === 'string' && TIME_ZONE_NAME.test(tz) && IANAZone.isValidZone(tz);
}

function zoneFor(timezone: string): Zone {
  if (timezone.toUpperCase() === 'UTC') return FixedOffsetZone.utcInstance;
  // IANAZone.create caches the zone and its validity; isValidZone alone costs ~60 µs a call.
  const zone = TIME_ZONE_NAME.test(timezone) ? IANAZone.create(timezone) : undefined;
  if (!zone?.isValid) throw new RangeError(`unknown timezone: ${timezone}`);
  return zone;
}

/** Epoch ms of a wall-clock reading taken as if it were UTC (works for years 0..99 too). */
function wallAsUtc(local: LocalDateTime): number {
  const date = new Date(Date.UTC(2000, 0, 1, local.hour, local.minute, local.second, local.millisecond));
  date.setUTCFullYear(local.year, local.month - 1, local.day);
  return date.getTime();
}

function localOf(ms: number, zone: Zone): LocalDateTime {
  const wall = new Date(ms + zone.offset(ms) * MINUTE_MS);
  return {
    year: wall.getUTCFullYear(),
    month: wall.getUTCMonth() + 1,
    day: wall.getUTCDate(),
    hour: wall.getUTCHours(),
    minute: wall.getUTCMinutes(),
    second: wall.getUTCSeconds(),
    millisecond: wall.getUTCMilliseconds(),
  };
}

/**
 * The instant at which the tenant's wall clock reads `local`: the earlier instant when the
 * reading happens twice, the first instant after the gap when it never happens.
 */
function instantOfLocal(local: LocalDateTime, zone: Zone): number {
  const wall = wallAsUtc(local);
  // Common case: the offset in force a day earlier is still in force at the candidate
  // instant, so no transition lies between them and no earlier instant shows this reading.
  const before = zone.offset(wall - DAY_MS);
  const instant = wall - before * MINUTE_MS;
  if (zone.offset(instant) === before) return instant;

  const after = zone.offset(wall + DAY_MS);
  const probes = [before, zone.offset(wall), after];
  let earliest: number | undefined;
  for (const offset of probes) {
    const candidate = wall - offset * MINUTE_MS;
    if (zone.offset(candidate) === offset && (earliest === undefined || candidate < earliest)) earliest = candidate;
  }
  if (earliest !== undefined) return earliest;

  // In a gap: `wall - after` reads earlier than the gap on the wall clock (still before the
  // transition) and `wall - before` reads later (already after it). Find the transition.
  let lo = wall - Math.max(before, after) * MINUTE_MS; // before the transition
  let hi = wall - Math.min(before, after) * MINUTE_MS; // at or after the transition
  const offsetBefore = zone.offset(lo);
  while (hi - lo > 1) {
    const mid = lo + Math.floor((hi - lo) / 2);
    if (zone.offset(mid) === offsetBefore) lo = mid;
    else hi = mid;
  }
  return hi;
}

function daysInMonth(year: number, month: number): number {
  const lastDay = new Date(0);
  lastDay.setUTCFullYear(year, month, 0);
  return lastDay.getUTCDate();
}

function checkIndex(k: number): void {
  if (!Number.isSafeInteger(k)) throw new RangeError(`period index must be an integer, got ${k}`);
}

/** A parsed anchor: its instant and its wall-clock reading in the tenant's timezone. */
interface ParsedAnchor {
  ms: number;
  local: LocalDateTime;
  zone: Zone;
}

/**
 * Recently parsed anchors. A workflow asks for the periods of the same anchor over and over;
 * the cache only saves work (its entries are pure functions of their key), so it is safe in
 * deterministic workflow code.
 */
const anchorCache = new Map<string, ParsedAnchor>();
const ANCHOR_CACHE_SIZE = 256;

function parseAnchor(anchor: string, timezone: string): ParsedAnchor {
  const key = `${timezone} ${anchor}`;
  let parsed = anchorCache.get(key);
  if (parsed === undefined) {
    const zone = zoneFor(timezone);
    const ms = parseInstant(anchor, 'anchor');
    parsed = { ms, local: localOf(ms, zone), zone };
    if (anchorCache.size >= ANCHOR_CACHE_SIZE) anchorCache.clear();
    anchorCache.set(key, parsed);
  }
  return parsed;
}

/** Start (epoch ms) of the k-th period, from the parsed anchor. */
function startMs(anchorMs: number, anchorLocal: LocalDateTime, interval: Interval, zone: Zone, k: number): number {
  switch (interval) {
    case 'day': {
      const day = new Date(wallAsUtc({ ...anchorLocal, hour: 0, minute: 0, second: 0, millisecond: 0 }) + k * DAY_MS);
      return instantOfLocal(
        { year: day.getUTCFullYear(), month: day.getUTCMonth() + 1, day: day.getUTCDate(), hour: 0, minute: 0, second: 0, millisecond: 0 },
        zone,
      );
    }
    case 'month':
    case 'year': {
      if (k === 0) return anchorMs;
      const months = anchorLocal.year * 12 + (anchorLocal.month - 1) + (interval === 'year' ? 12 * k : k);
      const year = Math.floor(months / 12);
      const month = months - year * 12 + 1;
      const day = Math.min(anchorLocal.day, daysInMonth(year, month));
      return instantOfLocal({ ...anchorLocal, year, month, day }, zone);
    }
    default:
      throw new RangeError(`unknown interval: ${String(interval)}`);
  }
}

/**
 * Start of the k-th period of a subscription (k = 0 is the period holding the anchor;
 * negative k are the periods before it). `month`/`year`: k (or 12k) months after the
 * anchor, at the anchor's local time of day, on the anchor's local day of month clamped
 * to the month's length, always computed from the anchor. `day`: the local midnight of the
 * anchor's local calendar day, plus k days. DST gaps and overlaps: see the module comment.
 */
export function periodStartsFrom(anchor: string, interval: Interval, timezone: string, k: number): string {
  checkIndex(k);
  const { ms, local, zone } = parseAnchor(anchor, timezone);
  return toIso(startMs(ms, local, interval, zone, k));
}

/**
 * The period (and its index) that holds `instant`; instants before the anchor belong to
 * negative indexes. Used to route an event to its period and to roll a workflow over.
 * The index is estimated from the calendar distance and then corrected, so the cost does
 * not grow with the age of the subscription.
 */
export function periodContaining(
  anchor: string,
  interval: Interval,
  timezone: string,
  instant: string,
): Period & { index: number } {
  const { ms: anchorMs, local: anchorLocal, zone } = parseAnchor(anchor, timezone);
  const at = parseInstant(instant, 'instant');
  const atLocal = localOf(at, zone);
  let k: number;
  switch (interval) {
    case 'day':
      k = Math.round(
        (wallAsUtc({ ...atLocal, hour: 0, minute: 0, second: 0, millisecond: 0 }) -
          wallAsUtc({ ...anchorLocal, hour: 0, minute: 0, second: 0, millisecond: 0 })) /
          DAY_MS,
      );
      break;
    case 'month':
      k = (atLocal.year - anchorLocal.year) * 12 + (atLocal.month - anchorLocal.month);
      break;
    case 'year':
      k = atLocal.year - anchorLocal.year;
      break;
    default:
      throw new RangeError(`unknown interval: ${String(interval)}`);
  }
  const start = (index: number): number => startMs(anchorMs, anchorLocal, interval, zone, index);
  let lower = start(k);
  while (lower > at) {
    k -= 1;
    lower = start(k);
  }
  let upper = start(k + 1);
  while (upper <= at) {
    k += 1;
    lower = upper;
    upper = start(k + 1);
  }
  return { start: toIso(lower), end: toIso(upper), index: k };
}

/**
 * The period that follows an early close by finance: it starts at `closedAt` and ends at
 * the first regular boundary (anniversary) strictly after `closedAt`, after which the
 * normal schedule from the anchor resumes.
 */
export function periodAfterEarlyClose(anchor: string, interval: Interval, timezone: string, closedAt: string): Period {
  const closedMs = parseInstant(closedAt, 'closedAt');
  const holding = periodContaining(anchor, interval, timezone, toIso(closedMs));
  return { start: toIso(closedMs), end: holding.end };
}

/**
 * Compact UTC stamp of a period boundary for Temporal workflow and invoice ids:
 * `2027-01-31T00:00:00.000Z` becomes `20270131T000000Z`. Milliseconds are kept
 * (`20270131T000000.250Z`) only when non-zero, so ids of distinct instants never collide.
 */
export function formatPeriodStamp(iso: string): string {
  const text = toIso(parseInstant(iso, 'instant'));
  const match = /^([+-]?\d{4,6})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})\.(\d{3})Z$/.exec(text);
  if (!match) throw new RangeError(`cannot stamp ${iso}`);
  const [, year, month, day, hour, minute, second, millis] = match;
  return `${year}${month}${day}T${hour}${minute}${second}${millis === '000' ? '' : `.${millis}`}Z`;
}
