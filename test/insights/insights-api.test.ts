import { randomUUID } from 'node:crypto';
import { createInsightsRollup } from '../../runtime/insights/rollup';
import { parseJUnit } from '../../runtime/output/junit';
import { checkAnswer } from '../support/circleci-spec';
import { flowStore, startTestGyre, type TestGyre } from '../support/gyre';

/**
 * The insights operations of API v2 over HTTP (runtime/insights/), on a known history written
 * straight into the tables the conductor and dispatcher write: workflows on the default branch and
 * a feature branch, failures later fixed, a canceled run, a rerun with a copied job and an
 * approval, queue times, an older run that only the 90-day window and the trends see, another
 * organisation's project. The `insights` role's rollup pass runs over it, then every operation must
 * answer the figures worked out by hand below, in the shape CircleCI's description gives (each
 * answer is validated against test/fixtures/circleci/circleci-api-v2.openapi.json). On PGlite
 * and, with DATABASE_URL, PostgreSQL.
 */

const H = 3_600_000;
const D = 24 * H;

interface JobSpec {
  readonly name: string;
  readonly status: string;
  /** Seconds in the queue, seconds it ran. */
  readonly q: number;
  readonly d: number;
  readonly type?: 'approval';
  readonly copied?: boolean;
}
interface RunSpec {
  readonly key: string;
  readonly workflow: string;
  readonly branch: string | null;
  readonly status: string;
  /** How long before the test's start the workflow was created, and how many seconds it took. */
  readonly ago: number;
  readonly d: number | null;
  readonly jobs: readonly JobSpec[];
  readonly rerunOf?: string;
}

const HISTORY: readonly RunSpec[] = [
  // build on main, the default branch: failed, failed, fixed (a rerun of R2), canceled, failed, fixed.
  { key: 'R1', workflow: 'build', branch: 'main', status: 'failed', ago: 6 * D, d: 100, jobs: [{ name: 'compile', status: 'success', q: 5, d: 40 }, { name: 'test', status: 'failed', q: 10, d: 50 }] },
  { key: 'R2', workflow: 'build', branch: 'main', status: 'failed', ago: 5 * D, d: 120, jobs: [{ name: 'compile', status: 'success', q: 3, d: 45 }, { name: 'test', status: 'failed', q: 2, d: 60 }] },
  {
    key: 'R3',
    workflow: 'build',
    branch: 'main',
    status: 'success',
    ago: 4 * D,
    d: 200,
    rerunOf: 'R2',
    // The rerun copied compile (it did not run again) and waited on an approval: neither is a run of a job.
    jobs: [{ name: 'compile', status: 'success', q: 0, d: 45, copied: true }, { name: 'hold', status: 'success', q: 0, d: 3000, type: 'approval' }, { name: 'test', status: 'success', q: 4, d: 100 }],
  },
  { key: 'R4', workflow: 'build', branch: 'main', status: 'canceled', ago: 3 * D, d: 80, jobs: [{ name: 'compile', status: 'canceled', q: 20, d: 30 }] },
  { key: 'R5', workflow: 'build', branch: 'main', status: 'failed', ago: 2 * D, d: 90, jobs: [{ name: 'compile', status: 'infrastructure_fail', q: 1, d: 35 }] },
  { key: 'R6', workflow: 'build', branch: 'main', status: 'success', ago: 2 * H, d: 110, jobs: [{ name: 'compile', status: 'success', q: 6, d: 42 }, { name: 'test', status: 'success', q: 8, d: 55 }] },
  // build on a feature branch: failed, then fixed.
  { key: 'F1', workflow: 'build', branch: 'feat/x', status: 'failed', ago: 3 * D, d: 300, jobs: [{ name: 'compile', status: 'success', q: 2, d: 41 }, { name: 'test', status: 'timedout', q: 2, d: 200 }] },
  { key: 'F2', workflow: 'build', branch: 'feat/x', status: 'success', ago: 2.5 * D, d: 60, jobs: [{ name: 'compile', status: 'success', q: 1, d: 39 }, { name: 'test', status: 'success', q: 1, d: 15 }] },
  // Ten days ago: outside the last 7 days, inside their trend's previous window and the last 90 days.
  { key: 'O1', workflow: 'build', branch: 'main', status: 'success', ago: 10 * D, d: 500, jobs: [{ name: 'compile', status: 'success', q: 0, d: 100 }, { name: 'test', status: 'success', q: 0, d: 300 }] },
  { key: 'D1', workflow: 'deploy', branch: 'main', status: 'success', ago: 1 * D, d: 30, jobs: [{ name: 'ship', status: 'success', q: 7, d: 20 }] },
  // Still running: not a run yet.
  { key: 'X1', workflow: 'build', branch: 'main', status: 'running', ago: 1 * H, d: null, jobs: [{ name: 'compile', status: 'running', q: 1, d: 0 }] },
];

/** A JUnit report as jest-junit writes it: [name, seconds, 'pass' | 'fail' | 'skip']. */
const junit = (file: string, cases: readonly (readonly [string, number, 'pass' | 'fail' | 'skip'])[]) =>
  `<?xml version="1.0" encoding="UTF-8"?>\n<testsuites><testsuite name="${file}" file="${file}">` +
  cases
    .map(([name, time, result]) => `<testcase classname="${file}" name="${name}" time="${time}">${result === 'fail' ? '<failure message="expected 1 to be 2"/>' : result === 'skip' ? '<skipped/>' : ''}</testcase>`)
    .join('') +
  '</testsuite></testsuites>';
const MANY = Array.from({ length: 12 }, (_, i) => `case ${String(i).padStart(2, '0')}`);
/** Test results: two runs of ci on main (the second a rerun on the same revision), one on each of two feature branches. */
const TESTED_RUNS = [
  {
    key: 'C1', branch: 'main', status: 'failed', ago: 2 * D, revision: 'aaa111',
    tests: {
      unit: junit('src/math.test.ts', [['adds', 0.5, 'pass'], ['divides', 2.0, 'fail'], ['rounds', 0.1, 'fail'], ['someday', 0, 'skip']]),
      lint: junit('style', [['style', 3.0, 'pass']]),
    },
  },
  {
    key: 'C2', branch: 'main', status: 'failed', ago: 1 * D, revision: 'aaa111',
    tests: {
      unit: junit('src/math.test.ts', [['adds', 0.7, 'pass'], ['divides', 4.0, 'pass'], ['rounds', 0.3, 'fail'], ['someday', 0, 'skip']]),
      lint: junit('style', [['style', 1.0, 'pass']]),
    },
  },
  { key: 'C3', branch: 'feat/y', status: 'failed', ago: 20 * H, revision: 'bbb222', tests: { unit: junit('src/math.test.ts', [['adds', 9.0, 'fail']]) } },
  { key: 'C4', branch: 'feat/many', status: 'failed', ago: 10 * H, revision: 'ccc333', tests: { unit: junit('src/many.test.ts', MANY.map((n) => [n, 50, 'fail'] as const)) } },
] as const;

describe.each(flowStore())('insights over the API (%s)', (store) => {
  let g: TestGyre;
  let T: number;
  const ids: Record<string, string> = {};
  const stoppedAt: Record<string, number> = {};
  const tokens: Record<string, string> = {};
  let pipelineNumber = 0;

  /** GET as the admin (or another user), checking every 2xx answer against CircleCI's description. */
  const get = async (path: string, who?: string) => {
    const res = await g.raw('GET', path, who ? { headers: { 'Circle-Token': tokens[who] } } : undefined);
    const violation = checkAnswer('GET', path, res.status, res.body);
    if (violation) throw new Error(`${violation.request} (${violation.operation}): ${violation.problems.join('; ')}`);
    return res;
  };
  const ok = async (path: string) => {
    const res = await get(path);
    if (res.status !== 200) throw new Error(`GET ${path} → ${res.status}: ${res.text}`);
    return res.body;
  };

  async function insertRun(slug: string, run: RunSpec): Promise<void> {
    const [{ id: projectId }] = await g.gyre.store.query<{ id: string }>('SELECT id FROM projects WHERE slug = $1', [slug]);
    const pipelineId = randomUUID();
    const workflowId = randomUUID();
    ids[run.key] = workflowId;
    const created = new Date(T - run.ago);
    const stopped = run.d === null ? null : new Date(created.getTime() + run.d * 1000);
    if (stopped) stoppedAt[run.key] = stopped.getTime();
    await g.gyre.store.query(`INSERT INTO pipelines (id, project_id, number, state, trigger_type, branch, created_at) VALUES ($1, $2, $3, 'created', 'api', $4, $5)`, [
      pipelineId,
      projectId,
      ++pipelineNumber,
      run.branch,
      created,
    ]);
    await g.gyre.store.query(`INSERT INTO workflows (id, pipeline_id, name, status, created_at, stopped_at, rerun_of) VALUES ($1, $2, $3, $4, $5, $6, $7)`, [
      workflowId,
      pipelineId,
      run.workflow,
      run.status,
      created,
      stopped,
      run.rerunOf ? ids[run.rerunOf] : null,
    ]);
    for (const [i, job] of run.jobs.entries()) {
      const queued = new Date(created.getTime() + 1000);
      const started = new Date(queued.getTime() + job.q * 1000);
      const copiedFrom = job.copied ? (await g.gyre.store.query<{ id: string }>(`SELECT id FROM jobs WHERE workflow_id = $1 AND name = $2`, [ids[run.rerunOf!], job.name]))[0].id : null;
      await g.gyre.store.query(
        `INSERT INTO jobs (id, workflow_id, project_id, name, type, status, position, queued_at, started_at, stopped_at, copied_from) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
        [randomUUID(), workflowId, projectId, job.name, job.type ?? 'build', job.status, i, job.type ? null : queued, started, run.d === null ? null : new Date(started.getTime() + job.d * 1000), copiedFrom],
      );
    }
  }

  const rollUp = () => createInsightsRollup({ store: g.gyre.store }).pass();

  beforeAll(async () => {
    g = await startTestGyre({ store, env: { GYRE_RUNNER_SLOTS: '0', GYRE_INSIGHTS_INTERVAL_MS: '3600000' } });
    await g.addProject('gh/acme/app', { '.circleci/config.yml': 'version: 2.1\n' });
    await g.addProject('gh/acme/empty', { '.circleci/config.yml': 'version: 2.1\n' });
    await g.addProject('gh/rival/thing', { '.circleci/config.yml': 'version: 2.1\n' });
    await g.addProject('gh/lab/suite', { '.circleci/config.yml': 'version: 2.1\n' });
    T = Math.floor(Date.now() / 1000) * 1000;
    for (const run of HISTORY) await insertRun('gh/acme/app', run);
    await insertRun('gh/rival/thing', { key: 'Z1', workflow: 'build', branch: 'main', status: 'failed', ago: 1 * D, d: 999, jobs: [] });
    // 105 runs of a nightly workflow, for the pages of the runs list.
    for (let i = 0; i < 105; i++) await insertRun('gh/acme/app', { key: `N${i}`, workflow: 'nightly', branch: 'main', status: 'success', ago: 20 * D + i * H, d: 10 + i, jobs: [] });
    // Workflows whose jobs stored test results, in a project of another organisation.
    for (const run of TESTED_RUNS) {
      const jobs = Object.keys(run.tests).map((name) => ({ name, status: name === 'unit' ? 'failed' : 'success', q: 1, d: 30 }));
      await insertRun('gh/lab/suite', { key: run.key, workflow: 'ci', branch: run.branch, status: run.status, ago: run.ago, d: 60, jobs });
      for (const [job, xml] of Object.entries(run.tests)) {
        const [{ id: jobId, project_id: projectId }] = await g.gyre.store.query<{ id: string; project_id: string }>('SELECT id, project_id FROM jobs WHERE workflow_id = $1 AND name = $2', [ids[run.key], job]);
        // What store_test_results keeps (runtime/output/output-service.ts): one row per parsed test case.
        for (const c of parseJUnit(xml)) {
          await g.gyre.store.query(
            `INSERT INTO test_results (job_id, project_id, job_name, revision, node_index, name, classname, file, result, message, run_time) VALUES ($1, $2, $3, $4, 0, $5, $6, $7, $8, $9, $10)`,
            [jobId, projectId, job, run.revision, c.name, c.classname, c.file, c.result, c.message, c.run_time],
          );
        }
      }
    }
    expect(await rollUp()).toBe(HISTORY.length - 1 + 1 + 105 + TESTED_RUNS.length);

    for (const login of ['outsider', 'reader', 'project-only', 'lab-member']) tokens[login] = (await g.api('POST', '/api/v2/users', { login })).token;
    await g.api('PUT', '/api/v2/organization/gh/acme/members/reader', { role: 'viewer' });
    await g.api('PUT', '/api/v2/project/gh/acme/app/members/project-only', { role: 'read' });
    await g.api('PUT', '/api/v2/project/gh/lab/suite/members/lab-member', { role: 'read' });
  }, 120_000);
  afterAll(() => g?.stop());

  const since = (key: string) => new Date(T - HISTORY.find((r) => r.key === key)!.ago).toISOString();

  it("lists a project's workflows with their figures over the last 7 days on the default branch", async () => {
    const body = await ok('/api/v2/insights/gh/acme/app/workflows?reporting-window=last-7-days');
    expect(body.next_page_token).toBeNull();
    expect(body.items.map((i: any) => i.name)).toEqual(['build', 'deploy']);
    const [build, deploy] = body.items;
    // R1..R6: durations 100, 120, 200, 80, 90, 110; R3 and R6 succeeded, R4 was canceled.
    expect(build).toMatchObject({
      project_id: expect.any(String),
      window_start: since('R1'),
      window_end: new Date(stoppedAt.R6).toISOString(),
      metrics: {
        total_runs: 6,
        successful_runs: 2,
        failed_runs: 3,
        total_credits_used: 0,
        success_rate: 2 / 5,
        throughput: 6 / 7,
        // R1 failed until R3: 2 days and 100 s; R5 until R6: 2 days less 2 hours, and 20 s.
        total_recoveries: 2,
        mttr: (2 * 86400 + 100 + (2 * 86400 - 7200 + 20)) / 2,
        duration_metrics: { min: 80, max: 200, mean: 117, median: 105, p95: 180 },
        // Queue time of a run: its jobs' together (R3's copied compile did not queue): 15, 5, 4, 20, 1, 14.
        queue_time_metrics: { min: 1, max: 20, mean: 10, median: 10, p95: 19, total: 59 },
      },
    });
    expect(build.metrics.duration_metrics.standard_deviation).toBeCloseTo(39.44, 2);
    expect(deploy.metrics).toMatchObject({ total_runs: 1, successful_runs: 1, failed_runs: 0, success_rate: 1, mttr: null, total_recoveries: 0, duration_metrics: { min: 30, max: 30, mean: 30, median: 30, p95: 30, standard_deviation: 0 } });
  });

  it('adds up every branch with all-branches=true, and one branch by name', async () => {
    const all = (await ok('/api/v2/insights/gh/acme/app/workflows?reporting-window=last-7-days&all-branches=true')).items[0];
    // With F1 (300 s, failed) and F2 (60 s, fixed F1 half a day and 240 s later).
    expect(all.metrics).toMatchObject({
      total_runs: 8,
      successful_runs: 3,
      failed_runs: 4,
      success_rate: 3 / 7,
      total_recoveries: 3,
      mttr: (2 * 86400 + 100 + (2 * 86400 - 7200 + 20) + (43200 - 240)) / 3,
      duration_metrics: { min: 60, max: 300, mean: 133, median: 105, p95: 265 },
    });
    const feature = (await ok('/api/v2/insights/gh/acme/app/workflows?reporting-window=last-7-days&branch=feat%2Fx')).items;
    expect(feature.map((i: any) => [i.name, i.metrics.total_runs, i.metrics.mttr])).toEqual([['build', 2, 43200 - 240]]);
    // The 90-day window (the default) takes in O1 (500 s, ten days ago) and the nightly runs.
    const ninety = (await ok('/api/v2/insights/gh/acme/app/workflows')).items;
    expect(ninety.map((i: any) => [i.name, i.metrics.total_runs])).toEqual([['build', 7], ['deploy', 1], ['nightly', 105]]);
  });

  it("gives a workflow's jobs their figures: copies a rerun made and approvals are not runs", async () => {
    const body = await ok('/api/v2/insights/gh/acme/app/workflows/build/jobs?reporting-window=last-7-days');
    expect(body.next_page_token).toBeNull();
    expect(body.items.map((i: any) => i.name)).toEqual(['compile', 'test']);
    const [compile, test] = body.items;
    // compile: 40 ok, 45 ok, 30 canceled, 35 infrastructure failure, 42 ok.
    expect(compile.metrics).toMatchObject({
      total_runs: 5,
      successful_runs: 3,
      failed_runs: 1,
      success_rate: 3 / 4,
      throughput: 5 / 7,
      total_credits_used: 0,
      duration_metrics: { min: 30, max: 45, mean: 38, median: 40, p95: 44 },
      queue_time_metrics: { min: 1, max: 20, total: 35 },
    });
    // test: 50 failed, 60 failed, 100 ok, 55 ok.
    expect(test.metrics).toMatchObject({ total_runs: 4, successful_runs: 2, failed_runs: 2, success_rate: 0.5, duration_metrics: { min: 50, max: 100, mean: 66, median: 58, p95: 94 } });
    expect(test.window_start).toBe(new Date(T - 6 * D + 1000 + 10_000).toISOString());
    // job-name: a job's whole name or part of it.
    expect((await ok('/api/v2/insights/gh/acme/app/workflows/build/jobs?reporting-window=last-7-days&job-name=omp')).items.map((i: any) => i.name)).toEqual(['compile']);
    expect((await ok('/api/v2/insights/gh/acme/app/workflows/build/jobs?job-name=nothing-like-it')).items).toEqual([]);
  });

  it("summarises one workflow over 90 days, and its trend against the window before", async () => {
    const body = await ok('/api/v2/insights/gh/acme/app/workflows/build/summary');
    // R1..R6 and O1: durations 80, 90, 100, 110, 120, 200, 500.
    expect(body.metrics).toMatchObject({
      total_runs: 7,
      completed_runs: 7,
      successful_runs: 3,
      failed_runs: 3,
      success_rate: 0.5,
      total_credits_used: 0,
      mttr: (2 * 86400 + 100 + (2 * 86400 - 7200 + 20)) / 2,
      throughput: 7 / 90,
      window_start: since('O1'),
      duration_metrics: { min: 80, max: 500, mean: 171, median: 110, p95: 410 },
    });
    expect(body.trends).toEqual({ total_runs: 0, failed_runs: 0, success_rate: 0, p95_duration_secs: 0, median_duration_secs: 0, total_credits_used: 0, mttr: 0, throughput: 0 });
    expect(body.workflow_names).toEqual(['build', 'deploy', 'nightly']);

    // Over the last 7 days, the 7 before hold O1 alone (500 s, a success).
    const week = await ok('/api/v2/insights/gh/acme/app/workflows/build/summary?reporting-window=last-7-days');
    expect(week.trends.total_runs).toBeCloseTo(5);
    expect(week.trends.throughput).toBeCloseTo(5);
    expect(week.trends.success_rate).toBeCloseTo(-0.6);
    expect(week.trends.p95_duration_secs).toBeCloseTo((180 - 500) / 500);
    expect(week.trends.median_duration_secs).toBeCloseTo((105 - 500) / 500);
    expect(week.trends).toMatchObject({ failed_runs: 0, mttr: 0, total_credits_used: 0 });
  });

  it('lists the runs of a workflow newest first, with their branch, status, duration and queue time, in pages', async () => {
    const main = await ok('/api/v2/insights/gh/acme/app/workflows/build');
    expect(main.next_page_token).toBeNull();
    expect(main.items.map((r: any) => [r.id, r.status, r.duration, r.branch, r.queued_secs])).toEqual([
      [ids.R6, 'success', 110, 'main', 14],
      [ids.R5, 'failed', 90, 'main', 1],
      [ids.R4, 'canceled', 80, 'main', 20],
      [ids.R3, 'success', 200, 'main', 4],
      [ids.R2, 'failed', 120, 'main', 5],
      [ids.R1, 'failed', 100, 'main', 15],
      [ids.O1, 'success', 500, 'main', 0],
    ]);
    expect(main.items[0]).toMatchObject({ created_at: since('R6'), stopped_at: new Date(stoppedAt.R6).toISOString(), credits_used: 0, is_approval: false });
    const all = await ok('/api/v2/insights/gh/acme/app/workflows/build?all-branches=true');
    expect(all.items).toHaveLength(9);
    // start-date and end-date: runs that started within them.
    const range = await ok(`/api/v2/insights/gh/acme/app/workflows/build?start-date=${encodeURIComponent(new Date(T - 5.5 * D).toISOString())}&end-date=${encodeURIComponent(new Date(T - 3.5 * D).toISOString())}`);
    expect(range.items.map((r: any) => r.id)).toEqual([ids.R3, ids.R2]);

    const first = await ok('/api/v2/insights/gh/acme/app/workflows/nightly');
    expect(first.items).toHaveLength(100);
    expect(first.next_page_token).toEqual(expect.any(String));
    const second = await ok(`/api/v2/insights/gh/acme/app/workflows/nightly?page-token=${first.next_page_token}`);
    expect(second.next_page_token).toBeNull();
    // The oldest five, oldest last, none twice.
    expect(second.items.map((r: any) => r.duration)).toEqual([110, 111, 112, 113, 114]);
    expect(new Set([...first.items, ...second.items].map((r: any) => r.id)).size).toBe(105);
  });

  it("gives each job's figures per day and per hour", async () => {
    /** What the history says per (bucket, job) on main, worked out independently of the rollup. */
    const expected = (bucket: number, from: number, to = T) => {
      const out = new Map<string, number[]>();
      for (const run of HISTORY.filter((r) => r.workflow === 'build' && r.branch === 'main' && r.d !== null)) {
        for (const job of run.jobs.filter((j) => !j.copied && !j.type)) {
          const started = T - run.ago + 1000 + job.q * 1000;
          if (started < from || started >= to) continue;
          const key = `${new Date(Math.floor(started / bucket) * bucket).toISOString()} ${job.name}`;
          out.set(key, [...(out.get(key) ?? []), job.d]);
        }
      }
      return [...out.entries()].sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, durations]) => [k, durations.length, Math.min(...durations), Math.max(...durations)]);
    };
    const daily = await ok('/api/v2/insights/time-series/gh/acme/app/workflows/build/jobs');
    expect(daily.next_page_token).toBeNull();
    expect(daily.items.map((i: any) => [`${i.timestamp} ${i.name}`, i.metrics.total_runs, i.metrics.duration_metrics.min, i.metrics.duration_metrics.max])).toEqual(expected(D, T - 90 * D));
    expect(daily.items.every((i: any) => i.metrics.throughput === i.metrics.total_runs && i.metrics.total_credits_used === 0)).toBe(true);
    const from = new Date(T - 30 * H).toISOString();
    const hourly = await ok(`/api/v2/insights/time-series/gh/acme/app/workflows/build/jobs?granularity=hourly&start-date=${from}`);
    expect(hourly.items.map((i: any) => [`${i.timestamp} ${i.name}`, i.metrics.total_runs, i.metrics.duration_metrics.min, i.metrics.duration_metrics.max])).toEqual(expected(H, T - 30 * H));
    // R6 alone: its two jobs, each in the hour it started, 24 runs a day at that rate.
    expect(hourly.items.map((i: any) => [i.name, i.metrics.throughput])).toEqual([
      ['compile', 24],
      ['test', 24],
    ]);
  });

  it('lists the branches of a project and of one workflow', async () => {
    const body = await ok('/api/v2/insights/gh/acme/app/branches');
    expect(body).toEqual({ org_id: expect.any(String), project_id: (await g.api('GET', '/api/v2/project/gh/acme/app')).id, branches: ['feat/x', 'main'] });
    expect((await ok('/api/v2/insights/gh/acme/app/branches?workflow-name=deploy')).branches).toEqual(['main']);
  });

  describe('test metrics of a workflow, from the JUnit results its jobs stored', () => {
    const metrics = (query = '', who?: string) => get(`/api/v2/insights/gh/lab/suite/workflows/ci/test-metrics${query}`, who);


    it('counts the tests of each run on the default branch, newest first, and lists the most failed and slowest tests', async () => {
      const res = await metrics();
      expect(res.status).toBe(200);
      const body = res.body;
      const [first, second] = [TESTED_RUNS[0], TESTED_RUNS[1]].map((r) => ids[r.key]);
      expect(body.test_runs).toEqual([
        { pipeline_number: expect.any(Number), workflow_id: second, success_rate: 3 / 4, test_counts: { error: 0, failure: 1, skipped: 1, success: 3, total: 5 } },
        { pipeline_number: expect.any(Number), workflow_id: first, success_rate: 2 / 4, test_counts: { error: 0, failure: 2, skipped: 1, success: 2, total: 5 } },
      ]);
      expect(body.test_runs[0].pipeline_number).toBe(body.test_runs[1].pipeline_number + 1);
      expect(body).toMatchObject({ total_test_runs: 10, average_test_count: 5, most_failed_tests_extra: 0, slowest_tests_extra: 0 });
      // rounds failed both times; divides failed once and passed on the same revision: flaky.
      expect(body.most_failed_tests).toEqual([
        { test_name: 'rounds', classname: 'src/math.test.ts', file: 'src/math.test.ts', source: '', job_name: 'unit', total_runs: 2, failed_runs: 2, p95_duration: 0.29, flaky: false },
        { test_name: 'divides', classname: 'src/math.test.ts', file: 'src/math.test.ts', source: '', job_name: 'unit', total_runs: 2, failed_runs: 1, p95_duration: 3.9, flaky: true },
      ]);
      // p95 between the two runs' times (2 and 4 s: 3.9); the skipped test never ran, so it is in neither list.
      expect(body.slowest_tests.map((t: any) => [t.job_name, t.test_name, t.p95_duration, t.total_runs, t.failed_runs])).toEqual([
        ['unit', 'divides', 3.9, 2, 1],
        ['lint', 'style', 2.9, 2, 0],
        ['unit', 'adds', 0.69, 2, 0],
        ['unit', 'rounds', 0.29, 2, 2],
      ]);
    });

    it('takes one branch by name, or every branch, and keeps the lists to ten with the count of ties left out', async () => {
      const feature = (await metrics('?branch=feat%2Fy')).body;
      expect(feature.test_runs.map((r: any) => [r.workflow_id, r.test_counts.total, r.success_rate])).toEqual([[ids.C3, 1, 0]]);
      expect(feature.most_failed_tests.map((t: any) => [t.test_name, t.failed_runs, t.p95_duration])).toEqual([['adds', 1, 9]]);

      const crowded = (await metrics('?branch=feat%2Fmany')).body;
      expect(crowded.most_failed_tests.map((t: any) => t.test_name)).toEqual(MANY.slice(0, 10));
      expect([crowded.most_failed_tests_extra, crowded.slowest_tests.length, crowded.slowest_tests_extra]).toEqual([2, 10, 2]);

      const all = (await metrics('?all-branches=true')).body;
      expect(all.test_runs.map((r: any) => r.workflow_id)).toEqual([ids.C4, ids.C3, ids.C2, ids.C1]);
      expect([all.total_test_runs, all.average_test_count]).toEqual([10 + 1 + 12, Math.round(23 / 4)]);
      // rounds (2 failures), then the twelve that failed every run before divides and adds (once each, in 2 and 3 runs).
      expect(all.most_failed_tests.map((t: any) => t.test_name)).toEqual(['rounds', ...MANY.slice(0, 9)]);
      expect(all.most_failed_tests_extra).toBe(3 + 2);
      expect(all.slowest_tests[0]).toMatchObject({ test_name: 'case 00', p95_duration: 50 });

      // A workflow without stored tests, or with no runs at all, answers empty figures.
      for (const path of ['/api/v2/insights/gh/acme/app/workflows/build/test-metrics', '/api/v2/insights/gh/lab/suite/workflows/nothing/test-metrics']) {
        expect((await ok(path))).toEqual({ average_test_count: 0, most_failed_tests: [], most_failed_tests_extra: 0, slowest_tests: [], slowest_tests_extra: 0, total_test_runs: 0, test_runs: [] });
      }
      const both = await metrics('?branch=main&all-branches=true');
      expect([both.status, both.body.message]).toEqual([400, expect.stringMatching(/either branch or all-branches/)]);
    });

    it("answers a member of another project 404, as for a project that does not exist, and the project's member its figures", async () => {
      for (const who of ['outsider', 'project-only', 'reader']) {
        const res = await metrics('?all-branches=true', who);
        expect([who, res.status, res.body.message]).toEqual([who, 404, 'project not found: gh/lab/suite']);
      }
      const member = await metrics('?all-branches=true', 'lab-member');
      expect([member.status, member.body.total_test_runs]).toEqual([200, 23]);
      // The lab member reads nothing of acme's either.
      expect((await get('/api/v2/insights/gh/acme/app/workflows/build/test-metrics', 'lab-member')).status).toBe(404);
      expect((await fetch(`${g.url}/api/v2/insights/gh/lab/suite/workflows/ci/test-metrics`)).status).toBe(401);
    });
  });

  it("summarises a project's page: the project, each workflow, each workflow on each branch, with trends", async () => {
    const body = await ok('/api/v2/insights/pages/gh/acme/app/summary?reporting-window=last-7-days');
    // 9 runs in the last 7 days (build on main 6, on feat/x 2, deploy 1), 1090 s, 4 of 8 not canceled succeeded; before them, O1.
    expect(body.project_data.metrics).toEqual({ total_runs: 9, total_duration_secs: 1090, total_credits_used: 0, success_rate: 0.5, throughput: 9 / 7 });
    expect(body.project_data.trends.total_runs).toBeCloseTo(8);
    expect(body.project_data.trends.total_duration_secs).toBeCloseTo((1090 - 500) / 500);
    expect(body.project_data.trends.success_rate).toBeCloseTo(-0.5);
    expect(body.project_workflow_data.map((w: any) => [w.workflow_name, w.metrics])).toEqual([
      ['build', { total_credits_used: 0, p95_duration_secs: 265, total_runs: 8, success_rate: 3 / 7 }],
      ['deploy', { total_credits_used: 0, p95_duration_secs: 30, total_runs: 1, success_rate: 1 }],
    ]);
    expect(body.project_workflow_data[0].trends.total_runs).toBeCloseTo(7);
    expect(body.project_workflow_data[1].trends).toEqual({ total_credits_used: 0, p95_duration_secs: 0, total_runs: 0, success_rate: 0 });
    expect(body.project_workflow_branch_data.map((w: any) => [w.workflow_name, w.branch, w.metrics.total_runs, w.metrics.p95_duration_secs, w.metrics.success_rate])).toEqual([
      ['build', 'feat/x', 2, 288, 0.5],
      ['build', 'main', 6, 180, 0.4],
      ['deploy', 'main', 1, 30, 1],
    ]);
    expect(body.all_branches).toEqual(['feat/x', 'main']);
    expect(body.all_workflows).toEqual(['build', 'deploy']);

    const narrowed = await ok('/api/v2/insights/pages/gh/acme/app/summary?reporting-window=last-7-days&branches=main&workflow-names=build');
    expect(narrowed.project_workflow_data.map((w: any) => w.workflow_name)).toEqual(['build']);
    expect(narrowed.project_workflow_branch_data.map((w: any) => [w.workflow_name, w.branch])).toEqual([['build', 'main']]);
  });

  it("summarises an organisation's projects, and none of another organisation's", async () => {
    const body = await ok('/api/v2/insights/gh/acme/summary?reporting-window=last-7-days');
    expect(body.org_data.metrics).toEqual({ total_runs: 9, total_duration_secs: 1090, total_credits_used: 0, success_rate: 0.5, throughput: 9 / 7 });
    expect(body.org_project_data.map((p: any) => [p.project_name, p.metrics])).toEqual([['app', { total_credits_used: 0, total_duration_secs: 1090, total_runs: 9, success_rate: 0.5 }]]);
    expect(body.all_projects).toEqual(['app', 'empty']);
    expect((await ok('/api/v2/insights/gh/acme/summary?reporting-window=last-7-days&project-names=empty')).org_data.metrics.total_runs).toBe(0);
    expect((await ok('/api/v2/insights/gh/rival/summary?reporting-window=last-7-days')).org_data.metrics).toMatchObject({ total_runs: 1, total_duration_secs: 999, success_rate: 0 });
  });

  it('counts a run once, however often the rollup passes, and takes in workflows that end later', async () => {
    expect(await rollUp()).toBe(0);
    const before = (await ok('/api/v2/insights/gh/acme/app/workflows?reporting-window=last-24-hours')).items;
    expect(before.map((i: any) => [i.name, i.metrics.total_runs])).toEqual([['build', 1]]);
    // X1 ends now (a success after R6's success: no recovery), and two passes race for it.
    await g.gyre.store.query(`UPDATE workflows SET status = 'success', stopped_at = now() WHERE id = $1`, [ids.X1]);
    await g.gyre.store.query(`UPDATE jobs SET status = 'success', stopped_at = now() WHERE workflow_id = $1`, [ids.X1]);
    const passes = await Promise.all([rollUp(), rollUp()]);
    expect(passes[0] + passes[1]).toBe(1);
    const after = (await ok('/api/v2/insights/gh/acme/app/workflows?reporting-window=last-24-hours')).items;
    // R6's recovery (from R5) is still the only one: X1 followed a success.
    expect(after.map((i: any) => [i.name, i.metrics.total_runs, i.metrics.successful_runs, i.metrics.total_recoveries])).toEqual([['build', 2, 2, 1]]);
    expect(before[0].metrics.total_recoveries).toBe(1);
    expect((await ok('/api/v2/insights/gh/acme/app/workflows/build/jobs?reporting-window=last-24-hours')).items.map((i: any) => [i.name, i.metrics.total_runs])).toEqual([
      ['compile', 2],
      ['test', 1],
    ]);
  });

  it('refuses bad query parameters naming the parameter and what is allowed', async () => {
    const bad = async (path: string, message: RegExp) => {
      const res = await get(path);
      expect(res.status).toBe(400);
      expect(res.body.message).toMatch(message);
    };
    await bad('/api/v2/insights/gh/acme/app/workflows?reporting-window=last-year', /reporting-window must be one of "last-7-days", "last-90-days", "last-24-hours", "last-30-days", "last-60-days"/);
    await bad('/api/v2/insights/pages/gh/acme/app/summary?reporting-window=forever', /reporting-window must be one of/);
    await bad('/api/v2/insights/gh/acme/summary?reporting-window=1', /reporting-window must be one of/);
    await bad('/api/v2/insights/gh/acme/app/workflows?branch=main&all-branches=true', /either branch or all-branches/);
    await bad('/api/v2/insights/gh/acme/app/workflows?all-branches=perhaps', /query.all-branches must be true or false/);
    await bad('/api/v2/insights/gh/acme/app/workflows/build?end-date=2026-01-01T00:00:00Z', /end-date needs a start-date/);
    await bad('/api/v2/insights/gh/acme/app/workflows/build?start-date=yesterday', /start-date 'yesterday' is not a date-time/);
    await bad('/api/v2/insights/gh/acme/app/workflows/build?start-date=2025-01-01T00:00:00Z&end-date=2025-06-01T00:00:00Z', /end-date may be at most 90 days after start-date/);
    await bad('/api/v2/insights/gh/acme/app/workflows/build?start-date=2025-06-01T00:00:00Z&end-date=2025-01-01T00:00:00Z', /start-date .* must be before end-date/);
    await bad('/api/v2/insights/time-series/gh/acme/app/workflows/build/jobs?granularity=weekly', /granularity must be one of "daily", "hourly"/);
    await bad('/api/v2/insights/gh/acme/app/workflows?page-token=forged', /page-token 'forged' is not a token this API gave out/);
    await bad(`/api/v2/insights/gh/acme/app/workflows/build?page-token=${Buffer.from(JSON.stringify({ at: 'x', id: "'; DROP TABLE jobs; --" })).toString('base64url')}`, /page-token/);
    await bad(`/api/v2/insights/gh/acme/app/workflows/build/jobs?job-name=${'x'.repeat(5000)}`, /job-name/);
  });

  it('answers hostile names as names: nothing matches, nothing breaks', async () => {
    for (const name of ["build' OR '1'='1", '%', '_', 'build\\', '../build', '*']) {
      const runs = await ok(`/api/v2/insights/gh/acme/app/workflows/${encodeURIComponent(name)}`);
      expect(runs.items).toEqual([]);
      expect((await ok(`/api/v2/insights/gh/acme/app/workflows/${encodeURIComponent(name)}/summary`)).metrics.total_runs).toBe(0);
      expect((await ok(`/api/v2/insights/gh/lab/suite/workflows/${encodeURIComponent(name)}/test-metrics?all-branches=true`)).test_runs).toEqual([]);
    }
    // '*' is the rollup's key for all branches: asked for as a branch by name, it is no branch.
    expect((await ok('/api/v2/insights/gh/acme/app/workflows?branch=*')).items).toEqual([]);
    expect((await ok('/api/v2/insights/gh/acme/app/workflows/build/jobs?branch=*')).items).toEqual([]);
    expect((await ok('/api/v2/insights/gh/lab/suite/workflows/ci/test-metrics?branch=*')).total_test_runs).toBe(0);
  });

  it('answers a user without access to the project 404, as for a project that does not exist; org summaries need an organisation role', async () => {
    const paths = [
      '/api/v2/insights/gh/acme/app/workflows',
      '/api/v2/insights/gh/acme/app/workflows/build',
      '/api/v2/insights/gh/acme/app/workflows/build/jobs',
      '/api/v2/insights/gh/acme/app/workflows/build/summary',
      '/api/v2/insights/gh/acme/app/workflows/build/test-metrics',
      '/api/v2/insights/time-series/gh/acme/app/workflows/build/jobs',
      '/api/v2/insights/gh/acme/app/branches',
      '/api/v2/insights/pages/gh/acme/app/summary',
    ];
    for (const path of paths) {
      const outsider = await get(path, 'outsider');
      expect([path, outsider.status, outsider.body.message]).toEqual([path, 404, 'project not found: gh/acme/app']);
      expect((await get(path.replace('/app/', '/nobody/'))).body.message).toBe('project not found: gh/acme/nobody');
      expect([path, (await get(path, 'reader')).status]).toEqual([path, 200]);
      expect([path, (await get(path, 'project-only')).status]).toEqual([path, 200]);
    }
    expect((await get('/api/v2/insights/gh/acme/summary', 'outsider')).status).toBe(404);
    expect((await get('/api/v2/insights/gh/acme/summary', 'project-only')).status).toBe(403);
    expect((await get('/api/v2/insights/gh/acme/summary', 'reader')).status).toBe(200);
    expect((await get('/api/v2/insights/gh/nobody/summary')).status).toBe(404);
    const anonymous = await fetch(`${g.url}/api/v2/insights/gh/acme/app/workflows`);
    expect(anonymous.status).toBe(401);
  });
});
