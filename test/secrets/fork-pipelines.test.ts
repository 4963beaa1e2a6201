import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createGitForge } from '../../runtime/forge/git-forge';
import { createProjects } from '../../runtime/projects/projects';
import { createTriggers, type Triggers } from '../../runtime/triggers/triggers';
import { flowStore, startTestGyre, type TestGyre } from '../support/gyre';

/**
 * Pull requests from forks, through a whole Gyre: their author wrote the config, so unless the
 * project passes secrets to forks (CircleCI's `forks_receive_secret_env_vars`, off by default) a
 * fork pipeline's jobs get no project variables, and a job naming a context ends `unauthorized`
 * and never runs. Their OIDC tokens they keep (no secret is in them). The steps print each
 * variable's SHA-256 (which the log masker leaves alone), so the log shows whether the job had the
 * value without showing the value.
 *
 * A fork pipeline is made as the GitHub webhook will make one: the triggers' internal input with
 * `fork: true` (the API's trigger route has no such field). On PGlite and, with DATABASE_URL, on
 * PostgreSQL: both run the migration that adds the columns.
 */

const PROJECT_SECRET = 'fork-proj-s3cr3t-4410';
const CONTEXT_SECRET = 'fork-ctx-s3cr3t-8823';
const sha = (s: string) => createHash('sha256').update(s).digest('hex');

const CONFIG = `version: 2.1
jobs:
  plain:
    docker: [{ image: cimg/base:stable }]
    steps:
      - run:
          name: print what the job has
          command: |
            echo "project: \${PROJECT_TOKEN:-unset}"
            printf 'project sha: '; printf '%s' "$PROJECT_TOKEN" | sha256sum
            test -n "$CIRCLE_OIDC_TOKEN" && echo "oidc token present"
            env | sort
  with-context:
    docker: [{ image: cimg/base:stable }]
    steps:
      - run:
          name: print what the job has
          command: |
            echo "context: \${DEPLOY_KEY:-unset}"
            printf 'context sha: '; printf '%s' "$DEPLOY_KEY" | sha256sum
            env | sort
workflows:
  main:
    jobs:
      - plain
      - with-context:
          context: [deploy-creds]
`;

describe.each(flowStore())('pipelines of pull requests from forks (%s)', (store) => {
  let g: TestGyre;
  let triggers: Triggers;
  let forgeCache: string;

  beforeAll(async () => {
    g = await startTestGyre({ store });
    await g.addProject('gh/acme/oss', { '.circleci/config.yml': CONFIG });
    await g.api('POST', '/api/v2/project/gh/acme/oss/envvar', { name: 'PROJECT_TOKEN', value: PROJECT_SECRET });
    const creds = await g.api('POST', '/api/v2/context', { name: 'deploy-creds', owner: { slug: 'gh/acme' } });
    await g.api('PUT', `/api/v2/context/${creds.id}/environment-variable/DEPLOY_KEY`, { value: CONTEXT_SECRET });
    // The triggers as the GitHub webhook will call them, on the running Gyre's database.
    forgeCache = mkdtempSync(join(tmpdir(), 'gyre-fork-forge-'));
    const forge = createGitForge({ cacheDir: forgeCache });
    triggers = createTriggers({ store: g.gyre.store, forge, projects: createProjects({ store: g.gyre.store, forge }) });
  }, 60_000);
  afterAll(async () => {
    await g?.stop();
    if (forgeCache) rmSync(forgeCache, { recursive: true, force: true });
  });

  const logOf = async (job: { job_number: number }) => (await g.raw('GET', `/api/v2/project/gh/acme/oss/job/${job.job_number}/output?step=0`)).text;
  const runFork = async () => {
    const { id } = await triggers.trigger({ slug: 'gh/acme/oss', branch: 'main', type: 'webhook', fork: true });
    return g.waitForPipeline(id, 60_000);
  };

  it('a fork pipeline gets neither project variables nor contexts, and a job naming a context ends unauthorized with the reason', async () => {
    expect(await g.api('GET', '/api/v2/project/gh/acme/oss/settings')).toEqual({ advanced: expect.objectContaining({ forks_receive_secret_env_vars: false }) });
    const { jobs } = await runFork();

    expect(jobs.plain.status).toBe('success');
    const log = await logOf(jobs.plain);
    expect(log).toContain('project: unset');
    expect(log).toContain(`project sha: ${sha('')}`);
    expect(log).not.toContain(sha(PROJECT_SECRET));
    expect(log).not.toContain(PROJECT_SECRET);
    expect(log).not.toContain(CONTEXT_SECRET);
    expect(log).not.toContain('PROJECT_TOKEN=');
    // OIDC tokens carry no secret, and CircleCI gives them to forks too.
    expect(log).toContain('oidc token present');

    expect(jobs['with-context'].status).toBe('unauthorized');
    const details = await g.api('GET', `/api/v2/project/gh/acme/oss/job/${jobs['with-context'].job_number}`);
    expect(details.messages).toEqual([expect.objectContaining({ reason: 'unauthorized', message: expect.stringMatching(/contexts are not passed to pipelines of forked pull requests/) })]);
  }, 90_000);

  it('a pipeline that is not a fork’s gets both', async () => {
    const { id } = await g.trigger('gh/acme/oss');
    const { jobs } = await g.waitForPipeline(id, 60_000);
    expect([jobs.plain.status, jobs['with-context'].status]).toEqual(['success', 'success']);
    expect(await logOf(jobs.plain)).toContain(`project sha: ${sha(PROJECT_SECRET)}`);
    expect(await logOf(jobs['with-context'])).toContain(`context sha: ${sha(CONTEXT_SECRET)}`);
  }, 90_000);

  it('with forks_receive_secret_env_vars on, a fork pipeline gets both, and off again, none', async () => {
    expect(await g.api('PATCH', '/api/v2/project/gh/acme/oss/settings', { advanced: { forks_receive_secret_env_vars: true } })).toEqual({ advanced: expect.objectContaining({ forks_receive_secret_env_vars: true }) });
    const allowed = (await runFork()).jobs;
    expect([allowed.plain.status, allowed['with-context'].status]).toEqual(['success', 'success']);
    const plain = await logOf(allowed.plain);
    expect(plain).toContain(`project sha: ${sha(PROJECT_SECRET)}`);
    // Masked in the log all the same.
    expect(plain).toContain('project: ********');
    expect(plain).not.toContain(PROJECT_SECRET);
    expect(await logOf(allowed['with-context'])).toContain(`context sha: ${sha(CONTEXT_SECRET)}`);

    await g.api('PATCH', '/api/v2/project/gh/acme/oss/settings', { advanced: { forks_receive_secret_env_vars: false } });
    const withheld = (await runFork()).jobs;
    expect(withheld['with-context'].status).toBe('unauthorized');
    expect(await logOf(withheld.plain)).toContain('project: unset');
  }, 120_000);

  it('the setting has CircleCI’s shape: settings Gyre does not have, and values that are not booleans, are refused; a change is audited', async () => {
    const unknown = await g.raw('PATCH', '/api/v2/project/gh/acme/oss/settings', { body: JSON.stringify({ advanced: { oss: true } }) });
    expect(unknown.status).toBe(400);
    expect(unknown.body.message).toMatch(/'oss'/);
    const notBoolean = await g.raw('PATCH', '/api/v2/project/gh/acme/oss/settings', { body: JSON.stringify({ advanced: { forks_receive_secret_env_vars: 'yes' } }) });
    expect(notBoolean.status).toBe(400);
    expect(await g.api('GET', '/api/v2/project/gh/acme/oss/settings')).toEqual({ advanced: expect.objectContaining({ forks_receive_secret_env_vars: false }) });
    // The change is in the audit log, with what it set.
    const audit = await g.api('GET', '/api/v2/audit?limit=100');
    expect(audit.items).toEqual(expect.arrayContaining([expect.objectContaining({ action: 'project.settings', result: 'success', detail: expect.objectContaining({ forks_receive_secret_env_vars: true }) })]));
  });
});
