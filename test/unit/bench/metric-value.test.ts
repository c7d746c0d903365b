import { metricValue } from '../../../bench/lib';

describe('metricValue', () => {
  const metrics = [
    '# HELP nodejs_heap_size_used_bytes Process heap size used from Node.js in bytes.',
    'nodejs_heap_size_used_bytes 1048576',
    'nodejs_heap_size_used_bytes_total 5',
    'temporal_sticky_cache_size{namespace="default",task_queue="billing"} 600',
    'temporal_sticky_cache_size{namespace="default",task_queue="other"} 400',
  ].join('\n');

  test('reads a sample with or without labels, summed over label sets, and no longer name that starts the same', () => {
    expect(metricValue(metrics, 'nodejs_heap_size_used_bytes')).toBe(1048576);
    expect(metricValue(metrics, 'temporal_sticky_cache_size')).toBe(1000);
  });

  test('a metric the process does not serve is NaN, not 0', () => {
    expect(metricValue(metrics, 'nodejs_external_memory_bytes')).toBeNaN();
  });
});
