import { makeGitRepo, startTestGyre, flowStore, type TestGyre } from '../support/gyre';

/**
 * Gyre's answers against CircleCI's API v2 description (test/fixtures/circleci/): a client that
 * validates what it gets back (generated clients do) must accept every answer of a realistic
 * session: a project made, pipelines that pass and fail, an approval, a rerun, contexts,
 * variables, schedules, and every list and detail read in between. Each answer goes through the
 * test client (test/support/gyre.ts), which checks it against the operation's schema.
 */

const CONFIG = `version: 2.1
parameters:
  greeting: { type: string, default: hello }
jobs:
  build:
    docker: [{ image: cimg/base:stable }]
    steps:
      - run: mkdir -p out reports && echo "<< pipeline.parameters.greeting >>" > out/greeting.txt
      - run: printf '<testsuite name="unit"><testcase classname="math" name="adds" time="0.01" file="test/math.test.js"/><testcase classname="math" name="breaks" time="0.02" file="test/math.test.js"><failure message="boom">trace</failure></testcase></testsuite>' > reports/junit.xml
      - store_artifacts: { path: out/greeting.txt, destination: greeting.txt }
      - store_test_results: { path: reports }
  flaky:
    docker: [{ image: cimg/base:stable }]
    steps:
      - run: test "<< pipeline.parameters.greeting >>" = hello
  deploy:
    docker: [{ image: cimg/base:stable }]
    steps:
      - run: echo deployed
workflows:
  main:
    jobs:
      - build
      - flaky
      - hold:
          type: approval
          requires: [build]
      - deploy:
          requires: [hold]
`;

describe.each(flowStore())('CircleCI API v2 answers fit its description (%s)', (store) => {
  let g: TestGyre;
  const slug = 'gh/spec/app';

  beforeAll(async () => {
    g = await startTestGyre({ store, env: { GYRE_RATE_LIMIT_TOKEN: '0' } });
  }, 60_000);
  afterAll(() => g?.stop());

  it('answers a whole session with shapes a validating client accepts', async () => {
    await g.addProject(slug, { '.circleci/config.yml': CONFIG });
    await g.api('GET', `/api/v2/project/${slug}`);
    await g.api('GET', `/api/v2/project/${slug}/settings`);
    await g.api('GET', '/api/v2/me');
    await g.api('GET', '/api/v2/me/collaborations');

    // A pipeline that passes its build and fails its other job, held for approval.
    const first = await g.trigger(slug, { branch: 'main' });
    const approval = await waitFor(async () => {
      const wf = (await g.api('GET', `/api/v2/pipeline/${first.id}/workflow`)).items[0];
      const jobs = wf ? (await g.api('GET', `/api/v2/workflow/${wf.id}/job`)).items : [];
      const hold = jobs.find((j: any) => j.name === 'hold' && j.status === 'on_hold');
      const flaky = jobs.find((j: any) => j.name === 'flaky' && j.status === 'success');
      return hold && flaky ? { workflow: wf.id, hold } : undefined;
    });
    await g.api('POST', `/api/v2/workflow/${approval.workflow}/approve/${approval.hold.approval_request_id}`);
    const done = await g.waitForPipeline(first.id);
    const build = done.jobs.build;
    await g.api('GET', `/api/v2/pipeline/${first.id}`);
    await g.api('GET', `/api/v2/pipeline/${first.id}/config`);
    await g.api('GET', `/api/v2/workflow/${approval.workflow}`);
    await g.api('GET', `/api/v2/project/${slug}/job/${build.job_number}`);
    await g.api('GET', `/api/v2/project/${slug}/${build.job_number}/artifacts`);
    await g.api('GET', `/api/v2/project/${slug}/${build.job_number}/tests`);

    // A pipeline whose parameter makes a job fail, then a rerun from failed.
    const second = await g.trigger(slug, { branch: 'main', parameters: { greeting: 'bye' } });
    const failed = await waitFor(async () => {
      const wf = (await g.api('GET', `/api/v2/pipeline/${second.id}/workflow`)).items[0];
      const jobs = wf ? (await g.api('GET', `/api/v2/workflow/${wf.id}/job`)).items : [];
      return jobs.some((j: any) => j.name === 'flaky' && j.status === 'failed') ? wf : undefined;
    });
    await g.api('POST', `/api/v2/workflow/${failed.id}/cancel`);
    await waitFor(async () => ((await g.api('GET', `/api/v2/workflow/${failed.id}`)).status === 'canceled' ? true : undefined));
    await g.api('POST', `/api/v2/workflow/${failed.id}/rerun`, { from_failed: true });
    await g.api('GET', `/api/v2/project/${slug}/pipeline`);
    await g.api('GET', `/api/v2/project/${slug}/pipeline?branch=main`);

    // Contexts, restrictions, variables, schedules.
    const org = (await g.api('GET', '/api/v2/me/collaborations'))[0];
    const context = await g.api('POST', '/api/v2/context', { name: 'deploy', owner: { slug: 'gh/spec' } });
    await g.api('GET', `/api/v2/context?owner-slug=gh/spec`);
    await g.api('GET', `/api/v2/context?owner-id=${org.id}`);
    await g.api('GET', `/api/v2/context/${context.id}`);
    await g.api('PUT', `/api/v2/context/${context.id}/environment-variable/TOKEN`, { value: 'secret-value' });
    await g.api('GET', `/api/v2/context/${context.id}/environment-variable`);
    const project = await g.api('GET', `/api/v2/project/${slug}`);
    const restriction = await g.api('POST', `/api/v2/context/${context.id}/restrictions`, { restriction_type: 'project', restriction_value: project.id });
    await g.api('GET', `/api/v2/context/${context.id}/restrictions`);
    await g.api('DELETE', `/api/v2/context/${context.id}/restrictions/${restriction.id}`);
    await g.api('DELETE', `/api/v2/context/${context.id}/environment-variable/TOKEN`);
    await g.api('DELETE', `/api/v2/context/${context.id}`);
    await g.api('POST', `/api/v2/project/${slug}/envvar`, { name: 'API_KEY', value: 'abcdefgh' });
    await g.api('GET', `/api/v2/project/${slug}/envvar`);
    await g.api('GET', `/api/v2/project/${slug}/envvar/API_KEY`);
    await g.api('DELETE', `/api/v2/project/${slug}/envvar/API_KEY`);
    const schedule = await g.api('POST', `/api/v2/project/${slug}/schedule`, {
      name: 'nightly',
      timetable: { 'per-hour': 1, 'hours-of-day': [3], 'days-of-week': ['MON'] },
      'attribution-actor': 'current',
      parameters: { branch: 'main' },
    });
    await g.api('GET', `/api/v2/project/${slug}/schedule`);
    await g.api('GET', `/api/v2/schedule/${schedule.id}`);
    await g.api('PATCH', `/api/v2/schedule/${schedule.id}`, { description: 'at three' });
    await g.api('DELETE', `/api/v2/schedule/${schedule.id}`);
    await g.api('GET', `/api/v2/org/${org.id}/oidc-custom-claims`);
    await g.api('PATCH', `/api/v2/org/${org.id}/oidc-custom-claims`, { audience: ['sts.amazonaws.com'] });
    await g.api('GET', `/api/v2/org/${org.id}/project/${project.id}/oidc-custom-claims`);
    await g.api('DELETE', `/api/v2/org/${org.id}/oidc-custom-claims?claims=audience`);

    // The operations added for the description: by number, mine, values, across projects, run, creation, users.
    await g.api('GET', `/api/v2/project/${slug}/pipeline/${first.number}`);
    await g.api('GET', `/api/v2/project/${slug}/pipeline/mine`);
    await g.api('GET', `/api/v2/pipeline/${first.id}/values`);
    await g.api('GET', '/api/v2/pipeline');
    await g.api('GET', '/api/v2/pipeline?org-slug=gh/spec&mine=true');
    const run = await g.api('POST', `/api/v2/project/${slug}/pipeline/run`, { config: { branch: 'main' }, checkout: { branch: 'main' }, parameters: { greeting: 'hello' } });
    await g.api('GET', `/api/v2/pipeline/${run.id}`);
    const other = makeGitRepo({ '.circleci/config.yml': CONFIG });
    await g.api('POST', '/api/v2/project/gh/spec/second', { repo_url: other });
    await g.api('GET', '/api/v2/project/gh/spec/second');
    await g.api('GET', `/api/v2/user/${(await g.api('GET', '/api/v2/me')).id}`);

    expect(g.specViolations).toEqual([]);
  }, 180_000);
});

async function waitFor<T>(probe: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = await probe();
    if (found !== undefined) return found;
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
