import { startTestGyre, type TestGyre } from '../support/gyre';

/**
 * The `insights` role on its own clock: a pipeline that runs and ends shows up in the insights API
 * within a pass (GYRE_INSIGHTS_INTERVAL_MS), with its workflow, its job, its duration and its
 * branch.
 */

const CONFIG = `version: 2.1
jobs:
  hello:
    docker: [{ image: cimg/base:stable }]
    steps:
      - run: echo hello
workflows:
  main:
    jobs: [hello]
`;

describe('the insights role', () => {
  let g: TestGyre;
  beforeAll(async () => {
    g = await startTestGyre({ env: { GYRE_RUNNER_SLOTS: '1', GYRE_INSIGHTS_INTERVAL_MS: '100' } });
    await g.addProject('gh/acme/live', { '.circleci/config.yml': CONFIG });
  }, 60_000);
  afterAll(() => g?.stop());

  it('rolls up a workflow soon after it ends', async () => {
    const { id } = await g.trigger('gh/acme/live');
    const { workflows, jobs } = await g.waitForPipeline(id);
    expect(workflows.map((w) => w.status)).toEqual(['success']);
    let items: any[] = [];
    for (const deadline = Date.now() + 15_000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 100))) {
      items = (await g.api('GET', '/api/v2/insights/gh/acme/live/workflows?reporting-window=last-24-hours')).items;
      if (items.length) break;
    }
    expect(items.map((i) => [i.name, i.metrics.total_runs, i.metrics.successful_runs, i.metrics.success_rate])).toEqual([['main', 1, 1, 1]]);
    const runs = (await g.api('GET', '/api/v2/insights/gh/acme/live/workflows/main')).items;
    expect(runs.map((r: any) => [r.id, r.status, r.branch])).toEqual([[workflows[0].id, 'success', 'main']]);
    const expectedSecs = Math.round((Date.parse(workflows[0].stopped_at) - Date.parse(workflows[0].created_at)) / 1000);
    expect(runs[0].duration).toBe(expectedSecs);
    const job = (await g.api('GET', '/api/v2/insights/gh/acme/live/workflows/main/jobs?reporting-window=last-24-hours')).items;
    expect(job.map((j: any) => [j.name, j.metrics.total_runs, j.metrics.successful_runs])).toEqual([['hello', 1, 1]]);
    expect(job[0].window_start).toBe(new Date(jobs.hello.started_at).toISOString());
    expect((await g.api('GET', '/api/v2/insights/gh/acme/live/branches')).branches).toEqual(['main']);
  }, 60_000);
});
