/**
 * Usage and cost alerts (BILLING.md, "Limits and alerts"): which thresholds a new usage
 * percent crosses, which single one is notified, and which are superseded.
 */
import { Dec, toDecimalString } from './decimal';

/** Severity of an alert; `none` when no threshold is crossed. */
export type AlertLevel = 'none' | 'warning' | 'critical' | 'exceeded';

const LEVEL_ORDER: readonly AlertLevel[] = ['none', 'warning', 'critical', 'exceeded'];

/** Severity shown for a threshold percent: >= 100 exceeded, >= 90 critical, otherwise warning. */
export function levelForThreshold(threshold: number): Exclude<AlertLevel, 'none'> {
  if (threshold >= 100) return 'exceeded';
  if (threshold >= 90) return 'critical';
  return 'warning';
}

/**
 * A meter's (or the running cost's) usage percent of its limit, `used / limit * 100`, as an
 * exact decimal string ("12.505"); non-terminating quotients keep 60 significant digits.
 */
export function usagePercent(used: Dec.Value, limit: Dec.Value): string {
  const divisor = new Dec(limit);
  if (!divisor.isFinite() || !divisor.greaterThan(0)) throw new RangeError(`limit must be > 0, got ${String(limit)}`);
  return toDecimalString(new Dec(used).times(100).dividedBy(divisor));
}

/**
 * What to do after a usage change: `notify` is the one threshold to alert on (null: none),
 * `superseded` the other newly crossed thresholds, ascending, to record as covered by it.
 * Both must be recorded as decided for the period, even when `notify` is null.
 */
export interface ThresholdDecision {
  notify: number | null;
  superseded: number[];
}

/**
 * Decides the alerts for a new usage percent. The thresholds crossed now (percent >= t)
 * that were not already decided this period are the candidates (duplicates count once):
 * the highest is notified and the lower ones are superseded, so they can never be notified
 * later in the period. When an already decided threshold is higher than every candidate
 * (possible only if thresholds were added mid-period), nothing is notified and the
 * candidates are superseded by that earlier, more severe alert.
 */
export function decideThresholds(
  thresholds: readonly number[],
  alreadyDecided: readonly number[],
  percent: Dec.Value,
): ThresholdDecision {
  const current = new Dec(percent);
  const decided = new Set(alreadyDecided);
  const crossed = [...new Set(thresholds)]
    .filter((t) => !decided.has(t) && current.greaterThanOrEqualTo(t))
    .sort((a, b) => a - b);
  if (crossed.length === 0) return { notify: null, superseded: [] };
  const highest = crossed[crossed.length - 1] as number;
  if (alreadyDecided.some((t) => t > highest)) return { notify: null, superseded: crossed };
  return { notify: highest, superseded: crossed.slice(0, -1) };
}

/** The most severe of several alert levels (`none` for an empty list), e.g. for a status badge. */
export function highestLevel(levels: readonly AlertLevel[]): AlertLevel {
  return levels.reduce<AlertLevel>(
    (highest, level) => (LEVEL_ORDER.indexOf(level) > LEVEL_ORDER.indexOf(highest) ? level : highest),
    'none',
  );
}
