import type { AlertRecord, AlertRuleInput } from '../activities/types';
import type { BookSnapshot, LedgerSnapshot, PeriodCounter, TenantProfile } from '../contracts/ledger';

export type { BookSnapshot, LedgerSnapshot, TenantProfile };
import { Dec, decimalToNumber } from '../domain/decimal';
import type { Period } from '../domain/periods';
import { findMeter, type Meter, type PlanVersion } from '../domain/plan';
import { counterFromAggregates } from '../domain/aggregation';
import { estimateExtraCost, projectedCounter, ratePeriod } from '../domain/rating';
import { decideThresholds, highestLevel, levelForThreshold, usagePercent, type AlertLevel } from '../domain/thresholds';
import {
  COST_SUBJECT,
  alertId,
  applyAlertRulesChange,
  type AlertRulesChange,
  type AlertView,
  type AuthorizeRequest,
  type AuthorizeResult,
} from './messages';
import { buildUsageView, type UsageView } from '../domain/usage-view';
import type { MeterDetail } from './summaries';

/**
 * The tenant workflow's state and every decision it makes, as a plain class: no Temporal import,
 * no clock, no I/O. The workflow shell feeds it what activities answered (claimed counters, the
 * outcome of a rollover) and the instants it read from the workflow clock, and carries its
 * snapshot across continue-as-new. Everything here is unit-tested without a server.
 *
 * A ledger holds one alert book per period that can still move: the current period, and each
 * closed period still in its grace (late events for it are accepted until the grace ends). The
 * counters come from PostgreSQL as absolute values (src/db/ledger.ts), so applying the same
 * answer twice changes nothing; the ledger only decides what moved and which thresholds that
 * crossed.
 */

/** Alerts one change decided for one period, to be recorded and delivered by activities. */
export interface AlertDecision {
  period_start: string;
  /** The current period's: it moves the usage view and the alert level. */
  current: boolean;
  records: AlertRecord[];
}

/** What an authorize request needs done. */
export type AuthorizeStep =
  | { kind: 'answer'; result: AuthorizeResult }
  | { kind: 'consume'; event: { id: string; metric: string; quantity: string; timestamp: string; period_start: string } };

/** What a rollover activity reports: the closed period as stored, and the next one (none on a cancellation). */
export interface RolloverOutcome {
  closed: Period & { grace_ends_at: string };
  /** The closed period's counters after events stamped at or after the close moved to the next period. */
  closed_counters: PeriodCounter[];
  invoice_id: string;
  next: null | { period: Period; plan: PlanVersion; alert_rules: AlertRuleInput[]; counters: PeriodCounter[] };
}

/** How many authorize answers a ledger keeps; older ids fall back to the stored event (allowed). */
export const KEPT_AUTHORIZATIONS = 2_000;

class Book {
  readonly counters: Map<string, PeriodCounter>;
  readonly decided: Map<string, number[]>;

  constructor(
    readonly period: Period,
    readonly plan: PlanVersion,
    counters: readonly PeriodCounter[],
    decided: ReadonlyArray<readonly [string, number[]]>,
    readonly graceEndsAt?: string,
  ) {
    this.counters = new Map(counters.map((c) => [c.metric, c]));
    this.decided = new Map(decided.map(([subject, thresholds]) => [subject, [...thresholds]]));
  }

  static of(snapshot: BookSnapshot): Book {
    return new Book(snapshot.period, snapshot.plan, snapshot.counters, snapshot.decided, snapshot.grace_ends_at);
  }

  snapshot(): BookSnapshot {
    return {
      period: this.period,
      plan: this.plan,
      ...(this.graceEndsAt === undefined ? {} : { grace_ends_at: this.graceEndsAt }),
      counters: [...this.counters.values()],
      decided: [...this.decided.entries()],
    };
  }

  /** A meter's counter as its aggregation reads the stored aggregates ('0' before any event). */
  value(meter: Pick<Meter, 'metric' | 'aggregation'>): string {
    return counterFromAggregates(this.counters.get(meter.metric), meter.aggregation);
  }

  /** Every meter's counter value, as rating wants them. */
  values(): Record<string, string> {
    const values: Record<string, string> = {};
    for (const meter of this.plan.meters) values[meter.metric] = this.value(meter);
    return values;
  }

  /** Every alert subject with its percent now: metered limits, and the cost limit. */
  percents(): Map<string, string> {
    const percents = new Map<string, string>();
    for (const meter of this.plan.meters) {
      if (meter.limit !== undefined && meter.limit > 0) percents.set(meter.metric, usagePercent(this.value(meter), meter.limit));
    }
    if (this.plan.cost_limit !== undefined && new Dec(this.plan.cost_limit).greaterThan(0)) {
      percents.set(COST_SUBJECT, usagePercent(ratePeriod(this.plan, this.values()).total, this.plan.cost_limit));
    }
    return percents;
  }
}

export class TenantLedger {
  readonly tenant: TenantProfile;
  private alertRules: AlertRuleInput[];
  private current: Book;
  private alerts: AlertView[];
  private readonly closing = new Map<string, Book>();
  private readonly authorizations: Map<string, AuthorizeResult>;
  private cancelledAs: { final_invoice_id: string } | undefined;

  constructor(snapshot: LedgerSnapshot) {
    this.tenant = snapshot.tenant;
    this.alertRules = [...snapshot.alert_rules];
    this.current = Book.of(snapshot.current);
    this.alerts = [...snapshot.alerts];
    for (const book of snapshot.closing) this.closing.set(book.period.start, Book.of(book));
    this.authorizations = new Map(snapshot.authorizations);
    this.cancelledAs = snapshot.cancelled;
  }

  snapshot(): LedgerSnapshot {
    return {
      tenant: this.tenant,
      alert_rules: this.alertRules,
      current: this.current.snapshot(),
      alerts: this.alerts,
      closing: [...this.closing.values()].map((b) => b.snapshot()),
      authorizations: [...this.authorizations.entries()].slice(-KEPT_AUTHORIZATIONS),
      ...(this.cancelledAs ? { cancelled: this.cancelledAs } : {}),
    };
  }

  get period(): Period {
    return this.current.period;
  }

  get plan(): PlanVersion {
    return this.current.plan;
  }

  get cancelled(): { final_invoice_id: string } | undefined {
    return this.cancelledAs;
  }

  /** Closed periods still in their grace. */
  get closingPeriods(): Array<Period & { grace_ends_at: string }> {
    return [...this.closing.values()].map((b) => ({ ...b.period, grace_ends_at: b.graceEndsAt! }));
  }

  // ---- counting and alerts -----------------------------------------------------------------

  /**
   * Applies counters as PostgreSQL holds them after a claim and decides the thresholds they
   * crossed, per period. Counters of a period the ledger no longer holds (invoiced and past its
   * grace) only live in the read model: no alert fires for them.
   */
  applyCounters(counters: readonly PeriodCounter[], firedAt: string): AlertDecision[] {
    const byPeriod = new Map<string, PeriodCounter[]>();
    for (const counter of counters) byPeriod.set(counter.period_start, [...(byPeriod.get(counter.period_start) ?? []), counter]);
    const decisions: AlertDecision[] = [];
    for (const [periodStart, moved] of byPeriod) {
      const book = this.bookOf(periodStart);
      if (!book) continue;
      const before = book.percents();
      for (const counter of moved) book.counters.set(counter.metric, counter);
      const decision = this.fire(book, before, firedAt);
      if (decision) decisions.push(decision);
    }
    return decisions;
  }

  /** A rule applies from the moment it is created: it is judged against the usage so far. */
  applyRulesChange(change: AlertRulesChange, firedAt: string): AlertDecision[] {
    this.alertRules = applyAlertRulesChange(this.alertRules, change);
    if (this.cancelledAs) return [];
    const decision = this.fire(this.current, new Map(), firedAt);
    return decision ? [decision] : [];
  }

  /** The highest alert level of the current period. */
  alertLevel(): AlertLevel {
    return highestLevel(this.alerts.map((a) => a.level));
  }

  private bookOf(periodStart: string): Book | undefined {
    if (!this.cancelledAs && periodStart === this.current.period.start) return this.current;
    return this.closing.get(periodStart);
  }

  private thresholdsFor(book: Book, subject: string): number[] {
    const own = this.alertRules.filter((r) => r.subject === subject).map((r) => r.threshold);
    return [...new Set([...book.plan.alert_thresholds, ...own])].sort((a, b) => a - b);
  }

  /** Decides the thresholds each subject of a book crossed since `before`; records them as decided. */
  private fire(book: Book, before: Map<string, string>, firedAt: string): AlertDecision | undefined {
    const records: AlertRecord[] = [];
    for (const [subject, percent] of book.percents()) {
      if (before.get(subject) === percent) continue;
      const decided = book.decided.get(subject) ?? [];
      const decision = decideThresholds(this.thresholdsFor(book, subject), decided, percent);
      if (decision.notify === null && decision.superseded.length === 0) continue;
      // Superseded thresholds are decided even when nothing is notified (a rule added below a
      // threshold that already fired): each crossed threshold is decided exactly once.
      const covers = [...decision.superseded, ...(decision.notify === null ? [] : [decision.notify])].sort((a, b) => a - b);
      book.decided.set(subject, [...decided, ...covers]);
      const used = subject === COST_SUBJECT ? ratePeriod(book.plan, book.values()).total : book.value(findMeter(book.plan, subject)!);
      const limit = subject === COST_SUBJECT ? book.plan.cost_limit! : String(findMeter(book.plan, subject)!.limit);
      for (const threshold of covers) {
        const notified = threshold === decision.notify;
        records.push({
          id: alertId(this.tenant.id, book.period.start, subject, threshold),
          subject,
          threshold,
          level: levelForThreshold(threshold),
          status: notified ? 'notified' : 'superseded',
          used,
          limit,
          covers: notified ? covers : [],
          fired_at: firedAt,
          rule_id: this.alertRules.find((r) => r.subject === subject && r.threshold === threshold)?.id,
        });
      }
    }
    if (records.length === 0) return undefined;
    const current = book === this.current;
    if (current) {
      for (const record of records) {
        this.alerts.push({
          id: record.id,
          metric: record.subject,
          threshold: record.threshold,
          level: record.level,
          status: record.status,
          used: decimalToNumber(record.used),
          limit: decimalToNumber(record.limit),
          period_start: book.period.start,
          fired_at: record.fired_at,
        });
      }
    }
    return { period_start: book.period.start, current, records };
  }

  // ---- authorize ---------------------------------------------------------------------------

  /**
   * Check-and-consume against the current counters, which must include every acknowledged event
   * (the shell claims first). The same id always gets the same answer: a known id is answered
   * from memory, a new one is refused, or handed back to be consumed as a usage event.
   */
  authorize(request: AuthorizeRequest, now: string): AuthorizeStep {
    const known = this.authorizations.get(request.id);
    if (known) return { kind: 'answer', result: known };
    const meter = findMeter(this.plan, request.metric);
    if (!meter) throw new RangeError(this.unknownMetric('authorize', request.metric));
    const current = this.current.value(meter);
    const prospective = projectedCounter(meter.aggregation, current, meter.aggregation === 'count' ? 1 : request.quantity);
    if (meter.hard_limit && meter.limit !== undefined && new Dec(prospective).greaterThan(meter.limit)) {
      const refused: AuthorizeResult = { allowed: false, reason: 'hard_limit', remaining: this.remaining(meter) };
      this.remember(request.id, refused);
      return { kind: 'answer', result: refused };
    }
    return {
      kind: 'consume',
      event: { id: request.id, metric: meter.metric, quantity: String(request.quantity), timestamp: now, period_start: this.period.start },
    };
  }

  /** The answer to a consumed authorize request, once its event is counted. */
  consumed(request: AuthorizeRequest): AuthorizeResult {
    const meter = findMeter(this.plan, request.metric)!;
    const result: AuthorizeResult = { allowed: true, remaining: this.remaining(meter) };
    this.remember(request.id, result);
    return result;
  }

  private remaining(meter: Meter): number | null {
    if (meter.limit === undefined) return null;
    return decimalToNumber(Dec.max(0, new Dec(meter.limit).minus(this.current.value(meter))));
  }

  private remember(id: string, result: AuthorizeResult): void {
    this.authorizations.set(id, result);
    if (this.authorizations.size > KEPT_AUTHORIZATIONS) this.authorizations.delete(this.authorizations.keys().next().value!);
  }

  // ---- periods -----------------------------------------------------------------------------

  /**
   * The instant a close made at `nowMs` ends the period: that instant itself, after the start and
   * never past the period's own end (a close that comes as the anniversary passes is the
   * anniversary: events stamped after it were already placed in the next period). Events stamped
   * before it stay in the period; events stamped at or after it belong to the next one (the
   * rollover moves them there).
   */
  closeInstant(nowMs: number): string {
    return new Date(Math.min(Math.max(nowMs, Date.parse(this.period.start) + 1), Date.parse(this.period.end))).toISOString();
  }

  /** True once the current period's end has passed (an anniversary is due). */
  periodEnded(nowMs: number): boolean {
    return !this.cancelledAs && nowMs >= Date.parse(this.period.end);
  }

  /** The next instant the ledger must act by itself: the period end, or a grace end. */
  nextDeadline(): number {
    const graces = [...this.closing.values()].map((b) => Date.parse(b.graceEndsAt!));
    return Math.min(this.cancelledAs ? Infinity : Date.parse(this.period.end), ...graces);
  }

  /**
   * Moves the closed period into the closing books and opens the next one (or none, on a
   * cancellation). The alert list and level start afresh with the new period.
   */
  rollOver(outcome: RolloverOutcome): void {
    const closed = this.current;
    const counters = new Map(closed.counters);
    for (const counter of outcome.closed_counters) counters.set(counter.metric, counter);
    this.closing.set(
      closed.period.start,
      new Book(outcome.closed, closed.plan, [...counters.values()], [...closed.decided.entries()], outcome.closed.grace_ends_at),
    );
    this.alerts = [];
    if (outcome.next) {
      this.current = new Book(outcome.next.period, outcome.next.plan, outcome.next.counters, []);
      this.alertRules = outcome.next.alert_rules;
    } else {
      this.cancelledAs = { final_invoice_id: outcome.invoice_id };
    }
  }

  /**
   * Forgets closed periods whose grace ended before `claimedFrom`: a claim that started then has
   * counted every event they accepted, so nothing can move them any more.
   */
  forgetSettled(claimedFrom: number): void {
    for (const [start, book] of this.closing) {
      if (Date.parse(book.graceEndsAt!) <= claimedFrom) this.closing.delete(start);
    }
  }

  /** A cancelled subscription whose last period has settled: the workflow may end. */
  finished(): boolean {
    return this.cancelledAs !== undefined && this.closing.size === 0;
  }

  // ---- views -------------------------------------------------------------------------------

  /** Why `metric` cannot be asked about: `usageEstimate: plan growth v3 has no metric x (it meters tokens, calls)`. */
  unknownMetric(message: string, metric: string): string | undefined {
    if (findMeter(this.plan, metric)) return undefined;
    return `${message}: plan ${this.plan.id} v${this.plan.version} has no metric ${metric} (it meters ${this.plan.meters.map((m) => m.metric).join(', ')})`;
  }

  /** The extra cost of `quantity` more of a metric, given where the tenant stands in its tiers. */
  estimate(metric: string, quantity: number): { amount: string; currency: string } {
    const meter = findMeter(this.plan, metric);
    if (!meter) throw new RangeError(this.unknownMetric('usageEstimate', metric));
    return { amount: estimateExtraCost(meter, this.current.value(meter), quantity, this.plan.currency), currency: this.plan.currency };
  }

  /** The current period as `GET …/usage` shows it. */
  usageView(asOf: string, pendingEvents: number): UsageView {
    return buildUsageView({
      tenantId: this.tenant.id,
      plan: this.plan,
      period: this.period,
      values: this.current.values(),
      alerts: this.alerts,
      pendingEvents,
      asOf,
    });
  }

  /** Every meter's counter and limit (the Temporal UI's current details). */
  meterDetails(): MeterDetail[] {
    return this.plan.meters.map((m) => ({ metric: m.metric, used: this.current.value(m), ...(m.limit === undefined ? {} : { limit: m.limit }) }));
  }

  /** The counters and decisions of every open book, for the `state` query. */
  books(): BookSnapshot[] {
    return [this.current.snapshot(), ...[...this.closing.values()].map((b) => b.snapshot())];
  }
}
