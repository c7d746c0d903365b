import type { Request } from 'express';
import { z } from 'zod';
import { ApiError } from './errors';

/** `Idempotency-Key`: any printable ASCII, 1..255 characters. */
export const idempotencyKeySchema = z.string().regex(/^[\x20-\x7e]{1,255}$/, 'must be 1-255 printable ASCII characters');

/** The request's `Idempotency-Key`, validated, or undefined when it sent none. */
export function idempotencyKeyOf(req: Request): string | undefined {
  const raw = req.get('idempotency-key');
  if (raw === undefined) return undefined;
  const parsed = idempotencyKeySchema.safeParse(raw);
  if (!parsed.success) {
    throw new ApiError(422, 'validation_failed', 'the Idempotency-Key header is invalid', [{ path: 'headers.idempotency-key', message: parsed.error.issues[0]!.message }]);
  }
  return parsed.data;
}
