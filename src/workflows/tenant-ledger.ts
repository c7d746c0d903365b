import type { AlertRecord, AlertRuleInput } from '../activities/types';
import type { BalanceFacts, BookSnapshot, ClosePeriodResult, DecisionPoints, LedgerSnapshot, PeriodCounter, PeriodGroups, TenantProfile } from '../contracts/ledger';
import { isDimensioned, type MeterGroup } from '../domain/dimensions';
import { BALANCE_DEPLETED, BALANCE_LOW, balanceAlertId } from '../contracts/ids';
import { ARMED_BALANCE_ALERTS, decideBalanceAlerts, lowBalanceThreshold, unitsRemaining, type BalanceAlertsState } from '../domain/credits';
import { marginalUnitPrice } from '../domain/event-cost';

export type { BookSnapshot, LedgerSnapshot, TenantProfile };
import { Dec, decimalToNumber, toDecimalString } from '../domain/decimal';
import type { Period } from '../domain/periods';
import { findMeter, type Meter, type PlanVersion } from '../domain/plan';
import { counterFromAggregates } from '../domain/aggregation';
import { estimateExtraCost, projectedCounter } from '../domain/rating';
import { decideThresholds, highestLevel, levelForThreshold, usagePercent, type AlertLevel } from '../domain/thresholds';
import { costLimit, meterLimit, type LimitOverrides } from '../domain/limits';
import { drawDown, effectiveLimit, packCharges, rateWithPacks, type Pack } from '../domain/packs';
import type { RatedPeriod } from '../domain/rating';
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
  /** Its dimensioned meters' groups after the move (absent: none, or a rollover from before dimensions). */
  closed_groups?: Record<string, MeterGroup[]>;
  invoice_id: string;
  next: null | {
    period: Period;
    plan: PlanVersion;
    alert_rules: AlertRuleInput[];
    counters: PeriodCounter[];
    limit_overrides?: Record<string, string>;
    groups?: Record<string, MeterGroup[]>;
  };
}

/** What a tenant can do about a hard-limit refusal. */
export const HARD_LIMIT_OPTIONS = ['upgrade_plan', 'buy_pack'] as const;

/** How many authorize answers a ledger keeps; older ids fall back to the stored event (allowed). */
export const KEPT_AUTHORIZATIONS = 2_000;

/**
 * How many keyed close answers a ledger keeps. PostgreSQL stores every key with its period, and
 * the API answers a retry from there; the ledger's copy answers the retry that looked there just
 * before the close committed and reached the run after it continued as new (a few milliseconds).
 */
export const KEPT_CLOSE_ANSWERS = 16;

class Book {
  readonly counters: Map<string, PeriodCounter>;
  readonly decided: Map<string, number[]>;
  /** The tenant's own limits for this period: they replace the plan's (`src/domain/limits.ts`). */
  overrides: LimitOverrides;

  constructor(
    readonly period: Period,
    readonly plan: PlanVersion,
    counters: readonly PeriodCounter[],
    decided: ReadonlyArray<readonly [string, number[]]>,
    readonly graceEndsAt?: string,
    overrides: LimitOverrides = {},
    groups: Record<string, MeterGroup[]> = {},
  ) {
    this.counters = new Map(counters.map((c) => [c.metric, c]));
    this.decided = new Map(decided.map(([subject, thresholds]) => [subject, [...thresholds]]));
    this.overrides = overrides;
    this.groups = groups;
  }

  /** Dimensioned meters' groups (`src/domain/dimensions.ts`): each rated on its own in the running cost. */
  groups: Record<string, MeterGroup[]>;

  static of(snapshot: BookSnapshot): Book {
    return new Book(snapshot.period, snapshot.plan, snapshot.counters, snapshot.decided, snapshot.grace_ends_at, snapshot.limit_overrides, snapshot.groups);
  }

  /** True when a meter of this period's plan prices by group. */
  pricesByGroup(): boolean {
    return this.plan.meters.some(isDimensioned);
  }

  snapshot(): BookSnapshot {
    return {
      period: this.period,
      plan: this.plan,
      ...(this.graceEndsAt === undefined ? {} : { grace_ends_at: this.graceEndsAt }),
      counters: [...this.counters.values()],
      decided: [...this.decided.entries()],
      ...(Object.keys(this.overrides).length === 0 ? {} : { limit_overrides: { ...this.overrides } }),
      ...(Object.keys(this.groups).length === 0 ? {} : { groups: this.groups }),
    };
  }

  /** The limit a subject (a metric, or the cost subject) is judged against in this period. */
  limit(subject: string): string | undefined {
    if (subject === COST_SUBJECT) return costLimit(this.plan, this.overrides);
    const meter = findMeter(this.plan, subject);
    return meter && meterLimit(meter, this.overrides);
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

  /**
   * The limit a subject is judged against at `at`: for a metric, its limit plus its add-on packs
   * (drawn in this period, and left in packs active at `at`); for the cost subject, the cost limit.
   */
  effectiveLimit(subject: string, packs: readonly Pack[], at: string): string | undefined {
    const limit = this.limit(subject);
    return subject === COST_SUBJECT ? limit : effectiveLimit(limit, packs, subject, this.period.start, at);
  }

  /** The period's running cost as its invoice would rate it now: pack draws left out, pack prices in. */
  rated(packs: readonly Pack[]): RatedPeriod {
    return rateWithPacks(this.plan, this.values(), packs, this.period.start, packCharges(packs, this.period), this.groups);
  }

  /** Every alert subject with its percent at `at`: metered limits (with their packs), and the cost limit. */
  percents(packs: readonly Pack[], at: string): Map<string, string> {
    const percents = new Map<string, string>();
    for (const meter of this.plan.meters) {
      const limit = this.effectiveLimit(meter.metric, packs, at);
      if (limit !== undefined) percents.set(meter.metric, usagePercent(this.value(meter), limit));
    }
    const cost = this.limit(COST_SUBJECT);
    if (cost !== undefined) percents.set(COST_SUBJECT, usagePercent(this.rated(packs).total, cost));
    return percents;
  }

  /** Draws from the packs what this period's usage needs beyond its limit, at `at` (see `drawDown`). */
  drawFrom(packs: Pack[], at: string): { packs: Pack[]; changed: Array<{ pack_id: string; units: string }> } {
    let drawn = packs;
    const changed: Array<{ pack_id: string; units: string }> = [];
    for (const meter of this.plan.meters) {
      if (!drawn.some((p) => p.metric === meter.metric)) continue;
      const result = drawDown(drawn, meter.metric, this.period.start, this.value(meter), this.limit(meter.metric), at);
      drawn = result.packs;
      changed.push(...result.changed);
    }
    return { packs: drawn, changed };
  }
}

export class TenantLedger {
  readonly tenant: TenantProfile;
  private alertRules: AlertRuleInput[];
  private current: Book;
  private alerts: AlertView[];
  private readonly closing = new Map<string, Book>();
  private readonly authorizations: Map<string, AuthorizeResult>;
  private readonly closeAnswers: Map<string, ClosePeriodResult>;
  private cancelledAs: { final_invoice_id: string } | undefined;
  private balanceFacts: BalanceFacts | undefined;
  private balanceAlerts: BalanceAlertsState;
  /** The tenant's add-on packs with their draws per period, as last read and drawn since. */
  private packs: Pack[];
  /** Draws decided since the shell last stored them, by period. */
  private unstoredDraws = new Map<string, Map<string, string>>();

  constructor(snapshot: LedgerSnapshot) {
    this.tenant = snapshot.tenant;
    this.alertRules = [...snapshot.alert_rules];
    this.current = Book.of(snapshot.current);
    this.alerts = [...snapshot.alerts];
    for (const book of snapshot.closing) this.closing.set(book.period.start, Book.of(book));
    this.authorizations = new Map(snapshot.authorizations);
    this.closeAnswers = new Map(snapshot.close_answers ?? []);
    this.cancelledAs = snapshot.cancelled;
    this.balanceFacts = snapshot.balance;
    this.balanceAlerts = snapshot.balance_alerts ?? ARMED_BALANCE_ALERTS;
    this.packs = snapshot.packs ?? [];
  }

  snapshot(): LedgerSnapshot {
    return {
      tenant: this.tenant,
      alert_rules: this.alertRules,
      current: this.current.snapshot(),
      alerts: this.alerts,
      closing: [...this.closing.values()].map((b) => b.snapshot()),
      authorizations: [...this.authorizations.entries()].slice(-KEPT_AUTHORIZATIONS),
      ...(this.closeAnswers.size > 0 ? { close_answers: [...this.closeAnswers.entries()] } : {}),
      ...(this.cancelledAs ? { cancelled: this.cancelledAs } : {}),
      ...(this.balanceFacts ? { balance: this.balanceFacts, balance_alerts: this.balanceAlerts } : {}),
      ...(this.packs.length > 0 ? { packs: this.packs } : {}),
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
  applyCounters(counters: readonly PeriodCounter[], firedAt: string, groups: readonly PeriodGroups[] = []): AlertDecision[] {
    const byPeriod = new Map<string, PeriodCounter[]>();
    for (const counter of counters) byPeriod.set(counter.period_start, [...(byPeriod.get(counter.period_start) ?? []), counter]);
    const decisions: AlertDecision[] = [];
    for (const [periodStart, moved] of byPeriod) {
      const book = this.bookOf(periodStart);
      if (!book) continue;
      const before = book.percents(this.packs, firedAt);
      for (const counter of moved) book.counters.set(counter.metric, counter);
      const own = groups.find((g) => g.period_start === periodStart);
      if (own) book.groups = { ...book.groups, ...own.groups };
      this.draw(book, firedAt);
      const decision = this.fire(book, before, firedAt);
      if (decision) decisions.push(decision);
    }
    return decisions;
  }

  /** A rule applies from the moment it is created: it is judged against the usage so far. */
  applyRulesChange(change: AlertRulesChange, firedAt: string): AlertDecision[] {
    return this.applyStoredRules(applyAlertRulesChange(this.alertRules, change), firedAt);
  }

  /** The tenant's rules in force, as stored now: each is judged against the usage so far. */
  applyStoredRules(rules: AlertRuleInput[], firedAt: string): AlertDecision[] {
    this.alertRules = [...rules];
    if (this.cancelledAs) return [];
    const decision = this.fire(this.current, new Map(), firedAt);
    return decision ? [decision] : [];
  }

  /**
   * The tenant's limit overrides as stored now: they apply at once to the current period (closed
   * periods keep the limits they closed with). Thresholds already decided never fire again; those
   * a lowered limit crosses now fire, and supersede, by the usual rule.
   */
  applyLimitOverrides(overrides: LimitOverrides, firedAt: string): AlertDecision[] {
    if (this.cancelledAs) return [];
    const before = this.current.percents(this.packs, firedAt);
    this.current.overrides = { ...overrides };
    this.draw(this.current, firedAt);
    const decision = this.fire(this.current, before, firedAt);
    return decision ? [decision] : [];
  }

  /** The current period's limit overrides. */
  get limitOverrides(): LimitOverrides {
    return this.current.overrides;
  }

  // ---- prepaid credit ----------------------------------------------------------------------

  /** The `balance.low` threshold in force: the tenant's own, else the current plan's. */
  private lowBalanceThreshold(): string | null {
    return lowBalanceThreshold(this.balanceFacts?.low_balance_threshold, this.plan);
  }

  /**
   * True when the run must follow the tenant's prepaid credit: a prepaid plan, or a low-balance
   * threshold. Claims then bring the credit back with their counters.
   */
  watchesBalance(): boolean {
    return !this.cancelledAs && (this.plan.prepaid === true || this.lowBalanceThreshold() !== null);
  }

  /**
   * `available` = credit held - the running cost of every period not charged yet (the current
   * one, and each closed one whose invoice is not finalized), as of the last facts read.
   */
  available(): Dec | undefined {
    const facts = this.balanceFacts;
    if (!facts) return undefined;
    const uncharged = new Set(facts.uncharged_periods);
    const books = [this.current, ...this.closing.values()].filter((b) => b === this.current || uncharged.has(b.period.start));
    const owed = books.filter((b) => b.plan.currency === this.plan.currency).reduce((sum, b) => sum.plus(b.rated(this.packs).total), new Dec(0));
    return new Dec(facts.balance).minus(owed);
  }

  /**
   * Takes the tenant's prepaid credit as stored now and decides the balance alerts: each fires
   * once per crossing and is re-armed only by a grant (`granted`) that lifts available above its
   * level. Call it after the counters of the same claim, so available counts them.
   */
  applyBalance(facts: BalanceFacts, firedAt: string, granted = false): AlertDecision[] {
    this.balanceFacts = facts;
    if (!this.watchesBalance()) return [];
    const available = this.available()!;
    const threshold = this.lowBalanceThreshold();
    const decided = decideBalanceAlerts(this.balanceAlerts, available, threshold, granted);
    this.balanceAlerts = decided.state;
    if (decided.fire.length === 0) return [];
    const records: AlertRecord[] = decided.fire.map(({ kind, crossing }) => {
      const subject = kind === 'low' ? BALANCE_LOW : BALANCE_DEPLETED;
      return {
        id: balanceAlertId(this.tenant.id, subject, crossing),
        subject,
        // Balance alerts re-arm, so the crossing's number keeps each one apart in `alerts`.
        threshold: crossing,
        level: kind === 'low' ? 'warning' : 'exceeded',
        status: 'notified',
        used: available.toFixed(),
        limit: kind === 'low' ? threshold! : '0',
        covers: [crossing],
        fired_at: firedAt,
      };
    });
    this.showInView(records);
    return [{ period_start: this.period.start, current: true, records }];
  }

  // ---- add-on packs ------------------------------------------------------------------------

  /** True when a period the ledger holds prices by group: claims then bring back its groups. */
  pricesByGroup(): boolean {
    return [this.current, ...this.closing.values()].some((b) => b.pricesByGroup());
  }

  /** True once the tenant has packs: claims then bring them back with their stored draws. */
  hasPacks(): boolean {
    return this.packs.length > 0;
  }

  /**
   * Takes the tenant's packs as stored now (a pack bought, draws stored) and draws what the
   * current period's usage needs. A pack raises the effective limit at once; thresholds decided
   * stay decided (a pack never re-fires one), and none fires because of it.
   */
  applyPacks(packs: readonly Pack[], at: string): void {
    this.packs = packs.map((p) => ({ ...p, draws: { ...p.draws } }));
    for (const book of [this.current, ...this.closing.values()]) this.draw(book, at);
  }

  /** The draws decided since the last call, per period, for the shell to store (absolute units). */
  takeDraws(): Array<{ period_start: string; draws: Array<{ pack_id: string; units: string }> }> {
    const taken = [...this.unstoredDraws.entries()].map(([period_start, draws]) => ({ period_start, draws: [...draws.entries()].map(([pack_id, units]) => ({ pack_id, units })) }));
    this.unstoredDraws.clear();
    return taken;
  }

  private draw(book: Book, at: string): void {
    if (this.packs.length === 0 || this.cancelledAs && book === this.current) return;
    const { packs, changed } = book.drawFrom(this.packs, at);
    this.packs = packs;
    if (changed.length === 0) return;
    const pending = this.unstoredDraws.get(book.period.start) ?? new Map<string, string>();
    for (const c of changed) pending.set(c.pack_id, c.units);
    this.unstoredDraws.set(book.period.start, pending);
  }

  /** The highest alert level of the current period. */
  alertLevel(): AlertLevel {
    return highestLevel(this.alerts.map((a) => a.level));
  }

  /**
   * Where the current period's counters next decide something (`DecisionPoints`): per meter, the
   * counter value at which its lowest undecided alert threshold is reached. Null when any event
   * may decide something: a ledger that follows the prepaid credit, holds packs, prices by group
   * or judges a cost limit rates every event into its decisions, so all its counting is its own.
   */
  decisionPoints(): DecisionPoints | null {
    const book = this.current;
    if (this.cancelledAs || this.watchesBalance() || this.hasPacks() || book.pricesByGroup() || book.limit(COST_SUBJECT) !== undefined) return null;
    const meters: DecisionPoints['meters'] = {};
    for (const meter of book.plan.meters) {
      const limit = book.limit(meter.metric);
      const decided = new Set(book.decided.get(meter.metric) ?? []);
      const next = limit === undefined ? undefined : this.thresholdsFor(book, meter.metric).find((t) => !decided.has(t));
      // percent >= t exactly when the counter >= t × limit / 100 (usagePercent): below it, nothing fires.
      const below = next === undefined ? null : toDecimalString(new Dec(next).times(limit!).dividedBy(100));
      meters[meter.metric] = { aggregation: meter.aggregation, below };
    }
    return { period_start: book.period.start, meters };
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
    for (const [subject, percent] of book.percents(this.packs, firedAt)) {
      if (before.get(subject) === percent) continue;
      const decided = book.decided.get(subject) ?? [];
      const decision = decideThresholds(this.thresholdsFor(book, subject), decided, percent);
      if (decision.notify === null && decision.superseded.length === 0) continue;
      // Superseded thresholds are decided even when nothing is notified (a rule added below a
      // threshold that already fired): each crossed threshold is decided exactly once.
      const covers = [...decision.superseded, ...(decision.notify === null ? [] : [decision.notify])].sort((a, b) => a - b);
      book.decided.set(subject, [...decided, ...covers]);
      const used = subject === COST_SUBJECT ? book.rated(this.packs).total : book.value(findMeter(book.plan, subject)!);
      const limit = book.effectiveLimit(subject, this.packs, firedAt)!;
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
    if (current) this.showInView(records);
    return { period_start: book.period.start, current, records };
  }

  /** Alerts of the current period, as its usage view lists them. */
  private showInView(records: readonly AlertRecord[]): void {
    for (const record of records) {
      this.alerts.push({
        id: record.id,
        metric: record.subject,
        threshold: record.threshold,
        level: record.level,
        status: record.status,
        used: decimalToNumber(record.used),
        limit: decimalToNumber(record.limit),
        period_start: this.current.period.start,
        fired_at: record.fired_at,
      });
    }
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
    const limit = this.current.effectiveLimit(meter.metric, this.packs, now);
    if (meter.hard_limit && limit !== undefined && new Dec(prospective).greaterThan(limit)) {
      const refused: AuthorizeResult = { allowed: false, reason: 'hard_limit', remaining: this.remaining(meter, now), options: [...HARD_LIMIT_OPTIONS] };
      this.remember(request.id, refused);
      return { kind: 'answer', result: refused };
    }
    // Prepaid only: what this consumption would cost must leave available at 0 or above.
    const available = this.plan.prepaid === true ? this.available() : undefined;
    if (available !== undefined) {
      const cost = estimateExtraCost(meter, current, meter.aggregation === 'count' ? 1 : request.quantity, this.plan.currency);
      if (available.minus(cost).lessThan(0)) {
        const refused: AuthorizeResult = { allowed: false, reason: 'insufficient_balance', remaining: unitsRemaining(available, marginalUnitPrice(meter, current)) };
        this.remember(request.id, refused);
        return { kind: 'answer', result: refused };
      }
    }
    return {
      kind: 'consume',
      event: { id: request.id, metric: meter.metric, quantity: String(request.quantity), timestamp: now, period_start: this.period.start },
    };
  }

  /** The answer to a consumed authorize request, once its event is counted. */
  consumed(request: AuthorizeRequest, now: string = this.period.start): AuthorizeResult {
    const meter = findMeter(this.plan, request.metric)!;
    const result: AuthorizeResult = { allowed: true, remaining: this.remaining(meter, now) };
    this.remember(request.id, result);
    return result;
  }

  private remaining(meter: Meter, at: string): number | null {
    const limit = this.current.effectiveLimit(meter.metric, this.packs, at);
    if (limit === undefined) return null;
    return decimalToNumber(Dec.max(0, new Dec(limit).minus(this.current.value(meter))));
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
      new Book(outcome.closed, closed.plan, [...counters.values()], [...closed.decided.entries()], outcome.closed.grace_ends_at, closed.overrides, outcome.closed_groups ?? closed.groups),
    );
    this.alerts = [];
    if (outcome.next) {
      // Overrides last until removed: the next period keeps them (as stored, when the rollover read them).
      this.current = new Book(outcome.next.period, outcome.next.plan, outcome.next.counters, [], undefined, outcome.next.limit_overrides ?? closed.overrides, outcome.next.groups);
      this.alertRules = outcome.next.alert_rules;
    } else {
      this.cancelledAs = { final_invoice_id: outcome.invoice_id };
    }
  }

  /** The answer a close with this `Idempotency-Key` got, while the ledger keeps it. */
  closeAnswer(key: string): ClosePeriodResult | undefined {
    return this.closeAnswers.get(key);
  }

  /** Keeps a keyed close's answer for its retries (the most recent {@link KEPT_CLOSE_ANSWERS}). */
  rememberCloseAnswer(key: string, result: ClosePeriodResult): void {
    this.closeAnswers.set(key, result);
    if (this.closeAnswers.size > KEPT_CLOSE_ANSWERS) this.closeAnswers.delete(this.closeAnswers.keys().next().value!);
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
      limitOverrides: this.current.overrides,
      packs: this.packs,
      groups: this.current.groups,
      alerts: this.alerts,
      pendingEvents,
      asOf,
    });
  }

  /** Every meter's counter and limit (the Temporal UI's current details). */
  meterDetails(): MeterDetail[] {
    return this.plan.meters.map((m) => {
      const limit = this.current.effectiveLimit(m.metric, this.packs, this.period.start);
      return { metric: m.metric, used: this.current.value(m), ...(limit === undefined ? {} : { limit: decimalToNumber(limit) }) };
    });
  }

  /** The counters and decisions of every open book, for the `state` query. */
  books(): BookSnapshot[] {
    return [this.current.snapshot(), ...[...this.closing.values()].map((b) => b.snapshot())];
  }
}
