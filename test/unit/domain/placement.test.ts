import fc from 'fast-check';
import { periodAfterEarlyClose } from '../../../src/domain/periods';
import { placeEvent, type StoredPeriod } from '../../../src/domain/placement';

/** Where an event counts, judged once when it is stored (src/domain/placement.ts). */
const OCT: StoredPeriod = { start: '2026-10-01T00:00:00.000Z', end: '2026-11-01T00:00:00.000Z', status: 'invoiced', grace_ends_at: '2026-11-01T01:00:00.000Z' };
const NOV: StoredPeriod = { start: '2026-11-01T00:00:00.000Z', end: '2026-11-20T09:30:00.000Z', status: 'closed', grace_ends_at: '2026-11-20T10:30:00.000Z' };
const NOW_OPEN: StoredPeriod = { start: '2026-11-20T09:30:00.000Z', end: '2026-12-01T00:00:00.000Z', status: 'open', grace_ends_at: null };
const PERIODS = [OCT, NOV, NOW_OPEN];
const monthly = (end: string) => periodAfterEarlyClose('2026-10-01T00:00:00.000Z', 'month', 'UTC', end);
const daily = (end: string) => periodAfterEarlyClose('2026-10-01T00:00:00.000Z', 'day', 'UTC', end);
const ms = Date.parse;

test('an event counts in the open period, or in a closed one until its grace ends', () => {
  expect(placeEvent(ms('2026-11-25T00:00:00Z'), ms('2026-11-25T00:00:00Z'), PERIODS, monthly)).toEqual({ kind: 'counted', period_start: NOW_OPEN.start });
  expect(placeEvent(ms('2026-11-20T09:29:59Z'), ms('2026-11-20T10:29:59Z'), PERIODS, monthly)).toEqual({ kind: 'counted', period_start: NOV.start });
  expect(placeEvent(ms('2026-11-20T09:29:59Z'), ms('2026-11-20T10:30:00Z'), PERIODS, monthly)).toMatchObject({ kind: 'refused', code: 'late_event' });
  expect(placeEvent(ms('2026-10-15T00:00:00Z'), ms('2026-10-31T23:00:00Z'), PERIODS, monthly)).toMatchObject({
    kind: 'refused',
    code: 'late_event',
    message: expect.stringContaining(OCT.start),
  });
  expect(placeEvent(ms('2026-09-15T00:00:00Z'), ms('2026-11-25T00:00:00Z'), PERIODS, monthly)).toMatchObject({ kind: 'refused', code: 'late_event' });
});

test('more than 5 minutes ahead of its receipt is refused', () => {
  const received = ms('2026-11-25T00:00:00Z');
  expect(placeEvent(received + 5 * 60_000, received, PERIODS, monthly).kind).toBe('counted');
  expect(placeEvent(received + 5 * 60_000 + 1, received, PERIODS, monthly)).toMatchObject({ kind: 'refused', code: 'future_event' });
});

test('past the open period it counts where the next plan will put it, tiling from the open end', () => {
  // The open period ends 2026-12-01; the next plan is daily: Dec 1, Dec 2, ...
  expect(placeEvent(ms('2026-12-01T00:00:00Z'), ms('2026-12-01T00:00:00Z'), PERIODS, daily)).toEqual({ kind: 'counted', period_start: '2026-12-01T00:00:00.000Z' });
  expect(placeEvent(ms('2026-12-03T05:00:00Z'), ms('2026-12-03T05:00:00Z'), PERIODS, daily)).toEqual({ kind: 'counted', period_start: '2026-12-03T00:00:00.000Z' });
});

test('after a cancellation nothing past the last period is taken', () => {
  const cancelled: StoredPeriod[] = [OCT, { ...NOV, end: '2026-11-20T09:30:00.000Z' }];
  expect(placeEvent(ms('2026-11-20T09:30:00Z'), ms('2026-11-20T09:31:00Z'), cancelled, monthly)).toMatchObject({ kind: 'refused', code: 'subscription_cancelled' });
  // Within the last period's grace a late event still counts there.
  expect(placeEvent(ms('2026-11-20T09:00:00Z'), ms('2026-11-20T09:31:00Z'), cancelled, monthly)).toEqual({ kind: 'counted', period_start: NOV.start });
});

test('every instant a period holds places into that period, as long as it takes events', () => {
  fc.assert(
    fc.property(fc.integer({ min: ms(OCT.start), max: ms('2026-12-31T00:00:00Z') }), (at) => {
      const placed = placeEvent(at, at, PERIODS, monthly);
      const holder = [...PERIODS, monthly(NOW_OPEN.end)].find((p) => at >= ms(p.start) && at < ms(p.end))!;
      const takes = holder === OCT ? false : holder === NOV ? at < ms(NOV.grace_ends_at!) : true;
      expect(placed).toEqual(takes ? { kind: 'counted', period_start: holder.start } : expect.objectContaining({ kind: 'refused', code: 'late_event' }));
    }),
    { seed: 20261201, numRuns: 500 },
  );
});
