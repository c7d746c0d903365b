/**
 * What changed between two versions of one period's invoice (a rerun): pure code, so the
 * activity that writes version n+1, the API and the tests all agree on the same comparison.
 */
import { Dec, roundMoney, toDecimalString } from '../domain/decimal';

/**
 * One line that differs between version n (`before`) and version n+1 (`after`). A line present
 * in only one version has `null` on the other side. `delta` is `amount_after - amount_before`
 * (a missing side counts as zero) in the currency of the new version, or null when the two
 * versions are in different currencies, where a difference would mean nothing.
 */
export interface InvoiceLineChange {
  metric: string;
  description: string;
  quantity_before: number | null;
  quantity_after: number | null;
  amount_before: string | null;
  amount_after: string | null;
  delta: string | null;
}

/** An invoice line as stored (`numeric` columns come back as strings) or as just rated. */
export interface ComparableLine {
  metric: string;
  description: string;
  quantity: string | number;
  amount: string | number;
}

/** One version's lines and currency: the two sides of a comparison. */
export interface ComparableInvoice {
  currency: string;
  lines: readonly ComparableLine[];
}

/**
 * The per-line differences between two versions, matched by metric: lines of version n in their
 * order, then lines only version n+1 has. Lines whose quantity and rounded amount are equal are
 * left out, so an empty list means the rerun changed no figure.
 */
export function diffInvoiceLines(before: ComparableInvoice, after: ComparableInvoice): InvoiceLineChange[] {
  const sameCurrency = before.currency === after.currency;
  const afterByMetric = new Map(after.lines.map((line) => [line.metric, line]));
  const beforeMetrics = new Set(before.lines.map((line) => line.metric));
  const pairs: Array<[ComparableLine | undefined, ComparableLine | undefined]> = [
    ...before.lines.map((line): [ComparableLine, ComparableLine | undefined] => [line, afterByMetric.get(line.metric)]),
    ...after.lines.filter((line) => !beforeMetrics.has(line.metric)).map((line): [undefined, ComparableLine] => [undefined, line]),
  ];
  const changes: InvoiceLineChange[] = [];
  for (const [old, now] of pairs) {
    const amountBefore = old ? roundMoney(old.amount, before.currency) : null;
    const amountAfter = now ? roundMoney(now.amount, after.currency) : null;
    const quantityBefore = old ? toDecimalString(old.quantity) : null;
    const quantityAfter = now ? toDecimalString(now.quantity) : null;
    if (old && now && sameCurrency && amountBefore === amountAfter && new Dec(quantityBefore!).equals(quantityAfter!)) continue;
    changes.push({
      metric: (now ?? old)!.metric,
      description: (now ?? old)!.description,
      quantity_before: quantityBefore === null ? null : Number(quantityBefore),
      quantity_after: quantityAfter === null ? null : Number(quantityAfter),
      amount_before: amountBefore,
      amount_after: amountAfter,
      delta: sameCurrency ? roundMoney(new Dec(amountAfter ?? 0).minus(amountBefore ?? 0), after.currency) : null,
    });
  }
  return changes;
}
