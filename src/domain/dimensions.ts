/**
 * Pricing by dimension (BILLING.md, "Dimensions"): a meter with `group_by` splits its events into
 * groups by those event properties; each group is aggregated and priced on its own, tiers
 * included, with the first `prices` entry whose `match` equals the group's properties, else the
 * meter's own pricing, and is its own invoice line. Limits and alerts stay on the meter's total.
 */
import { Dec, roundMoney, toDecimalString } from './decimal';
import type { Meter, Pricing } from './plan';
import { rateMeter, type InvoiceLineDraft, type RatedMeter } from './rating';

/** One group of a dimensioned meter: its properties (`group_by` key to value; a missing property is absent) and its counter. */
export interface MeterGroup {
  group: Record<string, string>;
  value: string;
}

/** True for a meter that prices by event properties. */
export function isDimensioned(meter: Pick<Meter, 'group_by'>): boolean {
  return (meter.group_by?.length ?? 0) > 0;
}

/**
 * A property value as groups compare it: strings as they are, numbers and booleans as JSON
 * writes them; an object, an array or null does not take part in a group.
 */
export function groupValue(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'boolean') return JSON.stringify(value);
  return undefined;
}

/** The group an event's properties put it in: its value of each `group_by` key (absent when missing). */
export function groupOf(meter: Pick<Meter, 'group_by'>, properties: Readonly<Record<string, unknown>> | null | undefined): Record<string, string> {
  const group: Record<string, string> = {};
  for (const key of meter.group_by ?? []) {
    const value = groupValue(properties?.[key]);
    if (value !== undefined) group[key] = value;
  }
  return group;
}

/** The pricing of a group: the first `prices` entry whose every `match` key equals the group's value, else the meter's. */
export function pricingFor(meter: Pick<Meter, 'pricing' | 'prices'>, group: Readonly<Record<string, string>>): Pricing {
  const entry = (meter.prices ?? []).find((p) => Object.entries(p.match).every(([key, value]) => group[key] === value));
  return entry ? entry.pricing : meter.pricing;
}

/** `match` keys a meter's `group_by` lacks, as `prices.<i>.match.<key>` paths: such an entry could never match. */
export function matchKeyProblems(meter: Pick<Meter, 'group_by' | 'prices'>): string[] {
  const keys = new Set(meter.group_by ?? []);
  return (meter.prices ?? []).flatMap((p, i) => Object.keys(p.match).filter((k) => !keys.has(k)).map((k) => `prices.${i}.match.${k}`));
}

/** A group's label on its line: `model=gpt-4, region=eu` (`(none)` for events without the properties). */
export function groupLabel(group: Readonly<Record<string, string>>): string {
  const parts = Object.entries(group).map(([k, v]) => `${k}=${v}`);
  return parts.length === 0 ? '(none)' : parts.join(', ');
}

/** Groups in a stable order: by their label. */
function byLabel(a: MeterGroup, b: MeterGroup): number {
  const la = groupLabel(a.group);
  const lb = groupLabel(b.group);
  return la < lb ? -1 : la > lb ? 1 : 0;
}

/** Each group of a dimensioned meter rated on its own counter with its own pricing (tiers included), in label order. */
export function rateGroups(meter: Meter, groups: readonly MeterGroup[], currency: string): Array<MeterGroup & { rated: RatedMeter }> {
  return [...groups].sort(byLabel).map((g) => ({ ...g, rated: rateMeter(pricingFor(meter, g.group), g.value, currency) }));
}

/** The invoice lines of a dimensioned meter: one per group, `(metric, group values)`, each rounded once. */
export function groupLines(meter: Meter, groups: readonly MeterGroup[], currency: string): InvoiceLineDraft[] {
  return rateGroups(meter, groups, currency).map(({ group, rated }) => ({
    metric: meter.metric,
    description: `${meter.metric} (${groupLabel(group)})`,
    quantity: rated.quantity,
    amount: rated.amount,
    group,
    ...(rated.tiers ? { tiers: rated.tiers } : {}),
  }));
}

/** The meter's amount: the sum of its groups' rounded lines. */
export function groupsAmount(meter: Meter, groups: readonly MeterGroup[], currency: string): string {
  return roundMoney(groupLines(meter, groups, currency).reduce((sum, l) => sum.plus(l.amount), new Dec(0)), currency);
}

/** The meter's total counter from its groups (`sum`/`count` add up; used to check the read model agrees). */
export function groupsTotal(groups: readonly MeterGroup[]): string {
  return toDecimalString(groups.reduce((sum, g) => sum.plus(g.value), new Dec(0)));
}

/** One group in the usage view. */
export interface GroupUsage {
  group: Record<string, string>;
  used: number;
  used_decimal: string;
  amount: string;
}

/** The part of a usage view a group breakdown changes (`src/domain/usage-view.ts`). */
interface ViewWithCosts {
  metrics: Record<string, { amount: string; groups?: GroupUsage[] }>;
  costs: { usage: string; total: string; currency: string };
}

/**
 * Breaks each dimensioned meter of a usage view down by group, each group rated on its own: the
 * meter's `amount` becomes the sum of its groups' lines, and the costs follow. Counters, limits
 * and alerts stay the meter's totals. Answers a new view.
 */
export function withGroups<V extends ViewWithCosts>(view: V, meters: readonly Meter[], groups: Readonly<Record<string, MeterGroup[]>>): V {
  const metrics = { ...view.metrics };
  let delta = new Dec(0);
  for (const meter of meters) {
    const own = groups[meter.metric];
    const before = metrics[meter.metric];
    if (!isDimensioned(meter) || !own || !before) continue;
    const rated = rateGroups(meter, own, view.costs.currency);
    const amount = roundMoney(rated.reduce((sum, g) => sum.plus(g.rated.amount), new Dec(0)), view.costs.currency);
    delta = delta.plus(amount).minus(before.amount);
    metrics[meter.metric] = {
      ...before,
      amount,
      groups: rated.map((g) => ({ group: g.group, used: new Dec(g.value).toNumber(), used_decimal: g.value, amount: g.rated.amount })),
    };
  }
  const currency = view.costs.currency;
  return {
    ...view,
    metrics,
    costs: { ...view.costs, usage: roundMoney(new Dec(view.costs.usage).plus(delta), currency), total: roundMoney(new Dec(view.costs.total).plus(delta), currency) },
  };
}
