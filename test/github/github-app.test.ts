import { randomUUID } from 'node:crypto';
import { run } from '../../runtime/cli/main';
import { flowStore, startTestGyre, type TestGyre } from '../support/gyre';
import { describedOperation, describedOperationOnGhes, githubSchemaCheck } from '../support/github-openapi';
import { startGitHubAppStandIn, type GitHubAppStandIn, type Sender, type StandInRepository } from '../support/github-stand-in';

/**
 * The GitHub App end to end: a whole Gyre against the GitHub stand-in (REST as the app and its
 * installations, git over smart HTTP requiring an installation token, deliveries signed with the
 * webhook secret), on PGlite and, with DATABASE_URL, on PostgreSQL. The repository is private:
 * every config is read and every checkout made with the installation's short-lived tokens.
 */

const MASK = '********';
const PROJECT_SECRET = 'gh-proj-s3cr3t-7731';

const CONFIG = `version: 2.1
jobs:
  build:
    docker: [{ image: cimg/base:stable }]
    steps:
      - checkout
      - run:
          name: show
          command: |
            echo "branch=$CIRCLE_BRANCH tag=\${CIRCLE_TAG:-none} sha=$CIRCLE_SHA1"
            echo "pr=\${CIRCLE_PULL_REQUEST:-none} prs=\${CIRCLE_PULL_REQUESTS:-none}"
            echo "prnum=\${CIRCLE_PR_NUMBER:-none} prrepo=\${CIRCLE_PR_REPONAME:-none} pruser=\${CIRCLE_PR_USERNAME:-none}"
            echo "base=<< pipeline.git.base_revision >> source=<< pipeline.trigger_source >>"
            echo "secret=\${PROJECT_SECRET:-unset}"
            echo "marker=$(cat marker.txt)"
            echo "head=$(git rev-parse HEAD)"
            if git ls-remote origin >/dev/null 2>&1; then echo "origin: still readable"; else echo "origin: not readable"; fi
            echo "git config vars: $(env | grep -c '^GIT_CONFIG' || true)"
workflows:
  main:
    jobs:
      - build:
          filters:
            tags: { only: /^v.*/ }
`;

const DEV: Sender = { login: 'octo-dev', id: 583_231 };
const STRANGER: Sender = { login: 'outside-contributor', id: 777_001 };

describe.each(flowStore())('the GitHub App (%s)', (store) => {
  let gh: GitHubAppStandIn;
  let g: TestGyre;
  let repo: StandInRepository;
  let fork: StandInRepository;
  let installationId: number;
  let devUserId: string;

  beforeAll(async () => {
    gh = await startGitHubAppStandIn();
    repo = gh.createRepository('acme/app', { private: true, files: { '.circleci/config.yml': CONFIG, 'marker.txt': 'main-1\n' } });
    fork = gh.createRepository('outside-contributor/app', { private: true, forkOf: repo });
    gh.createRepository('acme/elsewhere', { private: true, files: { 'README.md': 'not installed\n' } });
    installationId = gh.install({ login: 'acme', id: 9001 }, [repo]);
    g = await startTestGyre({ store, env: gh.env });
    // A Gyre user linked to the GitHub account that pushes (as sign-in with GitHub links them).
    devUserId = randomUUID();
    await g.gyre.store.query(`INSERT INTO users (id, login, name) VALUES ($1, 'dev', 'Dev')`, [devUserId]);
    await g.gyre.store.query(`INSERT INTO user_identities (provider, subject, user_id, login) VALUES ('github', $1, $2, $3)`, [String(DEV.id), devUserId, DEV.login]);
  }, 60_000);
  afterAll(async () => {
    await g?.stop();
    await gh?.stop();
  });

  const deliver = (event: string, payload: unknown, options?: { deliveryId?: string; secret?: string | null; body?: string }) => gh.deliver(g.url, event, payload, options);
  const pipelineCount = async () => Number((await g.gyre.store.query<{ n: string }>('SELECT count(*) AS n FROM pipelines'))[0].n);
  const deliveryCount = async () => Number((await g.gyre.store.query<{ n: string }>('SELECT count(*) AS n FROM github_deliveries'))[0].n);
  const logOf = async (jobNumber: number, step: number) => (await g.raw('GET', `/api/v2/project/gh/acme/app/job/${jobNumber}/output?step=${step}`)).text;
  const push = (branch: string, files: Record<string, string>, message: string, sender = DEV) => {
    const before = repo.rev(repo.defaultBranch);
    const sha = repo.commit(branch, files, message);
    return { sha, payload: gh.payloads.push(repo, { ref: `refs/heads/${branch}`, after: sha, before, message, sender, installationId }) };
  };

  test('the installation is recorded, and `project add <org>/<repo>` finds the repository through it', async () => {
    const installed = await deliver('installation', gh.payloads.installationCreated(installationId, { login: 'acme', id: 9001 }, [repo], DEV));
    expect(installed.status).toBe(200);
    const rows = await g.gyre.store.query<{ full_name: string; installation_id: string; private: boolean }>('SELECT full_name, installation_id::text AS installation_id, private FROM github_repositories');
    expect(rows).toEqual([{ full_name: 'acme/app', installation_id: String(installationId), private: true }]);

    const project = await g.api('POST', '/api/v2/projects', { org: 'acme', name: 'app' });
    expect(project.vcs_info ?? project).toMatchObject({});
    const [row] = await g.gyre.store.query<{ repo_url: string; default_branch: string }>(`SELECT repo_url, default_branch FROM projects WHERE slug = 'gh/acme/app'`);
    expect(row).toEqual({ repo_url: repo.cloneUrl, default_branch: 'main' });
    await g.api('POST', '/api/v2/project/gh/acme/app/envvar', { name: 'PROJECT_SECRET', value: PROJECT_SECRET });

    // A repository the app is not installed on is not found by name.
    const refused = await g.raw('POST', '/api/v2/projects', { body: JSON.stringify({ org: 'acme', name: 'elsewhere' }) });
    expect(refused.status).toBe(400);
    expect(refused.body.message).toMatch(/not installed on acme\/elsewhere/);

    // Repositories added to the installation later are found too, by the CLI without --repo.
    const lib = gh.createRepository('acme/lib', { private: true, defaultBranch: 'trunk' });
    gh.install({ login: 'acme', id: 9001 }, [lib]);
    const added = await deliver('installation_repositories', gh.payloads.repositoriesAdded(installationId + 1, { login: 'acme', id: 9001 }, [lib], DEV));
    expect(added.status).toBe(200);
    expect(await g.gyre.store.query(`SELECT installation_id::text AS id FROM github_repositories WHERE full_name = 'acme/lib'`)).toEqual([{ id: String(installationId + 1) }]);
    let out = '';
    const io = { stdout: (t: string) => void (out += t), stderr: (t: string) => void (out += t), env: { GYRE_URL: g.url, GYRE_TOKEN: g.token } };
    expect(await run(['project', 'add', 'acme/lib'], io)).toBe(0);
    expect(out).toBe('gh/acme/lib\n');
    const [lib_] = await g.gyre.store.query<{ repo_url: string; default_branch: string }>(`SELECT repo_url, default_branch FROM projects WHERE slug = 'gh/acme/lib'`);
    expect(lib_).toEqual({ repo_url: lib.cloneUrl, default_branch: 'trunk' });
  });

  test('a signed push starts a pipeline on its branch and commit, as the pusher, checked out privately with a token nothing keeps', async () => {
    const { sha, payload } = push('main', { 'marker.txt': 'main-2\n' }, 'Second commit');
    const answer = await deliver('push', payload);
    expect(answer.status).toBe(200);
    expect(answer.body.pipeline).toBeDefined();
    const { pipeline, jobs } = await g.waitForPipeline(answer.body.pipeline.id, 45_000);
    expect(pipeline.vcs).toMatchObject({ branch: 'main', revision: sha });
    expect(pipeline.trigger).toMatchObject({ type: 'webhook', actor: { login: 'dev' } });
    expect(jobs.build.status).toBe('success');
    const log = await logOf(jobs.build.job_number, 1);
    expect(log).toContain(`branch=main tag=none sha=${sha}`);
    expect(log).toContain('pr=none prs=none');
    expect(log).toContain('prnum=none prrepo=none pruser=none');
    expect(log).toContain('source=webhook');
    expect(log).toContain(`secret=${MASK}`);
    expect(log).toContain('marker=main-2');
    expect(log).toContain(`head=${sha}`);
    // The token served the checkout only: not in .git/config, not in a later step's environment.
    expect(log).toContain('origin: not readable');
    expect(log).toContain('git config vars: 0');

    // The checkout's token read this one repository's contents, and appears in no output or job row.
    const token = gh.tokens.find((t) => t.repositories?.length === 1 && t.permissions?.contents === 'read');
    expect(token).toMatchObject({ installationId, repositories: ['app'], permissions: { contents: 'read' } });
    const checkout = await logOf(jobs.build.job_number, 0);
    expect(checkout).toContain('HEAD is now at');
    for (const t of gh.tokens) {
      expect(checkout + log).not.toContain(t.token);
      const held = await g.gyre.store.query(`SELECT 1 FROM jobs WHERE spec::text LIKE $1 UNION ALL SELECT 1 FROM pipelines WHERE config_source LIKE $1 OR parameters::text LIKE $1`, [`%${t.token}%`]);
      expect(held).toEqual([]);
    }
    expect(gh.gitRequests.filter((r) => r.status === 200).length).toBeGreaterThan(0);
    expect(gh.gitRequests.every((r) => r.repository === 'acme/app')).toBe(true);

    // The API's trigger of a branch reads the private repository through the installation too.
    const triggered = await g.trigger('gh/acme/app', { branch: 'main' });
    const byApi = await g.waitForPipeline(triggered.id, 45_000);
    expect(byApi.pipeline.vcs).toMatchObject({ branch: 'main', revision: sha });
    expect(byApi.pipeline.trigger.type).toBe('api');
    expect(byApi.jobs.build.status).toBe('success');
  });

  test('a redelivery changes nothing, and neither does a push of the same commit from the pull request event', async () => {
    const { payload } = push('main', { 'marker.txt': 'main-3\n' }, 'Third commit');
    const first = await deliver('push', payload);
    expect(first.status).toBe(200);
    const pipelines = await pipelineCount();
    const deliveries = await deliveryCount();
    const again = await deliver('push', payload, { deliveryId: first.deliveryId });
    expect(again).toMatchObject({ status: 200, body: { duplicate: true } });
    // Another delivery of the same push (GitHub's redelivery keeps the id; a second hook would not).
    const other = await deliver('push', payload);
    expect(other.status).toBe(200);
    expect(other.body.message).toMatch(/Already built by pipeline/);
    expect(await pipelineCount()).toBe(pipelines);
    expect(await deliveryCount()).toBe(deliveries + 1);
    await g.waitForPipeline(first.body.pipeline.id, 45_000);
  });

  test('a bad signature, a missing one, or a body changed after signing is refused, and nothing is written', async () => {
    const { payload } = push('main', { 'marker.txt': 'main-4\n' }, 'Fourth commit');
    const pipelines = await pipelineCount();
    const deliveries = await deliveryCount();
    const badSecret = await deliver('push', payload, { secret: 'not-the-webhook-secret-at-all' });
    expect(badSecret.status).toBe(401);
    expect(badSecret.body.message).toMatch(/signature/);
    const unsigned = await deliver('push', payload, { secret: null });
    expect(unsigned.status).toBe(401);
    const signedOther = await deliver('watch', { action: 'started' });
    const tampered = await fetch(`${g.url}/webhooks/github`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-github-event': 'push', 'x-github-delivery': randomUUID(), 'x-hub-signature-256': 'sha256=' + '0'.repeat(64) },
      body: JSON.stringify(payload),
    });
    expect(tampered.status).toBe(401);
    expect(await pipelineCount()).toBe(pipelines);
    // Only the signed one (an event with nothing to build) was recorded.
    expect(signedOther.status).toBe(200);
    expect(await deliveryCount()).toBe(deliveries + 1);
    const refused = await g.gyre.store.query('SELECT 1 FROM github_deliveries WHERE delivery_id = ANY($1)', [[badSecret.deliveryId, unsigned.deliveryId]]);
    expect(refused).toEqual([]);

    // GitHub sends nothing above 25 MB: a larger body is refused before it is checked or kept.
    const huge = await deliver('push', {}, { body: JSON.stringify({ padding: 'x'.repeat(25 * 1024 * 1024) }) });
    expect(huge.status).toBe(413);
    expect(await deliveryCount()).toBe(deliveries + 1);
  });

  test('[ci skip] and [skip ci] in the head commit build nothing; ping answers; an unknown event is accepted and ignored', async () => {
    const pipelines = await pipelineCount();
    const skipped = await deliver('push', push('main', { 'marker.txt': 'skip-1\n' }, 'Docs only [ci skip]').payload);
    expect(skipped).toMatchObject({ status: 200, body: { message: expect.stringMatching(/skip/) } });
    const skipped2 = await deliver('push', push('main', { 'marker.txt': 'skip-2\n' }, 'Typo\n\nbody says [SKIP CI] here').payload);
    expect(skipped2.body.message).toMatch(/skip/);
    const pong = await deliver('ping', gh.payloads.ping());
    expect(pong).toMatchObject({ status: 200, body: { message: expect.stringMatching(/^pong/) } });
    const unknown = await deliver('star', { action: 'created', starred_at: null });
    expect(unknown).toMatchObject({ status: 200, body: { message: expect.stringMatching(/ignored/) } });
    const deletion = await deliver('push', gh.payloads.push(repo, { ref: 'refs/heads/old', after: '0'.repeat(40), before: repo.rev('main'), sender: DEV, deleted: true, installationId }));
    expect(deletion.body.message).toMatch(/deleted/);
    expect(await pipelineCount()).toBe(pipelines);
    const outcomes = await g.gyre.store.query<{ state: string; outcome: string }>('SELECT state, outcome FROM github_deliveries WHERE delivery_id = $1', [unknown.deliveryId]);
    expect(outcomes).toEqual([{ state: 'done', outcome: expect.stringMatching(/ignored/) }]);
  });

  test('a tag push honours tag filters (annotated tags too), and the create event of the same tag starts nothing more', async () => {
    const sha = repo.commit('main', { 'marker.txt': 'release\n' }, 'Release 1.0');
    repo.tag('v1.0.0', sha, true);
    const tagPush = gh.payloads.push(repo, { ref: 'refs/tags/v1.0.0', after: repo.rev('refs/tags/v1.0.0'), headCommit: sha, message: 'Release 1.0', sender: DEV, installationId });
    const pushed = await deliver('push', tagPush);
    expect(pushed.body.pipeline).toBeDefined();
    const created = await deliver('create', gh.payloads.createTag(repo, { tag: 'v1.0.0', sender: DEV, installationId }));
    expect(created.body.message).toMatch(new RegExp(`Already built by pipeline ${pushed.body.pipeline.number}`));
    const { pipeline, jobs } = await g.waitForPipeline(pushed.body.pipeline.id, 45_000);
    expect(pipeline.vcs).toMatchObject({ tag: 'v1.0.0', revision: sha });
    expect(jobs.build.status).toBe('success');
    expect(await logOf(jobs.build.job_number, 1)).toContain(`tag=v1.0.0 sha=${sha}`);

    // A tag the filter does not take: a pipeline with nothing to run. Its create event came first.
    repo.tag('nightly-7', sha);
    const createdFirst = await deliver('create', gh.payloads.createTag(repo, { tag: 'nightly-7', sender: DEV, installationId }));
    expect(createdFirst.body.pipeline).toBeDefined();
    const pushedLater = await deliver('push', gh.payloads.push(repo, { ref: 'refs/tags/nightly-7', after: sha, message: 'Release 1.0', sender: DEV, installationId }));
    expect(pushedLater.body.message).toMatch(/Already built/);
    const nightly = await g.waitForPipeline(createdFirst.body.pipeline.id, 30_000);
    expect(nightly.pipeline.vcs).toMatchObject({ tag: 'nightly-7' });
    expect(nightly.workflows).toEqual([]);
  });

  test("a fork's pull request builds only with build_fork_prs, from refs/pull/<n>/head, without the project's secrets, with CIRCLE_PR_*", async () => {
    const forkSha = fork.commit('feature', { 'marker.txt': 'from-the-fork\n' }, 'Contribution');
    repo.pullRequestRef(7, fork, 'feature');
    const baseSha = repo.rev('main');
    const opened = () => gh.payloads.pullRequest(repo, { action: 'opened', number: 7, head: fork, headRef: 'feature', headSha: forkSha, baseSha, sender: STRANGER, installationId });
    const pipelines = await pipelineCount();
    const off = await deliver('pull_request', opened());
    expect(off.body.message).toMatch(/build_fork_prs/);
    expect(await pipelineCount()).toBe(pipelines);

    await g.gyre.store.query(`UPDATE projects SET build_fork_prs = true WHERE slug = 'gh/acme/app'`);
    const on = await deliver('pull_request', opened());
    expect(on.body.pipeline).toBeDefined();
    const { pipeline, jobs } = await g.waitForPipeline(on.body.pipeline.id, 45_000);
    expect(pipeline.vcs).toMatchObject({ branch: 'pull/7', revision: forkSha });
    // The sender has no Gyre user: no actor.
    expect(pipeline.trigger.actor.login).toBe('gyre');
    expect(jobs.build.status).toBe('success');
    const log = await logOf(jobs.build.job_number, 1);
    const url = `${gh.url}/acme/app/pull/7`;
    expect(log).toContain(`branch=pull/7 tag=none sha=${forkSha}`);
    expect(log).toContain(`pr=${url} prs=${url}`);
    expect(log).toContain('prnum=7 prrepo=app pruser=outside-contributor');
    expect(log).toContain(`base=${baseSha}`);
    expect(log).toContain('secret=unset');
    expect(log).toContain('marker=from-the-fork');
    const [row] = await g.gyre.store.query<{ from_fork: boolean; checkout_ref: string }>('SELECT from_fork, checkout_ref FROM pipelines WHERE id = $1', [on.body.pipeline.id]);
    expect(row).toEqual({ from_fork: true, checkout_ref: 'refs/pull/7/head' });
  });

  test('with build_prs_only, a branch builds once it has a pull request, and as that pull request', async () => {
    await g.gyre.store.query(`UPDATE projects SET build_prs_only = true WHERE slug = 'gh/acme/app'`);
    const pipelines = await pipelineCount();
    const { sha, payload } = push('topic', { 'marker.txt': 'topic-1\n' }, 'Topic work');
    const alone = await deliver('push', payload);
    expect(alone.body.message).toMatch(/build_prs_only/);
    expect(await pipelineCount()).toBe(pipelines);

    const baseSha = repo.rev('main');
    const opened = await deliver('pull_request', gh.payloads.pullRequest(repo, { action: 'opened', number: 8, head: repo, headRef: 'topic', headSha: sha, baseSha, sender: DEV, installationId }));
    expect(opened.body.pipeline).toBeDefined();
    // The push of the same commit, delivered again now, is the same build.
    expect((await deliver('push', payload)).body.message).toMatch(/Already built/);
    const { pipeline, jobs } = await g.waitForPipeline(opened.body.pipeline.id, 45_000);
    expect(pipeline.vcs).toMatchObject({ branch: 'topic', revision: sha });
    expect(pipeline.trigger.actor.login).toBe('dev');
    const log = await logOf(jobs.build.job_number, 1);
    expect(log).toContain(`pr=${gh.url}/acme/app/pull/8`);
    expect(log).toContain('prnum=none');
    expect(log).toContain(`secret=${MASK}`);
    expect(log).toContain(`base=${baseSha}`);

    // The next push to the branch builds, with the pull request's values.
    const next = push('topic', { 'marker.txt': 'topic-2\n' }, 'More topic work');
    const built = await deliver('push', next.payload);
    expect(built.body.pipeline).toBeDefined();
    const second = await g.waitForPipeline(built.body.pipeline.id, 45_000);
    expect(await logOf(second.jobs.build.job_number, 1)).toContain(`pr=${gh.url}/acme/app/pull/8`);

    // GitHub sends the push and the pull request's synchronize of one commit at once: one pipeline.
    const third = push('topic', { 'marker.txt': 'topic-3\n' }, 'Even more topic work');
    const synchronize = gh.payloads.pullRequest(repo, { action: 'synchronize', number: 8, head: repo, headRef: 'topic', headSha: third.sha, baseSha, sender: DEV, installationId });
    const before = await pipelineCount();
    const both = await Promise.all([deliver('push', third.payload), deliver('pull_request', synchronize)]);
    expect(both.map((a) => a.status)).toEqual([200, 200]);
    expect(both.filter((a) => a.body.pipeline && !/Already/.test(a.body.message))).toHaveLength(1);
    expect(await pipelineCount()).toBe(before + 1);
    await g.waitForPipeline(both.find((a) => a.body.pipeline)!.body.pipeline.id, 45_000);
    await g.gyre.store.query(`UPDATE projects SET build_prs_only = false WHERE slug = 'gh/acme/app'`);
  });

  test('every request Gyre made is a GitHub operation, sent and answered as GitHub describes it (GitHub Enterprise Server too)', () => {
    const used = new Set(gh.requests.map((r) => r.operation));
    expect(gh.requests.filter((r) => !r.operation)).toEqual([]);
    for (const operation of used) {
      const served = gh.operations[operation as keyof typeof gh.operations];
      expect({ operation, ...describedOperation(operation!) }).toEqual({ operation, ...served });
      expect(describedOperationOnGhes(operation!)).toMatchObject(served);
    }
    expect([...used].sort()).toEqual(['apps/create-installation-access-token', 'apps/get-repo-installation', 'git/get-commit', 'git/get-ref', 'git/get-tag', 'repos/get', 'repos/get-branch', 'repos/get-content', 'repos/create-commit-status'].sort());
    for (const { operation, status, body } of gh.sent) {
      const check = githubSchemaCheck(operation, status);
      expect({ operation, status, errors: check ? check(body).slice(0, 5) : 'no schema' }).toEqual({ operation, status, errors: [] });
    }
    for (const { operation, body } of gh.received) {
      const check = githubSchemaCheck(operation, 'request');
      expect({ operation, errors: check!(body) }).toEqual({ operation, errors: [] });
    }
    // Authenticated as GitHub requires: the app (JWT) for installations, tokens for the rest.
    expect(gh.requests.filter((r) => r.auth === 'bad' || r.auth === 'none')).toEqual([]);
  });
});
