import { Cron } from 'croner';
import { InputError } from '../domain/errors';

/**
 * CircleCI's schedule timetable (API v2 `timetable`) and the calendar arithmetic behind it. Pure:
 * no I/O, no clock; callers pass the instants.
 *
 * A timetable selects hours: the `hours-of-day` of the `days-of-week` or `days-of-month` (never
 * both) of the `months` (all of them when left out), on the clock of its `time-zone`, an IANA time
 * zone name (`UTC` when left out). CircleCI's API has no time zone (its schedules are UTC):
 * `time-zone` is Gyre's own field, spelt as the API spells the others. In each selected hour it
 * fires `per-hour` times, spread evenly from the top of the hour: at minutes ⌊k·60/per-hour⌋ for
 * k = 0 … per-hour−1 (per-hour 1 fires at :00, 4 at :00 :15 :30 :45, 7 at :00 :08 :17 :25 :34 :42
 * :51). CircleCI spreads them within the hour too but does not say where; Gyre's minutes are fixed
 * so a tick can be predicted and claimed.
 *
 * The timetable becomes a five-field cron pattern, and croner does the calendar (month lengths,
 * leap years, the zone's offsets), so `next` / `latest` answer for either a timetable or a legacy
 * `triggers: schedule` cron of a workflow (`cadenceOf`; those stay UTC, as CircleCI's).
 *
 * Daylight saving time: every tick of the timetable's wall clock fires once. A timetable is a
 * fixed-time job in croner's terms (its minutes and hours are lists, never `*`; croner's
 * `fixedTimeRule: 'no-wildcard'`), so a tick in the hour the clocks skip (02:30 on the
 * spring-forward night in Europe/Berlin) fires once, when the clock has jumped (03:00 summer time;
 * ticks of the gap and one due at 03:00 anyway are the same tick), and a tick in the hour that
 * repeats in autumn fires once, in its first occurrence. test/schedules/timetable.test.ts asserts it.
 */

export const DAYS_OF_WEEK = ['MON', 'TUE', 'WED', 'THU', 'FRI', 'SAT', 'SUN'] as const;
export type DayOfWeek = (typeof DAYS_OF_WEEK)[number];
export const MONTHS = ['JAN', 'FEB', 'MAR', 'APR', 'MAY', 'JUN', 'JUL', 'AUG', 'SEP', 'OCT', 'NOV', 'DEC'] as const;
export type Month = (typeof MONTHS)[number];

/** The time zone of a timetable that names none, and of every legacy `triggers: schedule` cron. */
export const DEFAULT_TIME_ZONE = 'UTC';

/**
 * A timetable as the API takes and gives it (normalised: lists sorted, without repeats). Stored
 * timetables written before `time-zone` existed have none: they are UTC.
 */
export interface Timetable {
  readonly 'per-hour': number;
  readonly 'hours-of-day': readonly number[];
  readonly 'days-of-week'?: readonly DayOfWeek[];
  readonly 'days-of-month'?: readonly number[];
  readonly months?: readonly Month[];
  /** An IANA time zone name (`Europe/Berlin`): the clock `hours-of-day` and the days are read on. */
  readonly 'time-zone'?: string;
}

/** When something fires: the ticks of a timetable or of a cron pattern, in its time zone. */
export interface Cadence {
  /** The cron pattern the ticks follow (five fields, on the clock of `timeZone`). */
  readonly pattern: string;
  readonly timeZone: string;
  /** The first tick strictly after `instant`, or undefined when there is none (never again). */
  next(instant: Date): Date | undefined;
  /** The last tick at or before `instant`, or undefined when there is none. */
  latest(instant: Date): Date | undefined;
}

const TIMETABLE_KEYS = ['per-hour', 'hours-of-day', 'days-of-week', 'days-of-month', 'months', 'time-zone'];

/** Longest time zone name taken (the longest IANA name has 32 characters). */
export const MAX_TIME_ZONE_LENGTH = 64;
/** What an IANA name looks like: `Area/Location[/More]`, `UTC`, `Etc/GMT+5`; never an offset such as `+01:00`. */
const ZONE_NAME = /^[A-Za-z][A-Za-z0-9_+-]*(\/[A-Za-z0-9_+-]+)*$/;

/**
 * Checks a time zone name and returns it as it is usually spelt: `europe/berlin` becomes
 * `Europe/Berlin`; an alias the tz database keeps (`US/Pacific`, `Asia/Kolkata`) stays as given.
 * Known names are those of the runtime's ICU tz database, the same croner computes with. The
 * refusal names the field, the value and what is allowed.
 */
export function checkTimeZone(raw: unknown, field = 'timetable.time-zone'): string {
  const refuse = () =>
    new InputError(`${field} ${JSON.stringify(typeof raw === 'string' ? raw.slice(0, MAX_TIME_ZONE_LENGTH + 1) : raw)} is not a time zone: give an IANA time zone name such as Europe/Berlin, America/New_York or UTC (the default)`, field);
  if (typeof raw !== 'string' || raw.length > MAX_TIME_ZONE_LENGTH || !ZONE_NAME.test(raw)) throw refuse();
  let resolved: string;
  try {
    resolved = new Intl.DateTimeFormat('en-US', { timeZone: raw }).resolvedOptions().timeZone;
  } catch {
    throw refuse();
  }
  return resolved.toLowerCase() === raw.toLowerCase() ? resolved : raw;
}

/** The minutes of the hour a timetable fires at, for `per-hour` runs an hour. */
export function minutesOf(perHour: number): number[] {
  return Array.from({ length: perHour }, (_, k) => Math.floor((k * 60) / perHour));
}

/**
 * Checks a timetable as a request gave it and returns it normalised. Every refusal is an
 * InputError naming the field (`timetable.per-hour`) and what is allowed.
 */
export function checkTimetable(raw: unknown): Timetable {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new InputError('timetable must be an object with per-hour, hours-of-day and days-of-week or days-of-month', 'timetable');
  const t = raw as Record<string, unknown>;
  for (const key of Object.keys(t)) {
    if (!TIMETABLE_KEYS.includes(key)) throw new InputError(`timetable has a field '${key}' that is not allowed (allowed: ${TIMETABLE_KEYS.join(', ')})`, `timetable.${key}`);
  }
  const timeZone = t['time-zone'] === undefined ? DEFAULT_TIME_ZONE : checkTimeZone(t['time-zone']);
  const perHour = t['per-hour'];
  if (perHour === undefined) throw new InputError('timetable.per-hour is required (a whole number from 1 to 60)', 'timetable.per-hour');
  if (typeof perHour !== 'number' || !Number.isInteger(perHour) || perHour < 1 || perHour > 60) {
    throw new InputError(`timetable.per-hour must be a whole number from 1 to 60 (got ${JSON.stringify(perHour)})`, 'timetable.per-hour');
  }
  const hours = numbers(t, 'hours-of-day', 0, 23, `an hour of the day in ${timeZone}, 0 to 23`);
  if (!hours) throw new InputError(`timetable.hours-of-day is required (a list of hours of the day in ${timeZone}, 0 to 23)`, 'timetable.hours-of-day');
  const weekDays = names(t, 'days-of-week', DAYS_OF_WEEK);
  const monthDays = numbers(t, 'days-of-month', 1, 31, 'a day of the month, 1 to 31');
  if (weekDays && monthDays) throw new InputError('timetable takes days-of-week or days-of-month, not both', 'timetable.days-of-month');
  if (!weekDays && !monthDays) throw new InputError(`timetable needs days-of-week (${DAYS_OF_WEEK.join(', ')}) or days-of-month (1 to 31)`, 'timetable.days-of-week');
  const months = names(t, 'months', MONTHS);
  const timetable: Timetable = {
    'per-hour': perHour,
    'hours-of-day': hours,
    ...(weekDays ? { 'days-of-week': weekDays } : {}),
    ...(monthDays ? { 'days-of-month': monthDays } : {}),
    ...(months ? { months } : {}),
    'time-zone': timeZone,
  };
  // A timetable that selects no day at all (the 30th of February) is refused rather than kept idle.
  if (!timetableCadence(timetable).next(new Date(Date.UTC(2000, 0, 1)))) {
    throw new InputError(`timetable never fires: days-of-month ${monthDays?.join(', ')} fall in none of months ${months?.join(', ')}`, 'timetable.days-of-month');
  }
  return timetable;
}

/**
 * A timetable changed by a PATCH: the fields given replace the ones stored; giving days-of-week
 * drops the stored days-of-month and the other way round (they exclude each other).
 */
export function mergeTimetable(stored: Timetable, change: Record<string, unknown>): Record<string, unknown> {
  const merged: Record<string, unknown> = { ...stored, ...change };
  if ('days-of-week' in change && !('days-of-month' in change)) delete merged['days-of-month'];
  if ('days-of-month' in change && !('days-of-week' in change)) delete merged['days-of-week'];
  return merged;
}

/** The cron pattern of a timetable: minutes, hours, days of the month, months, days of the week. */
export function patternOf(t: Timetable): string {
  return [minutesOf(t['per-hour']).join(','), t['hours-of-day'].join(','), t['days-of-month']?.join(',') ?? '*', t.months?.join(',') ?? '*', t['days-of-week']?.join(',') ?? '*'].join(' ');
}

export function timetableCadence(t: Timetable): Cadence {
  return cadenceOf(patternOf(t), t['time-zone'] ?? DEFAULT_TIME_ZONE);
}

/**
 * The ticks of a five-field cron pattern on the clock of `timeZone` (a legacy `triggers: schedule`
 * cron, always UTC, or a timetable's). Throws an InputError naming `cron` for a pattern that is not
 * one. A day of the month and a day of the week both given fire on either, as cron does.
 */
export function cadenceOf(pattern: string, timeZone = DEFAULT_TIME_ZONE): Cadence {
  let cron: Cron;
  try {
    cron = new Cron(pattern, { timezone: timeZone, mode: '5-part', domAndDow: false, fixedTimeRule: 'no-wildcard' });
  } catch (error) {
    throw new InputError(`'${pattern}' is not a cron pattern of five fields (minute hour day-of-month month day-of-week): ${(error as Error).message.replace(/^CronPattern: /, '')}`, 'cron');
  }
  return {
    pattern,
    timeZone,
    next: (instant) => cron.nextRun(instant) ?? undefined,
    // croner's previous runs are strictly before the reference; ticks fall on whole minutes.
    latest: (instant) => cron.previousRuns(1, new Date(instant.getTime() + 1))[0],
  };
}

function numbers(t: Record<string, unknown>, field: string, min: number, max: number, what: string): number[] | undefined {
  const value = t[field];
  if (value === undefined) return undefined;
  if (!Array.isArray(value) || value.length === 0) throw new InputError(`timetable.${field} must be a non-empty list, each ${what}`, `timetable.${field}`);
  for (const v of value) {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw new InputError(`timetable.${field} holds ${JSON.stringify(v)}; each must be ${what}`, `timetable.${field}`);
  }
  return [...new Set(value as number[])].sort((a, b) => a - b);
}

function names<T extends string>(t: Record<string, unknown>, field: string, allowed: readonly T[]): T[] | undefined {
  const value = t[field];
  if (value === undefined) return undefined;
  if (!Array.isArray(value) || value.length === 0) throw new InputError(`timetable.${field} must be a non-empty list, each one of ${allowed.join(', ')}`, `timetable.${field}`);
  for (const v of value) {
    if (!(allowed as readonly unknown[]).includes(v)) throw new InputError(`timetable.${field} holds ${JSON.stringify(v)}; each must be one of ${allowed.join(', ')}`, `timetable.${field}`);
  }
  return allowed.filter((a) => (value as unknown[]).includes(a));
}
