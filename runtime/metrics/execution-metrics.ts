import type { Store } from '../store/store';
import type { Histogram, Metrics } from './metrics';

/** Wait-time buckets in seconds: from a warm runner picking work at once to a queue backed up for an hour. */
const WAIT_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600];

/**
 * The dispatcher's metrics: queue depth and the age of the oldest queued task per resource class
 * (read from the database at scrape, so every replica agrees), running tasks, and a histogram of
 * how long claimed tasks waited. Returns the histogram for the dispatcher to observe into.
 */
export function registerExecutionMetrics(metrics: Metrics, store: Store): Histogram {
  const byClass = async (sql: string) =>
    (await store.query<{ resource_class: string; value: number }>(sql)).map((r) => ({ labels: { resource_class: r.resource_class }, value: Number(r.value) }));
  metrics.gauge('gyre_queue_depth', 'Tasks waiting to be claimed, per resource class.', () =>
    byClass(`SELECT resource_class, count(*) AS value FROM tasks WHERE status = 'queued' GROUP BY resource_class`),
  );
  metrics.gauge('gyre_queue_oldest_wait_seconds', 'Age of the oldest queued task, per resource class.', () =>
    byClass(`SELECT resource_class, EXTRACT(EPOCH FROM (now() - min(queued_at)))::float8 AS value FROM tasks WHERE status = 'queued' GROUP BY resource_class`),
  );
  metrics.gauge('gyre_tasks_running', 'Tasks holding a lease, per resource class.', () =>
    byClass(`SELECT resource_class, count(*) AS value FROM tasks WHERE status = 'running' GROUP BY resource_class`),
  );
  return metrics.histogram('gyre_queue_wait_seconds', 'Time from queued to claimed, per claim (this process).', WAIT_BUCKETS);
}
