import type { Client } from '@temporalio/client';
import type { Db } from '../db/knex';
import type { Logger } from '../logger';
import { countInBulk, listenForDecisionsWaiting, tenantsWaiting, type BulkOutcome, type DecisionWaiting, type WaitingTenant } from '../db/bulk-counting';
import { tenantsPastPeriodEnd } from '../db/periods';
import { ensureTenantRun, ringTenantWorkflow } from '../temporal';
import { repeatEvery } from './repeating';

/**
 * The worker's counter (docs/design/core-v2.md, "Bulk counting"). Every `intervalMs` it walks
 * the tenants whose stored events wait, a few hundred per transaction: what decides nothing is
 * counted there and then (src/db/bulk-counting.ts), and the workflow of every other tenant is
 * rung, so it claims and decides. A tenant sending steadily below its next alert threshold so
 * costs the Temporal server nothing, and a thousand of them cost a few transactions a round.
 *
 * The counter is also the doorbell's only ringer and its safety net: an API that died after its
 * commit, a ring Temporal refused, and a tenant workflow that is not running (a ring starts one,
 * which rebuilds its ledger from PostgreSQL) all end with a tenant still waiting, which the next
 * round finds. Several workers may count at once: a tenant's totals row admits one at a time.
 *
 * Rounds run every `intervalMs`. A tenant whose committed events reach a decision point is rung
 * at once, without a round: the ingest's commit names it (PostgreSQL's LISTEN/NOTIFY,
 * src/db/bulk-counting.ts), so an alert's ring waits for neither a tick nor the round's scan of
 * every waiting tenant, while batches that decide nothing cost no extra work. (With several
 * workers, each counter rings it: a ring more is a claim that finds nothing left.)
 *
 * A quiet tenant whose run ended unexpectedly gets no ring, and its period's end has no run to
 * act on it. So every `overdueIntervalMs` the counter also looks for periods still open
 * `overdueAfterMs` after their end, and makes sure each tenant's run is there: a start that meets
 * a running run leaves it alone, and a new run rebuilds its ledger and rolls the period over.
 */
export interface BulkCounterOptions {
  db: Db;
  temporal: Client;
  taskQueue: string;
  logger: Logger;
  searchAttributes?: boolean;
  intervalMs?: number;
  /** Tenants per transaction. */
  batch?: number;
  /** Events one tenant may have counted per transaction (the rest waits for the next). */
  perTenantLimit?: number;
  /** Only these tenants (tests that share one database between several stacks); default: every tenant. */
  scope?: (tenantId: string) => boolean;
  /** How often to look for periods left open past their end. */
  overdueIntervalMs?: number;
  /**
   * How long after its end a period still open counts as left behind: longer than the largest
   * burst of anniversaries takes to roll over (2,000 at once took about three minutes here).
   */
  overdueAfterMs?: number;
}

/**
 * What the overdue check tells ops about the tenants it finds. Found for the first time, a tenant
 * is news: its run is made sure of (started if it ended), at info. Found again at a later check,
 * its run is there but does not roll over (a workflow task that keeps failing, no worker that
 * takes it): a warning, repeated for that tenant at most every `repeatAfterMs` rather than at
 * every check. A tenant no longer found (rolled over) is forgotten.
 */
export class OverdueReport {
  private seen = new Map<string, { warnedAt?: number }>();

  constructor(private readonly repeatAfterMs = 10 * 60_000) {}

  /** The tenants found overdue at `now`, sorted: `fresh` (found first now) and `stuck` (found before, to warn of now). */
  sort(found: readonly string[], now: number): { fresh: string[]; stuck: string[] } {
    const fresh: string[] = [];
    const stuck: string[] = [];
    const seen = new Map<string, { warnedAt?: number }>();
    for (const tenantId of found) {
      const before = this.seen.get(tenantId);
      if (!before) {
        fresh.push(tenantId);
        seen.set(tenantId, {});
      } else if (before.warnedAt === undefined || now - before.warnedAt >= this.repeatAfterMs) {
        stuck.push(tenantId);
        seen.set(tenantId, { warnedAt: now });
      } else {
        seen.set(tenantId, before);
      }
    }
    this.seen = seen;
    return { fresh, stuck };
  }
}

/** Periods left open past their end looked at per check; the next check takes the rest. */
const OVERDUE_PER_CHECK = 500;

/** Rings in flight at most: a thousand tenants due at once are rung a few dozen at a time. */
const MAX_RINGS_IN_FLIGHT = 32;

/** The longest a tenant whose events still wait goes without another ring. */
const MAX_RING_INTERVAL_MS = 30_000;

/**
 * The oldest a workflow's books get while the counter counts its tenant in bulk: then it is rung,
 * and its claim reads the whole current period, so the usage query and the run's details in the
 * Temporal UI trail `GET …/usage` by a minute at most (a signal and a workflow task a minute).
 */
const BOOKS_MAX_AGE_MS = 60_000;

/**
 * Which waiting tenants' workflows to ring. A tenant is rung at once when events arrived since
 * its last ring (its newest receipt moved), since the workflow may not have seen them. While the
 * same events keep waiting it is rung again only after a wait that doubles with each ring (up to
 * 30 s): a workflow that is merely behind (a burst, a Temporal server at its limit) is not helped
 * by a ring every round. A tenant that no longer waits is forgotten.
 */
export class RingSchedule {
  private readonly rung = new Map<string, { at: number; receipt: bigint; interval: number }>();
  /** When each tenant's workflow last read its counters (rung by this counter, as far as it knows). */
  private readonly booksReadAt = new Map<string, number>();

  constructor(
    private readonly retryAfterMs = 3_000,
    private readonly booksMaxAgeMs = BOOKS_MAX_AGE_MS,
  ) {}

  /** The tenants of `waiting` to ring now, remembered as rung at `now`. */
  due(waiting: readonly WaitingTenant[], now: number): string[] {
    const due: string[] = [];
    for (const { tenant_id, newest_receipt } of waiting) {
      const receipt = BigInt(newest_receipt);
      const last = this.rung.get(tenant_id);
      const arrived = !last || receipt > last.receipt;
      if (!arrived && now - last.at < last.interval) continue;
      due.push(tenant_id);
      this.booksReadAt.set(tenant_id, now);
      const interval = arrived ? this.retryAfterMs : Math.min(last.interval * 2, MAX_RING_INTERVAL_MS);
      this.rung.set(tenant_id, { at: now, receipt: last && last.receipt > receipt ? last.receipt : receipt, interval });
    }
    return due;
  }

  /**
   * A tenant whose events stored under `receipt` reach a decision point: true when it is to be
   * rung now (unless already rung for these events or later ones, within the retry interval),
   * remembered as rung at `now`.
   */
  noticed(tenantId: string, receipt: string, now: number): boolean {
    const stored = BigInt(receipt);
    const last = this.rung.get(tenantId);
    if (last && last.receipt >= stored && now - last.at < last.interval) return false;
    this.booksReadAt.set(tenantId, now);
    this.rung.set(tenantId, { at: now, receipt: last && last.receipt > stored ? last.receipt : stored, interval: this.retryAfterMs });
    return true;
  }

  /**
   * Of tenants just counted in bulk, those whose workflow has not read its counters for
   * `booksMaxAgeMs`: ring them so its books catch up. A tenant first seen counts from now.
   */
  staleBooks(counted: readonly string[], now: number): string[] {
    const stale: string[] = [];
    for (const tenantId of counted) {
      const readAt = this.booksReadAt.get(tenantId);
      if (readAt !== undefined && now - readAt < this.booksMaxAgeMs) continue;
      this.booksReadAt.set(tenantId, now);
      if (readAt !== undefined) stale.push(tenantId);
    }
    return stale;
  }

  /** Forgets the tenants that do not wait any more. */
  keepOnly(waiting: ReadonlySet<string>): void {
    for (const tenantId of this.rung.keys()) if (!waiting.has(tenantId)) this.rung.delete(tenantId);
  }
}

/** Starts counting; the returned function stops it (and waits for the round and the rings in progress). */
export function startBulkCounter(options: BulkCounterOptions): () => Promise<void> {
  const { db, logger } = options;
  const batch = options.batch ?? 500;
  const perTenantLimit = options.perTenantLimit ?? 20_000;
  const schedule = new RingSchedule();
  const rings = new Set<Promise<void>>();

  const ring = async (tenantId: string): Promise<void> => {
    while (rings.size >= MAX_RINGS_IN_FLIGHT) await Promise.race(rings);
    const ringing = ringTenantWorkflow(options.temporal, {
      taskQueue: options.taskQueue,
      tenantId,
      doorbell: { events: 0, highest_seq: null },
      searchAttributes: options.searchAttributes !== false,
    })
      .catch((err: unknown) => logger.warn({ err, tenant_id: tenantId }, 'could not ring a tenant workflow; the next round rings it again'))
      .finally(() => rings.delete(ringing));
    rings.add(ringing);
  };

  const counting = repeatEvery(
    options.intervalMs ?? 100,
    async (stopping) => {
      const stillWaiting = new Set<string>();
      // One pass over every waiting tenant, in id order: a tenant whose workflow must claim never
      // keeps the ones after it from being counted.
      for (let after = ''; !stopping(); ) {
        const found = await tenantsWaiting(db, batch, after);
        if (found.length === 0) break;
        after = found[found.length - 1]!.tenant_id;
        const waiting = options.scope ? found.filter((w) => options.scope!(w.tenant_id)) : found;
        // A tenant whose workflow published no decision points is its workflow's to count: no
        // barrier, no scan, just the ring.
        const outcomes: BulkOutcome[] = [
          ...(await countInBulk(db, waiting.filter((w) => w.countable).map((w) => w.tenant_id), perTenantLimit)),
          ...waiting.filter((w) => !w.countable).map((w): BulkOutcome => ({ tenant_id: w.tenant_id, kind: 'decides' })),
        ];
        const decides = new Set(outcomes.filter((o) => o.kind === 'decides').map((o) => o.tenant_id));
        for (const o of outcomes) if (o.kind !== 'counted' || o.more) stillWaiting.add(o.tenant_id);
        const now = Date.now();
        const counted = outcomes.filter((o) => o.kind === 'counted').map((o) => o.tenant_id);
        for (const tenantId of [...schedule.due(waiting.filter((w) => decides.has(w.tenant_id)), now), ...schedule.staleBooks(counted, now)]) await ring(tenantId);
        if (found.length < batch) break;
      }
      schedule.keepOnly(stillWaiting);
    },
    (err) => logger.warn({ err }, 'bulk counting round failed'),
  );
  // A committed batch that reaches a decision point rings its tenant at once: its alert waits for
  // no round. A notice that names no tenant (the listener started, or lost its connection) starts
  // a round.
  const noticed = (waiting: DecisionWaiting | undefined) => {
    if (!waiting) return counting.wake();
    if (options.scope && !options.scope(waiting.tenant_id)) return;
    if (schedule.noticed(waiting.tenant_id, waiting.receipt, Date.now())) void ring(waiting.tenant_id);
  };
  const overdueReport = new OverdueReport();
  const overdue = repeatEvery(
    options.overdueIntervalMs ?? 30_000,
    async (stopping) => {
      const overdueAfterMs = options.overdueAfterMs ?? 5 * 60_000;
      const tenants = (await tenantsPastPeriodEnd(db, new Date(Date.now() - overdueAfterMs), OVERDUE_PER_CHECK)).filter((id) => !options.scope || options.scope(id));
      const { fresh, stuck } = overdueReport.sort(tenants, Date.now());
      if (fresh.length > 0) logger.info({ tenants: fresh.length, first: fresh.slice(0, 5) }, 'periods still open after their end: making sure their billing runs are there');
      if (stuck.length > 0) {
        logger.warn(
          { tenants: stuck.length, first: stuck.slice(0, 5) },
          'periods still open after their end although their billing runs were made sure of: look at these runs in the Temporal UI (a workflow task failing, or no worker taking it)',
        );
      }
      for (const tenantId of tenants) {
        if (stopping()) break;
        await ensureTenantRun(options.temporal, { taskQueue: options.taskQueue, tenantId, searchAttributes: options.searchAttributes !== false }).catch((err: unknown) =>
          logger.warn({ err, tenant_id: tenantId }, 'could not start the billing run of a tenant whose period is overdue; the next check tries again'),
        );
      }
    },
    (err) => logger.warn({ err }, 'looking for periods overdue failed'),
  );
  const stopListening = listenForDecisionsWaiting(db, noticed, (err) => logger.warn({ err }, 'listening for decisions waiting failed; the counter goes on at its interval'));
  return async () => {
    await stopListening();
    await Promise.all([counting.stop(), overdue.stop()]);
    await Promise.all([...rings]);
  };
}
