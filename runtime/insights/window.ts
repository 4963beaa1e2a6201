import { InputError } from '../domain/errors';

/**
 * Time windows of insights, pure. A reporting window ends now and reaches back its length; the
 * daily rollup answers for the whole UTC days inside a window, the runs themselves for the parts of
 * days at its edges, so every figure is exact whatever the hour.
 */

export const REPORTING_WINDOWS = ['last-7-days', 'last-90-days', 'last-24-hours', 'last-30-days', 'last-60-days'] as const;
export type ReportingWindow = (typeof REPORTING_WINDOWS)[number];

export const DAY_MS = 86_400_000;
export const HOUR_MS = 3_600_000;
/** The longest range the API reads at once (CircleCI's: runs and daily figures go back 90 days). */
export const MAX_RANGE_DAYS = 90;

const LENGTH_DAYS: Record<ReportingWindow, number> = {
  'last-24-hours': 1,
  'last-7-days': 7,
  'last-30-days': 30,
  'last-60-days': 60,
  'last-90-days': 90,
};

/** A half-open span of time: from `start` up to (not including) `end`. */
export interface Window {
  readonly start: Date;
  readonly end: Date;
}

/** The reporting window `name` (default last-90-days) ending at `now`. */
export function reportingWindow(name: ReportingWindow | undefined, now: Date): Window {
  const days = LENGTH_DAYS[name ?? 'last-90-days'];
  return { start: new Date(now.getTime() - days * DAY_MS), end: now };
}

/** The window of the same length just before `w` (what a trend compares with). */
export function previousWindow(w: Window): Window {
  const length = w.end.getTime() - w.start.getTime();
  return { start: new Date(w.start.getTime() - length), end: w.start };
}

/** The window's length in days (fractional for a range the caller gave). */
export function daysOf(w: Window): number {
  return (w.end.getTime() - w.start.getTime()) / DAY_MS;
}

/** `YYYY-MM-DD` of the UTC day `t` falls on. */
export function dayOf(t: Date): string {
  return t.toISOString().slice(0, 10);
}

const floorDay = (ms: number) => Math.floor(ms / DAY_MS) * DAY_MS;
const ceilDay = (ms: number) => Math.ceil(ms / DAY_MS) * DAY_MS;

export interface SplitWindow {
  /** Whole UTC days inside the window, `from` up to (not including) `to`, as `YYYY-MM-DD`; absent when there are none. */
  readonly days?: { readonly from: string; readonly to: string };
  /** The parts of days at the window's edges, read run by run. */
  readonly edges: readonly Window[];
}

/** Splits a window into the whole days the rollup holds and the edges around them. */
export function splitWindow(w: Window): SplitWindow {
  const start = w.start.getTime();
  const end = w.end.getTime();
  const firstWhole = ceilDay(start);
  const lastWhole = floorDay(end);
  if (firstWhole >= lastWhole) return { edges: end > start ? [w] : [] };
  const edges: Window[] = [];
  if (start < firstWhole) edges.push({ start: w.start, end: new Date(firstWhole) });
  if (lastWhole < end) edges.push({ start: new Date(lastWhole), end: w.end });
  return { days: { from: dayOf(new Date(firstWhole)), to: dayOf(new Date(lastWhole)) }, edges };
}

/**
 * The range of `start-date` and `end-date` query parameters: both optional (end defaults to now,
 * start to `defaultDays` before the end), start before end, at most 90 days apart, and an end
 * needs a start (as CircleCI answers).
 */
export function dateRange(startDate: string | undefined, endDate: string | undefined, now: Date, defaultDays: number): Window {
  if (endDate !== undefined && startDate === undefined) throw new InputError('end-date needs a start-date: give both, or only start-date', 'start-date');
  const end = endDate === undefined ? now : parseDate(endDate, 'end-date');
  const start = startDate === undefined ? new Date(end.getTime() - defaultDays * DAY_MS) : parseDate(startDate, 'start-date');
  if (start.getTime() >= end.getTime()) throw new InputError(`start-date (${start.toISOString()}) must be before end-date (${end.toISOString()})`, 'start-date');
  if (end.getTime() - start.getTime() > MAX_RANGE_DAYS * DAY_MS) throw new InputError(`end-date may be at most ${MAX_RANGE_DAYS} days after start-date`, 'end-date');
  return { start, end };
}

function parseDate(value: string, name: string): Date {
  const t = Date.parse(value);
  // Years before 1970 or past 9999 are no dates of runs; they would only overflow the arithmetic.
  if (!Number.isFinite(t) || t < 0 || t > Date.UTC(9999, 11, 31)) throw new InputError(`${name} '${value.slice(0, 64)}' is not a date-time (e.g. 2026-01-31T00:00:00Z)`, name);
  return new Date(t);
}

/** The start of the bucket (`daily`: UTC day; `hourly`: hour) that `t` falls in. */
export function bucketOf(t: Date, granularity: 'daily' | 'hourly'): Date {
  const size = granularity === 'daily' ? DAY_MS : HOUR_MS;
  return new Date(Math.floor(t.getTime() / size) * size);
}
