import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from 'pg';
import { createTestDatabase } from '../support/database';
import { makeGitRepo } from '../support/gyre';
import { apiCall, startServerProcess, until } from '../support/processes';

/**
 * Three `gyre server` processes on one PostgreSQL database, each running the cron role every
 * 100 ms: schedules that come due together each start exactly one pipeline, whichever process
 * claims them, with the schedule's parameters and actor.
 */

const TOKEN = 'schedule-test-token-0123456789';
const SCHEDULES = 6;
const CONFIG = `version: 2.1
parameters:
  n:
    type: integer
    default: 0
jobs:
  build:
    docker: [{ image: cimg/base:stable }]
    steps: [{ run: echo << pipeline.parameters.n >> }]
workflows:
  w:
    jobs: [build]
`;

const maybe = process.env.DATABASE_URL ? describe : describe.skip;

maybe('scheduled pipelines on PostgreSQL with three server processes', () => {
  const children: ChildProcess[] = [];
  const dirs: string[] = [];
  let db: { url: string; drop(): Promise<void> };
  let client: Client;
  let urls: string[] = [];

  beforeAll(async () => {
    db = await createTestDatabase();
    client = new Client({ connectionString: db.url });
    const keys = mkdtempSync(join(tmpdir(), 'gyre-cron-keys-'));
    dirs.push(keys);
    const envOf = () => {
      const dataDir = mkdtempSync(join(tmpdir(), 'gyre-cron-data-'));
      dirs.push(dataDir);
      return { DATABASE_URL: db.url, GYRE_DATA_DIR: dataDir, GYRE_ADMIN_TOKEN: TOKEN, GYRE_CRON_INTERVAL_MS: '100', GYRE_RUNNER_SLOTS: '1', GYRE_SECRETS_KEY_FILE: join(keys, 'keys') };
    };
    // All three start together (an advisory lock lets one of them apply the migrations).
    const results = await Promise.allSettled([startServerProcess(envOf()), startServerProcess(envOf()), startServerProcess(envOf())]);
    const started = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    children.push(...started.map((s) => s.child));
    const refused = results.find((r) => r.status === 'rejected');
    if (refused) throw (refused as PromiseRejectedResult).reason;
    urls = started.map((s) => s.url);
    await client.connect();
  }, 120_000);

  afterAll(async () => {
    await Promise.all(
      children.map(async (child) => {
        if (child.exitCode !== null || child.signalCode !== null) return;
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await exited;
      }),
    );
    await client?.end().catch(() => undefined);
    await db?.drop();
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  it('fires each due schedule exactly once, as its actor, with its parameters', async () => {
    const repo = makeGitRepo({ '.circleci/config.yml': CONFIG });
    dirs.push(repo);
    const api = (i: number, method: string, path: string, body?: unknown) => apiCall(urls[i % urls.length], TOKEN, method, path, body);
    await api(0, 'POST', '/api/v2/projects', { org: 'acme', name: 'cron', repo_url: repo });
    const me = await api(0, 'GET', '/api/v2/me');
    const ids: string[] = [];
    // One hour, read once from the database's clock, for the timetable and the tick made due below
    // (read twice, the two could differ when the hour turned mid-test). One hour only, so no
    // second tick comes due while the test looks for ticks fired twice.
    const { rows: [{ at }] } = await client.query<{ at: Date }>(`SELECT date_trunc('hour', now()) AS at`);
    for (let i = 0; i < SCHEDULES; i++) {
      const made = await api(i, 'POST', '/api/v2/project/gh/acme/cron/schedule', {
        name: `every hour ${i}`,
        timetable: { 'per-hour': 1, 'hours-of-day': [at.getUTCHours()], 'days-of-week': ['MON', 'TUE', 'WED', 'THU', 'FRI', 'SAT', 'SUN'] },
        'attribution-actor': i % 2 === 0 ? 'current' : 'system',
        parameters: { branch: 'main', n: i },
      });
      ids.push(made.id);
    }
    // All come due at once (their tick of this hour, as if missed): every process's next pass sees them.
    await client.query(`UPDATE schedules SET next_fire_at = $1`, [at]);
    await until('every schedule to fire', async () => (await client.query(`SELECT 1 FROM schedule_ticks WHERE state = 'fired'`)).rowCount === SCHEDULES, 30_000, 50);
    // Twenty more passes of each process: a tick fired twice would show by now.
    await new Promise((r) => setTimeout(r, 2000));

    const ticks = await client.query<{ schedule_id: string; state: string; pipeline_id: string }>('SELECT schedule_id, state, pipeline_id FROM schedule_ticks ORDER BY schedule_id');
    expect(ticks.rows.map((t) => t.state)).toEqual(Array(SCHEDULES).fill('fired'));
    expect(new Set(ticks.rows.map((t) => t.schedule_id))).toEqual(new Set(ids));
    const pipelines = await client.query<{ id: string; trigger_type: string; parameters: { n: number }; actor_id: string | null; branch: string }>(
      `SELECT id, trigger_type, parameters, actor_id, branch FROM pipelines ORDER BY (parameters->>'n')::int`,
    );
    expect(pipelines.rows).toHaveLength(SCHEDULES);
    expect(new Set(pipelines.rows.map((p) => p.id))).toEqual(new Set(ticks.rows.map((t) => t.pipeline_id)));
    pipelines.rows.forEach((p, i) => {
      expect(p).toMatchObject({ trigger_type: 'scheduled_pipeline', branch: 'main', parameters: { n: i }, actor_id: i % 2 === 0 ? me.id : null });
    });
    // And the API shows them as CircleCI does.
    const listed = (await api(1, 'GET', '/api/v2/project/gh/acme/cron/pipeline')).items;
    expect(listed.map((p: { trigger: { type: string } }) => p.trigger.type)).toEqual(Array(SCHEDULES).fill('scheduled_pipeline'));
  }, 60_000);
});
