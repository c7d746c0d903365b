/**
 * Where a usage event counts (BILLING.md, "Late and early events"), decided once, when the event
 * is stored, against the tenant's periods as PostgreSQL holds them under the tenant's ledger lock
 * (docs/design/core-v2.md):
 *
 * - stamped more than 5 minutes after it was received: refused (`future_event`);
 * - in the open period: counted there;
 * - at or after the open period's end (its anniversary passed, the rollover has not run yet):
 *   counted in the period that will hold it, computed from the open period's end with the plan
 *   the next periods will use, so it tiles exactly as the rollover will;
 * - in a closed period whose grace has not ended: counted there (a late event);
 * - anywhere else (an invoiced period, a grace that ended, before the first period): refused
 *   (`late_event`), naming the period when there is one;
 * - with no open period (the subscription is cancelled) and after the last period: refused
 *   (`subscription_cancelled`).
 */
import type { Period } from './periods';

/** Events may be timestamped at most this far after they were received. */
export const FUTURE_TOLERANCE_MS = 5 * 60_000;

/** One of the tenant's periods as stored. */
export interface StoredPeriod extends Period {
  status: 'open' | 'closed' | 'invoiced';
  /** Closed periods: late events are accepted until then. */
  grace_ends_at: string | null;
}

/** Where an event counts, or why it cannot. */
export type Placement =
  | { kind: 'counted'; period_start: string }
  | { kind: 'refused'; code: 'future_event' | 'late_event' | 'subscription_cancelled'; message: string };

/** How many periods past the open one an event may land in (a rollover far behind, never more). */
const MAX_PERIODS_AHEAD = 1_000;

/**
 * Places one event. `following(end)` is the period that starts at `end` under the next plan
 * (the rollover's own rule); it is asked only for events stamped past the open period.
 */
export function placeEvent(timestampMs: number, receivedMs: number, periods: readonly StoredPeriod[], following: (end: string) => Period): Placement {
  if (timestampMs > receivedMs + FUTURE_TOLERANCE_MS) {
    return { kind: 'refused', code: 'future_event', message: 'more than 5 minutes in the future' };
  }
  const open = periods.find((p) => p.status === 'open');
  if (open && timestampMs >= Date.parse(open.start)) {
    let period: Period = open;
    for (let step = 0; timestampMs >= Date.parse(period.end); step += 1) {
      if (step >= MAX_PERIODS_AHEAD) throw new RangeError(`event at ${new Date(timestampMs).toISOString()} is too far past ${open.end}`);
      period = following(period.end);
    }
    return { kind: 'counted', period_start: period.start };
  }
  const home = periods.find((p) => p.status !== 'open' && timestampMs >= Date.parse(p.start) && timestampMs < Date.parse(p.end));
  if (home) {
    if (home.status === 'closed' && home.grace_ends_at !== null && receivedMs < Date.parse(home.grace_ends_at)) {
      return { kind: 'counted', period_start: home.start };
    }
    return { kind: 'refused', code: 'late_event', message: `belongs to period ${home.start} → ${home.end}, which no longer takes events` };
  }
  const last = [...periods].sort((a, b) => Date.parse(b.end) - Date.parse(a.end))[0];
  if (!open && last && timestampMs >= Date.parse(last.end)) {
    return { kind: 'refused', code: 'subscription_cancelled', message: 'the subscription is cancelled' };
  }
  return { kind: 'refused', code: 'late_event', message: 'before every period that takes events' };
}
