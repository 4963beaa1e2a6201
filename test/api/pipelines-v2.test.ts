import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { specOperationOf, specOperations } from '../support/circleci-spec';
import { makeGitRepo, startTestGyre, flowStore, type TestGyre } from '../support/gyre';

/**
 * The pipeline and project operations of CircleCI's API v2 that Gyre added for its description: a
 * pipeline by number, `pipeline/mine`, `pipeline/{id}/values`, `GET /pipeline` across the projects
 * a caller can see, `pipeline/run`, project creation by slug, and `GET /api/v2/openapi.json`.
 * Callers are hostile where they can be: other organisations' users, project tokens, bad tokens and
 * slugs, an organisation admin pointing Gyre at a path on its disk.
 */

const CONFIG = `version: 2.1
parameters:
  target: { type: string, default: staging }
jobs:
  build:
    docker: [{ image: cimg/base:stable }]
    steps:
      - run: echo "deploying to << pipeline.parameters.target >>"
workflows:
  main:
    jobs: [build]
`;

describe.each(flowStore())('pipelines and projects of API v2 (%s)', (store) => {
  let g: TestGyre;
  const users: Record<string, { id: string; token: string }> = {};
  let repo: string;

  /** A call as one of the users made below. */
  const as = async (who: string, method: string, path: string, body?: unknown) => {
    const res = await fetch(g.url + path, {
      method,
      headers: { 'Circle-Token': users[who].token, ...(body === undefined ? {} : { 'Content-Type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : undefined };
  };

  beforeAll(async () => {
    g = await startTestGyre({ store, env: { GYRE_RATE_LIMIT_TOKEN: '0' } });
    repo = await g.addProject('gh/acme/app', { '.circleci/config.yml': CONFIG });
    await g.addProject('gh/rival/thing', { '.circleci/config.yml': CONFIG });
    for (const login of ['alice', 'bob', 'outsider', 'owner']) {
      const made = await g.api('POST', '/api/v2/users', { login });
      users[login] = { id: made.id, token: made.token };
    }
    await g.api('PUT', '/api/v2/organization/gh/acme/members/alice', { role: 'member' });
    await g.api('PUT', '/api/v2/organization/gh/acme/members/bob', { role: 'member' });
    await g.api('PUT', '/api/v2/organization/gh/acme/members/owner', { role: 'admin' });
    await g.api('PUT', '/api/v2/organization/gh/rival/members/outsider', { role: 'admin' });
    users.reader = { id: '', token: (await g.api('POST', '/api/v2/project/gh/acme/app/tokens', { scope: 'read', label: 'reader' })).token };
  }, 60_000);
  afterAll(() => g?.stop());

  it('finds a pipeline by its number, as by its id; a number that is not one is a 404 naming it', async () => {
    const made = await g.trigger('gh/acme/app', { branch: 'main' });
    // Read once the conductor has taken it up: a pending pipeline may turn `created` between two reads.
    const deadline = Date.now() + 30_000;
    while ((await g.api('GET', `/api/v2/pipeline/${made.id}`)).state === 'pending' && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    const byNumber = await g.api('GET', `/api/v2/project/gh/acme/app/pipeline/${made.number}`);
    expect(byNumber.state).not.toBe('pending');
    expect(byNumber).toEqual(await g.api('GET', `/api/v2/pipeline/${made.id}`));
    expect(byNumber).toMatchObject({ id: made.id, number: made.number, project_slug: 'gh/acme/app', vcs: { branch: 'main' } });
    for (const bad of ['99999', '-1', '1e3', '0x10', '1%20OR%201=1']) {
      const res = await g.raw('GET', `/api/v2/project/gh/acme/app/pipeline/${bad}`);
      expect([res.status, res.body.message]).toEqual([404, `pipeline not found: ${decodeURIComponent(bad)}`]);
    }
    // Another organisation's user cannot tell the project exists.
    expect(await as('outsider', 'GET', `/api/v2/project/gh/acme/app/pipeline/${made.number}`)).toEqual({ status: 404, body: { message: 'project not found: gh/acme/app' } });
  });

  it('lists only the pipelines the caller triggered under pipeline/mine and GET /pipeline?mine=true', async () => {
    const alices = (await as('alice', 'POST', '/api/v2/project/gh/acme/app/pipeline', { branch: 'main' })).body;
    const bobs = (await as('bob', 'POST', '/api/v2/project/gh/acme/app/pipeline', { branch: 'main' })).body;
    const mine = (await as('alice', 'GET', '/api/v2/project/gh/acme/app/pipeline/mine')).body.items.map((p: any) => p.id);
    expect(mine).toEqual([alices.id]);
    expect((await as('bob', 'GET', '/api/v2/project/gh/acme/app/pipeline/mine')).body.items.map((p: any) => p.id)).toEqual([bobs.id]);
    expect((await as('alice', 'GET', '/api/v2/pipeline?mine=true')).body.items.map((p: any) => p.id)).toEqual([alices.id]);
    expect((await as('alice', 'GET', '/api/v2/project/gh/acme/app/pipeline/mine')).body.items[0].trigger.actor.login).toBe('alice');
  });

  it('names who started each workflow: the user who triggered it, or the system actor when no user did', async () => {
    const alices = (await as('alice', 'POST', '/api/v2/project/gh/acme/app/pipeline', { branch: 'main' })).body;
    let workflows: any[] = [];
    for (const deadline = Date.now() + 15_000; workflows.length === 0 && Date.now() < deadline; ) {
      workflows = (await g.api('GET', `/api/v2/pipeline/${alices.id}/workflow`)).items;
      if (workflows.length === 0) await new Promise((r) => setTimeout(r, 100));
    }
    expect(workflows.map((w) => w.started_by)).toEqual([users.alice.id]);
    expect((await g.api('GET', `/api/v2/workflow/${workflows[0].id}`)).started_by).toBe(users.alice.id);

    // A pipeline no user started (a schedule attributed to the system, a push from an unlinked GitHub account).
    const [{ id: pipelineId }] = await g.gyre.store.query<{ id: string }>(
      `INSERT INTO pipelines (id, project_id, number, state, trigger_type, branch, revision, commit_subject)
       SELECT gen_random_uuid(), project_id, 90001, 'created', 'schedule', branch, revision, commit_subject FROM pipelines WHERE id = $1 RETURNING id`,
      [alices.id],
    );
    const [{ id: workflowId }] = await g.gyre.store.query<{ id: string }>(
      `INSERT INTO workflows (id, pipeline_id, name, status, created_at, stopped_at) VALUES (gen_random_uuid(), $1, 'nightly', 'success', now(), now()) RETURNING id`,
      [pipelineId],
    );
    // Both answers are checked against CircleCI's description (every answer is, test/setup-spec-watch.ts), which requires a uuid.
    expect((await g.api('GET', `/api/v2/workflow/${workflowId}`)).started_by).toBe('00000000-0000-0000-0000-000000000000');
    expect((await g.api('GET', `/api/v2/pipeline/${pipelineId}/workflow`)).items.map((w: any) => w.started_by)).toEqual(['00000000-0000-0000-0000-000000000000']);
  });

  it('lists the pipelines of every project a caller can see across GET /pipeline, newest first, page by page', async () => {
    await g.trigger('gh/acme/app');
    const rival = await g.trigger('gh/rival/thing');
    // Enough for pages, all made at one instant: the order must not skip or repeat any at a page's edge.
    await g.gyre.store.query(
      `INSERT INTO pipelines (id, project_id, number, state, trigger_type, branch, revision, created_at, updated_at)
       SELECT gen_random_uuid(), project_id, 1000 + n, 'created', 'api', branch, revision, created_at, created_at FROM pipelines, generate_series(1, 45) n WHERE id = $1`,
      [rival.id]
    );
    const all: any[] = [];
    let pages = 0;
    let token: string | null = null;
    do {
      const page: any = await g.api('GET', `/api/v2/pipeline${token ? `?page-token=${token}` : ''}`);
      all.push(...page.items);
      token = page.next_page_token;
      pages += 1;
    } while (token);
    expect(pages).toBeGreaterThanOrEqual(3);
    const count = Number((await g.gyre.store.query<{ n: string }>('SELECT count(*) AS n FROM pipelines'))[0].n);
    expect(all).toHaveLength(count);
    expect(new Set(all.map((p) => p.id)).size).toBe(count);
    const times = all.map((p) => Date.parse(p.created_at));
    expect([...times].sort((a, b) => b - a)).toEqual(times);

    // The admin of gh/rival sees gh/rival's only, whatever org-slug says.
    const outsider = (await as('outsider', 'GET', '/api/v2/pipeline')).body.items;
    expect(new Set(outsider.map((p: any) => p.project_slug))).toEqual(new Set(['gh/rival/thing']));
    expect(await as('outsider', 'GET', '/api/v2/pipeline?org-slug=gh/acme')).toEqual({ status: 404, body: { message: 'organization not found: gh/acme' } });
    expect(await as('outsider', 'GET', '/api/v2/pipeline?org-slug=gh/nobody')).toEqual({ status: 404, body: { message: 'organization not found: gh/nobody' } });
    // A project token sees its project's pipelines only.
    const reader = (await as('reader', 'GET', '/api/v2/pipeline')).body.items;
    expect(reader.length).toBeGreaterThan(0);
    expect(new Set(reader.map((p: any) => p.project_slug))).toEqual(new Set(['gh/acme/app']));
    expect((await g.api('GET', '/api/v2/pipeline?org-slug=gh/rival')).items.every((p: any) => p.project_slug === 'gh/rival/thing')).toBe(true);
  });

  it('refuses hostile queries to GET /pipeline with a 400 that names the input', async () => {
    for (const [query, message] of [
      ['org-slug=acme', "org-slug 'acme' must look like gh/<org>"],
      ['org-slug=gh/acme/app', "org-slug 'gh/acme/app' must look like gh/<org>"],
      ["org-slug=gh/acme'%20OR%201=1--", "organization not found: gh/acme' OR 1=1--"],
      ['page-token=not-a-token', "page-token 'not-a-token' is not a token this API gave out"],
      [`page-token=${Buffer.from(JSON.stringify({ at: "2020-01-01'; DROP TABLE pipelines; --", id: 'x' })).toString('base64url')}`, 'is not a token this API gave out'],
      ['mine=perhaps', 'query.mine must be true or false'],
    ]) {
      const res = await g.raw('GET', `/api/v2/pipeline?${query}`);
      expect([query, res.status === 400 || res.status === 404, res.body.message]).toEqual([query, true, expect.stringContaining(message)]);
    }
    expect((await g.api('GET', '/api/v2/pipeline')).items.length).toBeGreaterThan(0);
  });

  it('gives the pipeline values its config saw, to readers of the project only', async () => {
    const made = await g.trigger('gh/acme/app', { branch: 'main' });
    const done = await g.waitForPipeline(made.id);
    const values = await g.api('GET', `/api/v2/pipeline/${made.id}/values`);
    expect(values).toEqual({
      'pipeline.id': made.id,
      'pipeline.number': made.number,
      'pipeline.project.git_url': repo,
      'pipeline.project.type': 'github',
      'pipeline.project.slug': 'gh/acme/app',
      'pipeline.git.tag': '',
      'pipeline.git.branch': 'main',
      'pipeline.git.revision': done.pipeline.vcs.revision,
      'pipeline.git.base_revision': '',
      'pipeline.git.default_branch': 'main',
      'pipeline.git.branch.is_default': true,
      'pipeline.trigger_source': 'api',
      'pipeline.in_setup': false,
    });
    expect(await as('outsider', 'GET', `/api/v2/pipeline/${made.id}/values`)).toEqual({ status: 404, body: { message: `pipeline not found: ${made.id}` } });
    expect((await g.raw('GET', '/api/v2/pipeline/00000000-0000-4000-8000-000000000000/values')).status).toBe(404);
  });

  it('runs a pipeline with pipeline/run: the config ref, its parameters, and refusals naming what is wrong', async () => {
    const run = await g.api('POST', '/api/v2/project/gh/acme/app/pipeline/run', { config: { branch: 'main' }, checkout: { branch: 'main' }, parameters: { target: 'production' } });
    expect(run).toMatchObject({ number: expect.any(Number), state: expect.stringMatching(/^(pending|created)$/) });
    const done = await g.waitForPipeline(run.id);
    expect(done.pipeline.trigger_parameters).toEqual({ target: 'production' });
    expect(done.jobs.build.status).toBe('success');
    const job = done.jobs.build.job_number;
    const steps = (await g.api('GET', `/api/v2/project/gh/acme/app/job/${job}/steps`)).items;
    const out = await g.raw('GET', `/api/v2/project/gh/acme/app/job/${job}/output?step=${steps.find((s: any) => s.name.includes('deploying')).index}`);
    expect(out.text).toContain('deploying to production');

    const refusals: [unknown, number, string][] = [
      [{ config: { branch: 'main' }, checkout: { branch: 'other' } }, 400, 'body.checkout must name the same branch or tag as body.config'],
      [{ config: { branch: 'main', tag: 'v1' } }, 400, 'body.config gives a branch and a tag'],
      [{ config: { branch: 'no-such-branch' } }, 400, "branch 'no-such-branch' does not exist"],
      [{ config: { ref: 'main' } }, 400, "body.config has a property 'ref' that is not allowed here"],
      [{ sneaky: true }, 400, "body has a property 'sneaky' that is not allowed here"],
      [{ parameters: { target: { nested: 'object' } } }, 400, 'body.parameters.target'],
    ];
    for (const [body, status, message] of refusals) {
      const res = await g.raw('POST', '/api/v2/project/gh/acme/app/pipeline/run', { body: JSON.stringify(body) });
      expect([res.status, res.body.message]).toEqual([status, expect.stringContaining(message)]);
    }
    // A read-only project token and another organisation's user may not run it.
    expect((await as('reader', 'POST', '/api/v2/project/gh/acme/app/pipeline/run', {})).status).toBe(403);
    expect(await as('outsider', 'POST', '/api/v2/project/gh/acme/app/pipeline/run', {})).toEqual({ status: 404, body: { message: 'project not found: gh/acme/app' } });
  });

  it('creates a project by slug, answering its settings; only an instance admin may name a path the server reads', async () => {
    const made = await g.api('POST', '/api/v2/project/gh/acme/added', { repo_url: makeGitRepo({ '.circleci/config.yml': CONFIG }) });
    expect(made).toEqual({ advanced: { autocancel_builds: false, build_fork_prs: false, build_prs_only: false, forks_receive_secret_env_vars: false, set_github_status: true } });
    const project = await g.api('GET', '/api/v2/project/gh/acme/added');
    const org = (await g.api('GET', '/api/v2/organization/gh/acme')).id;
    expect(project).toMatchObject({
      slug: 'gh/acme/added',
      name: 'added',
      organization_id: org,
      organization_name: 'acme',
      organization_slug: 'gh/acme',
      vcs_info: { provider: 'GitHub', default_branch: 'main' },
    });

    // An organisation admin pointing Gyre at another organisation's repository on the server's disk.
    const refused = await as('owner', 'POST', '/api/v2/project/gh/acme/stolen', { repo_url: repo.replace('acme', 'rival') });
    expect(refused.status).toBe(403);
    expect(refused.body.message).toContain('body.repo_url (a path or URL the server reads) may be given by an instance admin only');
    expect((await g.raw('GET', '/api/v2/project/gh/acme/stolen')).status).toBe(404);
    // Without one, the repository must be found by the forge (none here): a 400 that says so.
    const located = await as('owner', 'POST', '/api/v2/project/gh/acme/unlocated', {});
    expect([located.status, located.body.message]).toEqual([400, expect.stringContaining('body.repo_url is required')]);
    expect(await as('outsider', 'POST', '/api/v2/project/gh/acme/mine', {})).toEqual({ status: 404, body: { message: 'organization not found: gh/acme' } });
    expect((await as('alice', 'POST', '/api/v2/project/gh/acme/mine', {})).status).toBe(403);
    expect((await g.raw('POST', '/api/v2/project/gh/acme/added', { body: JSON.stringify({ repo_url: repo }) })).status).toBe(409);
    const badName = await g.raw('POST', '/api/v2/project/gh/acme/.hidden', { body: JSON.stringify({ repo_url: repo }) });
    expect([badName.status, badName.body.message]).toEqual([400, "repository name '.hidden' may use letters, digits, '.', '_' and '-' (up to 100)"]);
  });

  it('describes every API v2 route it serves in GET /api/v2/openapi.json, at the paths CircleCI describes', async () => {
    const res = await fetch(`${g.url}/api/v2/openapi.json`);
    expect(res.status).toBe(200);
    const doc: any = await res.json();
    expect(doc.openapi).toBe('3.1.0');
    const described = new Set<string>();
    for (const [path, item] of Object.entries<any>(doc.paths)) for (const method of Object.keys(item)) described.add(`${method.toUpperCase()} ${path}`);

    const served = g.gyre.routes.filter((r) => r.url.startsWith('/api/v2/'));
    expect(served.length).toBeGreaterThan(60);
    // Each served route, and nothing else, with one operation per method and path.
    expect(described.size).toBe(served.length);
    // Every operation of CircleCI's description that Gyre serves is described at CircleCI's path.
    const servedOperations = specOperations().filter((op) => served.some((r) => r.method === op.method && specOperationOf(op.method, instantiate(r.url))?.operationId === op.operationId));
    expect(servedOperations.length).toBeGreaterThan(50);
    // Parameter names aside (CircleCI's are not consistent: `context-id`, `context_id`), the same path.
    const shape = (path: string) => path.replace(/\{[^}]+\}/g, '{}');
    const describedShapes = new Set([...described].map(shape));
    expect(servedOperations.filter((op) => !describedShapes.has(shape(`${op.method} ${op.path}`))).map((op) => `${op.method} ${op.path}`)).toEqual([]);
    // Schemas come from the routes: the trigger's body, the pipeline's answer.
    const trigger = doc.paths['/project/{project-slug}/pipeline'].post;
    expect(Object.keys(trigger.requestBody.content['application/json'].schema.properties)).toEqual(['branch', 'tag', 'parameters']);
    expect(doc.paths['/pipeline/{pipeline-id}'].get.responses['200'].content['application/json'].schema.required).toEqual(expect.arrayContaining(['id', 'number', 'state', 'trigger']));
    expect(doc.paths['/project/{provider}/{organization}/{project}/pipeline/run'].post.parameters.map((p: any) => p.name)).toEqual(['provider', 'organization', 'project']);
  });

  it('says in docs/api.md, for every operation of the description, whether it is served, and is right', () => {
    const served = g.gyre.routes.filter((r) => r.url.startsWith('/api/v2/'));
    const isServed = (method: string, operationId: string) => served.some((r) => r.method === method && specOperationOf(method, instantiate(r.url))?.operationId === operationId);
    const docs = readFileSync(join(__dirname, '..', '..', 'docs', 'api.md'), 'utf8');
    const said = new Map<string, string>();
    for (const m of docs.matchAll(/^\| `(GET|POST|PUT|PATCH|DELETE)` \| `([^`]+)` \| `([^`]+)` \| (served|not served) \|/gm)) said.set(`${m[1]} ${m[2]}`, m[4]);
    const wrong = specOperations()
      .map((op) => ({ op: `${op.method} ${op.path}`, truth: isServed(op.method, op.operationId) ? 'served' : 'not served' }))
      .filter(({ op, truth }) => said.get(op) !== truth)
      .map(({ op, truth }) => `${op}: docs/api.md says ${said.get(op) ?? 'nothing'}, but it is ${truth}`);
    expect(wrong).toEqual([]);
    expect(said.size).toBe(specOperations().length);
  });
});

/** A concrete path for a route pattern, for matching it against the description. */
function instantiate(url: string): string {
  return url
    .replace(':vcs/:org/:repo', 'gh/acme/app')
    .replace(':vcs/:org', 'gh/acme')
    .replace(/:[A-Za-z0-9_]+/g, '1')
    .replace(/\*$/, 'x');
}
