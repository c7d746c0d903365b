/**
 * Exact decimal arithmetic for money and quantities.
 *
 * Billing never touches binary floating point: every counter, price and amount is a
 * decimal.js value with 60 significant digits, and amounts are rounded exactly once,
 * half-up, to the currency's minor unit when an invoice line is produced.
 */
import Decimal from 'decimal.js';

/**
 * The decimal constructor every billing computation uses: 60 significant digits
 * (far beyond 10-decimal unit prices times huge quantities) and half-up rounding,
 * so results do not depend on the process-wide decimal.js defaults.
 */
export const Dec = Decimal.clone({ precision: 60, rounding: Decimal.ROUND_HALF_UP });
/** An exact decimal value produced by {@link Dec}. */
export type Dec = InstanceType<typeof Dec>;
/** Types that go with {@link Dec}: `Dec.Value` is anything a decimal can be built from. */
// eslint-disable-next-line @typescript-eslint/no-namespace
export declare namespace Dec {
  /** A JSON number, a decimal string or an existing decimal. */
  export type Value = Decimal.Value;
}

/** Currencies whose smallest unit is the major unit (no decimals on an invoice). */
const ZERO_DECIMAL_CURRENCIES = new Set([
  'BIF', 'CLP', 'DJF', 'GNF', 'ISK', 'JPY', 'KMF', 'KRW', 'PYG', 'RWF', 'UGX', 'UYI', 'VND', 'VUV', 'XAF', 'XOF', 'XPF',
]);
/** Currencies with a thousandth minor unit. */
const THREE_DECIMAL_CURRENCIES = new Set(['BHD', 'IQD', 'JOD', 'KWD', 'LYD', 'OMR', 'TND']);

/**
 * Number of decimal places of a currency's minor unit (ISO 4217), used to round
 * invoice lines: 0 for JPY-like currencies, 3 for BHD-like ones, 2 for everything else.
 */
export function minorUnits(currency: string): number {
  const code = currency.toUpperCase();
  if (ZERO_DECIMAL_CURRENCIES.has(code)) return 0;
  if (THREE_DECIMAL_CURRENCIES.has(code)) return 3;
  return 2;
}

/**
 * Rounds an exact amount once, half-up, to the currency's minor unit and renders it with
 * exactly that many digits ("0.20", "7", "1.500"), the form stored on invoices and sent
 * over the API. Negative zero is rendered as zero.
 */
export function roundMoney(amount: Dec.Value, currency: string): string {
  const rounded = new Dec(amount).toDecimalPlaces(minorUnits(currency), Dec.ROUND_HALF_UP);
  return (rounded.isZero() ? new Dec(0) : rounded).toFixed(minorUnits(currency));
}

/**
 * Renders an exact decimal as a plain string without exponent and without trailing
 * zeros ("1250.5", "0.0000001"): the canonical form of counters and exact amounts.
 */
export function toDecimalString(value: Dec.Value): string {
  const d = new Dec(value);
  return (d.isZero() ? new Dec(0) : d).toFixed();
}

/**
 * Converts an exact quantity to a JSON number for API output ("1250.5" -> 1250.5).
 * Only for display: quantities carry at most 6 decimals, which a double renders exactly.
 */
export function decimalToNumber(value: Dec.Value): number {
  return new Dec(value).toNumber();
}

/**
 * Parses a usage quantity (JSON number or decimal string) into an exact decimal and
 * rejects what BILLING.md forbids: non-finite, negative, or more than 6 decimal places.
 * Meant for the API's validation so the domain only ever sees valid quantities.
 */
export function parseQuantity(value: Dec.Value): Dec {
  let d: Dec;
  try {
    d = new Dec(value);
  } catch {
    throw new RangeError(`quantity ${String(value)} is not a decimal number`);
  }
  if (!d.isFinite()) throw new RangeError(`quantity ${String(value)} is not finite`);
  if (d.isNegative() && !d.isZero()) throw new RangeError(`quantity ${String(value)} is negative`);
  if (d.decimalPlaces() > 6) throw new RangeError(`quantity ${String(value)} has more than 6 decimal places`);
  return d;
}
