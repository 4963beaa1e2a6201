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
    expect(t).toEqual({ 'per-hour': 2, 'hours-of-day': [1, 15], 'days-of-week': ['MON', 'WED'], months: ['JAN', 'DEC'], 'time-zone': 'UTC' });
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
    expect(checkTimetable(mergeTimetable(stored, { 'days-of-month': [2] }))).toEqual({ 'per-hour': 1, 'hours-of-day': [1], 'days-of-month': [2], months: ['JAN'], 'time-zone': 'UTC' });
    expect(checkTimetable(mergeTimetable(stored, { 'per-hour': 4 }))).toEqual({ ...stored, 'per-hour': 4 });
    // A time zone given once stays until a PATCH names another.
    const berlin = checkTimetable(mergeTimetable(stored, { 'time-zone': 'Europe/Berlin' }));
    expect(checkTimetable(mergeTimetable(berlin, { 'hours-of-day': [2] }))).toMatchObject({ 'hours-of-day': [2], 'time-zone': 'Europe/Berlin' });
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

describe('time zones', () => {
  const EVERY_DAY = ['MON', 'TUE', 'WED', 'THU', 'FRI', 'SAT', 'SUN'];
  const berlin = (hours: number[], perHour = 1): Timetable => ({ 'per-hour': perHour, 'hours-of-day': hours, 'days-of-week': EVERY_DAY, 'time-zone': 'Europe/Berlin' } as Timetable);

  it('reads hours and days on the clock of the time zone, winter and summer', () => {
    // 09:00 in Berlin is 08:00 UTC in winter (CET) and 07:00 UTC in summer (CEST).
    expect(ticks(berlin([9]), '2026-01-05T00:00:00Z', 2)).toEqual(['2026-01-05T08:00:00.000Z', '2026-01-06T08:00:00.000Z']);
    expect(ticks(berlin([9]), '2026-07-06T00:00:00Z', 1)).toEqual(['2026-07-06T07:00:00.000Z']);
    // Days are the zone's too: Monday 01:00 in Auckland is still Sunday in UTC.
    expect(ticks({ 'per-hour': 1, 'hours-of-day': [1], 'days-of-week': ['MON'], 'time-zone': 'Pacific/Auckland' } as Timetable, '2026-01-01T00:00:00Z', 1)).toEqual(['2026-01-04T12:00:00.000Z']);
    // Whatever the process's own zone.
    const before = process.env.TZ;
    process.env.TZ = 'America/Los_Angeles';
    try {
      expect(ticks(berlin([9]), '2026-01-05T00:00:00Z', 1)).toEqual(['2026-01-05T08:00:00.000Z']);
    } finally {
      if (before === undefined) delete process.env.TZ;
      else process.env.TZ = before;
    }
  });

  it('fires a tick in the hour skipped on the spring-forward night once, when the clock has jumped', () => {
    // 2026-03-29: Berlin's clocks go from 02:00 CET straight to 03:00 CEST; 02:00 to 02:59 never happen.
    const twoAndHalfPast = berlin([2], 2); // 02:00 and 02:30
    expect(ticks(twoAndHalfPast, '2026-03-28T12:00:00Z', 3)).toEqual([
      // Both fall in the gap: one run, at 03:00 CEST (01:00 UTC).
      '2026-03-29T01:00:00.000Z',
      '2026-03-30T00:00:00.000Z',
      '2026-03-30T00:30:00.000Z',
    ]);
    // The catch-up's view agrees: the latest tick that night is that one run.
    const cadence = timetableCadence(checkTimetable(twoAndHalfPast));
    expect(iso(cadence.latest(at('2026-03-29T01:30:00Z')))).toBe('2026-03-29T01:00:00.000Z');
    expect(iso(cadence.latest(at('2026-03-29T00:59:00Z')))).toBe('2026-03-28T01:30:00.000Z');
    // Ticks of the gap and the 03:00 one are the same run; 03:30 comes after.
    expect(ticks(berlin([2, 3], 2), '2026-03-28T12:00:00Z', 3)).toEqual(['2026-03-29T01:00:00.000Z', '2026-03-29T01:30:00.000Z', '2026-03-30T00:00:00.000Z']);
    // An hourly timetable: the night has one hour fewer, and nothing fires twice.
    expect(ticks(berlin(Array.from({ length: 24 }, (_, h) => h)), '2026-03-28T23:30:00Z', 3)).toEqual(['2026-03-29T00:00:00.000Z', '2026-03-29T01:00:00.000Z', '2026-03-29T02:00:00.000Z']);
  });

  it('fires a tick in the hour repeated in autumn once, in its first occurrence', () => {
    // 2026-10-25: 03:00 CEST becomes 02:00 CET; 02:30 happens at 00:30 and again at 01:30 UTC.
    expect(ticks(berlin([2], 2), '2026-10-24T12:00:00Z', 3)).toEqual(['2026-10-25T00:00:00.000Z', '2026-10-25T00:30:00.000Z', '2026-10-26T01:00:00.000Z']);
    // An hourly timetable: the night has one hour more, and it runs in none of it twice.
    expect(ticks(berlin(Array.from({ length: 24 }, (_, h) => h)), '2026-10-24T23:30:00Z', 4)).toEqual(['2026-10-25T00:00:00.000Z', '2026-10-25T02:00:00.000Z', '2026-10-25T03:00:00.000Z', '2026-10-25T04:00:00.000Z']);
    const cadence = timetableCadence(checkTimetable(berlin([2], 2)));
    expect(iso(cadence.latest(at('2026-10-25T01:45:00Z')))).toBe('2026-10-25T00:30:00.000Z');
  });

  it('checks the time zone: IANA names in any case, spelt as usual; offsets and unknown names are refused, naming the field and the value', () => {
    expect(checkTimetable({ 'per-hour': 1, 'hours-of-day': [1], 'days-of-week': ['MON'], 'time-zone': 'europe/berlin' })['time-zone']).toBe('Europe/Berlin');
    expect(checkTimetable({ 'per-hour': 1, 'hours-of-day': [1], 'days-of-week': ['MON'], 'time-zone': 'utc' })['time-zone']).toBe('UTC');
    // Aliases the tz database keeps stay as given.
    expect(checkTimetable({ 'per-hour': 1, 'hours-of-day': [1], 'days-of-week': ['MON'], 'time-zone': 'Asia/Kolkata' })['time-zone']).toBe('Asia/Kolkata');
    expect(checkTimetable({ 'per-hour': 1, 'hours-of-day': [1], 'days-of-week': ['MON'], 'time-zone': 'Etc/GMT+5' })['time-zone']).toBe('Etc/GMT+5');
    const hostile: unknown[] = ['Mars/Olympus_Mons', '+01:00', 'GMT+01:00', '', ' Europe/Berlin', 'Europe/Berlin\n', '../../etc/localtime', 'Europe/'.repeat(20) + 'Berlin', 42, null, ['Europe/Berlin'], { zone: 'UTC' }];
    for (const zone of hostile) {
      let thrown: unknown;
      try {
        checkTimetable({ 'per-hour': 1, 'hours-of-day': [1], 'days-of-week': ['MON'], 'time-zone': zone });
      } catch (error) {
        thrown = error;
      }
      expect({ zone, message: (thrown as Error)?.message, field: (thrown as { field?: string })?.field }).toEqual({
        zone,
        message: expect.stringMatching(/^timetable\.time-zone .* is not a time zone: give an IANA time zone name such as Europe\/Berlin, America\/New_York or UTC \(the default\)$/),
        field: 'timetable.time-zone',
      });
    }
    expect(() => checkTimetable({ 'per-hour': 1, 'hours-of-day': [1], 'days-of-week': ['MON'], 'time-zone': 'Mars/Olympus_Mons' })).toThrow(/"Mars\/Olympus_Mons"/);
    // Hours are said to be the zone's.
    expect(() => checkTimetable({ 'per-hour': 1, 'hours-of-day': [24], 'days-of-week': ['MON'], 'time-zone': 'Europe/Berlin' })).toThrow('timetable.hours-of-day holds 24; each must be an hour of the day in Europe/Berlin, 0 to 23');
  });

  it('keeps legacy triggers: schedule crons in UTC', () => {
    expect(cadenceOf('30 2 * * *').timeZone).toBe('UTC');
    expect(iso(cadenceOf('30 2 * * *').next(at('2026-03-29T00:00:00Z')))).toBe('2026-03-29T02:30:00.000Z');
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
