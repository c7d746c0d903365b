import { SweepSchedule } from '../../../src/workers/sweeper';

describe('SweepSchedule', () => {
  test('a waiting tenant is rung at once, then after intervals that double up to 30 s', () => {
    const schedule = new SweepSchedule(3_000);
    const rungAt: number[] = [];
    for (let now = 0; now <= 120_000; now += 1_000) if (schedule.due(['a'], now).length > 0) rungAt.push(now);
    expect(rungAt).toEqual([0, 3_000, 9_000, 21_000, 45_000, 75_000, 105_000]);
  });

  test('a tenant counted up is forgotten: when its events wait again it is rung at once', () => {
    const schedule = new SweepSchedule(3_000);
    expect(schedule.due(['a', 'b'], 0)).toEqual(['a', 'b']);
    expect(schedule.due(['a', 'b'], 1_000)).toEqual([]);
    expect(schedule.due(['b'], 2_000)).toEqual([]);
    expect(schedule.due(['a', 'b'], 2_500)).toEqual(['a']);
    expect(schedule.due(['a', 'b'], 3_000)).toEqual(['b']);
  });
});
