import fc from 'fast-check';
import {
  type Interval,
  formatPeriodStamp,
  isValidTimeZone,
  periodAfterEarlyClose,
  periodContaining,
  periodStartsFrom,
} from '../../../src/domain';
import { loadScenarios } from '../../support/scenarios';

interface AnniversaryCase {
  interval: Interval;
  timezone: string;
  anchor: string;
  starts: string[];
}

const ms = (iso: string): number => Date.parse(iso);
const iso = (epochMs: number): string => new Date(epochMs).toISOString();

/** The period scenarios of test/fixtures/scenarios (files with `periods`). */
const periodScenarios = loadScenarios<{ periods: AnniversaryCase[] }>('periods');

it('the fixture folder has period scenarios', () => {
  expect(periodScenarios.length).toBeGreaterThan(0);
});

describe.each(periodScenarios.map(({ file, scenario }) => [file, scenario.periods] as const))('%s', (_file, cases) => {
  it('has cases', () => {
    expect(cases.length).toBeGreaterThan(0);
  });

  it.each(cases.map((c) => [`${c.interval} ${c.timezone} ${c.anchor}`, c] as const))(
    'consecutive starts for %s',
    (_name, c) => {
      c.starts.forEach((expected, k) => {
        expect(ms(periodStartsFrom(c.anchor, c.interval, c.timezone, k))).toBe(ms(expected));
        const holding = periodContaining(c.anchor, c.interval, c.timezone, expected);
        expect(holding.index).toBe(k);
        expect(ms(holding.start)).toBe(ms(expected));
        const next = c.starts[k + 1];
        if (next !== undefined) {
          expect(ms(holding.end)).toBe(ms(next));
          expect(periodContaining(c.anchor, c.interval, c.timezone, iso(ms(next) - 1)).index).toBe(k);
        }
      });
    },
  );
});

describe('periodStartsFrom', () => {
  it('returns Date#toISOString() strings', () => {
    expect(periodStartsFrom('2027-01-31T00:00:00Z', 'month', 'UTC', 1)).toBe('2027-02-28T00:00:00.000Z');
  });

  it('clamps to the month end from the anchor, never from the previous period', () => {
    const starts = [0, 1, 2, 3, 4, 12, 13].map((k) => periodStartsFrom('2028-01-31T10:00:00.000Z', 'month', 'UTC', k));
    expect(starts).toEqual([
      '2028-01-31T10:00:00.000Z',
      '2028-02-29T10:00:00.000Z',
      '2028-03-31T10:00:00.000Z',
      '2028-04-30T10:00:00.000Z',
      '2028-05-31T10:00:00.000Z',
      '2029-01-31T10:00:00.000Z',
      '2029-02-28T10:00:00.000Z',
    ]);
  });

  it('supports negative indexes (periods before the anchor)', () => {
    expect(periodStartsFrom('2027-03-31T00:00:00Z', 'month', 'UTC', -1)).toBe('2027-02-28T00:00:00.000Z');
    expect(periodStartsFrom('2027-03-31T00:00:00Z', 'month', 'UTC', -3)).toBe('2026-12-31T00:00:00.000Z');
    expect(periodStartsFrom('2028-02-29T00:00:00Z', 'year', 'UTC', -1)).toBe('2027-02-28T00:00:00.000Z');
    expect(periodStartsFrom('2026-11-21T17:45:00Z', 'day', 'UTC', -2)).toBe('2026-11-19T00:00:00.000Z');
  });

  it('moves a local time in a DST gap forward to the first instant that exists (New York 02:30 -> 03:00 EDT)', () => {
    // Anchor 2027-02-14 02:30 EST; 2027-03-14 02:30 does not exist in New York.
    expect(periodStartsFrom('2027-02-14T07:30:00Z', 'month', 'America/New_York', 1)).toBe('2027-03-14T07:00:00.000Z');
    expect(periodStartsFrom('2027-02-14T07:30:00Z', 'month', 'America/New_York', 2)).toBe('2027-04-14T06:30:00.000Z');
  });

  it('handles half-hour DST gaps (Lord Howe 02:15 -> 02:30 +11:00)', () => {
    // Anchor 2027-09-03 02:15 +10:30; on 2027-10-03 the clock jumps from 02:00 to 02:30.
    expect(periodStartsFrom('2027-09-02T15:45:00Z', 'month', 'Australia/Lord_Howe', 1)).toBe('2027-10-02T15:30:00.000Z');
  });

  it('moves a missing local midnight forward for day periods (Santiago, DST starts at 00:00)', () => {
    expect(periodStartsFrom('2027-09-04T12:00:00Z', 'day', 'America/Santiago', 0)).toBe('2027-09-04T04:00:00.000Z');
    expect(periodStartsFrom('2027-09-04T12:00:00Z', 'day', 'America/Santiago', 1)).toBe('2027-09-05T04:00:00.000Z');
    expect(periodStartsFrom('2027-09-04T12:00:00Z', 'day', 'America/Santiago', 2)).toBe('2027-09-06T03:00:00.000Z');
  });

  it('takes the earlier instant of an ambiguous local time (fall back)', () => {
    // Anchor 2027-10-07 01:30 EDT; 2027-11-07 01:30 happens twice (EDT, then EST).
    expect(periodStartsFrom('2027-10-07T05:30:00Z', 'month', 'America/New_York', 1)).toBe('2027-11-07T05:30:00.000Z');
    // Europe/London 01:30 on 2027-10-31 happens at 00:30Z (BST) and 01:30Z (GMT).
    expect(periodStartsFrom('2027-07-31T00:30:00Z', 'month', 'Europe/London', 3)).toBe('2027-10-31T00:30:00.000Z');
  });

  it('starts period 0 at the anchor itself even when the anchor is the later ambiguous instant', () => {
    // 2027-11-07T06:30Z is 01:30 EST, the second 01:30 of that night.
    expect(periodStartsFrom('2027-11-07T06:30:00Z', 'month', 'America/New_York', 0)).toBe('2027-11-07T06:30:00.000Z');
    expect(periodStartsFrom('2027-11-07T06:30:00Z', 'month', 'America/New_York', 1)).toBe('2027-12-07T06:30:00.000Z');
    expect(periodContaining('2027-11-07T06:30:00Z', 'month', 'America/New_York', '2027-11-07T06:29:59.999Z').index).toBe(-1);
  });

  it('reads instants without an offset as UTC and accepts other offsets', () => {
    expect(periodStartsFrom('2027-01-31T00:00:00', 'month', 'UTC', 1)).toBe('2027-02-28T00:00:00.000Z');
    expect(periodStartsFrom('2027-01-31T05:30:00+05:30', 'month', 'UTC', 1)).toBe('2027-02-28T00:00:00.000Z');
  });

  it('rejects bad input', () => {
    expect(() => periodStartsFrom('not a date', 'month', 'UTC', 0)).toThrow(RangeError);
    expect(() => periodStartsFrom('2027-01-31T00:00:00Z', 'month', 'Mars/Olympus', 0)).toThrow(RangeError);
    expect(() => periodStartsFrom('2027-01-31T00:00:00Z', 'month', 'UTC', 1.5)).toThrow(RangeError);
    expect(() => periodStartsFrom('2027-01-31T00:00:00Z', 'week' as Interval, 'UTC', 1)).toThrow(RangeError);
  });
});

describe('periodContaining', () => {
  it('finds far periods without walking from the anchor', () => {
    const p = periodContaining('2027-01-31T12:00:00Z', 'day', 'America/New_York', '2077-06-15T12:00:00Z');
    expect(p).toEqual({ start: '2077-06-15T04:00:00.000Z', end: '2077-06-16T04:00:00.000Z', index: 18398 });
    expect(periodContaining('2027-01-31T00:00:00Z', 'month', 'UTC', '2077-03-30T23:59:59.999Z')).toEqual({
      start: '2077-02-28T00:00:00.000Z',
      end: '2077-03-31T00:00:00.000Z',
      index: 601,
    });
  });

  it('puts instants before the anchor in negative periods', () => {
    expect(periodContaining('2027-03-15T09:30:00Z', 'month', 'UTC', '2027-03-15T09:29:59.999Z')).toEqual({
      start: '2027-02-15T09:30:00.000Z',
      end: '2027-03-15T09:30:00.000Z',
      index: -1,
    });
  });
});

describe('periodAfterEarlyClose', () => {
  it('starts at the close and ends at the next anniversary strictly after it', () => {
    expect(periodAfterEarlyClose('2027-01-31T00:00:00Z', 'month', 'UTC', '2027-02-10T12:00:00Z')).toEqual({
      start: '2027-02-10T12:00:00.000Z',
      end: '2027-02-28T00:00:00.000Z',
    });
    expect(periodAfterEarlyClose('2027-01-31T00:00:00Z', 'month', 'UTC', '2027-02-28T00:00:00Z')).toEqual({
      start: '2027-02-28T00:00:00.000Z',
      end: '2027-03-31T00:00:00.000Z',
    });
    expect(periodAfterEarlyClose('2027-03-13T12:00:00Z', 'day', 'America/New_York', '2027-03-14T03:00:00Z')).toEqual({
      start: '2027-03-14T03:00:00.000Z',
      end: '2027-03-14T05:00:00.000Z',
    });
  });
});

describe('formatPeriodStamp', () => {
  it('renders compact UTC stamps for Temporal ids', () => {
    expect(formatPeriodStamp('2027-01-31T00:00:00.000Z')).toBe('20270131T000000Z');
    expect(formatPeriodStamp('2027-03-14T07:05:09Z')).toBe('20270314T070509Z');
    expect(formatPeriodStamp('2027-03-14T02:05:09-05:00')).toBe('20270314T070509Z');
    expect(formatPeriodStamp('2027-03-14T07:05:09.250Z')).toBe('20270314T070509.250Z');
  });
});

describe('isValidTimeZone', () => {
  it.each(['UTC', 'America/New_York', 'Europe/London', 'Asia/Kolkata', 'Australia/Lord_Howe', 'Etc/GMT+5'])('accepts %s', (tz) => {
    expect(isValidTimeZone(tz)).toBe(true);
  });
  it.each(['', 'Mars/Olympus', '+05:00', 'America/New York', ' UTC'])('rejects %j', (tz) => {
    expect(isValidTimeZone(tz)).toBe(false);
  });
});

// ---------------------------------------------------------------------------------------
// Properties, checked against an independent reference built on Intl.DateTimeFormat and
// plain UTC calendar arithmetic (no luxon, no code under test).
// ---------------------------------------------------------------------------------------

const ZONES = ['UTC', 'America/New_York', 'Europe/London', 'Asia/Kolkata', 'Australia/Lord_Howe'];
/** Largest DST shift in ZONES is one hour; Lord Howe shifts by 30 minutes. */
const SHIFTS_MS = [30 * 60_000, 60 * 60_000];
const YEARS = 50;

const formatters = new Map<string, Intl.DateTimeFormat>();
/** Reference wall clock: the tenant's local date-time of an instant, as a UTC-based epoch. */
function wallOf(epochMs: number, timezone: string): number {
  let f = formatters.get(timezone);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', {
      timeZone: timezone,
      hourCycle: 'h23',
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
      second: 'numeric',
    });
    formatters.set(timezone, f);
  }
  const parts: Record<string, number> = {};
  for (const part of f.formatToParts(epochMs)) if (part.type !== 'literal') parts[part.type] = Number(part.value);
  const millis = ((epochMs % 1000) + 1000) % 1000;
  return Date.UTC(parts.year!, parts.month! - 1, parts.day!, parts.hour!, parts.minute!, parts.second!, millis);
}

function refDaysInMonth(year: number, month: number): number {
  if (month === 2) return (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0 ? 29 : 28;
  return [4, 6, 9, 11].includes(month) ? 30 : 31;
}

/** Reference wall time (as UTC epoch) at which period k should start. */
function requestedWall(anchorWall: number, interval: Interval, k: number): number {
  const a = new Date(anchorWall);
  if (interval === 'day') return Date.UTC(a.getUTCFullYear(), a.getUTCMonth(), a.getUTCDate() + k);
  const total = a.getUTCFullYear() * 12 + a.getUTCMonth() + (interval === 'year' ? 12 * k : k);
  const year = Math.floor(total / 12);
  const month = total - year * 12 + 1;
  const day = Math.min(a.getUTCDate(), refDaysInMonth(year, month));
  return Date.UTC(year, month - 1, day, a.getUTCHours(), a.getUTCMinutes(), a.getUTCSeconds(), a.getUTCMilliseconds());
}

/** How many DST gaps and overlaps a schedule check went through (to prove the checks bite). */
interface DstStats {
  gaps: number;
  overlaps: number;
}

/**
 * Checks that `start` is the instant docs/billing.md wants for the local reading `wanted`:
 * the earlier instant showing it, or, when no instant shows it (DST gap), the first
 * instant after the jump over it. Returns a problem description, or null.
 */
function startProblem(start: number, wanted: number, timezone: string, stats?: DstStats): string | null {
  const shown = wallOf(start, timezone);
  if (shown === wanted) {
    const earlier = SHIFTS_MS.find((shift) => wallOf(start - shift, timezone) === wanted);
    if (stats && SHIFTS_MS.some((shift) => wallOf(start + shift, timezone) === wanted)) stats.overlaps += 1;
    return earlier === undefined ? null : `${iso(start)} is not the earliest instant showing ${iso(wanted)}`;
  }
  if (stats) stats.gaps += 1;
  if (shown > wanted && wallOf(start - 1, timezone) < wanted) return null;
  return `${iso(start)} shows ${iso(shown)} locally, wanted ${iso(wanted)}`;
}

/** An anchor instant whose local day of month in `timezone` is `day`. */
const anchorArb = (day: number, timezone: string, millisOfDay = fc.integer({ min: 0, max: 86_400_000 - 1 })) =>
  fc
    .record({
      year: fc.integer({ min: 1995, max: 2035 }),
      month: fc.integer({ min: 1, max: 12 }),
      millisOfDay,
    })
    .map(({ year, month, millisOfDay }) => {
      // Pick a month that has this day, then find the instant showing that wall time.
      let m = month;
      while (refDaysInMonth(year, m) < day) m = (m % 12) + 1;
      const wall = Date.UTC(year, m - 1, day) + millisOfDay;
      for (let offsetMin = -14 * 60; offsetMin <= 14 * 60; offsetMin += 15) {
        if (wallOf(wall - offsetMin * 60_000, timezone) === wall) return wall - offsetMin * 60_000;
      }
      return Date.UTC(year, m - 1, day, 12); // wall time in a DST gap: noon UTC is on the same local day in ZONES
    });

function periodsToCheck(interval: Interval, years: number): number[] {
  const count = interval === 'day' ? Math.round(years * 365.25) : interval === 'month' ? years * 12 : years;
  const before = interval === 'day' ? 40 : interval === 'month' ? 24 : 2;
  return Array.from({ length: count + before + 1 }, (_, i) => i - before);
}

/**
 * Core property: over the whole range, starts match the reference and strictly increase
 * (so periods [start(k), start(k+1)) tile time), and periodContaining agrees with the tiling.
 * Plain comparisons in the loops (jest's expect costs ~50 µs a call); one expect at the end.
 */
function checkSchedule(
  anchorMs: number,
  interval: Interval,
  timezone: string,
  rng: () => number,
  stats?: DstStats,
  years = YEARS,
): void {
  const anchor = iso(anchorMs);
  const anchorWall = wallOf(anchorMs, timezone);
  const ks = periodsToCheck(interval, years);
  const starts = ks.map((k) => ms(periodStartsFrom(anchor, interval, timezone, k)));
  const problems: string[] = [];
  ks.forEach((k, i) => {
    const start = starts[i]!;
    const wanted = requestedWall(anchorWall, interval, k);
    const problem =
      k === 0 && interval !== 'day'
        ? start === anchorMs
          ? null
          : `period 0 starts at ${iso(start)}, not at the anchor`
        : timezone === 'UTC'
          ? start === wanted
            ? null
            : `UTC period ${k} starts at ${iso(start)}, wanted ${iso(wanted)}`
          : startProblem(start, wanted, timezone, stats);
    if (problem) problems.push(`k=${k}: ${problem}`);
    if (i > 0 && !(start > starts[i - 1]!)) problems.push(`k=${k}: start ${iso(start)} does not follow ${iso(starts[i - 1]!)}`);
  });
  if (interval === 'day' && !(starts[ks.indexOf(0)]! <= anchorMs && anchorMs < starts[ks.indexOf(1)]!)) {
    problems.push('the anchor is not in day period 0');
  }
  // Sampled periods: first and last instant, and one inside, each belong to that period only.
  for (let n = 0; n < 10; n += 1) {
    const i = Math.floor(rng() * (ks.length - 1));
    const [k, start, end] = [ks[i]!, starts[i]!, starts[i + 1]!];
    for (const at of [start, end - 1, start + Math.floor(rng() * (end - start))]) {
      const p = periodContaining(anchor, interval, timezone, iso(at));
      if (p.index !== k || p.start !== iso(start) || p.end !== iso(end)) {
        problems.push(`${iso(at)} lands in ${JSON.stringify(p)}, wanted period ${k} [${iso(start)}, ${iso(end)})`);
      }
    }
  }
  expect(problems.slice(0, 10)).toEqual([]);
}

/** Deterministic generator for the sampling, seeded by fast-check. */
function seeded(seed: number): () => number {
  let state = seed >>> 0 || 1;
  return () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) / 4_294_967_296;
  };
}

describe.each(ZONES)('period schedule properties in %s', (timezone) => {
  it.each(['month', 'year'] as const)('%s periods tile 50 years for every anchor day 1..31', (interval) => {
    for (let day = 1; day <= 31; day += 1) {
      fc.assert(
        fc.property(anchorArb(day, timezone), fc.integer(), (anchorMs, seed) => {
          checkSchedule(anchorMs, interval, timezone, seeded(seed));
        }),
        { numRuns: interval === 'month' ? 1 : 2 },
      );
    }
  });

  it('day periods tile 50 years of local days', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 31 }).chain((day) => anchorArb(day, timezone)), fc.integer(), (anchorMs, seed) => {
        checkSchedule(anchorMs, 'day', timezone, seeded(seed));
      }),
      { numRuns: 1 },
    );
  });

  it('every instant belongs to exactly one period', () => {
    fc.assert(
      fc.property(
        anchorArb(31, timezone),
        fc.constantFrom<Interval>('day', 'month', 'year'),
        fc.integer({ min: -2 * 365 * 86_400_000, max: YEARS * 365 * 86_400_000 }),
        (anchorMs, interval, delta) => {
          const anchor = iso(anchorMs);
          const at = anchorMs + delta;
          const p = periodContaining(anchor, interval, timezone, iso(at));
          expect(ms(p.start)).toBeLessThanOrEqual(at);
          expect(ms(p.end)).toBeGreaterThan(at);
          expect(p.start).toBe(periodStartsFrom(anchor, interval, timezone, p.index));
          expect(p.end).toBe(periodStartsFrom(anchor, interval, timezone, p.index + 1));
          // Neighbours do not hold the instant.
          expect(ms(periodStartsFrom(anchor, interval, timezone, p.index - 1))).toBeLessThan(ms(p.start));
        },
      ),
      { numRuns: 60 },
    );
  });
});

describe('period schedule properties around DST changes', () => {
  const H = 3_600_000;
  // Local wall-clock windows that are skipped (gap) or repeated (overlap) on transition days.
  const windows: Array<[string, [number, number], [number, number]]> = [
    ['America/New_York', [2 * H, 3 * H], [1 * H, 2 * H]],
    ['Europe/London', [1 * H, 2 * H], [1 * H, 2 * H]],
    ['Australia/Lord_Howe', [2 * H, 2.5 * H], [1.5 * H, 2 * H]],
  ];
  it.each(windows)('month anchors at night in %s go through gaps and overlaps and still tile', (timezone, gap, overlap) => {
    const stats: DstStats = { gaps: 0, overlaps: 0 };
    // Transition days of these zones fall on days 1..14 or 25..31 of the month, so every
    // year of the horizon puts some anchor day, in each window, on a transition.
    for (const day of [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 25, 26, 27, 28, 29, 30, 31]) {
      for (const [from, to] of [gap, overlap]) {
        fc.assert(
          fc.property(anchorArb(day, timezone, fc.integer({ min: from, max: to - 1 })), fc.integer(), (anchorMs, seed) => {
            checkSchedule(anchorMs, 'month', timezone, seeded(seed), stats, 10);
          }),
          { numRuns: 1 },
        );
      }
    }
    expect(stats.gaps).toBeGreaterThan(0);
    expect(stats.overlaps).toBeGreaterThan(0);
  });
});
