import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createAppAuth } from '@octokit/auth-app';
import { request } from '@octokit/request';
import { runTask, type TaskReporter } from '../../runtime/agent/agent';
import { detectIsolation } from '../../runtime/agent/sandbox/isolation';
import { createShellExecutor } from '../../runtime/agent/shell-executor';
import type { JobSpec } from '../../runtime/config/plan';
import type { TaskContext } from '../../runtime/dispatcher/dispatcher';
import { createLogger } from '../../runtime/logger';
import { decompressChunk } from '../../runtime/output/log-chunk';
import { startGitHubAppStandIn, type GitHubAppStandIn, type StandInRepository } from '../support/github-stand-in';

/**
 * The checkout step of a private repository, as an agent runs it: the installation token the
 * task's secrets carry is what lets git read the repository (the stand-in's git over smart HTTP
 * refuses anyone else, as GitHub does); without it the checkout fails and the job stops there.
 * A fork's pull request is checked out from `refs/pull/<n>/head`, which no branch holds.
 */
describe('checking out a private GitHub repository', () => {
  let gh: GitHubAppStandIn;
  let repo: StandInRepository;
  let installationId: number;
  let dir: string;
  const log = createLogger({ level: 'silent' });

  beforeAll(async () => {
    gh = await startGitHubAppStandIn();
    repo = gh.createRepository('acme/secret-app', { private: true, files: { 'marker.txt': 'private-main\n' } });
    installationId = gh.install({ login: 'acme' }, [repo]);
  });
  afterAll(() => gh?.stop());
  beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'gyre-checkout-'))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  /** A token as Gyre mints one: the installation's, for this repository's contents only. */
  const mintToken = async () => {
    const auth = createAppAuth({ appId: gh.appId, privateKey: readFileSync(gh.privateKeyFile, 'utf8'), request: request.defaults({ baseUrl: gh.apiUrl }) });
    return (await auth({ type: 'installation', installationId, repositoryNames: [repo.name], permissions: { contents: 'read' } })).token;
  };

  const run = async (task: TaskContext) => {
    const names: string[] = [];
    const statuses: string[] = [];
    const chunks: Buffer[][] = [];
    const reporter: TaskReporter = {
      heartbeat: async () => ({ leaseExpiresAt: new Date(Date.now() + 60_000), cancelRequested: false }),
      stepStarted: async (step) => void (names[step.index] = step.name),
      output: async (step, seq, chunk) => void ((chunks[step] ??= [])[seq] = await decompressChunk(chunk)),
      stepFinished: async (step) => void (statuses[step.index] = step.status),
      complete: async () => undefined,
    };
    const result = await runTask({ task, reporter, log, heartbeatMs: 10_000, executor: () => createShellExecutor({ taskDir: join(dir, 'task'), isolation: detectIsolation({ mode: 'shell' }) }) });
    return { result, statuses, output: (step: number) => Buffer.concat(chunks[step] ?? []).toString() };
  };

  const taskOf = (revision: string, extra: Partial<TaskContext> = {}): TaskContext => {
    const spec: JobSpec = {
      executor: { kind: 'shell' },
      steps: [
        { type: 'checkout', name: 'Checkout code', when: 'on_success' },
        { type: 'run', name: 'read it', command: 'cat marker.txt; git rev-parse HEAD', when: 'on_success' },
        // What the checkout left: the plain URL, no header, not the token (grep counts; the token comes in by the environment).
        {
          type: 'run',
          name: 'what the checkout kept',
          command: 'git config --get remote.origin.url; grep -ci extraheader .git/config || true; grep -cF -e "$LOOK_FOR" .git/config || true; env | grep -c "^GIT_CONFIG" || true',
          environment: { LOOK_FOR: extra.secrets?.gitToken ?? 'no-token' },
          when: 'on_success',
        },
      ],
      environment: {},
      workingDirectory: '~/project',
      parallelism: 1,
    } as JobSpec;
    return { taskId: 't-checkout', nodeIndex: 0, parallelism: 1, jobId: 'j', jobName: 'build', jobNumber: 1, spec, workflowId: 'w', workflowName: 'w', pipelineId: 'p', pipelineNumber: 1, projectSlug: 'gh/acme/secret-app', projectOrg: 'acme', projectName: 'secret-app', repoUrl: repo.cloneUrl, branch: 'main', revision, ...extra };
  };

  test('without a token git is refused and the job stops at the checkout', async () => {
    // (Not execFileSync: the stand-in answers from this process.)
    await expect(promisify(execFile)('git', ['ls-remote', repo.cloneUrl], { env: { ...process.env, GIT_TERMINAL_PROMPT: '0' } })).rejects.toThrow(/could not read Username|Authentication failed|401/);
    const { result, statuses, output } = await run(taskOf(repo.rev('main')));
    expect(result).toEqual({ outcome: 'failed' });
    expect(statuses).toEqual(['failed']);
    expect(output(0)).toMatch(/could not read Username|Authentication failed|401/);
    expect(gh.gitRequests.at(-1)).toMatchObject({ repository: 'acme/secret-app', status: 401 });
  });

  test("with the installation's token it checks out, and the token is masked and left nowhere in the checkout", async () => {
    const token = await mintToken();
    const sha = repo.rev('main');
    const { result, statuses, output } = await run(taskOf(sha, { secrets: { env: {}, gitToken: token } }));
    expect(statuses).toEqual(['success', 'success', 'success']);
    expect(result).toEqual({ outcome: 'success' });
    expect(output(1)).toBe(`private-main\n${sha}\n`);
    expect(output(2)).toBe(`${repo.cloneUrl}\n0\n0\n0\n`);
    expect(output(0) + output(1) + output(2)).not.toContain(token);
  });

  test("a fork's pull request is checked out from refs/pull/<n>/head", async () => {
    const fork = gh.createRepository('someone/secret-app', { private: true, forkOf: repo });
    const forkSha = fork.commit('fix', { 'marker.txt': 'from-fork\n' }, 'A fix');
    repo.pullRequestRef(3, fork, 'fix');
    const token = await mintToken();
    const { result, output } = await run(taskOf(forkSha, { branch: 'pull/3', checkoutRef: 'refs/pull/3/head', secrets: { env: {}, gitToken: token } }));
    expect(result).toEqual({ outcome: 'success' });
    expect(output(1)).toBe(`from-fork\n${forkSha}\n`);
    // Without the pull request's ref the commit is on no branch the checkout fetches.
    const { result: without, output: said } = await run(taskOf(forkSha, { branch: 'pull/3', secrets: { env: {}, gitToken: token } }));
    expect(without).toEqual({ outcome: 'failed' });
    expect(said(0)).toMatch(/reference is not a tree|not a commit|unable to read tree/i);
  });
});
