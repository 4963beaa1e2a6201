import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { flowStore, startTestGyre, type TestGyre } from '../support/gyre';

/**
 * Reruns (`POST /workflow/{id}/rerun`) and job cancels (`POST /project/{slug}/job/{n}/cancel`,
 * `POST /jobs/{id}/cancel`) on a real Gyre with the shell executor: which jobs run again, which
 * keep their results, how a rerun links to its original, and how a canceled job stops.
 */

/** `flaky` passes once the file at `flag` says `pass`; it prints what `build` left in the workspace. */
const flakyConfig = (flag: string) => `version: 2.1
jobs:
  build:
    docker: [{ image: x }]
    steps:
      - run: mkdir -p ws && echo "built by job $CIRCLE_BUILD_NUM" > ws/built.txt
      - persist_to_workspace: { root: ws, paths: [built.txt] }
  lint:
    docker: [{ image: x }]
    steps:
      - run: echo linted
  flaky:
    docker: [{ image: x }]
    steps:
      - attach_workspace: { at: ws }
      - run:
          name: Check the flag
          command: cat ws/built.txt; test "$(cat ${flag})" = pass
  deploy:
    docker: [{ image: x }]
    steps:
      - run: echo deployed
workflows:
  main:
    jobs:
      - build
      - lint
      - flaky: { requires: [build] }
      - deploy: { requires: [flaky] }
`;

const SLOW = `version: 2.1
jobs:
  slow:
    docker: [{ image: x }]
    steps:
      - run: { name: Sleep, command: echo started; sleep 30; echo never printed }
  after:
    docker: [{ image: x }]
    steps:
      - run: echo after
  other:
    docker: [{ image: x }]
    steps:
      - run: echo other
workflows:
  w:
    jobs: [slow, other, { after: { requires: [slow] } }]
`;

/** `stuck` asks for a runner class no runner serves: it stays queued. */
const STUCK = `version: 2.1
jobs:
  stuck:
    docker: [{ image: x }]
    resource_class: acme/none
    steps:
      - run: echo never
  after1:
    docker: [{ image: x }]
    steps:
      - run: echo never
  after2:
    docker: [{ image: x }]
    steps:
      - run: echo never
workflows:
  w:
    jobs: [stuck, { after1: { requires: [stuck] } }, { after2: { requires: [stuck] } }]
`;

const TERMINAL = new Set(['success', 'failed', 'error', 'canceled', 'not_run', 'unauthorized']);
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const NO_SUCH_ID = '00000000-0000-4000-8000-000000000000';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe.each(flowStore())('reruns and job cancels on %s', (store) => {
  let g: TestGyre;
  let me: { id: string };
  const flagDir = mkdtempSync(join(tmpdir(), 'gyre-rerun-flag-'));
  const flag = join(flagDir, 'flag');
  /** The flaky project's first workflow (failed) and its jobs by name. */
  let original: { workflow: any; jobs: Record<string, any> };

  const jobsOf = async (workflowId: string): Promise<Record<string, any>> =>
    Object.fromEntries((await g.api('GET', `/api/v2/workflow/${workflowId}/job`)).items.map((j: any) => [j.name, j]));
  const statuses = (jobs: Record<string, any>) => Object.fromEntries(Object.entries(jobs).map(([name, j]) => [name, j.status]));
  async function waitForWorkflow(id: string, timeoutMs = 20_000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const workflow = await g.api('GET', `/api/v2/workflow/${id}`);
      if (TERMINAL.has(workflow.status)) return { workflow, jobs: await jobsOf(id) };
      if (Date.now() > deadline) throw new Error(`workflow ${id} did not finish within ${timeoutMs} ms (${workflow.status})`);
      await sleep(50);
    }
  }
  async function firstWorkflow(pipelineId: string): Promise<string> {
    for (let i = 0; ; i++) {
      const workflow = (await g.api('GET', `/api/v2/pipeline/${pipelineId}/workflow`)).items[0];
      if (workflow) return workflow.id;
      if (i > 400) throw new Error(`pipeline ${pipelineId} made no workflow`);
      await sleep(25);
    }
  }
  async function waitForJob(workflowId: string, name: string, ready: (job: any) => boolean, timeoutMs = 10_000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const job = (await jobsOf(workflowId))[name];
      if (job && ready(job)) return job;
      if (Date.now() > deadline) throw new Error(`job ${name} of workflow ${workflowId} is ${job?.status}`);
      await sleep(25);
    }
  }
  const rerun = (workflowId: string, body?: unknown) => g.raw('POST', `/api/v2/workflow/${workflowId}/rerun`, body === undefined ? {} : { body: JSON.stringify(body) });
  /** The output of a job's step named `name`. */
  async function outputOf(slug: string, jobNumber: number, name: string): Promise<string> {
    const step = (await g.api('GET', `/api/v2/project/${slug}/job/${jobNumber}/steps`)).items.find((s: any) => s.name === name);
    const res = await g.raw('GET', `/api/v2/project/${slug}/job/${jobNumber}/output?step=${step.index}`);
    return res.text;
  }

  beforeAll(async () => {
    g = await startTestGyre({ store });
    me = await g.api('GET', '/api/v2/me');
    writeFileSync(flag, 'fail\n');
    await g.addProject('gh/acme/flaky', { '.circleci/config.yml': flakyConfig(flag) });
    const { id } = await g.trigger('gh/acme/flaky');
    const { workflows, jobs } = await g.waitForPipeline(id);
    original = { workflow: workflows[0], jobs };
  }, 60_000);
  afterAll(async () => {
    await g?.stop();
    rmSync(flagDir, { recursive: true, force: true });
  });

  it('reruns from failed: a linked workflow runs the failed job and what follows it, and copies what succeeded', async () => {
    expect(original.workflow.status).toBe('failed');
    expect(statuses(original.jobs)).toEqual({ build: 'success', lint: 'success', flaky: 'failed', deploy: 'not_run' });
    writeFileSync(flag, 'pass\n');

    const res = await rerun(original.workflow.id, { from_failed: true });
    expect(res.status).toBe(202);
    expect(res.body).toEqual({ workflow_id: expect.stringMatching(UUID) });
    const { workflow, jobs } = await waitForWorkflow(res.body.workflow_id);

    // A new workflow of the same pipeline and name, linked to the original, started by who asked.
    expect(workflow).toMatchObject({ id: res.body.workflow_id, name: 'main', pipeline_id: original.workflow.pipeline_id, status: 'success', rerun_of: original.workflow.id, started_by: me.id });
    expect(await g.api('GET', `/api/v2/workflow/${original.workflow.id}`)).not.toHaveProperty('rerun_of');
    const listed = (await g.api('GET', `/api/v2/pipeline/${original.workflow.pipeline_id}/workflow`)).items;
    expect(listed.map((w: any) => [w.id, w.status])).toEqual([
      [original.workflow.id, 'failed'],
      [workflow.id, 'success'],
    ]);

    // What succeeded did not run again: it keeps the number of the job that ran.
    expect(statuses(jobs)).toEqual({ build: 'success', lint: 'success', flaky: 'success', deploy: 'success' });
    expect(jobs.build.job_number).toBe(original.jobs.build.job_number);
    expect(jobs.lint.job_number).toBe(original.jobs.lint.job_number);
    expect(jobs.build.id).not.toBe(original.jobs.build.id);
    const before = Math.max(...Object.values(original.jobs).map((j: any) => j.job_number ?? 0));
    expect(jobs.flaky.job_number).toBeGreaterThan(before);
    expect(jobs.deploy.job_number).toBeGreaterThan(before);
    expect(jobs.deploy.dependencies).toEqual([jobs.flaky.id]);
    // The rerun job attached the workspace the original build persisted.
    expect(await outputOf('gh/acme/flaky', jobs.flaky.job_number, 'Check the flag')).toBe(`built by job ${original.jobs.build.job_number}\n`);

    // The rerun succeeded: nothing is left to rerun from failed.
    const again = await rerun(workflow.id, { from_failed: true });
    expect(again.status).toBe(400);
    expect(again.body.message).toBe(`workflow ${workflow.id} has no failed or canceled job to rerun from (from_failed)`);
  });

  it('reruns a subset of jobs: with what they require, or exactly those with sparse_tree', async () => {
    writeFileSync(flag, 'pass\n');
    const res = await rerun(original.workflow.id, { jobs: [original.jobs.flaky.id] });
    expect(res.status).toBe(202);
    const withUpstream = await waitForWorkflow(res.body.workflow_id);
    expect(withUpstream.workflow).toMatchObject({ status: 'success', rerun_of: original.workflow.id });
    // flaky and the build it requires ran again; lint (beside them) and deploy (after them) were copied.
    expect(statuses(withUpstream.jobs)).toEqual({ build: 'success', lint: 'success', flaky: 'success', deploy: 'not_run' });
    expect(withUpstream.jobs.build.job_number).not.toBe(original.jobs.build.job_number);
    expect(withUpstream.jobs.lint.job_number).toBe(original.jobs.lint.job_number);
    expect(withUpstream.jobs.deploy.job_number).toBeUndefined();
    expect(await outputOf('gh/acme/flaky', withUpstream.jobs.flaky.job_number, 'Check the flag')).toBe(`built by job ${withUpstream.jobs.build.job_number}\n`);

    const sparse = await rerun(original.workflow.id, { jobs: [original.jobs.flaky.id], sparse_tree: true });
    expect(sparse.status).toBe(202);
    const exactly = await waitForWorkflow(sparse.body.workflow_id);
    expect(statuses(exactly.jobs)).toEqual({ build: 'success', lint: 'success', flaky: 'success', deploy: 'not_run' });
    expect(exactly.jobs.build.job_number).toBe(original.jobs.build.job_number);
    expect(exactly.jobs.flaky.job_number).toBeGreaterThan(withUpstream.jobs.flaky.job_number);
    expect(await outputOf('gh/acme/flaky', exactly.jobs.flaky.job_number, 'Check the flag')).toBe(`built by job ${original.jobs.build.job_number}\n`);

    // A whole rerun (no body) runs every job again.
    const whole = await rerun(original.workflow.id);
    expect(whole.status).toBe(202);
    const all = await waitForWorkflow(whole.body.workflow_id);
    expect(statuses(all.jobs)).toEqual({ build: 'success', lint: 'success', flaky: 'success', deploy: 'success' });
    for (const name of ['build', 'lint', 'flaky']) expect(all.jobs[name].job_number).toBeGreaterThan(exactly.jobs.flaky.job_number);
  });

  it('refuses reruns CircleCI refuses, naming the field', async () => {
    const id = original.workflow.id;
    const refused = async (body: unknown, status: number, message: string | RegExp) => {
      const res = await rerun(id, body);
      expect([res.status, res.body?.message]).toEqual([status, typeof message === 'string' ? message : expect.stringMatching(message)]);
    };
    await refused({ enable_ssh: true, jobs: [original.jobs.flaky.id] }, 400, /^enable_ssh is not supported/);
    await refused({ jobs: [NO_SUCH_ID, 'nope'] }, 400, new RegExp(`^jobs '${NO_SUCH_ID}', 'nope' are not jobs of workflow ${id}$`));
    await refused({ from_failed: true, jobs: [original.jobs.flaky.id] }, 400, /^from_failed and jobs cannot be used together/);
    await refused({ sparse_tree: true }, 400, /^sparse_tree needs jobs/);
    await refused({ is_from_failed: true }, 400, /is_from_failed/);
    await refused({ jobs: 'all' }, 400, /body\.jobs must be a list/);
    expect((await rerun(NO_SUCH_ID)).status).toBe(404);
    expect((await rerun('not-a-uuid')).status).toBe(404);
  });

  it('cancels a running job: its steps stop within seconds, what requires it never runs, the workflow ends canceled', async () => {
    await g.addProject('gh/acme/slow', { '.circleci/config.yml': SLOW });
    const { id } = await g.trigger('gh/acme/slow');
    const workflowId = await firstWorkflow(id);
    const slow = await waitForJob(workflowId, 'slow', (j) => j.status === 'running');
    // The step has started (its output says so), so the cancel has a process to stop.
    for (let i = 0; !(await outputOf('gh/acme/slow', slow.job_number, 'Sleep').catch(() => '')).includes('started'); i++) {
      if (i > 1200) throw new Error('the step did not start');
      await sleep(25);
    }
    // A workflow still running is not rerun.
    const early = await rerun(workflowId);
    expect(early.status).toBe(409);
    expect(early.body.message).toMatch(new RegExp(`^workflow ${workflowId} is (running|failing): a workflow is rerun once it has finished`));
    // What is refused whatever the workflow is refused first.
    const ssh = await rerun(workflowId, { enable_ssh: true, jobs: [slow.id] });
    expect([ssh.status, ssh.body.message]).toEqual([400, expect.stringMatching(/^enable_ssh is not supported/)]);

    const started = Date.now();
    const res = await g.raw('POST', `/api/v2/project/gh/acme/slow/job/${slow.job_number}/cancel`);
    expect([res.status, res.body]).toEqual([200, { message: 'Accepted.' }]);
    const { workflow, jobs } = await waitForWorkflow(workflowId, 20_000);
    // About 0.5 s when idle; the bound leaves room for a loaded machine, half the step's sleep.
    expect(Date.now() - started).toBeLessThan(15_000);
    expect(workflow.status).toBe('canceled');
    expect(statuses(jobs)).toEqual({ slow: 'canceled', other: 'success', after: 'not_run' });
    expect(jobs.slow.canceled_by).toBe(me.id);
    expect(await outputOf('gh/acme/slow', slow.job_number, 'Sleep')).not.toMatch(/never printed/);

    const again = await g.raw('POST', `/api/v2/project/gh/acme/slow/job/${slow.job_number}/cancel`);
    expect([again.status, again.body.message]).toEqual([409, `job ${slow.job_number} (slow) has already finished: it is canceled`]);
    const record = (await g.api('GET', '/api/v2/audit?limit=50')).items.find((r: any) => r.action === 'job.cancel' && r.result === 'success');
    expect(record).toMatchObject({ actor: { login: 'admin' }, target: { type: 'job', id: jobs.slow.id }, detail: { workflow: workflowId, job: 'slow', number: slow.job_number } });

    // From failed reruns what was canceled and what it kept from running; `other` is copied.
    const res2 = await rerun(workflowId, { from_failed: true });
    expect(res2.status).toBe(202);
    const rerunJobs = await jobsOf(res2.body.workflow_id);
    expect(rerunJobs.other.job_number).toBe(jobs.other.job_number);
    await waitForJob(res2.body.workflow_id, 'slow', (j) => j.status === 'running');
    expect((await g.raw('POST', `/api/v2/workflow/${res2.body.workflow_id}/cancel`)).status).toBe(202);
    expect(statuses((await waitForWorkflow(res2.body.workflow_id, 10_000)).jobs)).toEqual({ slow: 'canceled', other: 'success', after: 'canceled' });
  });

  it('cancels a queued job and a waiting one: neither ever runs; a finished or unknown job is refused', async () => {
    await g.api('POST', '/api/v2/resource-classes', { name: 'acme/none', cpu: 1, memory_mb: 512, driver: 'runner' });
    await g.addProject('gh/acme/stuck', { '.circleci/config.yml': STUCK });
    const { id } = await g.trigger('gh/acme/stuck');
    const workflowId = await firstWorkflow(id);
    const stuck = await waitForJob(workflowId, 'stuck', (j) => j.status === 'queued');
    const waiting = (await jobsOf(workflowId)).after2;
    expect(waiting.status).toBe('blocked');

    // The waiting job first: it ends canceled, the rest of the workflow goes on waiting.
    const res = await g.raw('POST', `/api/v2/jobs/${waiting.id}/cancel`);
    expect([res.status, res.body]).toEqual([200, { message: 'Accepted.' }]);
    expect(statuses(await jobsOf(workflowId))).toEqual({ stuck: 'queued', after1: 'blocked', after2: 'canceled' });
    expect((await g.api('GET', `/api/v2/workflow/${workflowId}`)).status).toBe('running');

    // The queued job: canceled at once, its task never claimed; what requires it never runs.
    expect((await g.raw('POST', `/api/v2/jobs/${stuck.id}/cancel`)).status).toBe(200);
    expect(statuses(await jobsOf(workflowId))).toEqual({ stuck: 'canceled', after1: 'not_run', after2: 'canceled' });
    expect((await g.api('GET', `/api/v2/workflow/${workflowId}`)).status).toBe('canceled');
    const detail = await g.api('GET', `/api/v2/project/gh/acme/stuck/job/${stuck.job_number}`);
    expect(detail).toMatchObject({ status: 'canceled', started_at: null, parallel_runs: [{ index: 0, status: 'canceled' }] });

    const refused = async (path: string, status: number, message: string | RegExp) => {
      const r = await g.raw('POST', path);
      expect([r.status, r.body?.message]).toEqual([status, typeof message === 'string' ? message : expect.stringMatching(message)]);
    };
    await refused(`/api/v2/jobs/${stuck.id}/cancel`, 409, `job ${stuck.job_number} (stuck) has already finished: it is canceled`);
    const after1 = (await jobsOf(workflowId)).after1;
    await refused(`/api/v2/jobs/${after1.id}/cancel`, 409, `job ${after1.id} (after1) has already finished: it is not_run`);
    await refused(`/api/v2/jobs/${NO_SUCH_ID}/cancel`, 404, `job not found: ${NO_SUCH_ID}`);
    await refused('/api/v2/jobs/nope/cancel', 404, /job not found/);
    await refused('/api/v2/project/gh/acme/stuck/job/99999/cancel', 404, 'job not found: 99999');
    await refused('/api/v2/project/gh/acme/nope/job/1/cancel', 404, /project not found/);
  });
});
