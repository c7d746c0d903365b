/**
 * Forecasts (BILLING.md, "Forecast"): where the current period is heading at the rate so far.
 *
 * - A meter's projected usage is linear, `used / elapsed × length`, once at least 1 % of the
 *   period has elapsed; before that the rate is noise and every forecast field is null.
 * - Only `sum` and `count` meters accumulate over time. A `max` or `latest` meter is a reading,
 *   not a running total, so its projection is the reading itself, and it gets no `exhausts_at`.
 * - The projected amount is the projected usage rated like the invoice line (as the usage view
 *   rates `amount`), and the projected total is the total so far with each meter's amount
 *   replaced by its projected amount, so the base fee and every rounding rule are the invoice's.
 * - `exhausts_at` is the instant the limit is reached at that rate, when it falls inside the
 *   period (null otherwise, and null without a limit or without usage). A limit already reached
 *   gives the instant the rate line crossed it, at or before now.
 * - At or after the period's end the elapsed time is the whole period, so every projection
 *   equals the actual figure.
 *
 * Pure: the instant `asOf` is an argument, so workflow code (the `usage` query) and the API agree.
 */
import { Dec, roundMoney, toDecimalString } from './decimal';
import type { Period } from './periods';
import type { Aggregation, Meter } from './plan';
import { rateMeter } from './rating';

/** One meter's forecast in the usage view; every field is null before 1 % of the period has elapsed. */
export interface MeterForecast {
  projected_used: number | null;
  projected_amount: string | null;
  exhausts_at: string | null;
}

/** The forecast before 1 % of the period has elapsed: nothing projected yet. */
export const NO_FORECAST: Readonly<MeterForecast> = Object.freeze({ projected_used: null, projected_amount: null, exhausts_at: null });

/** The share of the period that must have elapsed before a rate is projected. */
export const FORECAST_MIN_ELAPSED_FRACTION = new Dec('0.01');

/** Projected quantities carry the precision of usage quantities (BILLING.md: 6 decimals). */
const QUANTITY_DECIMALS = 6;

/** How far into the period `asOf` is: elapsed and length in ms, elapsed clamped to [0, length]. */
interface PeriodProgress {
  startMs: number;
  endMs: number;
  elapsedMs: Dec;
  lengthMs: Dec;
}

function progress(period: Period, asOf: string): PeriodProgress {
  const startMs = Date.parse(period.start);
  const endMs = Date.parse(period.end);
  const nowMs = Date.parse(asOf);
  if (!Number.isFinite(startMs) || !Number.isFinite(endMs) || !Number.isFinite(nowMs) || endMs <= startMs) {
    throw new RangeError(`cannot forecast period ${period.start} → ${period.end} as of ${asOf}`);
  }
  const elapsed = Math.min(Math.max(nowMs - startMs, 0), endMs - startMs);
  return { startMs, endMs, elapsedMs: new Dec(elapsed), lengthMs: new Dec(endMs - startMs) };
}

/** True once enough of the period has elapsed for a rate to mean something. */
function projectable(p: PeriodProgress): boolean {
  return p.elapsedMs.dividedBy(p.lengthMs).greaterThanOrEqualTo(FORECAST_MIN_ELAPSED_FRACTION);
}

function accumulates(aggregation: Aggregation): boolean {
  return aggregation === 'sum' || aggregation === 'count';
}

/** The counter at period end at the rate so far (`used` for readings), or null before 1 %. */
function projectUsed(aggregation: Aggregation, used: Dec.Value, p: PeriodProgress): Dec | null {
  if (!projectable(p)) return null;
  if (!accumulates(aggregation)) return new Dec(used);
  return new Dec(used).times(p.lengthMs).dividedBy(p.elapsedMs).toDecimalPlaces(QUANTITY_DECIMALS, Dec.ROUND_HALF_UP);
}

/**
 * The instant an accumulating meter reaches `limit` at the rate so far: `start + limit × elapsed /
 * used`, rounded up to the millisecond (the first instant the counter is at the limit). Null when
 * it is after the period's end, or when there is no limit, no usage or no rate yet.
 */
function exhaustionInstant(aggregation: Aggregation, used: Dec.Value, limit: Dec.Value | null, p: PeriodProgress): string | null {
  if (limit === null || !accumulates(aggregation) || !projectable(p)) return null;
  const usedNow = new Dec(used);
  if (!usedNow.greaterThan(0)) return null;
  const offset = new Dec(limit).times(p.elapsedMs).dividedBy(usedNow).toDecimalPlaces(0, Dec.ROUND_CEIL);
  const at = offset.plus(p.startMs);
  if (!at.lessThan(p.endMs)) return null;
  return new Date(at.toNumber()).toISOString();
}

/** What a meter's forecast needs: the meter, its counter, the limit the usage view shows, and when. */
export interface MeterForecastInput {
  meter: Meter;
  used: Dec.Value;
  /** The limit the usage view reports for the meter (the effective one); null: no limit. */
  limit: Dec.Value | null;
  period: Period;
  asOf: string;
  currency: string;
  /**
   * The meter's invoice line amount for a counter, as the usage view rates its `amount` (units
   * drawn from add-on packs left out, say); default: `rateMeter`. The forecast rates with it, so
   * at period end `projected_amount` is the view's `amount`.
   */
  billed?: (counter: Dec) => string;
}

/** One meter's projected usage and amount at period end, and when its limit runs out. */
export function forecastMeter(input: MeterForecastInput): MeterForecast {
  const p = progress(input.period, input.asOf);
  const projected = projectUsed(input.meter.aggregation, input.used, p);
  if (projected === null) return { ...NO_FORECAST };
  const billed = input.billed ?? ((counter: Dec) => rateMeter(input.meter, counter, input.currency).amount);
  return {
    projected_used: projected.toNumber(),
    projected_amount: billed(projected),
    exhausts_at: exhaustionInstant(input.meter.aggregation, input.used, input.limit, p),
  };
}

/**
 * The period's projected invoice total: the total so far (base fee and every other line as the
 * view rates them) with each meter's amount replaced by its projected amount. Lines are rounded
 * amounts, so the sum stays at the currency's minor unit, and at period end it is the total. Null
 * before 1 % of the period has elapsed.
 */
export function projectedTotal(total: string, currency: string, meters: ReadonlyArray<{ amount: string; forecast: MeterForecast }>): string | null {
  let projected = new Dec(total);
  for (const meter of meters) {
    if (meter.forecast.projected_amount === null) return null;
    projected = projected.plus(meter.forecast.projected_amount).minus(meter.amount);
  }
  return roundMoney(projected, currency);
}

const DAY_MS = 86_400_000;

/**
 * The cost accrued per day so far this period: `cost / elapsed days` (exact), or null before any
 * time has elapsed. Goes with {@link daysRemaining} for a prepaid balance.
 */
export function dailyCostRate(cost: Dec.Value, period: Period, asOf: string): string | null {
  const p = progress(period, asOf);
  if (p.elapsedMs.isZero()) return null;
  return toDecimalString(new Dec(cost).times(DAY_MS).dividedBy(p.elapsedMs));
}

/**
 * `days_remaining` of a prepaid balance (BILLING.md, "Forecast"): `available / dailyRate`, floored
 * to one decimal place, so it never promises more than the balance covers. Null when the rate is
 * null or not above 0 (nothing is being spent); 0 when nothing is available.
 */
export function daysRemaining(available: Dec.Value, dailyRate: Dec.Value | null): number | null {
  if (dailyRate === null) return null;
  const rate = new Dec(dailyRate);
  if (!rate.greaterThan(0)) return null;
  const left = new Dec(available);
  if (!left.greaterThan(0)) return 0;
  return left.dividedBy(rate).toDecimalPlaces(1, Dec.ROUND_DOWN).toNumber();
}
