import { createHmac, timingSafeEqual } from 'node:crypto';

/** Why a webhook was refused (or that it was accepted), so a receiver can log the reason. */
export type SignatureCheck =
  | { ok: true; timestamp: number }
  | { ok: false; reason: 'malformed_header' | 'timestamp_out_of_tolerance' | 'signature_mismatch' };

/**
 * Verifies tally's `X-Billing-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>` header on a
 * webhook, as a receiver must before trusting the body. Self-contained (node:crypto only) so it
 * can be copied as-is into a receiver; docs/webhooks.md includes this file verbatim.
 *
 * - `rawBody` is the request body exactly as received (bytes or string): never re-serialized JSON.
 * - The HMAC key is the whole secret string (`whsec_…`) as returned by the API.
 * - A timestamp further than `toleranceSeconds` (default 300) from `now` is refused, so a captured
 *   request cannot be replayed later; within the window, dedupe on the event `id`.
 * - The comparison is constant-time.
 */
export function verifyBillingSignature(
  rawBody: string | Buffer,
  header: string | undefined,
  secret: string,
  options: { toleranceSeconds?: number; now?: number } = {},
): SignatureCheck {
  const toleranceSeconds = options.toleranceSeconds ?? 300;
  const now = options.now ?? Math.floor(Date.now() / 1000);
  if (!header) return { ok: false, reason: 'malformed_header' };

  let timestamp: number | undefined;
  const signatures: string[] = [];
  for (const part of header.split(',')) {
    const [key, value] = part.trim().split('=', 2);
    if (key === 't' && value && /^\d+$/.test(value)) timestamp = Number(value);
    else if (key === 'v1' && value && /^[0-9a-f]{64}$/i.test(value)) signatures.push(value.toLowerCase());
  }
  if (timestamp === undefined || signatures.length === 0) return { ok: false, reason: 'malformed_header' };
  if (Math.abs(now - timestamp) > toleranceSeconds) return { ok: false, reason: 'timestamp_out_of_tolerance' };

  const body = typeof rawBody === 'string' ? Buffer.from(rawBody, 'utf8') : rawBody;
  const expected = createHmac('sha256', secret)
    .update(`${timestamp}.`, 'utf8')
    .update(body)
    .digest();
  const matches = signatures.some((hex) => {
    const given = Buffer.from(hex, 'hex');
    return given.length === expected.length && timingSafeEqual(given, expected);
  });
  return matches ? { ok: true, timestamp } : { ok: false, reason: 'signature_mismatch' };
}
