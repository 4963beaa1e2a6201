import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { compileConfig } from '../../runtime/config/compiler';
import type { Principal } from '../../runtime/domain/principal';
import { createGitForge } from '../../runtime/forge/git-forge';
import { createLogger } from '../../runtime/logger';
import { createProjects, type Project } from '../../runtime/projects/projects';
import { createCron } from '../../runtime/schedules/cron';
import { createSchedules } from '../../runtime/schedules/schedules';
import { scheduledWorkflowsOfProject } from '../../runtime/schedules/sql/scheduled-workflows';
import type { Store } from '../../runtime/store/store';
import { createTriggers, type Triggers } from '../../runtime/triggers/triggers';
import { flowStore, openTestStore } from '../support/database';
import { makeGitRepo } from '../support/gyre';

/**
 * The cron role's passes against a real store and git, with the clock in the test's hands: a tick
 * fires once with the schedule's parameters and actor, missed ticks follow the catch-up policy,
 * a claim left by a stopped process is taken over without firing twice, and scheduled workflows
 * are read from the default branch's compiled config.
 */

const CONFIG = `version: 2.1
parameters:
  deploy:
    type: boolean
    default: false
jobs:
  build:
    docker: [{ image: cimg/base:stable }]
    steps: [{ run: echo build }]
workflows:
  main:
    jobs: [build]
  hourly:
    triggers:
      - schedule:
          cron: "0 * * * *"
          filters:
            branches:
              only: [main, release, /feature-.*/]
    jobs: [build]
  nightly:
    triggers:
      - schedule:
          cron: "30 2 * * *"
          filters:
            branches:
              only: main
    jobs: [build]
`;

const EVERY_DAY = ['MON', 'TUE', 'WED', 'THU', 'FRI', 'SAT', 'SUN'];
const ALL_HOURS = Array.from({ length: 24 }, (_, h) => h);

describe.each(flowStore())('cron passes (%s)', (kind) => {
  let store: Store;
  let drop: (() => Promise<void>) | undefined;
  let triggers: Triggers;
  let project: Project;
  let cacheDir: string;
  let repo: string;
  let clock = new Date('2026-01-05T10:00:30Z');
  const now = () => clock;
  const log = createLogger({ level: 'silent' });
  const user: Principal = { userId: randomUUID(), login: 'night-owl', isAdmin: false };

  beforeAll(async () => {
    ({ store, drop } = await openTestStore(kind));
    cacheDir = mkdtempSync(join(tmpdir(), 'gyre-cron-git-'));
    const forge = createGitForge({ cacheDir });
    const projects = createProjects({ store, forge });
    triggers = createTriggers({ store, forge, projects });
    repo = makeGitRepo({ '.circleci/config.yml': CONFIG });
    project = await projects.add({ org: 'acme', name: 'app', repoUrl: repo });
    await store.query('INSERT INTO users (id, login, name) VALUES ($1, $2, $3)', [user.userId, user.login, 'Night Owl']);
  });
  afterAll(async () => {
    await store.close();
    await drop?.();
    rmSync(cacheDir, { recursive: true, force: true });
    rmSync(repo, { recursive: true, force: true });
  });
  beforeEach(async () => {
    await store.query('DELETE FROM schedules');
  });

  const pipelinesOf = (scheduleId: string) =>
    store.query<{ id: string; branch: string; tag: string | null; parameters: Record<string, unknown>; actor_id: string | null; trigger_type: string; fire_at: Date }>(
      `SELECT p.id, p.branch, p.tag, p.parameters, p.actor_id, p.trigger_type, t.fire_at
         FROM schedule_ticks t JOIN pipelines p ON p.id = t.pipeline_id WHERE t.schedule_id = $1 ORDER BY t.fire_at`,
      [scheduleId],
    );

  it('fires a due tick once, as the schedule actor, with its parameters', async () => {
    const schedules = createSchedules({ store, now });
    const cron = createCron({ store, triggers, log, now });
    clock = new Date('2026-01-05T10:00:30Z');
    const made = await schedules.create(project, { name: 'hourly deploy', timetable: { 'per-hour': 1, 'hours-of-day': ALL_HOURS, 'days-of-week': EVERY_DAY }, 'attribution-actor': 'current', parameters: { branch: 'main', deploy: true } }, user);

    clock = new Date('2026-01-05T10:59:59Z');
    expect((await cron.pass()).fired).toEqual([]);
    clock = new Date('2026-01-05T11:00:04Z');
    const pass = await cron.pass();
    expect(pass.fired).toHaveLength(1);
    expect(pass.failed).toEqual([]);
    // Later passes, and a second cron process, find nothing more to fire for that tick.
    clock = new Date('2026-01-05T11:00:20Z');
    expect((await cron.pass()).fired).toEqual([]);
    expect((await createCron({ store, triggers, log, now }).pass()).fired).toEqual([]);

    const [pipeline, ...more] = await pipelinesOf(made.id);
    expect(more).toEqual([]);
    expect(pipeline).toMatchObject({ branch: 'main', tag: null, parameters: { deploy: true }, actor_id: user.userId, trigger_type: 'scheduled_pipeline', fire_at: new Date('2026-01-05T11:00:00Z') });
    const [audit] = await store.query<{ actor_login: string; actor_id: string; target_id: string; detail: Record<string, unknown> }>(`SELECT actor_login, actor_id, target_id, detail FROM audit_events WHERE action = 'schedule.fire' AND target_id = $1`, [pipeline.id]);
    expect(audit).toMatchObject({ actor_login: 'night-owl', actor_id: user.userId, detail: { schedule: made.id, schedule_name: 'hourly deploy', fire_at: '2026-01-05T11:00:00.000Z' } });
  });

  it('runs as no user when the actor is the system, and builds a tag when the parameters name one', async () => {
    const schedules = createSchedules({ store, now });
    const cron = createCron({ store, triggers, log, now });
    clock = new Date('2026-01-05T10:00:30Z');
    const missing = await schedules.create(project, { name: 'a tag', timetable: { 'per-hour': 1, 'hours-of-day': ALL_HOURS, 'days-of-week': EVERY_DAY }, 'attribution-actor': 'system', parameters: { tag: 'v-nope' } }, user);
    clock = new Date('2026-01-05T11:00:01Z');
    const pass = await cron.pass();
    // The tag does not exist: the tick fails with the reason, and is not tried again.
    expect(pass.failed).toEqual([expect.objectContaining({ source: { kind: 'schedule', id: missing.id }, error: expect.stringMatching(/v-nope/) })]);
    const [tick] = await store.query<{ state: string; error: string }>('SELECT state, error FROM schedule_ticks WHERE schedule_id = $1', [missing.id]);
    expect(tick).toMatchObject({ state: 'failed', error: expect.stringMatching(/tag 'v-nope' does not exist/) });

    const system = await schedules.create(project, { name: 'system', timetable: { 'per-hour': 1, 'hours-of-day': ALL_HOURS, 'days-of-week': EVERY_DAY }, 'attribution-actor': 'system', parameters: { branch: 'main' } }, user);
    expect(system.actor).toEqual({ id: '00000000-0000-0000-0000-000000000000', login: 'system-actor', name: 'Scheduled' });
    clock = new Date('2026-01-05T12:00:01Z');
    await cron.pass();
    expect(await pipelinesOf(system.id)).toEqual([expect.objectContaining({ actor_id: null, branch: 'main', parameters: {} })]);
  });

  it('after downtime, fires the latest tick missed within the hour once and skips older ones', async () => {
    const schedules = createSchedules({ store, now });
    const cron = createCron({ store, triggers, log, now });
    clock = new Date('2026-01-05T10:00:30Z');
    const quarter = await schedules.create(project, { name: 'quarterly', timetable: { 'per-hour': 4, 'hours-of-day': ALL_HOURS, 'days-of-week': EVERY_DAY }, 'attribution-actor': 'system', parameters: { branch: 'main' } }, user);
    const daily = await schedules.create(project, { name: 'daily', timetable: { 'per-hour': 1, 'hours-of-day': [3], 'days-of-week': EVERY_DAY }, 'attribution-actor': 'system', parameters: { branch: 'main' } }, user);

    // Gyre is down from 10:00:30 to 10:50: 10:15, 10:30 and 10:45 were missed.
    clock = new Date('2026-01-05T10:50:00Z');
    const back = await cron.pass();
    expect(back.fired.map((f) => f.fireAt.toISOString())).toEqual(['2026-01-05T10:45:00.000Z']);
    expect(back.skipped).toBe(2);
    clock = new Date('2026-01-05T11:00:02Z');
    await cron.pass();
    expect((await pipelinesOf(quarter.id)).map((p) => p.fire_at.toISOString())).toEqual(['2026-01-05T10:45:00.000Z', '2026-01-05T11:00:00.000Z']);

    // Down again until Wednesday 09:00: the daily 03:00 ticks of Tuesday and Wednesday are too old to run.
    clock = new Date('2026-01-07T09:00:00Z');
    const later = await cron.pass();
    expect(later.fired.filter((f) => f.source.id === daily.id)).toEqual([]);
    expect(await pipelinesOf(daily.id)).toEqual([]);
    const [row] = await store.query<{ next_fire_at: Date }>('SELECT next_fire_at FROM schedules WHERE id = $1', [daily.id]);
    expect(new Date(row.next_fire_at).toISOString()).toBe('2026-01-08T03:00:00.000Z');
  });

  it('fires a schedule on its time zone clock, once across the spring-forward night, with cron passes every minute', async () => {
    const schedules = createSchedules({ store, now });
    const cron = createCron({ store, triggers, log, now });
    clock = new Date('2026-03-28T12:00:00Z');
    // 02:00 and 02:30 in Berlin; on 2026-03-29 the clocks jump from 02:00 to 03:00.
    const made = await schedules.create(project, { name: 'berlin night', timetable: { 'per-hour': 2, 'hours-of-day': [2], 'days-of-week': EVERY_DAY, 'time-zone': 'Europe/Berlin' }, 'attribution-actor': 'system', parameters: { branch: 'main' } }, user);
    expect(made.timetable['time-zone']).toBe('Europe/Berlin');
    // A pass every minute from 23:00 UTC (midnight in Berlin) to 02:00 UTC (04:00 summer time).
    for (let t = Date.parse('2026-03-28T23:00:05Z'); t <= Date.parse('2026-03-29T02:00:05Z'); t += 60_000) {
      clock = new Date(t);
      await cron.pass();
    }
    // One run that night, at 03:00 summer time (01:00 UTC), not two and not none.
    expect((await pipelinesOf(made.id)).map((p) => p.fire_at.toISOString())).toEqual(['2026-03-29T01:00:00.000Z']);
    const [row] = await store.query<{ next_fire_at: Date }>('SELECT next_fire_at FROM schedules WHERE id = $1', [made.id]);
    // The next night is summer time: 02:00 in Berlin is 00:00 UTC.
    expect(new Date(row.next_fire_at).toISOString()).toBe('2026-03-30T00:00:00.000Z');
  });

  it('takes over a claim whose process stopped before firing, and the slow process cannot fire it too', async () => {
    const schedules = createSchedules({ store, now });
    clock = new Date('2026-01-05T10:00:30Z');
    const [{ before }] = await store.query<{ before: number }>('SELECT coalesce(max(number), 0)::int AS before FROM pipelines');
    const made = await schedules.create(project, { name: 'taken over', timetable: { 'per-hour': 1, 'hours-of-day': ALL_HOURS, 'days-of-week': EVERY_DAY }, 'attribution-actor': 'system', parameters: { branch: 'main' } }, user);
    // Process A claims the 11:00 tick, then hangs before its pipeline is created.
    let release!: () => void;
    const hung = new Promise<void>((resolve) => (release = resolve));
    const slow: Triggers = { trigger: async (request) => (await hung, triggers.trigger(request)), onCreated: triggers.onCreated };
    clock = new Date('2026-01-05T11:00:01Z');
    const passA = createCron({ store, triggers: slow, log, now }).pass();
    await until(async () => (await store.query(`SELECT 1 FROM schedule_ticks WHERE schedule_id = $1 AND state = 'claimed'`, [made.id])).length === 1);

    // Process B, after the claim timeout (5 minutes), fires it.
    clock = new Date('2026-01-05T11:06:00Z');
    const passB = await createCron({ store, triggers, log, now }).pass();
    expect(passB.fired).toEqual([expect.objectContaining({ source: { kind: 'schedule', id: made.id }, fireAt: new Date('2026-01-05T11:00:00Z') })]);

    // A wakes up: its pipeline is refused (the claim is no longer its own), and rolled back.
    release();
    const a = await passA;
    expect(a.fired).toEqual([]);
    expect(a.failed).toEqual([expect.objectContaining({ error: expect.stringMatching(/claimed by another process/) })]);
    expect(await pipelinesOf(made.id)).toHaveLength(1);
    const [{ count }] = await store.query<{ count: number }>('SELECT count(*)::int AS count FROM pipelines WHERE number > $1', [before]);
    expect(count).toBe(1);
  });

  it('reads scheduled workflows from the default branch compiled config and fires them on their branches', async () => {
    const cron = createCron({ store, triggers, log, now });
    clock = new Date('2026-01-05T10:00:30Z');
    // A push to main, compiled as the conductor would.
    const pushed = await triggers.trigger({ slug: project.slug, branch: 'main', type: 'webhook' });
    const compiled = await compileConfig(CONFIG, { trigger: { branch: 'main' } });
    if (!compiled.ok) throw new Error('the fixture config does not compile');
    await store.query('UPDATE pipelines SET config_compiled = $2 WHERE id = $1', [pushed.id, compiled.compiledYaml]);

    expect(await cron.readScheduledWorkflows()).toBe(1);
    expect(await cron.readScheduledWorkflows()).toBe(0);
    const rows = await scheduledWorkflowsOfProject(store, project.id);
    // `release` is named; /feature-.*/ lists no branch and does not match main.
    expect(rows.map((r) => [r.cron, r.branch, r.workflows, new Date(r.next_fire_at!).toISOString()])).toEqual([
      ['0 * * * *', 'main', ['hourly'], '2026-01-05T11:00:00.000Z'],
      ['0 * * * *', 'release', ['hourly'], '2026-01-05T11:00:00.000Z'],
      ['30 2 * * *', 'main', ['nightly'], '2026-01-06T02:30:00.000Z'],
    ]);

    clock = new Date('2026-01-05T11:00:03Z');
    const pass = await cron.pass();
    // `release` does not exist in the repository: that one fails, main's fires.
    expect(pass.fired).toHaveLength(1);
    expect(pass.failed).toEqual([expect.objectContaining({ error: expect.stringMatching(/branch 'release' does not exist/) })]);
    const [fired] = await store.query<{ branch: string; trigger_type: string; actor_id: string | null }>('SELECT branch, trigger_type, actor_id FROM pipelines WHERE id = $1', [pass.fired[0].pipelineId]);
    expect(fired).toEqual({ branch: 'main', trigger_type: 'schedule', actor_id: null });

    // A newer default-branch config without triggers removes them.
    const again = await triggers.trigger({ slug: project.slug, branch: 'main', type: 'webhook' });
    const plain = await compileConfig(CONFIG.replace(/ {2}hourly:[\s\S]*$/, ''), { trigger: { branch: 'main' } });
    if (!plain.ok) throw new Error('the plain config does not compile');
    await store.query('UPDATE pipelines SET config_compiled = $2 WHERE id = $1', [again.id, plain.compiledYaml]);
    expect(await cron.readScheduledWorkflows()).toBe(1);
    expect(await scheduledWorkflowsOfProject(store, project.id)).toEqual([]);
  });

  it('plans only the scheduled workflows of the cron that fired', async () => {
    const workflowsOf = async (pipeline: Record<string, unknown>) => {
      const result = await compileConfig(CONFIG, { trigger: { branch: 'main', pipeline } });
      if (!result.ok) throw new Error(JSON.stringify(result.problems));
      return result.plan.workflows.map((w) => w.name);
    };
    expect(await workflowsOf({ branch: 'main', triggerSource: 'schedule', scheduledWorkflowCron: '0 * * * *' })).toEqual(['hourly']);
    expect(await workflowsOf({ branch: 'main', triggerSource: 'schedule', scheduledWorkflowCron: '30 2 * * *' })).toEqual(['nightly']);
    // A scheduled pipeline of the v2 API runs the workflows without triggers, as a push does.
    expect(await workflowsOf({ branch: 'main', triggerSource: 'scheduled_pipeline', scheduleName: 'x' })).toEqual(['main']);
    expect(await workflowsOf({ branch: 'main', triggerSource: 'webhook' })).toEqual(['main']);
  });
});

async function until(check: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 10));
  }
}
