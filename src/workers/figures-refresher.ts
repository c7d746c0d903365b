import type { Db } from '../db/knex';
import type { Logger } from '../logger';
import { refreshDueFigures } from '../db/summaries';
import { repeatEvery } from './repeating';

/**
 * Keeps the current month's summaries moving with the claims (docs/design/core-v2.md, "Running
 * figures"): every `intervalMs`, the running figures of tenants counted since their last rating
 * are rated again, a few hundred tenants per transaction, until none is due. A claim so costs
 * no rating, and a tenant claimed a hundred times in a second is rated once. Several workers may
 * refresh at once: each skips the tenants another holds.
 */
export interface FiguresRefresherOptions {
  db: Db;
  logger: Logger;
  intervalMs?: number;
  /** Tenants rated per transaction. */
  batch?: number;
}

/** At most this many transactions per round, so a stop never waits long for a round to end. */
const MAX_BATCHES_PER_ROUND = 50;

/** Starts refreshing; the returned function stops it (and waits for a round in progress). */
export function startFiguresRefresher(options: FiguresRefresherOptions): () => Promise<void> {
  const batch = options.batch ?? 200;
  // Where the next batch starts: a round cut short by its batch limit goes on from there next
  // time, so every due tenant is rated in turn however many keep becoming due.
  let after = '';
  return repeatEvery(
    options.intervalMs ?? 1_000,
    async (stopping) => {
      for (let i = 0; i < MAX_BATCHES_PER_ROUND && !stopping(); i++) {
        const done = await refreshDueFigures(options.db, batch, after);
        after = done.due < batch ? '' : done.last!;
        if (done.due < batch) return;
      }
    },
    (err) => options.logger.warn({ err }, 'running figures refresh failed'),
  ).stop;
}
