import { OverdueReport } from '../../../src/workers/bulk-counter';

describe('OverdueReport', () => {
  test('a tenant found overdue is news once; found again, it is warned of, then again only after the repeat interval', () => {
    const report = new OverdueReport(600_000);
    expect(report.sort(['a', 'b'], 0)).toEqual({ fresh: ['a', 'b'], stuck: [] });
    // 'b' rolled over; 'a' is still open a check later: its run is there and stuck.
    expect(report.sort(['a'], 30_000)).toEqual({ fresh: [], stuck: ['a'] });
    expect(report.sort(['a'], 60_000)).toEqual({ fresh: [], stuck: [] });
    expect(report.sort(['a'], 629_999)).toEqual({ fresh: [], stuck: [] });
    expect(report.sort(['a'], 630_000)).toEqual({ fresh: [], stuck: ['a'] });
  });

  test('a tenant that rolled over is forgotten: found overdue again later, it is news again', () => {
    const report = new OverdueReport(600_000);
    report.sort(['a'], 0);
    report.sort(['a'], 30_000);
    expect(report.sort([], 60_000)).toEqual({ fresh: [], stuck: [] });
    expect(report.sort(['a'], 90_000)).toEqual({ fresh: ['a'], stuck: [] });
  });
});
