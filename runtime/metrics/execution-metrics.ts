import type { Queryable } from '../store/store';
import type { Histogram, Metrics } from './metrics';

/** Wait-time buckets in seconds: from a warm runner picking work at once to a queue backed up for an hour. */
const WAIT_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600];

export interface ExecutionMetrics {
  /** How long claimed tasks waited (the dispatcher observes into it). */
  readonly queueWait: Histogram<'resource_class'>;
  /** Reads queue depth, the oldest wait and running tasks per resource class into the gauges. */
  refresh(db: Queryable): Promise<void>;
}

/**
 * The dispatcher's metrics: queue depth and the age of the oldest queued task per resource class,
 * running tasks, and a histogram of how long claimed tasks waited. The gauges are read from the
 * database by `refresh` (the dispatcher role calls it on a timer), never by a scrape; the query
 * reads only queued and running tasks, through the partial index on them.
 */
export function registerExecutionMetrics(metrics: Metrics): ExecutionMetrics {
  const depth = metrics.gauge('gyre_queue_depth', 'Tasks waiting to be claimed, per resource class.', ['resource_class']);
  const oldest = metrics.gauge('gyre_queue_oldest_wait_seconds', 'Age of the oldest queued task, per resource class.', ['resource_class']);
  const running = metrics.gauge('gyre_tasks_running', 'Tasks holding a lease, per resource class.', ['resource_class']);
  const queueWait = metrics.histogram('gyre_queue_wait_seconds', 'Time from queued to claimed, per claim (this process).', WAIT_BUCKETS, ['resource_class']);
  return {
    queueWait,
    async refresh(db) {
      const rows = await db.query<{ resource_class: string; queued: number; running: number; oldest: number | null }>(
        `SELECT resource_class,
                count(*) FILTER (WHERE status = 'queued')::int AS queued,
                count(*) FILTER (WHERE status = 'running')::int AS running,
                EXTRACT(EPOCH FROM (now() - min(queued_at) FILTER (WHERE status = 'queued')))::float8 AS oldest
           FROM tasks WHERE status IN ('queued', 'running') GROUP BY resource_class`,
      );
      // Classes that emptied since the last refresh go back to 0 rather than keep their last value.
      depth.reset();
      oldest.reset();
      running.reset();
      for (const r of rows) {
        depth.set({ resource_class: r.resource_class }, Number(r.queued));
        running.set({ resource_class: r.resource_class }, Number(r.running));
        oldest.set({ resource_class: r.resource_class }, r.oldest === null ? 0 : Number(r.oldest));
      }
    },
  };
}
