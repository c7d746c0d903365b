/**
 * The event ledger's shapes, shared by the repository that computes them (src/db/ledger.ts), the
 * activities that return them and the tenant workflow's ledger that applies them. Types only.
 */

import type { PeriodAggregates } from '../domain/aggregation';

/** Every aggregate of one tenant, period and metric: a meter's counter is one of them. */
export interface PeriodCounter extends PeriodAggregates {
  period_start: string;
  metric: string;
}

/** What one claim counted, and where the counters it moved stand now. */
export interface ClaimResult {
  /** Events marked with this claim id (on a retry, those of the earlier attempts too). */
  claimed: number;
  /** The counters of every period and metric this claim id touched, after the claim. */
  counters: PeriodCounter[];
  /** True when the claim stopped at its size limit: more events wait to be claimed. */
  more: boolean;
}
