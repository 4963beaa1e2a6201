import { startTestGyre, type TestGyre } from '../support/gyre';

/**
 * Every hour of the day: the tick made due below is in the timetable whenever the test runs (one
 * hour read from the clock could miss its tick if the hour turned mid-test).
 */
const EVERY_HOUR = Array.from({ length: 24 }, (_, h) => h);

/**
 * The v2 schedule routes on a whole Gyre (embedded database, the cron role polling every 100 ms):
 * shapes as in CircleCI's OpenAPI document, every refusal a 400 naming the field, and the pipelines
 * schedules start: a v2 schedule's runs the workflows meant for scheduled pipelines, a workflow's
 * `triggers: schedule` runs only that workflow.
 */

const CONFIG = `version: 2.1
parameters:
  deploy:
    type: boolean
    default: false
jobs:
  build:
    docker: [{ image: cimg/base:stable }]
    steps: [{ run: echo built }]
workflows:
  on-push:
    when:
      not:
        equal: [scheduled_pipeline, << pipeline.trigger_source >>]
    jobs: [build]
  on-schedule:
    when:
      equal: [scheduled_pipeline, << pipeline.trigger_source >>]
    jobs: [build]
  only-nightly:
    when:
      equal: [nightly, << pipeline.schedule.name >>]
    jobs: [build]
  hourly:
    triggers:
      - schedule:
          cron: "0 * * * *"
          filters:
            branches:
              only: [main]
    jobs: [build]
`;

/** An hour of the day that is not now, so the schedules made here do not fire by themselves during the test. */
const LATER = (new Date().getUTCHours() + 12) % 24;
const timetable = { 'per-hour': 2, 'hours-of-day': [LATER], 'days-of-week': ['MON', 'WED'] };

describe('schedules API', () => {
  let g: TestGyre;
  let admin: { id: string; login: string; name: string };

  beforeAll(async () => {
    g = await startTestGyre({ env: { GYRE_CRON_INTERVAL_MS: '100' } });
    await g.addProject('gh/acme/app', { '.circleci/config.yml': CONFIG });
    const me = await g.api('GET', '/api/v2/me');
    admin = { id: me.id, login: me.login, name: me.name };
  }, 60_000);
  afterAll(() => g?.stop());

  const post = (body: unknown) => g.raw('POST', '/api/v2/project/gh/acme/app/schedule', { body: JSON.stringify(body) });

  it('creates, reads, lists, changes and deletes a schedule in CircleCI shapes', async () => {
    const created = await post({ name: 'nightly-ish', description: 'twice an hour', timetable, 'attribution-actor': 'current', parameters: { branch: 'main', deploy: true } });
    expect(created.status).toBe(201);
    expect(created.body).toEqual({
      id: expect.stringMatching(/^[0-9a-f-]{36}$/),
      name: 'nightly-ish',
      description: 'twice an hour',
      // Gyre's time-zone field says the hours are UTC's when none was given.
      timetable: { 'per-hour': 2, 'hours-of-day': [LATER], 'days-of-week': ['MON', 'WED'], 'time-zone': 'UTC' },
      'project-slug': 'gh/acme/app',
      actor: admin,
      parameters: { branch: 'main', deploy: true },
      'created-at': expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
      'updated-at': expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
    });
    const id = created.body.id;
    expect(await g.api('GET', `/api/v2/schedule/${id}`)).toEqual(created.body);

    const changed = await g.api('PATCH', `/api/v2/schedule/${id}`, { timetable: { 'days-of-month': [1, 15], months: ['JAN'] }, 'attribution-actor': 'system', description: null });
    expect(changed).toMatchObject({
      id,
      name: 'nightly-ish',
      description: null,
      // days-of-month replaces days-of-week; the rest stays.
      timetable: { 'per-hour': 2, 'hours-of-day': [LATER], 'days-of-month': [1, 15], months: ['JAN'], 'time-zone': 'UTC' },
      actor: { id: '00000000-0000-0000-0000-000000000000', login: 'system-actor', name: 'Scheduled' },
      parameters: { branch: 'main', deploy: true },
    });
    expect(Date.parse(changed['updated-at'])).toBeGreaterThanOrEqual(Date.parse(created.body['updated-at']));

    expect(await g.api('DELETE', `/api/v2/schedule/${id}`)).toEqual({ message: 'Schedule deleted.' });
    const gone = await g.raw('GET', `/api/v2/schedule/${id}`);
    expect(gone).toMatchObject({ status: 404, body: { message: `schedule not found: ${id}` } });
    expect((await g.raw('DELETE', `/api/v2/schedule/${id}`)).status).toBe(404);
  });

  it('takes an IANA time zone, keeps it, and fires on its clock', async () => {
    const created = await post({ name: 'berlin mornings', timetable: { ...timetable, 'hours-of-day': [9], 'time-zone': 'europe/berlin' }, 'attribution-actor': 'system', parameters: { branch: 'main' } });
    expect(created.status).toBe(201);
    expect(created.body.timetable).toEqual({ 'per-hour': 2, 'hours-of-day': [9], 'days-of-week': ['MON', 'WED'], 'time-zone': 'Europe/Berlin' });
    const id = created.body.id;
    // Its next tick is 09:00 in Berlin: 07:00 or 08:00 UTC, never 09:00 UTC.
    const [row] = await g.gyre.store.query<{ next_fire_at: Date }>('SELECT next_fire_at FROM schedules WHERE id = $1', [id]);
    const berlinHour = Number(new Intl.DateTimeFormat('en-GB', { timeZone: 'Europe/Berlin', hour: '2-digit', hourCycle: 'h23' }).format(new Date(row.next_fire_at)));
    expect(berlinHour).toBe(9);
    expect([7, 8]).toContain(new Date(row.next_fire_at).getUTCHours());
    // A PATCH of other fields keeps the zone; one naming another zone replaces it.
    expect((await g.api('PATCH', `/api/v2/schedule/${id}`, { timetable: { 'hours-of-day': [10] } })).timetable).toMatchObject({ 'hours-of-day': [10], 'time-zone': 'Europe/Berlin' });
    expect((await g.api('PATCH', `/api/v2/schedule/${id}`, { timetable: { 'time-zone': 'America/New_York' } })).timetable).toMatchObject({ 'hours-of-day': [10], 'time-zone': 'America/New_York' });
    const refused = await g.raw('PATCH', `/api/v2/schedule/${id}`, { body: JSON.stringify({ timetable: { 'time-zone': 'Europe/Nowhere' } }) });
    expect(refused).toMatchObject({ status: 400, body: { message: expect.stringMatching(/^timetable\.time-zone "Europe\/Nowhere" is not a time zone/) } });
    expect((await g.api('GET', `/api/v2/schedule/${id}`)).timetable['time-zone']).toBe('America/New_York');
    // A schedule stored before time zones existed reads as UTC.
    await g.gyre.store.query(`UPDATE schedules SET timetable = timetable - 'time-zone' WHERE id = $1`, [id]);
    expect((await g.api('GET', `/api/v2/schedule/${id}`)).timetable['time-zone']).toBe('UTC');
    await g.api('DELETE', `/api/v2/schedule/${id}`);
  });

  it('lists a project schedules in pages', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 23; i++) ids.push((await g.api('POST', '/api/v2/project/gh/acme/app/schedule', { name: `page ${i}`, timetable, 'attribution-actor': 'system', parameters: { branch: 'main' } })).id);
    const first = await g.api('GET', '/api/v2/project/gh/acme/app/schedule');
    expect(first.items).toHaveLength(20);
    expect(first.next_page_token).toEqual(expect.any(String));
    const second = await g.api('GET', `/api/v2/project/gh/acme/app/schedule?page-token=${first.next_page_token}`);
    expect(second.next_page_token).toBeNull();
    expect([...first.items, ...second.items].map((s: { id: string }) => s.id).filter((id: string) => ids.includes(id))).toEqual(ids);
    expect((await g.raw('GET', '/api/v2/project/gh/acme/app/schedule?page-token=nonsense')).body.message).toMatch(/page-token 'nonsense' is not a token this API gave out/);
    for (const id of ids) await g.api('DELETE', `/api/v2/schedule/${id}`);
  });

  it.each([
    ['per-hour out of range', { timetable: { ...timetable, 'per-hour': 0 } }, /^timetable\.per-hour must be a whole number from 1 to 60 \(got 0\)$/],
    ['an hour past 23', { timetable: { ...timetable, 'hours-of-day': [24] } }, /^timetable\.hours-of-day holds 24; each must be an hour of the day in UTC, 0 to 23$/],
    ['both kinds of days', { timetable: { ...timetable, 'days-of-month': [1] } }, /^timetable takes days-of-week or days-of-month, not both$/],
    ['no days', { timetable: { 'per-hour': 1, 'hours-of-day': [1] } }, /^timetable needs days-of-week \(MON, TUE, WED, THU, FRI, SAT, SUN\) or days-of-month \(1 to 31\)$/],
    ['a day of the week misspelt', { timetable: { ...timetable, 'days-of-week': ['Monday'] } }, /^body\.timetable\.days-of-week\.0 must be one of "MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"$/],
    ['an unknown timetable field', { timetable: { ...timetable, per_hour: 1 } }, /^body\.timetable has a property 'per_hour' that is not allowed here$/],
    ['a timetable that never fires', { timetable: { 'per-hour': 1, 'hours-of-day': [1], 'days-of-month': [31], months: ['FEB', 'APR'] } }, /^timetable never fires/],
    ['an unknown time zone', { timetable: { ...timetable, 'time-zone': 'Mars/Olympus_Mons' } }, /^timetable\.time-zone "Mars\/Olympus_Mons" is not a time zone: give an IANA time zone name such as Europe\/Berlin, America\/New_York or UTC \(the default\)$/],
    ['an offset for a time zone', { timetable: { ...timetable, 'time-zone': '+02:00' } }, /^timetable\.time-zone "\+02:00" is not a time zone: give an IANA time zone name such as Europe\/Berlin/],
    ['a time zone that is not a string', { timetable: { ...timetable, 'time-zone': 1 } }, /^body\.timetable\.time-zone must be/],
    ['a time zone of 300 characters', { timetable: { ...timetable, 'time-zone': 'A'.repeat(300) } }, /^body\.timetable\.time-zone /],
    ['no branch or tag', { parameters: { deploy: true } }, /^parameters must hold branch or tag/],
    ['both branch and tag', { parameters: { branch: 'main', tag: 'v1' } }, /^parameters must hold branch or tag, not both$/],
    ['an empty branch', { parameters: { branch: ' ' } }, /^parameters\.branch must be a non-empty string naming a branch$/],
    ['a parameter of another type', { parameters: { branch: 'main', deploy: { yes: true } } }, /^body\.parameters\.deploy must be/],
    ['an unknown actor', { 'attribution-actor': 'me' }, /^body\.attribution-actor must be one of "current", "system"$/],
    ['no name', { name: undefined }, /^body\.name is required$/],
    ['a blank name', { name: '  ' }, /^name must not be empty$/],
  ])('refuses %s with a 400 naming the field', async (_what, change, message) => {
    const body = { name: `refused ${_what}`, timetable, 'attribution-actor': 'current', parameters: { branch: 'main' }, ...change };
    const res = await post(body);
    expect(res.status).toBe(400);
    expect(res.body.message).toMatch(message);
  });

  it('refuses a second schedule of the same name, and a PATCH that would make one', async () => {
    const a = await g.api('POST', '/api/v2/project/gh/acme/app/schedule', { name: 'twin', timetable, 'attribution-actor': 'system', parameters: { branch: 'main' } });
    const again = await post({ name: 'twin', timetable, 'attribution-actor': 'system', parameters: { branch: 'main' } });
    expect(again).toMatchObject({ status: 409, body: { message: "gh/acme/app has a schedule named 'twin' already" } });
    const b = await g.api('POST', '/api/v2/project/gh/acme/app/schedule', { name: 'other', timetable, 'attribution-actor': 'system', parameters: { branch: 'main' } });
    expect((await g.raw('PATCH', `/api/v2/schedule/${b.id}`, { body: JSON.stringify({ name: 'twin' }) })).status).toBe(409);
    expect((await g.raw('PATCH', `/api/v2/schedule/${b.id}`, { body: JSON.stringify({ parameters: {} }) })).body.message).toMatch(/^parameters must hold branch or tag/);
    await g.api('DELETE', `/api/v2/schedule/${a.id}`);
    await g.api('DELETE', `/api/v2/schedule/${b.id}`);
  });

  it('starts the pipeline of a due schedule: its parameters, its actor, the workflows meant for schedules', async () => {
    const made = await g.api('POST', '/api/v2/project/gh/acme/app/schedule', {
      name: 'nightly',
      timetable: { 'per-hour': 1, 'hours-of-day': EVERY_HOUR, 'days-of-week': ['MON', 'TUE', 'WED', 'THU', 'FRI', 'SAT', 'SUN'] },
      'attribution-actor': 'current',
      parameters: { branch: 'main', deploy: true },
    });
    // Its tick of this hour was missed (as if Gyre had been down since): the catch-up fires it now.
    await g.gyre.store.query(`UPDATE schedules SET next_fire_at = date_trunc('hour', now()) WHERE id = $1`, [made.id]);
    const pipeline = await waitFor(async () => (await g.api('GET', '/api/v2/project/gh/acme/app/pipeline')).items.find((p: any) => p.trigger.type === 'scheduled_pipeline'));
    expect(pipeline).toMatchObject({ trigger_parameters: { deploy: true }, trigger: { actor: { login: admin.login } }, vcs: { branch: 'main' } });
    const workflows = await waitFor(async () => {
      const items = (await g.api('GET', `/api/v2/pipeline/${pipeline.id}/workflow`)).items;
      return items.length >= 2 ? items : undefined;
    });
    expect(workflows.map((w: { name: string }) => w.name).sort()).toEqual(['on-schedule', 'only-nightly']);
    await g.api('DELETE', `/api/v2/schedule/${made.id}`);
  });

  it("fires a workflow's triggers: schedule from the default branch's config, running only that workflow", async () => {
    const push = await g.trigger('gh/acme/app', { branch: 'main' });
    const { workflows } = await g.waitForPipeline(push.id);
    expect(workflows.map((w) => w.name)).toEqual(['on-push']);
    // Taken before the scheduled workflow exists: a pipeline it starts is new, whether it is the
    // tick made due below or, should the hour turn meanwhile, the hour's own tick (which the tick
    // made due would then be, and fire once: a landing CI run ran into that at 06:00).
    const before = new Set((await g.api('GET', '/api/v2/project/gh/acme/app/pipeline')).items.map((p: any) => p.id));
    // The cron role reads the schedule from the compiled config, then (made due) fires it.
    await waitFor(async () => (await g.gyre.store.query(`SELECT 1 FROM scheduled_workflows WHERE cron = '0 * * * *' AND branch = 'main'`)).length === 1 || undefined);
    // Clients see it as CircleCI's scheduled_pipeline, as the API v2 schedules' pipelines before it.
    await g.gyre.store.query(`UPDATE scheduled_workflows SET next_fire_at = date_trunc('hour', now())`);
    const scheduled = await waitFor(async () => (await g.api('GET', '/api/v2/project/gh/acme/app/pipeline')).items.find((p: any) => !before.has(p.id) && p.trigger.type === 'scheduled_pipeline'));
    expect(scheduled).toMatchObject({ trigger: { actor: { login: 'gyre' } }, vcs: { branch: 'main' } });
    const ran = await g.waitForPipeline(scheduled.id);
    expect(ran.workflows.map((w) => w.name)).toEqual(['hourly']);
  });
});

async function waitFor<T>(fn: () => Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await fn();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 50));
  }
}
