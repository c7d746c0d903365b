import type { Knex } from 'knex';

/**
 * Keyset pages of the list repositories (API.md: `limit`, `starting_after`, newest first).
 *
 * Pages are keyset pages, not offsets: the next page starts strictly after the cursor row's sort
 * key, so rows inserted while a client walks the list neither repeat nor shift items between
 * pages, and a deep page costs an index seek rather than a scan of everything before it.
 */

/** What a client asked for: the page size and the id of the last item it has seen. */
export interface PageRequest {
  limit: number;
  starting_after?: string;
}

/** One page of a list, in the shape API.md fixes for every list endpoint. */
export interface Page<T> {
  data: T[];
  has_more: boolean;
  total_count: number;
}

/**
 * `starting_after` names no row of the list (another tenant's id, an id of another list, or no
 * id at all). The API answers it as 422 on path `starting_after`, never as a 500 or an empty page.
 */
export class UnknownCursor extends Error {
  constructor(readonly startingAfter: string) {
    super(`starting_after ${startingAfter} is not an id of this list`);
    this.name = 'UnknownCursor';
  }
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
   * returning undefined means it cannot be one of ours, which is an unknown cursor.
   */
  parseId?: (id: string) => unknown;
  /**
   * Where the cursor row is looked up; defaults to the filtered query. Pass the list's scope
   * without its filters (e.g. the tenant's events without `metric=`) to accept, as a cursor, any
   * row of the scope: the keyset comparison works from any row's sort key.
   */
  cursorScope?: Knex.QueryBuilder;
  /** Counts the list (given the filtered query) instead of a `count(*)` of all of it: a list too long to count per request. */
  count?: (query: Knex.QueryBuilder) => Promise<number>;
}

/**
 * Applies keyset pagination to `query` (already scoped and filtered, with its `select`): counts
 * the whole list, seeks past the `starting_after` row, and reads `limit + 1` rows to learn
 * `has_more` without a second count. Throws `UnknownCursor` when `starting_after` is not in the
 * scope.
 */
export async function keysetPage<Row>(query: Knex.QueryBuilder, page: PageRequest, options: KeysetOptions): Promise<Page<Row>> {
  const sort = Array.isArray(options.sort) ? options.sort : [options.sort];
  const counted = options.count
    ? options.count(query.clone().clearSelect().clearOrder()).then((count) => [{ count }])
    : query.clone().clearSelect().clearOrder().count({ count: '*' });
  const rows = query.clone().clearOrder();

  if (page.starting_after !== undefined) {
    const cursorId = options.parseId ? options.parseId(page.starting_after) : page.starting_after;
    if (cursorId === undefined) throw new UnknownCursor(page.starting_after);
    const cursorRow = () => (options.cursorScope ?? query).clone().clearSelect().clearOrder().where(options.idColumn, cursorId as Knex.Value);
    const found = await cursorRow().first(options.idColumn);
    if (!found) throw new UnknownCursor(page.starting_after);
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
