import { durationMetrics, mttr, outcomeOf, successRate, throughput, trend } from '../../runtime/insights/metrics';
import { recoveryOf } from '../../runtime/insights/rollup';
import { bucketOf, dateRange, previousWindow, reportingWindow, splitWindow } from '../../runtime/insights/window';

/**
 * The arithmetic and the windows of insights (runtime/insights/metrics.ts, window.ts), worked out
 * by hand: what a user reads in the API's figures, and which part of a window comes from the daily
 * rollup and which from single runs (the two together must cover the window exactly once).
 */

describe('insights figures', () => {
  it('gives durations in whole seconds rounded half up, nulls for no runs', () => {
    const none = { count: 0, min: null, max: null, total: 0, mean: null, stddev: null, p50: null, p95: null };
    expect(durationMetrics(none)).toEqual({ min: null, mean: null, median: null, p95: null, max: null, standard_deviation: null, total: 0 });
    // What the database gives for 2, 4, 5, 9: percentile_cont(0.5) 4.5, (0.95) 8.4; stddev_pop √6.5.
    expect(durationMetrics({ count: 4, min: 2, max: 9, total: 20, mean: 5, stddev: Math.sqrt(6.5), p50: 4.5, p95: 8.4 })).toEqual({
      min: 2,
      mean: 5,
      median: 5,
      p95: 8,
      max: 9,
      standard_deviation: Math.sqrt(6.5),
      total: 20,
    });
    expect(durationMetrics({ count: 1, min: 7, max: 7, total: 7, mean: 7, stddev: 0, p50: 7, p95: 7 }).standard_deviation).toBe(0);
  });

  it('leaves canceled runs out of the success rate, and counts every other end that is not a success as a failure', () => {
    expect(successRate({ runs: 5, successful: 2, canceled: 1 })).toBe(0.5);
    expect(successRate({ runs: 2, successful: 0, canceled: 2 })).toBe(0);
    expect(['success', 'canceled', 'failed', 'error', 'unauthorized', 'infrastructure_fail', 'timedout'].map(outcomeOf)).toEqual([
      'success',
      'canceled',
      'failed',
      'failed',
      'failed',
      'failed',
      'failed',
    ]);
  });

  it('gives throughput per day, mean time to recovery in seconds, and trends as relative change', () => {
    expect(throughput(9, 7)).toBeCloseTo(9 / 7);
    expect(mttr({ recoveries: 0, recoverySecs: 0 })).toBeNull();
    expect(mttr({ recoveries: 2, recoverySecs: 301 })).toBe(151);
    expect(trend(6, 2)).toBe(2);
    expect(trend(1, 2)).toBe(-0.5);
    expect(trend(5, 0)).toBe(0);
    expect(trend(null, 3)).toBe(0);
  });
});

describe('insights windows', () => {
  const at = (iso: string) => new Date(iso);

  it('reaches back the reporting window from now, 90 days unless told, and puts the previous window just before', () => {
    const now = at('2026-03-10T15:30:00Z');
    expect(reportingWindow(undefined, now)).toEqual({ start: at('2025-12-10T15:30:00Z'), end: now });
    expect(reportingWindow('last-24-hours', now)).toEqual({ start: at('2026-03-09T15:30:00Z'), end: now });
    expect(previousWindow(reportingWindow('last-7-days', now))).toEqual({ start: at('2026-02-24T15:30:00Z'), end: at('2026-03-03T15:30:00Z') });
  });

  it('splits a window into the whole UTC days of the rollup and the hours at its edges', () => {
    expect(splitWindow({ start: at('2026-03-03T15:30:00Z'), end: at('2026-03-10T15:30:00Z') })).toEqual({
      days: { from: '2026-03-04', to: '2026-03-10' },
      edges: [
        { start: at('2026-03-03T15:30:00Z'), end: at('2026-03-04T00:00:00Z') },
        { start: at('2026-03-10T00:00:00Z'), end: at('2026-03-10T15:30:00Z') },
      ],
    });
    // 24 hours across a midnight: no whole day, the whole window run by run.
    expect(splitWindow({ start: at('2026-03-09T15:30:00Z'), end: at('2026-03-10T15:30:00Z') })).toEqual({ edges: [{ start: at('2026-03-09T15:30:00Z'), end: at('2026-03-10T15:30:00Z') }] });
    // Whole days exactly: no edges.
    expect(splitWindow({ start: at('2026-03-01T00:00:00Z'), end: at('2026-03-03T00:00:00Z') })).toEqual({ days: { from: '2026-03-01', to: '2026-03-03' }, edges: [] });
  });

  it('reads start-date and end-date: an end needs a start, at most 90 days apart, in order', () => {
    const now = at('2026-03-10T00:00:00Z');
    expect(dateRange(undefined, undefined, now, 90)).toEqual({ start: at('2025-12-10T00:00:00Z'), end: now });
    expect(dateRange('2026-03-01T00:00:00Z', undefined, now, 90)).toEqual({ start: at('2026-03-01T00:00:00Z'), end: now });
    expect(() => dateRange(undefined, '2026-03-01T00:00:00Z', now, 90)).toThrow(/end-date needs a start-date/);
    expect(() => dateRange('2025-01-01T00:00:00Z', '2025-05-01T00:00:00Z', now, 90)).toThrow(/end-date may be at most 90 days after start-date/);
    expect(() => dateRange('2026-03-02T00:00:00Z', '2026-03-01T00:00:00Z', now, 90)).toThrow(/must be before end-date/);
    expect(() => dateRange('soon', undefined, now, 90)).toThrow(/start-date 'soon' is not a date-time/);
    expect(() => dateRange('+275760-09-13T00:00:00Z', undefined, now, 90)).toThrow(/is not a date-time/);
  });

  it('buckets by UTC day or hour', () => {
    expect(bucketOf(at('2026-03-10T15:30:12Z'), 'daily')).toEqual(at('2026-03-10T00:00:00Z'));
    expect(bucketOf(at('2026-03-10T15:30:12Z'), 'hourly')).toEqual(at('2026-03-10T15:00:00Z'));
  });
});

describe('mean time to recovery, run by run', () => {
  it('starts a run of failures at the first failure, carries it through canceled runs, and ends it at a success', () => {
    const at = (minute: number) => new Date(Date.UTC(2026, 2, 10, 12, minute));
    let state = recoveryOf(null, 'failed', at(0));
    expect(state).toEqual({ failingSince: at(0), recoverySecs: null });
    state = recoveryOf(state.failingSince, 'failed', at(5));
    expect(state.failingSince).toEqual(at(0));
    state = recoveryOf(state.failingSince, 'canceled', at(7));
    expect(state.failingSince).toEqual(at(0));
    // Fixed 12 minutes after the first failure stopped.
    expect(recoveryOf(state.failingSince, 'success', at(12))).toEqual({ failingSince: null, recoverySecs: 720 });
    // A success after a success recovers from nothing.
    expect(recoveryOf(null, 'success', at(20))).toEqual({ failingSince: null, recoverySecs: null });
  });
});
