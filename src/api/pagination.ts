import type { Request } from 'express';
import type { Knex } from 'knex';
import { z } from 'zod';
import { ApiError, fieldErrors } from './errors';

/**
 * Pagination of API v1's list endpoints (API.md): `limit` (1..100, default 25) and
 * `starting_after` (the id of the last item of the previous page), answered as
 * `{ data, has_more, total_count }`, newest first.
 *
 * Pages are keyset pages, not offsets: the next page starts strictly after the cursor row's sort
 * key, so rows inserted while a client walks the list neither repeat nor shift items between
 * pages, and a deep page costs an index seek rather than a scan of everything before it.
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

/** One page of a list, in the shape API.md fixes for every list endpoint. */
export interface Page<T> {
  data: T[];
  has_more: boolean;
  total_count: number;
}

/** How a list is ordered and what its public ids are. */
export interface KeysetOptions {
  /**
   * The sort key, newest first: one column (`period_start`) or several (`timestamp`, `seq`), all
   * descending. Together they must be unique within the list, so the last one is a tie-breaker
   * (often the id column itself); otherwise rows that tie could be skipped between pages.
   */
  sort: string | string[];
  /** The column that holds the ids clients pass back as `starting_after`. */
  idColumn: string;
  /**
   * Maps a `starting_after` id to the value stored in `idColumn` (e.g. a period id to its start);
   * returning undefined means it cannot be one of ours, which answers 422 like an unknown id.
   */
  parseId?: (id: string) => unknown;
  /**
   * Where the cursor row is looked up; defaults to the filtered query. Pass the list's scope
   * without its filters (e.g. the tenant's events without `metric=`) to accept, as a cursor, any
   * row of the scope: the keyset comparison works from any row's sort key.
   */
  cursorScope?: Knex.QueryBuilder;
}

/**
 * Applies keyset pagination to `query` (already scoped and filtered, with its `select`): counts
 * the whole list, seeks past the `starting_after` row, and reads `limit + 1` rows to learn
 * `has_more` without a second count. An unknown `starting_after` (not in the scope, e.g. another
 * tenant's id) is a 422 `validation_failed` on path `starting_after`, never a 500 or an empty page.
 */
export async function paginate<Row>(query: Knex.QueryBuilder, page: PageRequest, options: KeysetOptions): Promise<Page<Row>> {
  const sort = Array.isArray(options.sort) ? options.sort : [options.sort];
  const counted = query.clone().clearSelect().clearOrder().count({ count: '*' });
  const rows = query.clone().clearOrder();

  if (page.starting_after !== undefined) {
    const unknownCursor = () =>
      new ApiError(422, 'validation_failed', `starting_after ${page.starting_after} is not an id of this list`, [
        { path: 'starting_after', message: 'unknown id: pass the id of an item from a previous page' },
      ]);
    const cursorId = options.parseId ? options.parseId(page.starting_after) : page.starting_after;
    if (cursorId === undefined) throw unknownCursor();
    const cursorRow = () => (options.cursorScope ?? query).clone().clearSelect().clearOrder().where(options.idColumn, cursorId as Knex.Value);
    const found = await cursorRow().first(options.idColumn);
    if (!found) throw unknownCursor();
    // Row comparison over the whole sort key; the cursor's key is read by a subquery so exact
    // values (microsecond timestamps, numerics) never round-trip through JavaScript.
    const columns = sort.map(() => '??').join(', ');
    rows.where(query.client.raw(`(${columns})`, sort), '<', cursorRow().select(sort).limit(1));
  }

  const [totals, found] = await Promise.all([
    counted as unknown as Promise<Array<{ count: string | number }>>,
    rows.orderBy(sort.map((column) => ({ column, order: 'desc' as const }))).limit(page.limit + 1) as Promise<Row[]>,
  ]);
  return { data: found.slice(0, page.limit), has_more: found.length > page.limit, total_count: Number(totals[0]?.count ?? 0) };
}
