import fc from 'fast-check';
import { type Aggregation, type CountableEvent, type CounterState, aggregateEvents, applyToCounter } from '../../../src/domain';

const at = (second: number): string => new Date(Date.UTC(2027, 0, 1, 0, 0, second)).toISOString();

function fold(aggregation: Aggregation, events: CountableEvent[]): CounterState | undefined {
  return events.reduce<CounterState | undefined>((counter, event) => applyToCounter(counter, aggregation, event), undefined);
}

describe('applyToCounter', () => {
  it('sums exact decimals (0.1 + 0.2 = 0.3)', () => {
    const counter = fold('sum', [
      { quantity: 0.1, timestamp: at(1) },
      { quantity: '0.2', timestamp: at(2) },
    ]);
    expect(counter).toEqual({ value: '0.3', events: 2 });
  });

  it('sums the callcov minutes to 1250.5', () => {
    expect(fold('sum', [{ quantity: 1000.25, timestamp: at(1) }, { quantity: 250.25, timestamp: at(2) }])?.value).toBe('1250.5');
  });

  it('counts events and ignores their quantity', () => {
    const counter = fold('count', [
      { quantity: 0, timestamp: at(1) },
      { quantity: 42.5, timestamp: at(2) },
      { quantity: '7', timestamp: at(3) },
    ]);
    expect(counter).toEqual({ value: '3', events: 3 });
  });

  it('keeps the largest quantity for max', () => {
    const counter = fold('max', [
      { quantity: 12.5, timestamp: at(1) },
      { quantity: 15.2, timestamp: at(2) },
      { quantity: 9, timestamp: at(3) },
    ]);
    expect(counter).toEqual({ value: '15.2', events: 3 });
    expect(fold('max', [{ quantity: 0, timestamp: at(1) }])?.value).toBe('0');
  });

  it('keeps the quantity with the latest timestamp for latest, ties to the later received', () => {
    const counter = fold('latest', [
      { quantity: 5, timestamp: at(10) },
      { quantity: 3, timestamp: at(5) }, // older, arrives late: ignored
      { quantity: 8, timestamp: at(10) }, // tie: later received wins
    ]);
    expect(counter).toEqual({ value: '8', events: 3, latest_timestamp: at(10) });
    expect(fold('latest', [{ quantity: 1, timestamp: at(1) }, { quantity: 2, timestamp: at(2) }])?.value).toBe('2');
  });

  it('compares timestamps as instants, not as strings', () => {
    const counter = fold('latest', [
      { quantity: 1, timestamp: '2027-01-01T01:00:00+01:00' }, // 00:00Z
      { quantity: 2, timestamp: '2027-01-01T00:30:00Z' },
    ]);
    expect(counter?.value).toBe('2');
  });

  it('does not modify the counter it is given', () => {
    const before: CounterState = { value: '1', events: 1 };
    applyToCounter(before, 'sum', { quantity: 1, timestamp: at(1) });
    expect(before).toEqual({ value: '1', events: 1 });
  });

  it('refuses quantities that can never be usage', () => {
    expect(() => applyToCounter(undefined, 'sum', { quantity: -1, timestamp: at(1) })).toThrow(RangeError);
    expect(() => applyToCounter(undefined, 'max', { quantity: Number.NaN, timestamp: at(1) })).toThrow(RangeError);
  });
});

describe('aggregateEvents', () => {
  it('gives 0 for no events', () => {
    for (const aggregation of ['sum', 'count', 'max', 'latest'] as const) expect(aggregateEvents(aggregation, [])).toBe('0');
  });

  it('aggregates stored events in received order', () => {
    const events: CountableEvent[] = [
      { quantity: '0.1', timestamp: at(3) },
      { quantity: '0.2', timestamp: at(1) },
      { quantity: '0.05', timestamp: at(3) },
    ];
    expect(aggregateEvents('sum', events)).toBe('0.35');
    expect(aggregateEvents('count', events)).toBe('3');
    expect(aggregateEvents('max', events)).toBe('0.2');
    expect(aggregateEvents('latest', events)).toBe('0.05');
  });

  it('agrees with the incremental counter for any events (invariant 1)', () => {
    const micro = fc.integer({ min: 0, max: 10_000_000_000 }).map((n) => (n / 1e6).toFixed(6)); // <= 6 decimals, as strings
    const eventArb = fc.record({
      quantity: fc.oneof(micro, micro.map(Number)),
      timestamp: fc.integer({ min: 0, max: 20 }).map(at),
    });
    fc.assert(
      fc.property(fc.constantFrom<Aggregation>('sum', 'count', 'max', 'latest'), fc.array(eventArb, { maxLength: 30 }), (aggregation, events) => {
        expect(fold(aggregation, events)?.value ?? '0').toBe(aggregateEvents(aggregation, events));
      }),
      { numRuns: 300 },
    );
  });

  it('sums to the exact micro-unit total (reference: BigInt micro-units)', () => {
    fc.assert(
      fc.property(fc.array(fc.bigInt({ min: 0n, max: 10n ** 15n }), { maxLength: 30 }), (micros) => {
        const events = micros.map((m, i) => ({ quantity: formatMicros(m), timestamp: at(i) }));
        expect(aggregateEvents('sum', events)).toBe(formatMicros(micros.reduce((a, b) => a + b, 0n)));
      }),
      { numRuns: 200 },
    );
  });
});

function formatMicros(m: bigint): string {
  const whole = m / 1_000_000n;
  const fraction = (m % 1_000_000n).toString().padStart(6, '0').replace(/0+$/, '');
  return fraction ? `${whole}.${fraction}` : `${whole}`;
}
