import type { Stats, Tally } from './sql/read';

/**
 * The arithmetic of insights, pure: a `Tally` (runs added up by the database, runtime/insights/sql/
 * read.ts) becomes the figures the API answers. Definitions, as CircleCI's insights glossary gives
 * them (docs/insights.md):
 *
 * - a run's outcome: `success`; `canceled`; anything else that ended (failed, error, timed out,
 *   infrastructure failure, unauthorized) is a failure;
 * - success rate: successful runs / (runs − canceled runs), 0 when nothing but canceled runs;
 * - throughput: runs per day of the window;
 * - durations and queue times in whole seconds: min, max, mean (rounded), median and p95 (linear
 *   interpolation between the two nearest runs, as PostgreSQL's `percentile_cont`, rounded),
 *   standard deviation (of the population; 0 for one run), total;
 * - mean time to recovery: the mean, over the successes that ended a run of failures on their
 *   branch, of the time from the first of those failures' stop to the success's stop;
 * - a trend: the relative change from the previous window of the same length
 *   ((current − previous) / previous), 0 when the previous window had nothing to compare with.
 */

export type Outcome = 'success' | 'failed' | 'canceled';

/** What a workflow or job status counts as. */
export function outcomeOf(status: string): Outcome {
  if (status === 'success') return 'success';
  if (status === 'canceled') return 'canceled';
  return 'failed';
}

export interface DurationMetrics {
  readonly min: number | null;
  readonly mean: number | null;
  readonly median: number | null;
  readonly p95: number | null;
  readonly max: number | null;
  readonly standard_deviation: number | null;
  readonly total: number;
}

/**
 * Duration figures in whole seconds from what the database added up (runtime/insights/sql/read.ts:
 * `percentile_cont`, `stddev_pop`); null where there are no runs. Rounded half up, as JavaScript's
 * Math.round (PostgreSQL's round of a double rounds half to even).
 */
export function durationMetrics(s: Stats): DurationMetrics {
  if (s.count === 0) return { min: null, mean: null, median: null, p95: null, max: null, standard_deviation: null, total: 0 };
  const whole = (v: number | null) => (v === null ? null : Math.round(v));
  return { min: whole(s.min), mean: whole(s.mean), median: whole(s.p50), p95: whole(s.p95), max: whole(s.max), standard_deviation: s.stddev ?? 0, total: Math.round(s.total) };
}

/** Successful runs / (runs − canceled runs); 0 when no run succeeded or failed. */
export function successRate(t: Pick<Tally, 'runs' | 'successful' | 'canceled'>): number {
  const counted = t.runs - t.canceled;
  return counted > 0 ? t.successful / counted : 0;
}

/** Runs per day of a window `days` long. */
export function throughput(runs: number, days: number): number {
  return days > 0 ? runs / days : 0;
}

/** Mean time to recovery in whole seconds, or null without a recovery. */
export function mttr(t: Pick<Tally, 'recoveries' | 'recoverySecs'>): number | null {
  return t.recoveries > 0 ? Math.round(t.recoverySecs / t.recoveries) : null;
}

/** The relative change from `previous` to `current`; 0 when there is no previous value to compare with. */
export function trend(current: number | null, previous: number | null): number {
  if (current === null || previous === null || !Number.isFinite(previous) || previous === 0) return 0;
  return (current - previous) / previous;
}
