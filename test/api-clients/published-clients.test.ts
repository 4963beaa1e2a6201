/**
 * CircleCI's published API clients, unchanged, against Gyre: `circleci-api` (API v1.1: builds with
 * their steps and output, recent builds, followed projects, artifacts, tests) and `circle-client`
 * (API v2: pipelines, workflows, jobs, artifacts, tests), through one failed run, as a non-admin
 * user with a role on the project. Each client is pointed at Gyre the way its README says
 * (`circleHost`, `CircleCI.baseUrl`); nothing of either is patched.
 */
import * as circleciApi from 'circleci-api';
import CircleCI from 'circle-client';
import { flowStore, startTestGyre, type TestGyre } from '../support/gyre';

const JUNIT = `<?xml version="1.0" encoding="UTF-8"?>
<testsuites><testsuite name="math" tests="2" failures="1">
  <testcase classname="math adds" name="adds" time="0.5" file="src/math.test.js"/>
  <testcase classname="math divides" name="by zero" time="0.25" file="src/math.test.js"><failure message="expected Infinity">boom</failure></testcase>
</testsuite></testsuites>
`;

const CONFIG = `version: 2.1
jobs:
  build:
    docker: [{ image: cimg/base:stable }]
    steps:
      - checkout
      - run:
          name: Say hello
          command: echo "hello from build"; echo "token is $DEPLOY_TOKEN"
      - run: mkdir -p out reports && echo artifact-body > out/result.txt && cp report.xml reports/junit.xml
      - store_artifacts: { path: out }
      - store_test_results: { path: reports }
      - run:
          name: Fail
          command: echo "failing now" >&2; exit 3
workflows:
  main:
    jobs: [build]
`;

const SECRET = 'sup3r-s3cret-deploy-token';

/**
 * circle-client has no host option: its static `baseUrl` is where every request goes (typed
 * read-only, assignable at run time), so that is what is set.
 */
function pointAt(url: string): void {
  (CircleCI as unknown as { baseUrl: string }).baseUrl = `${url}/api/v2`;
}

describe.each(flowStore())('CircleCI published clients against Gyre (%s)', (store) => {
  let g: TestGyre;
  let dev: string;
  let outsider: string;
  let pipelineId: string;
  let jobNumber: number;
  const vcs = { type: circleciApi.GitType.GITHUB, owner: 'acme', repo: 'widgets' };
  const host = () => ({ circleHost: `${g.url}/api/v1.1` });

  beforeAll(async () => {
    g = await startTestGyre({ store });
    await g.addProject('acme/widgets', { '.circleci/config.yml': CONFIG, 'report.xml': JUNIT });
    await g.api('POST', '/api/v2/project/gh/acme/widgets/envvar', { name: 'DEPLOY_TOKEN', value: SECRET });
    dev = (await g.api('POST', '/api/v2/users', { login: 'dev' })).token;
    outsider = (await g.api('POST', '/api/v2/users', { login: 'outsider' })).token;
    await g.api('PUT', '/api/v2/project/gh/acme/widgets/members/dev', { role: 'write' });

    // The v2 client triggers the run, as the non-admin user.
    pointAt(g.url);
    const client = new CircleCI(dev, 'gh/acme/widgets');
    const created = await client.triggerProjectPipeline({ branch: 'main' });
    // The package's type says PipelineConfig; the API (CircleCI's and Gyre's) answers the pipeline's id and number.
    pipelineId = (created as unknown as { id: string }).id;
    const done = await g.waitForPipeline(pipelineId, 60_000);
    expect(done.workflows.map((w) => w.status)).toEqual(['failed']);
    jobNumber = done.jobs.build.job_number;
  }, 120_000);

  afterAll(async () => {
    await g?.stop();
  });

  describe('circle-client (API v2)', () => {
    const client = () => new CircleCI(dev, 'gh/acme/widgets');
    beforeAll(() => {
      pointAt(g.url);
      jest.spyOn(console, 'warn').mockImplementation(() => undefined);
    });

    it('reads the project, its pipelines and the failed pipeline', async () => {
      expect(await client().getProject()).toMatchObject({ slug: 'gh/acme/widgets', name: 'widgets', organization_name: 'acme' });
      const pipeline = await client().getPipeline(pipelineId);
      expect(pipeline).toMatchObject({ id: pipelineId, number: 1, state: 'created', project_slug: 'gh/acme/widgets', vcs: { branch: 'main' } });
      expect(pipeline.trigger.actor.login).toBe('dev');
      const listed = await client().listProjectPipelines();
      expect(listed.items.map((p) => p.id)).toEqual([pipelineId]);
      const config = await client().getPipelineConfig(pipelineId);
      expect(config.source).toContain('name: Fail');
    });

    it('reads the workflow and its job, failed', async () => {
      const workflows = await client().listPipelineWorkflows(pipelineId);
      expect(workflows.items).toHaveLength(1);
      expect(workflows.items[0]).toMatchObject({ name: 'main', status: 'failed', pipeline_id: pipelineId, pipeline_number: 1 });
      const workflow = await client().getWorkflow(workflows.items[0].id);
      expect(workflow).toMatchObject({ id: workflows.items[0].id, status: 'failed' });
      const jobs = await client().listWorkflowJobs(workflow.id);
      expect(jobs.items).toEqual([expect.objectContaining({ name: 'build', status: 'failed', job_number: jobNumber, type: 'build' })]);
      const job = await client().getJob(jobNumber);
      expect(job).toMatchObject({ name: 'build', status: 'failed', number: jobNumber, pipeline: { id: pipelineId }, latest_workflow: { name: 'main' } });
    });

    it("reads the failed job's artifacts and tests", async () => {
      const artifacts = await client().listJobArtifacts(jobNumber);
      expect(artifacts.items).toEqual([expect.objectContaining({ path: 'out/result.txt', node_index: 0 })]);
      expect(await (await fetch(artifacts.items[0].url)).text()).toBe('artifact-body\n');
      const tests = await client().listJobTests(jobNumber);
      expect(tests.items.map((t) => [t.name, t.result]).sort()).toEqual([
        ['adds', 'success'],
        ['by zero', 'failure'],
      ]);
      expect(tests.items.find((t) => t.result === 'failure')).toMatchObject({ classname: 'math divides', message: expect.stringContaining('expected Infinity'), run_time: 0.25 });
    });

    it('says who is calling, and refuses a caller without a role on the project as not found', async () => {
      expect(await client().getMe()).toMatchObject({ login: 'dev' });
      const stranger = new CircleCI(outsider, 'gh/acme/widgets');
      await expect(stranger.getPipeline(pipelineId)).rejects.toMatchObject({ status: 404 });
      await expect(stranger.getJob(jobNumber)).rejects.toMatchObject({ status: 404 });
    });
  });

  describe('circleci-api (API v1.1)', () => {
    it('lists the followed projects a user can see, with the branch and its failed build', async () => {
      const projects = await circleciApi.getAllProjects(dev, host());
      expect(projects).toHaveLength(1);
      expect(projects[0]).toMatchObject({ username: 'acme', reponame: 'widgets', vcs_type: 'github', followed: true });
      const main = (projects[0] as any).branches.main;
      expect(main.recent_builds).toEqual([expect.objectContaining({ build_num: jobNumber, outcome: 'failed' })]);
      expect(main.last_non_success).toMatchObject({ build_num: jobNumber, status: 'failed' });
      expect(main.last_success).toBeNull();
      expect(await circleciApi.getAllProjects(outsider, host())).toEqual([]);
    });

    it('lists recent builds across projects, of the project and of a branch', async () => {
      const recent = await circleciApi.getRecentBuilds(dev, host());
      expect(recent).toEqual([
        expect.objectContaining({
          build_num: jobNumber,
          username: 'acme',
          reponame: 'widgets',
          branch: 'main',
          lifecycle: 'finished',
          outcome: 'failed',
          status: 'failed',
          job_name: 'build',
          workflows: expect.objectContaining({ job_name: 'build', workflow_name: 'main', upstream_job_ids: [] }),
        }),
      ]);
      expect(recent[0].build_time_millis).toBeGreaterThanOrEqual(0);
      expect(await circleciApi.getRecentBuilds(outsider, host())).toEqual([]);

      const ofProject = await circleciApi.getBuildSummaries(dev, { vcs, ...host() });
      expect(ofProject.map((b) => b.build_num)).toEqual([jobNumber]);
      expect((await circleciApi.getBuildSummaries(dev, { vcs, options: { branch: 'main' }, ...host() })).map((b) => b.build_num)).toEqual([jobNumber]);
      expect(await circleciApi.getBuildSummaries(dev, { vcs, options: { branch: 'other' }, ...host() })).toEqual([]);
      expect(await circleciApi.getBuildSummaries(dev, { vcs, options: { filter: 'successful' }, ...host() })).toEqual([]);
      expect((await circleciApi.getBuildSummaries(dev, { vcs, options: { filter: 'failed' }, ...host() })).map((b) => b.build_num)).toEqual([jobNumber]);
    });

    it("gives a build's steps and actions, whose output_url serves the masked output to a reader only", async () => {
      const build: any = await circleciApi.getFullBuild(dev, jobNumber, { ...vcs, ...host() });
      expect(build).toMatchObject({ build_num: jobNumber, status: 'failed', outcome: 'failed', lifecycle: 'finished', branch: 'main', username: 'acme', reponame: 'widgets' });
      const names = build.steps.map((s: any) => s.name);
      expect(names).toEqual(expect.arrayContaining(['Say hello', 'Fail']));
      const fail = build.steps.find((s: any) => s.name === 'Fail').actions;
      expect(fail).toEqual([expect.objectContaining({ name: 'Fail', status: 'failed', exit_code: 3, index: 0, failed: true, has_output: true, output_url: expect.stringMatching(/^http/) })]);
      expect(fail[0].run_time_millis).toBeGreaterThanOrEqual(0);
      expect(new Date(fail[0].end_time).getTime()).toBeGreaterThanOrEqual(new Date(fail[0].start_time).getTime());

      const hello = build.steps.find((s: any) => s.name === 'Say hello').actions[0];
      expect(hello).toMatchObject({ status: 'success', exit_code: 0, step: expect.any(Number) });
      const out = await fetch(hello.output_url, { headers: { 'Circle-Token': dev } });
      expect(out.status).toBe(200);
      expect(out.headers.get('content-type')).toMatch(/^application\/json/);
      const messages = (await out.json()) as { type: string; time: string; message: string }[];
      expect(messages).toEqual([expect.objectContaining({ type: 'out', time: expect.any(String), message: expect.stringContaining('hello from build') })]);
      expect(messages[0].message).toContain('token is ********');
      expect(JSON.stringify(messages)).not.toContain(SECRET);
      const failing = (await (await fetch(`${fail[0].output_url}?circle-token=${dev}`)).json()) as { message: string }[];
      expect(failing[0].message).toContain('failing now');

      // The URL is no signed link: without a token it is refused, and a user who cannot read the project gets a 404.
      expect((await fetch(hello.output_url)).status).toBe(401);
      expect((await fetch(hello.output_url, { headers: { 'Circle-Token': outsider } })).status).toBe(404);
      await expect(circleciApi.getFullBuild(outsider, jobNumber, { ...vcs, ...host() })).rejects.toMatchObject({ response: { status: 404 } });
    });

    it("gives a build's artifacts and test metadata, and who is calling", async () => {
      const artifacts = await circleciApi.getBuildArtifacts(dev, jobNumber, { ...vcs, ...host() });
      expect(artifacts).toEqual([expect.objectContaining({ path: 'out/result.txt', node_index: 0 })]);
      expect(await (await fetch(artifacts[0].url)).text()).toBe('artifact-body\n');
      const tests = await circleciApi.getTestMetadata(dev, jobNumber, { ...vcs, ...host() });
      expect(tests.tests.map((t) => [t.name, t.result]).sort()).toEqual([
        ['adds', 'success'],
        ['by zero', 'failure'],
      ]);
      expect(await circleciApi.getMe(dev, host())).toMatchObject({ login: 'dev' });
    });

    it('refuses a bad token, an unknown build and hostile path values with answers that name them', async () => {
      await expect(circleciApi.getFullBuild('not-a-token', jobNumber, { ...vcs, ...host() })).rejects.toMatchObject({ response: { status: 401 } });
      await expect(circleciApi.getFullBuild(dev, 999, { ...vcs, ...host() })).rejects.toMatchObject({ response: { status: 404, data: { message: expect.stringContaining('999') } } });
      const bad = await g.raw('GET', `/api/v1.1/project/github/acme/widgets/${jobNumber}/output/1%00/0`);
      expect(bad.status).toBe(400);
      const notNumber = await g.raw('GET', '/api/v1.1/project/github/acme/widgets/12abc');
      expect(notNumber.status).toBe(400);
      expect(notNumber.body.message).toMatch(/number/);
      const bitbucket = await g.raw('GET', '/api/v1.1/project/bitbucket/acme/widgets/1');
      expect(bitbucket.status).toBe(400);
      const tooMany = await g.raw('GET', '/api/v1.1/recent-builds?limit=1000');
      expect(tooMany.status).toBe(400);
      expect(tooMany.body.message).toMatch(/limit/);
    });
  });
});
