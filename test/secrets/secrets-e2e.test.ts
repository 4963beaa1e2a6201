import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { startFakeDockerEngine, type FakeDockerEngine } from '../support/fake-docker-engine';
import { startTestGyre, type TestGyre } from '../support/gyre';
import { until } from '../support/processes';

/**
 * Secrets as a team uses them, through a whole Gyre: a project variable and a context variable
 * reach a job's steps and nowhere else in clear. The job prints them plainly and encoded, and the
 * log shows masks; the job's API answers, the config endpoint, the audit log, every table and every
 * stored blob hold no plaintext afterwards; a job naming a context its pipeline may not use ends
 * `unauthorized` with the reason and never runs. Registry credentials in the config name the
 * variables (`$PROJECT_TOKEN`): the config endpoint and the stored job spec keep the reference, and
 * the agent alone expands it, as it pulls.
 */

const PROJECT_SECRET = 'proj-s3cr3t-value-7a41';
const CONTEXT_SECRET = 'ctx-t0ken-9f02-delta';

const CONFIG = `version: 2.1
jobs:
  deploy:
    docker:
      - image: cimg/base:stable
        auth:
          username: deploy-bot
          password: $PROJECT_TOKEN
      - image: 123456789012.dkr.ecr.us-east-1.amazonaws.com/tools:1
        aws_auth:
          aws_access_key_id: \${DEPLOY_KEY}
          aws_secret_access_key: $PROJECT_TOKEN
    steps:
      - run:
          name: use the secrets
          command: |
            echo "project: $PROJECT_TOKEN"
            echo "context: $DEPLOY_KEY"
            printf '%s' "$DEPLOY_KEY" | base64
            node -e 'console.log(encodeURIComponent(process.env.DEPLOY_KEY + "/x"), JSON.stringify(process.env.PROJECT_TOKEN))' 2>/dev/null || true
            test -n "$CIRCLE_OIDC_TOKEN" && echo "oidc token present"
  forbidden:
    docker: [{ image: cimg/base:stable }]
    steps:
      - run: echo "should never run"
workflows:
  main:
    jobs:
      - deploy:
          context: [deploy-creds]
      - forbidden:
          context: [release-only]
`;

/** Every file under a directory, recursively. */
function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    const info = statSync(path);
    if (info.isDirectory()) out.push(...filesUnder(path));
    else out.push(path);
  }
  return out;
}

describe('secrets through a whole Gyre', () => {
  let g: TestGyre;
  beforeAll(async () => {
    g = await startTestGyre();
    await g.addProject('gh/acme/shop', { '.circleci/config.yml': CONFIG });
    await g.api('POST', '/api/v2/project/gh/acme/shop/envvar', { name: 'PROJECT_TOKEN', value: PROJECT_SECRET });
    const creds = await g.api('POST', '/api/v2/context', { name: 'deploy-creds', owner: { slug: 'gh/acme' } });
    await g.api('PUT', `/api/v2/context/${creds.id}/environment-variable/DEPLOY_KEY`, { value: CONTEXT_SECRET });
    // A context only pipelines of the release branch may use.
    const release = await g.api('POST', '/api/v2/context', { name: 'release-only', owner: { slug: 'gh/acme' } });
    await g.api('PUT', `/api/v2/context/${release.id}/environment-variable/RELEASE_KEY`, { value: 'release-key-never-seen' });
    await g.api('POST', `/api/v2/context/${release.id}/restrictions`, { restriction_type: 'expression', restriction_value: 'pipeline.git.branch == "release"' });
  }, 60_000);
  afterAll(() => g?.stop());

  it('makes the organisation’s OIDC signing key when its first project is added, before any job asks for a token', async () => {
    const project = await g.api('GET', '/api/v2/project/gh/acme/shop');
    expect((await g.api('GET', '/api/v2/project/gh/acme/shop/pipeline')).items).toEqual([]);
    const jwks = async () => ((await (await fetch(`${g.url}/org/${project.organization_id}/.well-known/jwks-pub.json`)).json()) as { keys: { kid: string }[] }).keys;
    const keys = await until('the organisation’s JWKS to publish a key', async () => {
      const published = await jwks();
      return published.length > 0 && published;
    }, 15_000, 50);
    expect(keys).toHaveLength(1);
  });

  it('the job gets its variables, its output shows masks, and nothing else holds a value in clear', async () => {
    const { id } = await g.trigger('gh/acme/shop');
    const { jobs } = await g.waitForPipeline(id, 60_000);
    expect(jobs.deploy.status).toBe('success');
    const output = await g.raw('GET', `/api/v2/project/gh/acme/shop/job/${jobs.deploy.job_number}/output?step=0`);
    expect(output.text).toContain('project: ********');
    expect(output.text).toContain('context: ********');
    expect(output.text).toContain('oidc token present');
    for (const form of [PROJECT_SECRET, CONTEXT_SECRET, Buffer.from(CONTEXT_SECRET).toString('base64'), encodeURIComponent(`${CONTEXT_SECRET}/x`)]) {
      expect(output.text).not.toContain(form);
    }

    // The unauthorized job: ended with the reason, never run.
    expect(jobs.forbidden.status).toBe('unauthorized');
    const details = await g.api('GET', `/api/v2/project/gh/acme/shop/job/${jobs.forbidden.job_number}`);
    expect(details.messages).toEqual([expect.objectContaining({ reason: 'unauthorized', message: expect.stringMatching(/release-only/) })]);

    // Everything the API says about the project, its contexts and the pipeline.
    const answers = await Promise.all([
      g.raw('GET', '/api/v2/project/gh/acme/shop/envvar'),
      g.raw('GET', '/api/v2/project/gh/acme/shop/envvar/PROJECT_TOKEN'),
      g.raw('GET', '/api/v2/context?owner-slug=gh/acme'),
      g.raw('GET', `/api/v2/pipeline/${id}/config`),
      g.raw('GET', '/api/v2/audit?limit=100'),
      g.raw('GET', `/api/v2/project/gh/acme/shop/job/${jobs.deploy.job_number}`),
    ]);
    for (const answer of answers) {
      expect(answer.text).not.toContain(PROJECT_SECRET);
      expect(answer.text).not.toContain(CONTEXT_SECRET);
    }
    expect(answers[0].body.items).toEqual([expect.objectContaining({ name: 'PROJECT_TOKEN', value: 'xxxx7a41' })]);
    // The config and the job's stored spec hold the registry credentials as references.
    expect(answers[3].text).toContain('password: $PROJECT_TOKEN');
    expect(answers[3].text).toContain('aws_access_key_id: ${DEPLOY_KEY}');
    const [spec] = await g.gyre.store.query<{ spec: string }>(`SELECT spec::text AS spec FROM jobs WHERE name = 'deploy'`);
    expect(JSON.parse(spec.spec).executor.images.map((i: any) => ({ auth: i.auth, awsAuth: i.awsAuth }))).toEqual([
      { auth: { username: 'deploy-bot', password: '$PROJECT_TOKEN' }, awsAuth: undefined },
      { auth: undefined, awsAuth: { aws_access_key_id: '${DEPLOY_KEY}', aws_secret_access_key: '$PROJECT_TOKEN' } },
    ]);

    // The database: every row of every table, as text.
    const tables = await g.gyre.store.query<{ tablename: string }>(`SELECT tablename FROM pg_tables WHERE schemaname = 'public'`);
    for (const { tablename } of tables) {
      const rows = await g.gyre.store.query<{ row: string }>(`SELECT t::text AS row FROM "${tablename}" t`);
      for (const { row } of rows) {
        expect({ tablename, leak: row.includes(PROJECT_SECRET) || row.includes(CONTEXT_SECRET) }).toEqual({ tablename, leak: false });
      }
    }
    // The blob store and the rest of the data directory (logs, spools), byte for byte.
    for (const file of filesUnder(g.dataDir).filter((f) => !f.includes('pgdata'))) {
      const bytes = readFileSync(file);
      expect({ file, leak: bytes.includes(PROJECT_SECRET) || bytes.includes(CONTEXT_SECRET) }).toEqual({ file, leak: false });
    }
  }, 90_000);
});

/**
 * The same references in a Docker job, through a whole Gyre whose built-in runner runs docker jobs
 * on an Engine API: a recording stand-in for one (nothing can be pulled on this machine), so what
 * the agent hands the engine for the pull (X-Registry-Auth) is what a registry wanting those
 * credentials would get.
 */
describe('registry credentials named by variables, through a whole Gyre with a container engine', () => {
  const USER = 'robot-acme-pull';
  const PASSWORD = 'registry-pa55word-e2e-31c7';
  const CONFIG_WITH_AUTH = `version: 2.1
jobs:
  private-image:
    docker:
      - image: registry.corp:5000/team/app:1
        auth:
          username: $REGISTRY_USER
          password: \${REGISTRY_PASS}
    steps:
      - run: echo pulled
  missing-variable:
    docker:
      - image: registry.corp:5000/team/app:2
        auth:
          username: $REGISTRY_USER
          password: $NOT_SET_ANYWHERE
    steps:
      - run: echo never
workflows:
  main:
    jobs:
      - private-image:
          context: [registry]
      - missing-variable
`;
  let g: TestGyre;
  let engine: FakeDockerEngine;
  beforeAll(async () => {
    engine = await startFakeDockerEngine();
    g = await startTestGyre({ env: { GYRE_EXECUTOR: 'docker', GYRE_DOCKER_SOCKET: engine.socketPath } });
    await g.addProject('gh/acme/images', { '.circleci/config.yml': CONFIG_WITH_AUTH });
    await g.api('POST', '/api/v2/project/gh/acme/images/envvar', { name: 'REGISTRY_USER', value: USER });
    const registry = await g.api('POST', '/api/v2/context', { name: 'registry', owner: { slug: 'gh/acme' } });
    await g.api('PUT', `/api/v2/context/${registry.id}/environment-variable/REGISTRY_PASS`, { value: PASSWORD });
  }, 60_000);
  afterAll(async () => {
    await g?.stop();
    await engine?.close();
  });

  it("pulls with the variables' values, and a name no variable has fails the job naming it and the image", async () => {
    const { id } = await g.trigger('gh/acme/images');
    const { jobs } = await g.waitForPipeline(id, 60_000);

    expect(jobs['private-image'].status).toBe('success');
    const pulls = engine.requests.filter((r) => r.method === 'POST' && r.path === '/images/create');
    expect(pulls.map((p) => `${p.query.get('fromImage')}:${p.query.get('tag')}`)).toEqual(['registry.corp:5000/team/app:1']);
    const auth = JSON.parse(Buffer.from(String(pulls[0].headers['x-registry-auth']), 'base64url').toString('utf8'));
    expect(auth).toEqual({ username: USER, password: PASSWORD, serveraddress: 'registry.corp:5000' });

    expect(jobs['missing-variable'].status).toBe('failed');
    const output = await g.raw('GET', `/api/v2/project/gh/acme/images/job/${jobs['missing-variable'].job_number}/output?step=0`);
    expect(output.text).toContain('cannot pull registry.corp:5000/team/app:2: auth.password is $NOT_SET_ANYWHERE, and this job has no variable NOT_SET_ANYWHERE');
    expect(output.text).not.toContain(USER);
    expect(output.text).not.toContain(PASSWORD);

    // Only the agent held the values: the config endpoint and the job rows keep the references.
    const config = await g.raw('GET', `/api/v2/pipeline/${id}/config`);
    expect(config.text).toContain('password: ${REGISTRY_PASS}');
    const rows = await g.gyre.store.query<{ spec: string }>(`SELECT spec::text AS spec FROM jobs`);
    for (const row of rows) expect(row.spec).not.toContain(PASSWORD);
    expect(rows.some((r) => r.spec.includes('${REGISTRY_PASS}'))).toBe(true);
  }, 90_000);
});
