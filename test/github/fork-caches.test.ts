import { startTestGyre, flowStore, type TestGyre } from '../support/gyre';
import { startGitHubAppStandIn, type GitHubAppStandIn, type Sender, type StandInRepository } from '../support/github-stand-in';

/**
 * A fork's author writes the config its pull request's pipeline runs, so whatever that pipeline
 * saves as a cache is theirs: it must never be restored by the project's own branches, whatever
 * the project's protected branch patterns or its "pass secrets to forks" setting. Signed
 * pull_request deliveries from the GitHub stand-in start the fork's pipelines; pushes start the
 * project's.
 */

const CONFIG = `version: 2.1
jobs:
  build:
    docker: [{ image: cimg/base:stable }]
    steps:
      - checkout
      - restore_cache: { keys: ['deps-v1'] }
      - run:
          name: show
          command: |
            echo "restored=$(cat ~/deps/from.txt 2>/dev/null || echo nothing)"
            mkdir -p ~/deps && cat marker.txt > ~/deps/from.txt
      - save_cache: { key: 'deps-v1', paths: [~/deps] }
workflows:
  main:
    jobs: [build]
`;

const DEV: Sender = { login: 'octo-dev', id: 583_231 };
const STRANGER: Sender = { login: 'outside-contributor', id: 777_001 };

describe.each(flowStore())("forks' caches (%s)", (store) => {
  let gh: GitHubAppStandIn;
  let g: TestGyre;
  let repo: StandInRepository;
  let fork: StandInRepository;
  let installationId: number;

  beforeAll(async () => {
    gh = await startGitHubAppStandIn();
    repo = gh.createRepository('acme/deps', { private: true, files: { '.circleci/config.yml': CONFIG, 'marker.txt': 'main-0\n' } });
    fork = gh.createRepository('outside-contributor/deps', { private: true, forkOf: repo });
    installationId = gh.install({ login: 'acme', id: 9001 }, [repo]);
    g = await startTestGyre({ store, env: gh.env });
    await g.api('POST', '/api/v2/projects', { org: 'acme', name: 'deps' });
    await g.api('PATCH', '/api/v2/project/gh/acme/deps/settings', { advanced: { build_fork_prs: true } });
  }, 60_000);
  afterAll(async () => {
    await g?.stop();
    await gh?.stop();
  });

  /** The build job's step outputs by step name, once its pipeline has finished. */
  async function stepsOf(pipelineId: string): Promise<Record<string, string>> {
    const { jobs } = await g.waitForPipeline(pipelineId, 60_000);
    expect(jobs.build.status).toBe('success');
    const steps: Record<string, string> = {};
    for (const s of (await g.api('GET', `/api/v2/project/gh/acme/deps/job/${jobs.build.job_number}/steps`)).items) {
      steps[s.name] = (await g.raw('GET', `/api/v2/project/gh/acme/deps/job/${jobs.build.job_number}/output?step=${s.index}`)).text;
    }
    return steps;
  }

  /** A commit on the fork's branch and its pull request's delivery (opened, or synchronize after). */
  async function forkPullRequest(number: number, branch: string, marker: string, action: 'opened' | 'synchronize'): Promise<Record<string, string>> {
    const sha = fork.commit(branch, { 'marker.txt': `${marker}\n` }, `Contribution ${marker}`);
    repo.pullRequestRef(number, fork, branch);
    const answer = await gh.deliver(g.url, 'pull_request', gh.payloads.pullRequest(repo, { action, number, head: fork, headRef: branch, headSha: sha, baseSha: repo.rev('main'), sender: STRANGER, installationId }));
    expect(answer.body.pipeline).toBeDefined();
    return stepsOf(answer.body.pipeline.id);
  }

  /** A commit pushed to a branch of the repository itself, and its push delivery. */
  async function push(branch: string, marker: string): Promise<Record<string, string>> {
    const before = repo.rev('main');
    const sha = repo.commit(branch, { 'marker.txt': `${marker}\n` }, `Work ${marker}`);
    const answer = await gh.deliver(g.url, 'push', gh.payloads.push(repo, { ref: `refs/heads/${branch}`, after: sha, before, message: `Work ${marker}`, sender: DEV, installationId }));
    expect(answer.body.pipeline).toBeDefined();
    return stepsOf(answer.body.pipeline.id);
  }

  const cacheRows = async () =>
    (
      await g.gyre.store.query<{ kind: string; scope: string | null }>(
        `SELECT 'project' AS kind, NULL AS scope FROM caches WHERE key = 'deps-v1'
         UNION ALL SELECT 'protected', NULL FROM protected_caches WHERE key = 'deps-v1'
         UNION ALL SELECT 'fork', scope FROM fork_caches WHERE key = 'deps-v1'`,
      )
    )
      .map((r) => `${r.kind}${r.scope ? ` ${r.scope}` : ''}`)
      .sort();

  test("a fork's cache is restored by its own pull request only; the default branch and other branches never get it", async () => {
    const first = await forkPullRequest(7, 'feature', 'fork-7', 'opened');
    expect(first.show).toContain('restored=nothing');
    expect(first['Saving Cache']).toContain('Stored cache');

    // A branch of the repository: the fork's deps-v1 is the only one, and it is not restored.
    const feature = await push('feature', 'feature-1');
    expect(feature.show).toContain('restored=nothing');
    expect(feature['Restoring Cache']).toContain('Not restored: a cache for deps-v1 was saved by a pipeline of a pull request from a fork (pull/7)');
    // The fork's key does not stop the branch saving its own.
    expect(feature['Saving Cache']).toContain('Stored cache');

    // The default branch: neither the fork's nor the feature branch's.
    const main = await push('main', 'main-1');
    expect(main.show).toContain('restored=nothing');
    expect(main['Saving Cache']).toContain('Stored cache');
    expect(await cacheRows()).toEqual(['fork pull/7', 'project', 'protected']);

    // The fork's next commit restores what its pull request saved, not the newer caches of the project.
    const again = await forkPullRequest(7, 'feature', 'fork-7b', 'synchronize');
    expect(again.show).toContain('restored=fork-7');
    expect(again['Saving Cache']).toContain('Skipping cache generation, cache already exists for key: deps-v1');
    // Another pull request from the same fork starts from nothing: caches are per pull request.
    const other = await forkPullRequest(9, 'other', 'fork-9', 'opened');
    expect(other.show).toContain('restored=nothing');
    // A fork's job is told nothing about the project's caches it may not restore.
    expect(other['Restoring Cache']).not.toContain('Not restored');

    const mainAgain = await push('main', 'main-2');
    expect(mainAgain.show).toContain('restored=main-1');
  }, 300_000);

  test('a protected branch pattern that matches pull/<n> does not make a fork protected, and passing secrets to forks lets them restore, never save for others', async () => {
    // A pattern that would match forks' branches: a fork's save still goes to its own pull request.
    await g.gyre.store.query(`UPDATE projects SET protected_branches = '{pull/**}' WHERE slug = 'gh/acme/deps'`);
    const planted = await forkPullRequest(10, 'plant', 'fork-10', 'opened');
    expect(planted['Saving Cache']).toContain('Stored cache');
    expect((await cacheRows()).filter((r) => r === 'protected')).toHaveLength(1);
    expect(await cacheRows()).toContain('fork pull/10');
    expect((await push('main', 'main-3')).show).toContain('restored=main-1');

    // With secrets passed to forks, a fork's job may restore the project's caches (as CircleCI
    // shares caches with forks then), and what it saves still stays its pull request's.
    await g.api('PATCH', '/api/v2/project/gh/acme/deps/settings', { advanced: { forks_receive_secret_env_vars: true } });
    const trusted = await forkPullRequest(11, 'trusted', 'fork-11', 'opened');
    expect(trusted.show).toContain('restored=main-1');
    expect((await push('feature', 'feature-2')).show).toMatch(/restored=(main-1|feature-1)/);
    expect((await push('main', 'main-4')).show).toContain('restored=main-1');
    expect((await cacheRows()).filter((r) => r.startsWith('fork'))).toEqual(['fork pull/10', 'fork pull/7', 'fork pull/9']);
  }, 300_000);
});
