import type { Request } from 'express';
import { z } from 'zod';
import { ApiError, fieldErrors } from './errors';

/**
 * Pagination of API v1's list endpoints (API.md): `limit` (1..100, default 25) and
 * `starting_after` (the id of the last item of the previous page), answered as
 * `{ data, has_more, total_count }`, newest first. This module parses the query; the keyset
 * pages themselves are read by the repositories (`src/db/pagination.ts`), and an unknown
 * `starting_after` becomes a 422 in the error middleware.
 */

/** Largest page a client may ask for: bounds the work and the response size of one request. */
export const MAX_PAGE_LIMIT = 100;
/** Page size when `limit` is absent. */
export const DEFAULT_PAGE_LIMIT = 25;

const LIMIT_MESSAGE = `must be an integer from 1 to ${MAX_PAGE_LIMIT}`;

/**
 * `limit` as a query string: only plain digits become a number, so `2.5`, `1e1`, ` 3`, `0x10` or
 * a repeated `limit` are rejected with one readable message instead of being coerced into
 * something else. The inner schema is an integer 1..100, which is what the OpenAPI document shows.
 */
const limitParam = z.preprocess(
  (value) => (typeof value === 'string' && /^\d{1,4}$/.test(value) ? Number(value) : value),
  z.number({ error: LIMIT_MESSAGE }).int(LIMIT_MESSAGE).min(1, LIMIT_MESSAGE).max(MAX_PAGE_LIMIT, LIMIT_MESSAGE),
);

/**
 * The query of every list endpoint, exported so routes can `.extend()` it with their filters and
 * an OpenAPI generator can describe it. Invalid values fail as 422 `validation_failed` with
 * `errors[].path` `limit` or `starting_after` (the error middleware maps the ZodError).
 */
export const paginationQuery = z.object({
  limit: limitParam.default(DEFAULT_PAGE_LIMIT),
  starting_after: z
    .string()
    .min(1, 'must be an id from a previous page')
    .max(256, 'must be an id from a previous page')
    // PostgreSQL text cannot hold NUL: refuse it here rather than fail the query with a 500.
    .refine((id) => !id.includes('\u0000'), 'must be an id from a previous page')
    .optional(),
});

/** What `paginationQuery` yields. */
export type PageRequest = z.infer<typeof paginationQuery>;

/**
 * Parses `req.query` with a list endpoint's schema (pagination plus its filters). Kept apart from
 * `schema.parse(req.query)` only to give the 422 a detail that names the query string.
 */
export function parseListQuery<S extends z.ZodType>(schema: S, req: Request): z.infer<S> {
  const result = schema.safeParse(req.query);
  if (!result.success) {
    throw new ApiError(422, 'validation_failed', 'the query string is invalid', fieldErrors(result.error));
  }
  return result.data;
}
