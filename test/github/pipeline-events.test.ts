import { startTestGyre, flowStore, type TestGyre } from '../support/gyre';
import { startGitHubAppStandIn, type GitHubAppStandIn, type Sender, type StandInRepository } from '../support/github-stand-in';

/**
 * Every hour of the day: the tick made due below is in the timetable whenever the test runs (one
 * hour read from the clock could miss its tick if the hour turned mid-test).
 */
const EVERY_HOUR = Array.from({ length: 24 }, (_, h) => h);

/**
 * `pipeline.event.*` end to end: signed deliveries from the GitHub stand-in, the API and a
 * schedule each start a pipeline whose jobs see what started it (`<< pipeline.event.name >>`,
 * `.action`, the pull request's values), whose `when:` conditions choose on it, and whose
 * contexts' expression restrictions read it.
 */

const MASK = '********';
const DEPLOY_SECRET = 'push-only-s3cr3t-4410';

const CONFIG = `version: 2.1
jobs:
  build:
    docker: [{ image: cimg/base:stable }]
    steps:
      - run:
          name: show
          command: |
            echo "event=<< pipeline.event.name >>/<< pipeline.event.action >>"
            echo "pr=<< pipeline.event.github.pull_request.number >> head=<< pipeline.event.github.pull_request.head.ref >> base=<< pipeline.event.github.pull_request.base.ref >> draft=<< pipeline.event.github.pull_request.draft >>"
            echo "title=<< pipeline.event.github.pull_request.title >>"
            echo "pr_url=<< pipeline.event.context.github.pr_url >> source=<< pipeline.trigger_source >>"
  pr-only:
    docker: [{ image: cimg/base:stable }]
    steps: [{ run: echo only for pull requests }]
  deploy:
    docker: [{ image: cimg/base:stable }]
    steps: [{ run: 'echo "deploy secret=\${DEPLOY_SECRET:-unset}"' }]
workflows:
  main:
    jobs:
      - build
      - deploy: { context: [push-only] }
  pull-requests:
    when:
      equal: [pull_request, << pipeline.event.name >>]
    jobs: [pr-only]
`;

const DEV: Sender = { login: 'octo-dev', id: 583_231 };

describe.each(flowStore())('pipeline.event values (%s)', (store) => {
  let gh: GitHubAppStandIn;
  let g: TestGyre;
  let repo: StandInRepository;
  let installationId: number;

  beforeAll(async () => {
    gh = await startGitHubAppStandIn();
    repo = gh.createRepository('acme/app', { private: true, files: { '.circleci/config.yml': CONFIG } });
    installationId = gh.install({ login: 'acme', id: 9001 }, [repo]);
    g = await startTestGyre({ store, env: { ...gh.env, GYRE_CRON_INTERVAL_MS: '100' } });
    await g.api('POST', '/api/v2/projects', { org: 'acme', name: 'app' });
    const context = await g.api('POST', '/api/v2/context', { name: 'push-only', owner: { slug: 'gh/acme' } });
    await g.api('PUT', `/api/v2/context/${context.id}/environment-variable/DEPLOY_SECRET`, { value: DEPLOY_SECRET });
    await g.api('POST', `/api/v2/context/${context.id}/restrictions`, { restriction_type: 'expression', restriction_value: 'pipeline.event.name == "push" and pipeline.trigger_source == "webhook"' });
  }, 60_000);
  afterAll(async () => {
    await g?.stop();
    await gh?.stop();
  });

  const deliver = (event: string, payload: unknown) => gh.deliver(g.url, event, payload);
  const logOf = async (jobNumber: number) => (await g.raw('GET', `/api/v2/project/gh/acme/app/job/${jobNumber}/output?step=0`)).text;

  test('a signed pull_request delivery: pull_request/opened, the pull request values, its when: workflow, and a context kept for pushes refused', async () => {
    const sha = repo.commit('topic', { 'topic.txt': 'work\n' }, 'Topic work');
    const payload = gh.payloads.pullRequest(repo, { action: 'opened', number: 12, head: repo, headRef: 'topic', headSha: sha, baseSha: repo.rev('main'), sender: DEV, installationId }) as { pull_request: { title: string; draft: boolean } };
    payload.pull_request.title = 'Faster builds: 2x (cache deps)';
    payload.pull_request.draft = true;
    const answer = await deliver('pull_request', payload);
    expect(answer.status).toBe(200);
    const { workflows, jobs } = await g.waitForPipeline(answer.body.pipeline.id, 45_000);
    expect(workflows.map((w) => w.name).sort()).toEqual(['main', 'pull-requests']);
    expect(jobs.build.status).toBe('success');
    const log = await logOf(jobs.build.job_number);
    expect(log).toContain('event=pull_request/opened');
    expect(log).toContain('pr=12 head=topic base=main draft=true');
    expect(log).toContain('title=Faster builds: 2x (cache deps)');
    expect(log).toContain(`pr_url=${gh.url}/acme/app/pull/12 source=webhook`);
    expect(jobs['pr-only'].status).toBe('success');
    // The context's restriction reads the event: a pull request is not a push.
    expect(jobs.deploy.status).toBe('unauthorized');

    // The next commit on the pull request: synchronize.
    const next = repo.commit('topic', { 'topic.txt': 'more\n' }, 'More topic work');
    const synced = await deliver('pull_request', gh.payloads.pullRequest(repo, { action: 'synchronize', number: 12, head: repo, headRef: 'topic', headSha: next, baseSha: repo.rev('main'), sender: DEV, installationId }));
    const second = await g.waitForPipeline(synced.body.pipeline.id, 45_000);
    expect(await logOf(second.jobs.build.job_number)).toContain('event=pull_request/synchronize');
  });

  test('a push is push/push and gets the context kept for pushes; the API is api/api and does not', async () => {
    const before = repo.rev('main');
    const sha = repo.commit('main', { 'main.txt': 'two\n' }, 'Second commit');
    const pushed = await deliver('push', gh.payloads.push(repo, { ref: 'refs/heads/main', after: sha, before, message: 'Second commit', sender: DEV, installationId }));
    const byPush = await g.waitForPipeline(pushed.body.pipeline.id, 45_000);
    expect(byPush.workflows.map((w) => w.name)).toEqual(['main']);
    const log = await logOf(byPush.jobs.build.job_number);
    expect(log).toContain('event=push/push');
    // Pull request values are empty for a push to a branch without one.
    expect(log).toContain('pr= head= base= draft=');
    expect(log).toContain('pr_url= source=webhook');
    expect(byPush.jobs.deploy.status).toBe('success');
    expect(await logOf(byPush.jobs.deploy.job_number)).toContain(`deploy secret=${MASK}`);

    // A push to the branch of an open pull request names the pull request, but is a push.
    const topic = repo.commit('topic', { 'topic.txt': 'pushed\n' }, 'Pushed to the pull request');
    const toPr = await deliver('push', gh.payloads.push(repo, { ref: 'refs/heads/topic', after: topic, before: repo.rev('main'), message: 'Pushed', sender: DEV, installationId }));
    const prPush = await g.waitForPipeline(toPr.body.pipeline.id, 45_000);
    expect(await logOf(prPush.jobs.build.job_number)).toMatch(new RegExp(`event=push/push[\\s\\S]*pr_url=${gh.url}/acme/app/pull/12 source=webhook`));

    // The API cannot say it is a push: it is api/api, and the context refuses it.
    const triggered = await g.trigger('gh/acme/app', { branch: 'main' });
    const byApi = await g.waitForPipeline(triggered.id, 45_000);
    const apiLog = await logOf(byApi.jobs.build.job_number);
    expect(apiLog).toContain('event=api/api');
    expect(apiLog).toContain('source=api');
    expect(byApi.jobs.deploy.status).toBe('unauthorized');
    const [refusal] = await g.gyre.store.query<{ messages: { message: string }[] }>('SELECT messages FROM jobs WHERE id = $1', [byApi.jobs.deploy.id]);
    expect(refusal.messages[0].message).toMatch(/context "push-only" has an expression restriction this job does not meet: pipeline\.event\.name == "push" .* is false/);
  });

  test('a schedule is schedule/schedule', async () => {
    const made = await g.api('POST', '/api/v2/project/gh/acme/app/schedule', {
      name: 'hourly',
      timetable: { 'per-hour': 1, 'hours-of-day': EVERY_HOUR, 'days-of-week': ['MON', 'TUE', 'WED', 'THU', 'FRI', 'SAT', 'SUN'] },
      'attribution-actor': 'system',
      parameters: { branch: 'main' },
    });
    // The tick of this hour counts as missed: the cron role fires it now.
    await g.gyre.store.query(`UPDATE schedules SET next_fire_at = date_trunc('hour', now()) WHERE id = $1`, [made.id]);
    const pipelineId = await until(async () => (await g.gyre.store.query<{ pipeline_id: string }>(`SELECT pipeline_id FROM schedule_ticks WHERE schedule_id = $1 AND pipeline_id IS NOT NULL`, [made.id]))[0]?.pipeline_id);
    const { jobs } = await g.waitForPipeline(pipelineId, 45_000);
    const log = await logOf(jobs.build.job_number);
    expect(log).toContain('event=schedule/schedule');
    expect(log).toContain('source=scheduled_pipeline');
    expect(jobs.deploy.status).toBe('unauthorized');
    await g.api('DELETE', `/api/v2/schedule/${made.id}`);
  });
});

async function until<T>(fn: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await fn();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 50));
  }
}
