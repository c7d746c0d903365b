import fc from 'fast-check';
import { type AlertLevel, decideThresholds, highestLevel, levelForThreshold, usagePercent } from '../../../src/domain';

describe('levelForThreshold', () => {
  it.each([
    [50, 'warning'],
    [80, 'warning'],
    [89.99, 'warning'],
    [90, 'critical'],
    [99, 'critical'],
    [100, 'exceeded'],
    [150, 'exceeded'],
  ] as const)('%d%% is %s', (threshold, level) => {
    expect(levelForThreshold(threshold)).toBe(level);
  });
});

describe('usagePercent', () => {
  it('is exact', () => {
    expect(usagePercent('1250.5', 10000)).toBe('12.505');
    expect(usagePercent(520000, 500000)).toBe('104');
    expect(usagePercent(0, 100)).toBe('0');
    expect(usagePercent(1, 3)).toBe(`33.${'3'.repeat(58)}`);
  });
  it('needs a positive limit', () => {
    expect(() => usagePercent(1, 0)).toThrow(RangeError);
    expect(() => usagePercent(1, -5)).toThrow(RangeError);
  });
});

describe('decideThresholds', () => {
  const defaults = [80, 90, 100];
  it('notifies nothing below the first threshold', () => {
    expect(decideThresholds(defaults, [], '79.999999')).toEqual({ notify: null, superseded: [] });
  });
  it('notifies a threshold reached exactly (percent >= t)', () => {
    expect(decideThresholds(defaults, [], 80)).toEqual({ notify: 80, superseded: [] });
  });
  it('notifies only the highest of a jump and supersedes the lower ones (75% -> 92%)', () => {
    expect(decideThresholds(defaults, [], 92)).toEqual({ notify: 90, superseded: [80] });
    expect(decideThresholds(defaults, [], 104)).toEqual({ notify: 100, superseded: [80, 90] });
  });
  it('never decides a threshold twice in a period', () => {
    expect(decideThresholds(defaults, [80, 90], 95)).toEqual({ notify: null, superseded: [] });
    expect(decideThresholds(defaults, [80, 90], 100)).toEqual({ notify: 100, superseded: [] });
  });
  it('counts duplicated thresholds once and accepts any order', () => {
    expect(decideThresholds([100, 80, 80, 90, 90], [], 95)).toEqual({ notify: 90, superseded: [80] });
  });
  it('compares exactly, not in floating point', () => {
    expect(decideThresholds([30], [], '29.999999999999999999999')).toEqual({ notify: null, superseded: [] });
    expect(decideThresholds([12.505], [], usagePercent('1250.5', 10000))).toEqual({ notify: 12.505, superseded: [] });
  });
  it('supersedes, without notifying, a threshold added below one already decided', () => {
    expect(decideThresholds([50, 80, 90, 100], [80, 90, 100], 120)).toEqual({ notify: null, superseded: [50] });
  });

  it('over any increasing usage: no threshold twice, none skipped, only the highest of each step notified', () => {
    const thresholdsArb = fc.array(fc.integer({ min: 1, max: 150 }), { minLength: 0, maxLength: 8 });
    const stepsArb = fc.array(fc.integer({ min: 0, max: 40_000 }), { minLength: 1, maxLength: 25 }); // increments of 1/1000 %
    fc.assert(
      fc.property(thresholdsArb, stepsArb, (thresholds, increments) => {
        const decided: number[] = [];
        const notified: number[] = [];
        const superseded: number[] = [];
        let thousandths = 0;
        for (const increment of increments) {
          thousandths += increment;
          const percent = (thousandths / 1000).toFixed(3);
          const before = new Set(decided);
          const decision = decideThresholds(thresholds, decided, percent);
          // Reference: the distinct thresholds newly crossed at this step.
          const crossedNow = [...new Set(thresholds)].filter((t) => t * 1000 <= thousandths && !before.has(t)).sort((a, b) => a - b);
          if (crossedNow.length === 0) {
            expect(decision).toEqual({ notify: null, superseded: [] });
          } else {
            expect(decision.notify).toBe(crossedNow[crossedNow.length - 1]);
            expect(decision.superseded).toEqual(crossedNow.slice(0, -1));
          }
          if (decision.notify !== null) notified.push(decision.notify);
          superseded.push(...decision.superseded);
          decided.push(...(decision.notify === null ? [] : [decision.notify]), ...decision.superseded);
        }
        const everCrossed = [...new Set(thresholds)].filter((t) => t * 1000 <= thousandths).sort((a, b) => a - b);
        // Each crossed threshold is notified or superseded exactly once; nothing else is decided.
        expect([...notified, ...superseded].sort((a, b) => a - b)).toEqual(everCrossed);
        expect(new Set(notified).size).toBe(notified.length);
      }),
      { numRuns: 500 },
    );
  });
});

describe('highestLevel', () => {
  it('orders none < warning < critical < exceeded', () => {
    expect(highestLevel([])).toBe('none');
    expect(highestLevel(['warning', 'none'])).toBe('warning');
    expect(highestLevel(['warning', 'exceeded', 'critical'])).toBe('exceeded');
    const levels: AlertLevel[] = ['critical', 'warning'];
    expect(highestLevel(levels)).toBe('critical');
  });
});
