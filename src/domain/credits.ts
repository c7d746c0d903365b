/**
 * Prepaid credit (BILLING.md, "Prepaid credits"): grants, the order credit is applied to an
 * invoice in, the balance a tenant can still spend, and what it buys. Pure: the repositories
 * lock and store, these functions decide.
 */
import { Dec, roundMoney, toDecimalString } from './decimal';
import type { Meter, PlanVersion } from './plan';
import type { Period } from './periods';
import { dailyCostRate, daysRemaining } from './forecast';
import { marginalUnitPrice } from './event-cost';

/** One grant as allocation reads it: what is left of it, and until when it can be spent. */
export interface CreditGrant {
  id: string;
  remaining: string;
  /** ISO instant; null: never expires. */
  expires_at: string | null;
  created_at: string;
}

/** Credit taken from one grant for one invoice. */
export interface CreditAllocation {
  grant_id: string;
  amount: string;
}

/** True while a grant can be spent at `at`: it has not expired (its expiry instant is excluded). */
export function grantActiveAt(grant: Pick<CreditGrant, 'expires_at'>, at: string): boolean {
  return grant.expires_at === null || Date.parse(grant.expires_at) > Date.parse(at);
}

/**
 * The order grants are spent in: the one expiring first first (grants that never expire last),
 * then the oldest, then by id so the order is total.
 */
export function compareGrants(a: CreditGrant, b: CreditGrant): number {
  const expiry = (g: CreditGrant) => (g.expires_at === null ? Infinity : Date.parse(g.expires_at));
  return expiry(a) - expiry(b) || Date.parse(a.created_at) - Date.parse(b.created_at) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

/**
 * Credit applied to an invoice of `total` at the instant `at`: active grants in
 * {@link compareGrants} order, each giving what it has left until the total is covered. The sum
 * never exceeds the total nor any grant's remainder, and is 0 for a total of 0 or less.
 */
export function allocateCredit(grants: readonly CreditGrant[], total: Dec.Value, at: string): { allocations: CreditAllocation[]; applied: string } {
  let due = Dec.max(0, new Dec(total));
  const allocations: CreditAllocation[] = [];
  for (const grant of [...grants].filter((g) => grantActiveAt(g, at)).sort(compareGrants)) {
    if (due.isZero()) break;
    const take = Dec.min(due, new Dec(grant.remaining));
    if (!take.greaterThan(0)) continue;
    allocations.push({ grant_id: grant.id, amount: toDecimalString(take) });
    due = due.minus(take);
  }
  const applied = allocations.reduce((sum, a) => sum.plus(a.amount), new Dec(0));
  return { allocations, applied: toDecimalString(applied) };
}

/** What the tenant holds at `at`: the remainders of its active grants. */
export function creditBalance(grants: readonly Pick<CreditGrant, 'remaining' | 'expires_at'>[], at: string): string {
  return toDecimalString(grants.filter((g) => grantActiveAt(g, at)).reduce((sum, g) => sum.plus(g.remaining), new Dec(0)));
}

/** `amount_due` of an invoice: its total less the credit applied, never below 0. */
export function amountDue(total: Dec.Value, creditsApplied: Dec.Value, currency: string): string {
  return roundMoney(Dec.max(0, new Dec(total).minus(creditsApplied)), currency);
}

/** `floor(available / price)`: how many more units the balance buys (0 when it is spent; null for a free unit). */
export function unitsRemaining(available: Dec.Value, unitPrice: Dec.Value): number | null {
  const price = new Dec(unitPrice);
  if (!price.greaterThan(0)) return null;
  const left = new Dec(available);
  return left.greaterThan(0) ? left.dividedBy(price).floor().toNumber() : 0;
}

/** `GET …/balance`: what the tenant holds, what it owes so far, and what that leaves. */
export interface BalanceView {
  currency: string;
  balance: string;
  uncharged: string;
  available: string;
  total_charged: string;
  low_balance_threshold: string | null;
  estimated_units_remaining: Record<string, number | null>;
  days_remaining: number | null;
}

/** What the balance view is built from: stored credit, and the running cost of every uncharged period. */
export interface BalanceViewInput {
  currency: string;
  balance: string;
  total_charged: string;
  /** The running total (base fee included) of each period without a finalized invoice. */
  unchargedTotals: string[];
  lowBalanceThreshold: string | null;
  /** The current period's meters and counters, for the units the balance still buys. */
  meters: readonly Meter[];
  values: Readonly<Record<string, string>>;
  /**
   * The current period's usage cost so far, base fee excluded (it is charged once per period, not
   * by the day), the period and the instant of the view: `days_remaining` divides by that rate.
   */
  usageCost: string;
  period: Period;
  asOf: string;
}

export function buildBalanceView(input: BalanceViewInput): BalanceView {
  const uncharged = input.unchargedTotals.reduce((sum, t) => sum.plus(t), new Dec(0));
  const available = new Dec(input.balance).minus(uncharged);
  const units: Record<string, number | null> = {};
  for (const meter of input.meters) units[meter.metric] = unitsRemaining(available, marginalUnitPrice(meter, input.values[meter.metric] ?? '0'));
  return {
    currency: input.currency,
    balance: roundMoney(input.balance, input.currency),
    uncharged: roundMoney(uncharged, input.currency),
    available: roundMoney(available, input.currency),
    total_charged: roundMoney(input.total_charged, input.currency),
    low_balance_threshold: input.lowBalanceThreshold === null ? null : roundMoney(input.lowBalanceThreshold, input.currency),
    estimated_units_remaining: units,
    days_remaining: daysRemaining(available, dailyCostRate(input.usageCost, input.period, input.asOf)),
  };
}

/** The `balance.low` threshold in force: the tenant's own, else its plan's (null: none). */
export function lowBalanceThreshold(tenantThreshold: string | null | undefined, plan: Pick<PlanVersion, 'low_balance_threshold'>): string | null {
  return tenantThreshold ?? plan.low_balance_threshold ?? null;
}

/** The state of the two balance alerts (see `decideBalanceAlerts`). */
export interface BalanceAlertsState {
  low: { fired: number; armed: boolean };
  depleted: { fired: number; armed: boolean };
}

/** Both balance alerts armed, none fired: a tenant that never crossed. */
export const ARMED_BALANCE_ALERTS: BalanceAlertsState = { low: { fired: 0, armed: true }, depleted: { fired: 0, armed: true } };

/**
 * Which balance alerts fire now (BILLING.md, "Low balance"). `balance.low` fires when available
 * falls to or below the threshold, `balance.depleted` when it reaches 0 or less, each once per
 * crossing: it is disarmed when it fires, and re-armed only by a grant (`granted`) that brings
 * available back above its level. A rise for any other reason (a voided invoice's credit given
 * back, a period charged) re-arms nothing. Answers the new state and the crossings, numbered
 * from 1 per kind.
 */
export function decideBalanceAlerts(
  state: BalanceAlertsState,
  available: Dec.Value,
  threshold: Dec.Value | null,
  granted: boolean,
): { state: BalanceAlertsState; fire: Array<{ kind: 'low' | 'depleted'; crossing: number }> } {
  const left = new Dec(available);
  const next: BalanceAlertsState = { low: { ...state.low }, depleted: { ...state.depleted } };
  if (granted) {
    if (threshold !== null && left.greaterThan(threshold)) next.low.armed = true;
    if (left.greaterThan(0)) next.depleted.armed = true;
  }
  const fire: Array<{ kind: 'low' | 'depleted'; crossing: number }> = [];
  const crossed = { low: threshold !== null && left.lessThanOrEqualTo(threshold), depleted: left.lessThanOrEqualTo(0) };
  for (const kind of ['low', 'depleted'] as const) {
    if (!crossed[kind] || !next[kind].armed) continue;
    next[kind] = { fired: next[kind].fired + 1, armed: false };
    fire.push({ kind, crossing: next[kind].fired });
  }
  return { state: next, fire };
}
