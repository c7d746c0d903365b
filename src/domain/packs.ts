/**
 * Add-on packs (BILLING.md, "Add-on packs"): extra units of one metric, bought apart from the
 * billing period, with their own expiry. Usage first uses the limit (the tenant's override, else
 * the plan's), then draws from the packs active at that instant, the one expiring first first.
 * Each pack unit is drawn at most once, ever: draws are kept per pack and period, and a pack's
 * remainder is its units less every period's draws. Pure: the ledger and the invoice
 * repositories decide with these functions and store what they return.
 */
import { Dec, roundMoney, toDecimalString } from './decimal';
import { periodStartsFrom } from './periods';
import type { PlanVersion } from './plan';
import { ratePeriod, type InvoiceLineDraft, type RatedPeriod } from './rating';
import { groupLines, isDimensioned, type MeterGroup } from './dimensions';

/** A pack as draw-down reads it, with its draws so far (period start to units drawn). */
export interface Pack {
  id: string;
  metric: string;
  units: string;
  purchased_at: string;
  expires_at: string;
  /** The pack's price, billed once on the invoice of the period it was bought in (absent: free). */
  price?: string;
  draws: Record<string, string>;
}

/** How long a pack lasts when its buyer does not say. */
export const DEFAULT_PACK_MONTHS = 3;

/** Default expiry: 3 months after the purchase, on the same day clamped to the month's end (Jan 31 → Apr 30), in the tenant's timezone. */
export function defaultPackExpiry(purchasedAt: string, timezone: string): string {
  return periodStartsFrom(purchasedAt, 'month', timezone, DEFAULT_PACK_MONTHS);
}

/** A pack counts from its purchase (included) to its expiry (excluded). */
export function packActiveAt(pack: Pick<Pack, 'purchased_at' | 'expires_at'>, at: string): boolean {
  const t = Date.parse(at);
  return Date.parse(pack.purchased_at) <= t && t < Date.parse(pack.expires_at);
}

/** Units drawn from a pack over every period. */
export function packDrawn(pack: Pick<Pack, 'draws'>): Dec {
  return Object.values(pack.draws).reduce((sum, d) => sum.plus(d), new Dec(0));
}

/** Units left in a pack (never below 0). */
export function packRemaining(pack: Pick<Pack, 'units' | 'draws'>): Dec {
  return Dec.max(0, new Dec(pack.units).minus(packDrawn(pack)));
}

/** The order packs are drawn in: the one expiring first first, then the oldest purchase, then by id. */
export function comparePacks(a: Pack, b: Pack): number {
  return Date.parse(a.expires_at) - Date.parse(b.expires_at) || Date.parse(a.purchased_at) - Date.parse(b.purchased_at) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

/** Units drawn from `metric`'s packs for one period. */
export function drawnInPeriod(packs: readonly Pack[], metric: string, periodStart: string): Dec {
  return packs.filter((p) => p.metric === metric).reduce((sum, p) => sum.plus(p.draws[periodStart] ?? 0), new Dec(0));
}

/**
 * Draws what a period's usage needs beyond its limit: `need` = max(0, counter − limit) is the
 * period's total draw, of which `drawnInPeriod` is drawn already. The rest is taken at `at`
 * from the packs of `metric` active then, the one expiring first first, each giving what it has
 * left; what no pack covers stays billable usage. Draws never shrink (a unit drawn is drawn), so
 * a lower counter draws nothing back. Answers the packs with their draws for the period updated,
 * and the draws that changed (absolute units per pack for the period).
 */
export function drawDown(
  packs: readonly Pack[],
  metric: string,
  periodStart: string,
  counter: Dec.Value,
  limit: Dec.Value | undefined,
  at: string,
): { packs: Pack[]; changed: Array<{ pack_id: string; units: string }> } {
  const need = limit === undefined ? new Dec(0) : Dec.max(0, new Dec(counter).minus(limit));
  let missing = need.minus(drawnInPeriod(packs, metric, periodStart));
  const next = packs.map((p) => ({ ...p, draws: { ...p.draws } }));
  const changed: Array<{ pack_id: string; units: string }> = [];
  for (const pack of next.filter((p) => p.metric === metric && packActiveAt(p, at)).sort(comparePacks)) {
    if (!missing.greaterThan(0)) break;
    const take = Dec.min(missing, packRemaining(pack));
    if (!take.greaterThan(0)) continue;
    pack.draws[periodStart] = toDecimalString(new Dec(pack.draws[periodStart] ?? 0).plus(take));
    changed.push({ pack_id: pack.id, units: pack.draws[periodStart]! });
    missing = missing.minus(take);
  }
  return { packs: next, changed };
}

/**
 * The effective limit of a metric in a period at `at`: its limit + the units drawn from packs in
 * this period + the units still left in its packs active now. A pack that expired mid-period
 * keeps counting what was drawn from it, and stops counting what it had left. Undefined for a
 * metric without a limit: packs extend a limit, they do not make an unlimited meter limited.
 */
export function effectiveLimit(limit: Dec.Value | undefined, packs: readonly Pack[], metric: string, periodStart: string, at: string): string | undefined {
  if (limit === undefined) return undefined;
  const own = packs.filter((p) => p.metric === metric);
  if (own.length === 0) return toDecimalString(limit);
  const left = own.filter((p) => packActiveAt(p, at)).reduce((sum, p) => sum.plus(packRemaining(p)), new Dec(0));
  return toDecimalString(new Dec(limit).plus(drawnInPeriod(own, metric, periodStart)).plus(left));
}

/** A pack's state for the API: `active`, `exhausted` (nothing left) or `expired` (with the units lost). */
export function packStatus(pack: Pack, at: string): { status: 'active' | 'exhausted' | 'expired'; remaining: string; lost: string } {
  const remaining = packRemaining(pack);
  if (Date.parse(at) >= Date.parse(pack.expires_at)) return { status: 'expired', remaining: '0', lost: toDecimalString(remaining) };
  return { status: remaining.isZero() ? 'exhausted' : 'active', remaining: toDecimalString(remaining), lost: '0' };
}

/** A pack billed on the invoice of the period it was bought in. */
export interface PackCharge {
  pack_id: string;
  metric: string;
  units: string;
  price: string;
}

/**
 * Rates a period with its packs: units drawn from packs are not billed again as usage, so each
 * meter is rated on its counter less the units drawn for the period (never below 0), and its line
 * shows the draws per pack; each pack bought with a price in the period is a line of kind `pack`,
 * billed once. Subtotal and total are the sums of the rounded lines, as in `ratePeriod`.
 */
export function rateWithPacks(
  plan: PlanVersion,
  counters: Readonly<Record<string, string>>,
  packs: readonly Pack[],
  periodStart: string,
  charges: readonly PackCharge[],
  /** A dimensioned meter's groups (such meters take no packs): one line per group. */
  groups: Readonly<Record<string, MeterGroup[]>> = {},
): RatedPeriod {
  const billable: Record<string, string> = { ...counters };
  for (const meter of plan.meters) {
    const drawn = drawnInPeriod(packs, meter.metric, periodStart);
    if (drawn.greaterThan(0)) billable[meter.metric] = toDecimalString(Dec.max(0, new Dec(counters[meter.metric] ?? 0).minus(drawn)));
  }
  const meterLines: Record<string, InvoiceLineDraft[]> = {};
  for (const meter of plan.meters) {
    const own = groups[meter.metric];
    if (own && isDimensioned(meter)) meterLines[meter.metric] = groupLines(meter, own, plan.currency);
  }
  const rated = ratePeriod(plan, billable, meterLines);
  const lines: InvoiceLineDraft[] = rated.lines.map((line) => {
    const draws = packs
      .filter((p) => p.metric === line.metric && new Dec(p.draws[periodStart] ?? 0).greaterThan(0))
      .sort(comparePacks)
      .map((p) => ({ pack_id: p.id, units: p.draws[periodStart]! }));
    return draws.length === 0 ? line : { ...line, pack_draws: draws };
  });
  for (const charge of charges) {
    lines.push({ kind: 'pack', metric: charge.metric, description: `Add-on pack ${charge.pack_id}: ${charge.units} ${charge.metric}`, quantity: '1', amount: roundMoney(charge.price, plan.currency) });
  }
  const subtotal = roundMoney(lines.reduce((sum, l) => sum.plus(l.amount), new Dec(0)), plan.currency);
  return { ...rated, lines, subtotal, total: subtotal };
}

/** The packs bought with a price within a period: billed once, on that period's invoice. */
export function packCharges(packs: readonly Pack[], period: { start: string; end: string }): PackCharge[] {
  const from = Date.parse(period.start);
  const to = Date.parse(period.end);
  return packs
    .filter((p) => p.price !== undefined && Date.parse(p.purchased_at) >= from && Date.parse(p.purchased_at) < to)
    .sort((a, b) => Date.parse(a.purchased_at) - Date.parse(b.purchased_at) || (a.id < b.id ? -1 : 1))
    .map((p) => ({ pack_id: p.id, metric: p.metric, units: p.units, price: p.price! }));
}

/** A pack as the usage view and `GET …/packs` show it. */
export interface PackView {
  id: string;
  metric: string;
  units: number;
  /** Units drawn for the period the view is about. */
  drawn_this_period: number;
  remaining: number;
  /** Units left when the pack expired: lost. */
  lost: number;
  purchased_at: string;
  expires_at: string;
  status: 'active' | 'exhausted' | 'expired';
}

export function packView(pack: Pack, periodStart: string, at: string): PackView {
  const state = packStatus(pack, at);
  return {
    id: pack.id,
    metric: pack.metric,
    units: new Dec(pack.units).toNumber(),
    drawn_this_period: new Dec(pack.draws[periodStart] ?? 0).toNumber(),
    remaining: new Dec(state.remaining).toNumber(),
    lost: new Dec(state.lost).toNumber(),
    purchased_at: pack.purchased_at,
    expires_at: pack.expires_at,
    status: state.status,
  };
}
