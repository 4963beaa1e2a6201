import { CATCH_UP_WINDOW_MS, planDueTicks } from '../../runtime/schedules/catch-up';
import { cadenceOf, checkTimetable, mergeTimetable, minutesOf, patternOf, timetableCadence, type Timetable } from '../../runtime/schedules/timetable';

const at = (iso: string) => new Date(iso);
const iso = (d: Date | undefined) => d?.toISOString();

/** The first `n` ticks after `from`. */
function ticks(t: Timetable, from: string, n: number): string[] {
  const cadence = timetableCadence(checkTimetable(t));
  const out: string[] = [];
  let d: Date | undefined = at(from);
  while (out.length < n && (d = cadence.next(d))) out.push(d.toISOString());
  return out;
}

describe('timetable arithmetic (UTC, croner)', () => {
  it('spreads per-hour runs evenly from the top of each selected hour', () => {
    expect(minutesOf(1)).toEqual([0]);
    expect(minutesOf(4)).toEqual([0, 15, 30, 45]);
    expect(minutesOf(7)).toEqual([0, 8, 17, 25, 34, 42, 51]);
    expect(minutesOf(60)).toHaveLength(60);
    // CircleCI's example: 3 a hour at 01:00 and 15:00 UTC on Mondays and Wednesdays.
    // 2026-01-05 is a Monday.
    expect(ticks({ 'per-hour': 3, 'hours-of-day': [1, 15], 'days-of-week': ['MON', 'WED'] }, '2026-01-05T00:00:00Z', 8)).toEqual([
      '2026-01-05T01:00:00.000Z',
      '2026-01-05T01:20:00.000Z',
      '2026-01-05T01:40:00.000Z',
      '2026-01-05T15:00:00.000Z',
      '2026-01-05T15:20:00.000Z',
      '2026-01-05T15:40:00.000Z',
      '2026-01-07T01:00:00.000Z',
      '2026-01-07T01:20:00.000Z',
    ]);
  });

  it('fires on days of the month within the months named, skipping months too short', () => {
    expect(ticks({ 'per-hour': 1, 'hours-of-day': [6], 'days-of-month': [31], months: ['JAN', 'FEB', 'MAR', 'APR'] }, '2026-01-01T00:00:00Z', 3)).toEqual([
      '2026-01-31T06:00:00.000Z',
      '2026-03-31T06:00:00.000Z',
      // April has no 31st: next January.
      '2027-01-31T06:00:00.000Z',
    ]);
    // 29 February, leap years only.
    expect(ticks({ 'per-hour': 1, 'hours-of-day': [0], 'days-of-month': [29], months: ['FEB'] }, '2026-01-01T00:00:00Z', 1)).toEqual(['2028-02-29T00:00:00.000Z']);
  });

  it('is UTC whatever the process time zone', () => {
    const before = process.env.TZ;
    process.env.TZ = 'Pacific/Auckland';
    try {
      expect(ticks({ 'per-hour': 1, 'hours-of-day': [23], 'days-of-week': ['SUN'] }, '2026-01-05T00:00:00Z', 1)).toEqual(['2026-01-11T23:00:00.000Z']);
    } finally {
      if (before === undefined) delete process.env.TZ;
      else process.env.TZ = before;
    }
  });

  it('normalises lists (sorted, without repeats) and writes a five-field pattern', () => {
    const t = checkTimetable({ 'per-hour': 2, 'hours-of-day': [15, 1, 15], 'days-of-week': ['WED', 'MON'], months: ['DEC', 'JAN'] });
    expect(t).toEqual({ 'per-hour': 2, 'hours-of-day': [1, 15], 'days-of-week': ['MON', 'WED'], months: ['JAN', 'DEC'] });
    expect(patternOf(t)).toBe('0,30 1,15 * JAN,DEC MON,WED');
  });

  it.each([
    [{ 'hours-of-day': [1], 'days-of-week': ['MON'] }, 'timetable.per-hour', /per-hour is required \(a whole number from 1 to 60\)/],
    [{ 'per-hour': 0, 'hours-of-day': [1], 'days-of-week': ['MON'] }, 'timetable.per-hour', /from 1 to 60 \(got 0\)/],
    [{ 'per-hour': 61, 'hours-of-day': [1], 'days-of-week': ['MON'] }, 'timetable.per-hour', /from 1 to 60 \(got 61\)/],
    [{ 'per-hour': 1.5, 'hours-of-day': [1], 'days-of-week': ['MON'] }, 'timetable.per-hour', /whole number/],
    [{ 'per-hour': 1, 'days-of-week': ['MON'] }, 'timetable.hours-of-day', /hours-of-day is required/],
    [{ 'per-hour': 1, 'hours-of-day': [], 'days-of-week': ['MON'] }, 'timetable.hours-of-day', /must be a non-empty list, each an hour of the day in UTC, 0 to 23/],
    [{ 'per-hour': 1, 'hours-of-day': [24], 'days-of-week': ['MON'] }, 'timetable.hours-of-day', /holds 24; each must be an hour of the day in UTC, 0 to 23/],
    [{ 'per-hour': 1, 'hours-of-day': [1] }, 'timetable.days-of-week', /needs days-of-week \(MON, TUE, WED, THU, FRI, SAT, SUN\) or days-of-month \(1 to 31\)/],
    [{ 'per-hour': 1, 'hours-of-day': [1], 'days-of-week': ['MON'], 'days-of-month': [1] }, 'timetable.days-of-month', /days-of-week or days-of-month, not both/],
    [{ 'per-hour': 1, 'hours-of-day': [1], 'days-of-week': ['MONDAY'] }, 'timetable.days-of-week', /holds "MONDAY"; each must be one of MON, TUE/],
    [{ 'per-hour': 1, 'hours-of-day': [1], 'days-of-month': [0] }, 'timetable.days-of-month', /each must be a day of the month, 1 to 31/],
    [{ 'per-hour': 1, 'hours-of-day': [1], 'days-of-month': [1], months: ['JANUARY'] }, 'timetable.months', /each must be one of JAN, FEB/],
    [{ 'per-hour': 1, 'hours-of-day': [1], 'days-of-month': [30, 31], months: ['FEB'] }, 'timetable.days-of-month', /never fires: days-of-month 30, 31 fall in none of months FEB/],
    [{ 'per_hour': 1, 'hours-of-day': [1], 'days-of-week': ['MON'] }, 'timetable.per_hour', /field 'per_hour' that is not allowed \(allowed: per-hour, hours-of-day/],
  ])('refuses %j naming %s and what is allowed', (raw, field, message) => {
    expect(() => checkTimetable(raw)).toThrow(message);
    try {
      checkTimetable(raw);
    } catch (error) {
      expect((error as { field?: string }).field).toBe(field);
    }
  });

  it('merges a PATCH: given fields replace, and days of the week and of the month replace each other', () => {
    const stored = checkTimetable({ 'per-hour': 1, 'hours-of-day': [1], 'days-of-week': ['MON'], months: ['JAN'] });
    expect(checkTimetable(mergeTimetable(stored, { 'days-of-month': [2] }))).toEqual({ 'per-hour': 1, 'hours-of-day': [1], 'days-of-month': [2], months: ['JAN'] });
    expect(checkTimetable(mergeTimetable(stored, { 'per-hour': 4 }))).toEqual({ ...stored, 'per-hour': 4 });
  });

  it('reads legacy cron patterns (five fields, UTC) and refuses others naming the pattern', () => {
    const hourly = cadenceOf('0 * * * *');
    expect(iso(hourly.next(at('2026-01-05T10:00:00Z')))).toBe('2026-01-05T11:00:00.000Z');
    expect(iso(hourly.latest(at('2026-01-05T10:00:00Z')))).toBe('2026-01-05T10:00:00.000Z');
    expect(iso(hourly.latest(at('2026-01-05T10:59:59Z')))).toBe('2026-01-05T10:00:00.000Z');
    expect(() => cadenceOf('0 * * *')).toThrow(/'0 \* \* \*' is not a cron pattern of five fields/);
    expect(() => cadenceOf('61 * * * *')).toThrow(/minute/);
  });
});

describe('the missed-tick policy', () => {
  const every15 = timetableCadence(checkTimetable({ 'per-hour': 4, 'hours-of-day': Array.from({ length: 24 }, (_, h) => h), 'days-of-week': ['MON', 'TUE', 'WED', 'THU', 'FRI', 'SAT', 'SUN'] }));

  it('fires the tick that just came, and waits for the next one', () => {
    const plan = planDueTicks(every15, at('2026-01-05T10:15:00Z'), at('2026-01-05T10:15:04Z'));
    expect(iso(plan.fire)).toBe('2026-01-05T10:15:00.000Z');
    expect(plan.skipped).toBe(0);
    expect(iso(plan.next)).toBe('2026-01-05T10:30:00.000Z');
  });

  it('does nothing before the next tick', () => {
    expect(planDueTicks(every15, at('2026-01-05T10:15:00Z'), at('2026-01-05T10:14:59Z'))).toEqual({ skipped: 0, next: at('2026-01-05T10:15:00Z') });
  });

  it('after downtime within the hour, fires only the latest missed tick once and skips the others', () => {
    // Down from 10:05 to 10:50: 10:15, 10:30 and 10:45 were missed.
    const plan = planDueTicks(every15, at('2026-01-05T10:15:00Z'), at('2026-01-05T10:50:00Z'));
    expect(iso(plan.fire)).toBe('2026-01-05T10:45:00.000Z');
    expect(plan.skipped).toBe(2);
    expect(iso(plan.next)).toBe('2026-01-05T11:00:00.000Z');
  });

  it('skips every missed tick when the latest is older than the hour', () => {
    const daily = timetableCadence(checkTimetable({ 'per-hour': 1, 'hours-of-day': [3], 'days-of-week': ['MON', 'TUE', 'WED', 'THU', 'FRI', 'SAT', 'SUN'] }));
    // Down from Monday 02:00 to Wednesday 09:00: Monday's, Tuesday's and Wednesday's 03:00 were missed.
    const plan = planDueTicks(daily, at('2026-01-05T03:00:00Z'), at('2026-01-07T09:00:00Z'));
    expect(plan.fire).toBeUndefined();
    expect(plan.skipped).toBe(3);
    expect(iso(plan.next)).toBe('2026-01-08T03:00:00.000Z');
    // Exactly at the window's edge it still fires.
    expect(iso(planDueTicks(daily, at('2026-01-07T03:00:00Z'), new Date(at('2026-01-07T03:00:00Z').getTime() + CATCH_UP_WINDOW_MS)).fire)).toBe('2026-01-07T03:00:00.000Z');
  });
});
