import { metricValue } from '../../../bench/lib';

describe('metricValue', () => {
  const metrics = [
    '# HELP nodejs_heap_size_used_bytes Process heap size used from Node.js in bytes.',
    'nodejs_heap_size_used_bytes 1048576',
    'nodejs_heap_size_used_bytes_total 5',
    'temporal_sticky_cache_size{namespace="default",task_queue="billing"} 600',
    'temporal_sticky_cache_size{namespace="default",task_queue="other"} 400',
    'temporal_num_pollers{namespace="default",poller_type="sticky_workflow_task",task_queue="billing"} 3',
    'temporal_num_pollers{namespace="default",poller_type="workflow_task",task_queue="billing"} 10',
  ].join('\n');

  test('reads a sample with or without labels, summed over label sets, and no longer name that starts the same', () => {
    expect(metricValue(metrics, 'nodejs_heap_size_used_bytes')).toBe(1048576);
    expect(metricValue(metrics, 'temporal_sticky_cache_size')).toBe(1000);
  });

  test('a label filter sums only the label sets that contain it', () => {
    expect(metricValue(metrics, 'temporal_num_pollers', 'poller_type="workflow_task"')).toBe(10);
    expect(metricValue(metrics, 'temporal_num_pollers', 'poller_type="sticky_workflow_task"')).toBe(3);
    expect(metricValue(metrics, 'temporal_sticky_cache_size', 'task_queue="none"')).toBeNaN();
  });

  test('a metric the process does not serve is NaN, not 0', () => {
    expect(metricValue(metrics, 'nodejs_external_memory_bytes')).toBeNaN();
  });
});
