import type { Aggregation } from '../../src/domain/plan';

/** One meter of each aggregation, for the tests of counting on PostgreSQL (claims, bulk counts). */
export const LEDGER_METERS: Array<{ metric: string; aggregation: Aggregation }> = [
  { metric: 'minutes', aggregation: 'sum' },
  { metric: 'calls', aggregation: 'count' },
  { metric: 'storage', aggregation: 'max' },
  { metric: 'seats', aggregation: 'latest' },
];
