import fc from 'fast-check';
import {
  alertLevelRank,
  barWidth,
  dayRange,
  formatCost,
  formatDuration,
  formatLimit,
  formatMoney,
  formatPercent,
  formatQuantity,
  formatStorage,
  meterLevel,
  pageCountOf,
  pageWindow,
  showingRange,
  unitOf,
} from '../../../web/src/format';

describe('quantities per unit', () => {
  test('the examples of the usage page', () => {
    expect(formatQuantity('llm_tokens', 4521)).toBe('4,521 tokens');
    expect(formatQuantity('call_seconds', 154)).toBe('2m 34s');
    expect(formatQuantity('storage_bytes', 3_200_000)).toBe('3.2 MB');
  });

  test('the unit comes from the words of the metric name', () => {
    expect(unitOf('tokens')).toEqual({ kind: 'tokens' });
    expect(unitOf('minutes_analyzed')).toEqual({ kind: 'duration', secondsPerUnit: 60 });
    expect(unitOf('latency_ms')).toEqual({ kind: 'duration', secondsPerUnit: 0.001 });
    expect(unitOf('storage_gb')).toEqual({ kind: 'storage', bytesPerUnit: 1e9 });
    expect(unitOf('storage')).toEqual({ kind: 'storage', bytesPerUnit: 1 });
    expect(unitOf('api_requests')).toEqual({ kind: 'count' });
    // "minimum" is not minutes: whole words only.
    expect(unitOf('minimum_fee_units')).toEqual({ kind: 'count' });
  });

  test('durations', () => {
    expect(formatDuration(0)).toBe('0s');
    expect(formatDuration(45)).toBe('45s');
    expect(formatDuration(0.25)).toBe('0.25s');
    expect(formatDuration(3600 * 3 + 5 * 60 + 10)).toBe('3h 05m');
    expect(formatQuantity('minutes_analyzed', 1310.5)).toBe('21h 50m');
  });

  test('storage in MB below 1 GB and in GB from 1 GB', () => {
    expect(formatStorage(0)).toBe('0 MB');
    expect(formatStorage(999_000_000)).toBe('999 MB');
    expect(formatStorage(1e9)).toBe('1 GB');
    expect(formatQuantity('storage_gb', 15.2)).toBe('15.2 GB');
    expect(formatQuantity('storage_gb', 0.5)).toBe('500 MB');
    expect(formatStorage(20_000)).toBe('< 0.1 MB');
  });

  test('counts and limits', () => {
    expect(formatQuantity('api_requests', 1234567)).toBe('1,234,567');
    expect(formatQuantity('llm_tokens', 1)).toBe('1 token');
    expect(formatLimit('api_requests', null)).toBe('∞');
    expect(formatLimit('llm_tokens', 100000)).toBe('100,000 tokens');
  });
});

describe('costs', () => {
  test('two decimals from 0.01 up, half-up on the exact decimal', () => {
    expect(formatCost('124.84', 'USD')).toBe('$124.84');
    expect(formatCost('1.005', 'USD')).toBe('$1.01');
    expect(formatCost('0.01')).toBe('0.01');
    expect(formatCost('1234567.5', 'EUR')).toBe('€1,234,567.50');
    expect(formatCost('12', 'CHF')).toBe('12.00 CHF');
  });

  test('up to 8 significant digits below 0.01', () => {
    expect(formatCost('0.0012')).toBe('0.0012');
    expect(formatCost('0.000012345678912')).toBe('0.000012345679');
    expect(formatCost('0.009999999999')).toBe('0.01');
  });

  test('a dash for zero and for nothing', () => {
    expect(formatCost('0')).toBe('—');
    expect(formatCost('0.00000000', 'USD')).toBe('—');
    expect(formatCost(null)).toBe('—');
    expect(formatCost('not a number')).toBe('—');
  });

  test('never more than two decimals from 0.01 up (property)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 10 ** 12 }), fc.integer({ min: 0, max: 6 }), (units, scale) => {
        const amount = (units / 10 ** scale).toFixed(scale);
        if (Number(amount) < 0.01) return;
        expect(formatCost(amount)).toMatch(/^\d{1,3}(,\d{3})*\.\d{2}$/);
      }),
    );
  });
});

describe('meter colours', () => {
  test('green under 80, amber 80 to 89, red from 90', () => {
    expect(meterLevel(79)).toBe('ok');
    expect(meterLevel(79.999)).toBe('ok');
    expect(meterLevel(80)).toBe('warning');
    expect(meterLevel(89.99)).toBe('warning');
    expect(meterLevel(90)).toBe('critical');
    expect(meterLevel(250)).toBe('critical');
    expect(meterLevel(null)).toBe('none');
  });

  test('badge and bar', () => {
    expect(formatPercent(79.6)).toBe('79%');
    expect(formatPercent(0.2)).toBe('<1%');
    expect(formatPercent(null)).toBe('—');
    expect(barWidth(140)).toBe(100);
    expect(barWidth(null)).toBe(0);
  });

  test('alert levels rank from none to exceeded', () => {
    expect(['critical', 'none', 'exceeded', 'warning'].sort((a, b) => alertLevelRank(a) - alertLevelRank(b))).toEqual(['none', 'warning', 'critical', 'exceeded']);
  });
});

describe('pagination', () => {
  test('a ±2 window with the first and last page and gaps', () => {
    expect(pageWindow(1, 1)).toEqual([1]);
    expect(pageWindow(1, 5)).toEqual([1, 2, 3, 4, 5]);
    expect(pageWindow(1, 10)).toEqual([1, 2, 3, 'gap', 10]);
    expect(pageWindow(5, 10)).toEqual([1, 2, 3, 4, 5, 6, 7, 'gap', 10]);
    expect(pageWindow(6, 12)).toEqual([1, 'gap', 4, 5, 6, 7, 8, 'gap', 12]);
    expect(pageWindow(10, 10)).toEqual([1, 'gap', 8, 9, 10]);
    expect(pageWindow(1, 0)).toEqual([]);
  });

  test('the window always holds the current, first and last page, ascending, with no adjacent gaps (property)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 500 }), fc.integer({ min: 1, max: 500 }), (count, at) => {
        const current = ((at - 1) % count) + 1;
        const items = pageWindow(current, count);
        const pages = items.filter((i): i is number => i !== 'gap');
        expect(pages).toContain(1);
        expect(pages).toContain(count);
        expect(pages).toContain(current);
        for (let p = Math.max(1, current - 2); p <= Math.min(count, current + 2); p += 1) expect(pages).toContain(p);
        expect([...pages].sort((a, b) => a - b)).toEqual(pages);
        items.forEach((item, i) => {
          if (item === 'gap') {
            expect(items[i + 1]).not.toBe('gap');
            expect((items[i + 1] as number) - (items[i - 1] as number)).toBeGreaterThan(2);
          }
        });
        expect(items.length).toBeLessThanOrEqual(9);
      }),
    );
  });

  test('"Showing X–Y of Z"', () => {
    expect(showingRange(1, 25, 120)).toBe('Showing 1–25 of 120');
    expect(showingRange(5, 25, 120)).toBe('Showing 101–120 of 120');
    expect(showingRange(1, 25, 0)).toBe('Showing 0 of 0');
    expect(showingRange(2, 25, 1234)).toBe('Showing 26–50 of 1,234');
    expect(pageCountOf(0, 25)).toBe(1);
    expect(pageCountOf(51, 25)).toBe(3);
  });

  test('a "to" day includes the whole day', () => {
    expect(dayRange('2026-11-01', '2026-11-30')).toEqual({ from: '2026-11-01T00:00:00Z', to: '2026-12-01T00:00:00Z' });
    expect(dayRange('', '')).toEqual({});
  });
});

describe('money', () => {
  test('a price or total of zero still reads as money', () => {
    expect(formatMoney('0', 'USD')).toBe('$0.00');
    expect(formatMoney('0.00', 'CHF')).toBe('0.00 CHF');
    expect(formatMoney('29', 'USD')).toBe('$29.00');
    expect(formatMoney(null, 'USD')).toBe('—');
  });
});
