import { openBlobStore } from '../../runtime/blob/open-blob-store';
import type { TaskContext } from '../../runtime/dispatcher/dispatcher';
import { createLogger } from '../../runtime/logger';
import { branchPatternToRegExp, checkBranchPatterns, isProtectedBranch } from '../../runtime/output/cache-trust';
import { createOutputService } from '../../runtime/output/output-service';
import { createProjects } from '../../runtime/projects/projects';
import { readSettings } from '../../runtime/settings';
import { flowStore, commitFiles, startTestGyre, type TestGyre } from '../support/gyre';

// Caches across trust levels: a job on a protected branch (the default branch, or one matching
// the project's protected patterns) restores only caches saved on protected branches, so a
// feature branch cannot plant files into the default branch's jobs through a cache.

const CONFIG = `version: 2.1
jobs:
  build:
    docker: [{ image: cimg/base:stable }]
    steps:
      - restore_cache: { keys: ['trust-v1'] }
      - run:
          name: show
          command: |
            echo "restored=$(cat ~/deps/from.txt 2>/dev/null || echo nothing)"
            mkdir -p ~/deps && echo "$CIRCLE_BRANCH" > ~/deps/from.txt
      - save_cache: { key: 'trust-v1', paths: [~/deps] }
workflows:
  main:
    jobs: [build]
`;

describe('which branches are protected', () => {
  test('the default branch and the patterns; `*` stays within a segment, `**` crosses them; tags never', () => {
    expect(isProtectedBranch('main', 'main', [])).toBe(true);
    expect(isProtectedBranch('feature', 'main', [])).toBe(false);
    expect(isProtectedBranch('release/1.2', 'main', ['release/*'])).toBe(true);
    expect(isProtectedBranch('release/1.2/hotfix', 'main', ['release/*'])).toBe(false);
    expect(isProtectedBranch('release/1.2/hotfix', 'main', ['release/**'])).toBe(true);
    expect(isProtectedBranch('releases', 'main', ['release'])).toBe(false);
    expect(isProtectedBranch(undefined, 'main', ['**'])).toBe(false);
    expect(branchPatternToRegExp('v1.x').test('v1-x')).toBe(false);
  });

  test('a bad pattern is refused with what is allowed; GYRE_CACHE_TRUST takes protected or shared', () => {
    expect(checkBranchPatterns(['release/*', 'release/*', 'hotfix/**'])).toEqual(['release/*', 'hotfix/**']);
    expect(() => checkBranchPatterns(['ok', 'has space'])).toThrow(/"has space" is not allowed: give a branch name/);
    expect(() => checkBranchPatterns([''])).toThrow(/"" is not allowed/);
    expect(() => checkBranchPatterns([7])).toThrow(/7 is not allowed/);
    expect(readSettings({}).cacheTrust).toBe('protected');
    expect(readSettings({ GYRE_CACHE_TRUST: 'shared' }).cacheTrust).toBe('shared');
    expect(() => readSettings({ GYRE_CACHE_TRUST: 'open' })).toThrow(/GYRE_CACHE_TRUST.*'open' is not allowed \(allowed: protected, shared\)/);
  });
});

describe.each(flowStore())('caches across trust levels on %s', (store) => {
  let g: TestGyre;
  let repo: string;
  beforeAll(async () => {
    g = await startTestGyre({ store });
    repo = await g.addProject('acme/trust', { '.circleci/config.yml': CONFIG });
    commitFiles(repo, 'feature', { 'feature.txt': 'f' });
    commitFiles(repo, 'release/2', { 'release.txt': 'r' });
  }, 60_000);
  afterAll(() => g?.stop());

  /** Runs the pipeline of `branch` and gives its build job's step outputs by step name. */
  async function run(branch: string): Promise<{ jobId: string; steps: Record<string, string> }> {
    const { id } = await g.trigger('gh/acme/trust', { branch });
    const { jobs } = await g.waitForPipeline(id, 60_000);
    expect(jobs.build.status).toBe('success');
    const number = jobs.build.job_number;
    const steps: Record<string, string> = {};
    for (const s of (await g.api('GET', `/api/v2/project/gh/acme/trust/job/${number}/steps`)).items) {
      steps[s.name] = (await g.raw('GET', `/api/v2/project/gh/acme/trust/job/${number}/output?step=${s.index}`)).text;
    }
    return { jobId: jobs.build.id, steps };
  }

  test("a feature branch's cache is not restored on the default branch (which says so and saves its own); the default branch's is restored on a feature branch", async () => {
    const feature = await run('feature');
    expect(feature.steps.show).toContain('restored=nothing');
    expect(feature.steps['Saving Cache']).toContain('Stored cache');

    const main = await run('main');
    expect(main.steps['Restoring Cache']).toContain('No cache is found for keys: trust-v1');
    expect(main.steps['Restoring Cache']).toMatch(/Not restored: a cache for trust-v1 was saved by a job on an unprotected branch; this job runs on a protected one \(branch main\)/);
    expect(main.steps.show).toContain('restored=nothing');
    // The feature branch's cache under the same key does not stop the default branch saving its own.
    expect(main.steps['Saving Cache']).toContain('Stored cache');

    const again = await run('feature');
    expect(again.steps.show).toContain('restored=main');
    expect(again.steps['Saving Cache']).toContain('Skipping cache generation, cache already exists for key: trust-v1');
    const mainAgain = await run('main');
    expect(mainAgain.steps.show).toContain('restored=main');
  }, 180_000);

  test("a branch matching the project's protected patterns is protected too; with GYRE_CACHE_TRUST=shared every job restores every cache", async () => {
    const projects = createProjects({ store: g.gyre.store, forge: undefined as never });
    expect((await projects.setProtectedBranches('gh/acme/trust', ['release/*'])).protectedBranches).toEqual(['release/*']);
    await expect(projects.setProtectedBranches('gh/acme/trust', ['bad pattern'])).rejects.toThrow(/"bad pattern" is not allowed/);
    expect((await projects.get('gh/acme/trust')).protectedBranches).toEqual(['release/*']);

    const release = await run('release/2');
    // The newest cache is the feature branch's or main's, depending on the test before; only main's may come.
    expect(release.steps.show).toMatch(/restored=(main|nothing)/);
    expect(release.steps.show).not.toContain('restored=feature');

    // A feature cache newer than any protected one, under a new key: withheld from a protected job under `protected`, given under `shared`.
    const logFree = createLogger({ level: 'silent' });
    const blobs = openBlobStore({ kind: 'local' }, g.dataDir);
    const feature = await run('feature');
    const strict = createOutputService({ store: g.gyre.store, blobs, log: logFree });
    const shared = createOutputService({ store: g.gyre.store, blobs, log: logFree, cacheTrust: 'shared' });
    const featureTask = { jobId: feature.jobId } as TaskContext;
    const releaseTask = { jobId: release.jobId } as TaskContext;
    expect(await strict.client.saveCache(featureTask, 'trust-v2', [Buffer.from('not a real archive')])).toBe('saved');
    expect(await strict.client.findCache(releaseTask, ['trust-v2'])).toBeUndefined();
    expect((await strict.client.withheldCache!(releaseTask, ['trust-v'])))?.toMatchObject({ key: 'trust-v2' });
    expect(await strict.client.cacheExists(releaseTask, 'trust-v2')).toBe(false);
    const found = await shared.client.findCache(releaseTask, ['trust-v2']);
    expect(found?.key).toBe('trust-v2');
    expect(await shared.client.withheldCache!(releaseTask, ['trust-v2'])).toBeUndefined();
    await expect(strict.client.openCache(releaseTask, found!.id)).rejects.toThrow(/saved on an unprotected branch/);
    expect(await strict.client.findCache(featureTask, ['trust-v2'])).toMatchObject({ key: 'trust-v2' });
  }, 180_000);
});
