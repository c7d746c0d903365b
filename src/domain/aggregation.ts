/**
 * Meter counters (BILLING.md, "Aggregations"): how usage events of one period become the
 * single exact number a meter is priced and alerted on.
 */
import { DateTime } from 'luxon';
import { Dec, toDecimalString } from './decimal';
import type { Aggregation } from './plan';

/**
 * A meter's running counter for one period, as the tenant workflow keeps it.
 * `value` is an exact decimal string, `events` the number of distinct events applied,
 * `latest_timestamp` the timestamp behind `value` for `latest` meters.
 */
export interface CounterState {
  value: string;
  events: number;
  latest_timestamp?: string;
}

/** The part of a usage event that aggregation needs; quantity as JSON number or decimal string. */
export interface CountableEvent {
  quantity: string | number;
  timestamp: string;
}

/** Exact quantity of an event; refuses what can never be valid usage (NaN, infinity, negative). */
function quantityOf(event: CountableEvent): Dec {
  const quantity = new Dec(event.quantity);
  if (!quantity.isFinite() || (quantity.isNegative() && !quantity.isZero())) {
    throw new RangeError(`invalid usage quantity: ${String(event.quantity)}`);
  }
  return quantity;
}

/** Epoch ms of an event timestamp, so timestamps in different ISO spellings compare correctly. */
function timestampOf(event: CountableEvent): number {
  const parsed = DateTime.fromISO(event.timestamp, { zone: 'utc' });
  if (!parsed.isValid) throw new RangeError(`invalid event timestamp: ${event.timestamp}`);
  return parsed.toMillis();
}

/**
 * Applies one distinct (already de-duplicated) event to a meter's counter and returns the
 * new counter; the input is not modified. `sum` adds the quantity, `count` adds one and
 * ignores the quantity, `max` keeps the largest quantity, `latest` keeps the quantity of
 * the event with the latest timestamp, a tie going to the event applied later.
 */
export function applyToCounter(
  counter: CounterState | undefined,
  aggregation: Aggregation,
  event: CountableEvent,
): CounterState {
  const current = counter ?? { value: '0', events: 0 };
  const events = current.events + 1;
  switch (aggregation) {
    case 'sum':
      return { ...current, events, value: toDecimalString(new Dec(current.value).plus(quantityOf(event))) };
    case 'count':
      return { ...current, events, value: toDecimalString(new Dec(current.value).plus(1)) };
    case 'max': {
      const quantity = quantityOf(event);
      const value = current.events === 0 ? quantity : Dec.max(current.value, quantity);
      return { ...current, events, value: toDecimalString(value) };
    }
    case 'latest': {
      const quantity = quantityOf(event);
      const newer =
        current.events === 0 ||
        current.latest_timestamp === undefined ||
        timestampOf(event) >= timestampOf({ quantity: 0, timestamp: current.latest_timestamp });
      return newer
        ? { value: toDecimalString(quantity), events, latest_timestamp: event.timestamp }
        : { ...current, events };
    }
    default:
      throw new RangeError(`unknown aggregation: ${String(aggregation)}`);
  }
}

/**
 * The reference aggregation of a period's stored, distinct events in received order, used
 * to build invoices and to check the invariant "counter == aggregation of stored events".
 * Written independently of {@link applyToCounter} so that each checks the other.
 * No events gives "0" for every aggregation.
 */
export function aggregateEvents(aggregation: Aggregation, events: readonly CountableEvent[]): string {
  if (events.length === 0) return '0';
  switch (aggregation) {
    case 'sum':
      return toDecimalString(events.reduce((total, event) => total.plus(quantityOf(event)), new Dec(0)));
    case 'count':
      return String(events.length);
    case 'max':
      return toDecimalString(Dec.max(...events.map(quantityOf)));
    case 'latest': {
      let chosen = events[0] as CountableEvent;
      let chosenAt = timestampOf(chosen);
      for (const event of events) {
        const at = timestampOf(event);
        if (at >= chosenAt) {
          chosen = event;
          chosenAt = at;
        }
      }
      return toDecimalString(quantityOf(chosen));
    }
    default:
      throw new RangeError(`unknown aggregation: ${String(aggregation)}`);
  }
}

/**
 * Every aggregate stored for one period and metric (the read model's row, src/db/ledger.ts):
 * keeping all four lets a meter's aggregation be read from it without touching the events.
 */
export interface PeriodAggregates {
  /** sum of quantities */
  total: string;
  /** number of distinct events */
  events: number;
  /** largest quantity */
  largest: string;
  /** quantity of the event with the latest timestamp (ties: the later received) */
  latest: string;
}

/** A meter's counter from the stored aggregates: the one its aggregation names ('0' before any event). */
export function counterFromAggregates(aggregates: PeriodAggregates | undefined, aggregation: Aggregation): string {
  if (!aggregates) return '0';
  switch (aggregation) {
    case 'sum':
      return aggregates.total;
    case 'count':
      return String(aggregates.events);
    case 'max':
      return aggregates.largest;
    case 'latest':
      return aggregates.latest;
    default:
      throw new RangeError(`unknown aggregation: ${String(aggregation)}`);
  }
}
