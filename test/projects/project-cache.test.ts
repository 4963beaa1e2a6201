/**
 * The project a trigger is for is kept in memory (runtime/projects/project-cache.ts): a trigger
 * after a change to the project sees the change, whichever process made it, and a trigger itself
 * does not empty what the next one reads.
 */
import { NotFoundError } from '../../runtime/domain/errors';
import { IDENTITY_CHANGED_CHANNEL } from '../../runtime/identity/credential-cache';
import { createProjectCache, DEFAULT_PROJECT_CACHE_TTL_MS, PROJECT_CHANGED_CHANNEL } from '../../runtime/projects/project-cache';
import type { Project } from '../../runtime/projects/projects';
import { commitFiles, startTestGyre, testStores, type TestGyre } from '../support/gyre';
import { until } from '../support/processes';
import { readGate } from '../support/read-gate';

describe('the project cache, alone', () => {
  const project = (defaultBranch: string): Project => ({
    id: 'p1',
    slug: 'gh/acme/app',
    org: 'acme',
    organizationId: 'o1',
    name: 'app',
    repoUrl: '/srv/app.git',
    defaultBranch,
    protectedBranches: [],
    forksReceiveSecretEnvVars: false,
    autocancelBuilds: false,
    buildForkPrs: false,
    buildPrsOnly: false,
    setGithubStatus: true,
    createdAt: new Date(0),
  });

  async function setup() {
    let clock = 1_000_000;
    let stored: Project | undefined = project('main');
    const reads: string[] = [];
    const gate = readGate();
    const listeners = new Map<string, (payload: string) => void>();
    const cache = await createProjectCache({
      async read(slug) {
        reads.push(slug);
        const now = stored;
        await gate.passed();
        if (!now) throw new NotFoundError('project', slug);
        return now;
      },
      store: {
        async listen(channel, handler) {
          listeners.set(channel, handler);
          return async () => void listeners.delete(channel);
        },
      },
      now: () => clock,
    });
    return {
      cache,
      reads,
      listeners,
      tick: (ms: number) => (clock += ms),
      change: (p: Project | undefined) => (stored = p),
      holdReads: gate.hold,
    };
  }

  it('answers a project from memory, by any spelling of its slug, until its time is up', async () => {
    const t = await setup();
    expect((await t.cache.get('gh/acme/app')).defaultBranch).toBe('main');
    expect((await t.cache.get('acme/app')).defaultBranch).toBe('main');
    expect(t.reads).toEqual(['gh/acme/app']);
    t.change(project('trunk'));
    t.tick(DEFAULT_PROJECT_CACHE_TTL_MS - 1);
    expect((await t.cache.get('gh/acme/app')).defaultBranch).toBe('main');
    t.tick(2);
    expect((await t.cache.get('gh/acme/app')).defaultBranch).toBe('trunk');
    expect(t.reads).toHaveLength(2);
  });

  it.each([PROJECT_CHANGED_CHANNEL, IDENTITY_CHANGED_CHANNEL])('forgets everything when a change is announced on %s', async (channel) => {
    const t = await setup();
    await t.cache.get('gh/acme/app');
    t.change(project('trunk'));
    t.listeners.get(channel)!('');
    expect((await t.cache.get('gh/acme/app')).defaultBranch).toBe('trunk');
  });

  it('does not keep a project read while a change was announced', async () => {
    const t = await setup();
    const release = t.holdReads();
    const reading = t.cache.get('gh/acme/app');
    t.listeners.get(PROJECT_CHANGED_CHANNEL)!(''); // the project changes while the read is under way
    release();
    expect((await reading).defaultBranch).toBe('main');
    t.change(project('trunk'));
    expect((await t.cache.get('gh/acme/app')).defaultBranch).toBe('trunk');
  });

  it('asks again every time for a project that does not exist, and refuses a slug that is not one', async () => {
    const t = await setup();
    t.change(undefined);
    await expect(t.cache.get('gh/acme/app')).rejects.toThrow(NotFoundError);
    t.change(project('main'));
    expect((await t.cache.get('gh/acme/app')).defaultBranch).toBe('main');
    expect(t.reads).toHaveLength(2);
    await expect(t.cache.get('not a slug')).rejects.toThrow(/must look like gh\/<org>\/<repo>/);
  });

  it('stops listening when closed', async () => {
    const t = await setup();
    await t.cache.close();
    expect(t.listeners.size).toBe(0);
  });
});

describe.each(testStores())('a trigger and its project (%s)', (store) => {
  let g: TestGyre;
  let repo: string;
  const CONFIG = 'version: 2.1\njobs:\n  a:\n    docker: [{ image: x }]\n    steps: [{ run: "true" }]\nworkflows:\n  w: { jobs: [a] }\n';

  beforeAll(async () => {
    g = await startTestGyre({ store });
    repo = await g.addProject('acme/kept', { '.circleci/config.yml': CONFIG });
  }, 60_000);

  afterAll(async () => {
    await g?.stop();
  });

  const branchOf = async (id: string) => (await g.api('GET', `/api/v2/pipeline/${id}`)).vcs.branch as string;

  it("a change another process makes to the project's default branch is in the next trigger once its NOTIFY is in", async () => {
    expect(await branchOf((await g.trigger('acme/kept')).id)).toBe('main');
    expect(await branchOf((await g.trigger('acme/kept')).id)).toBe('main');
    commitFiles(repo, 'trunk', { '.circleci/config.yml': CONFIG, 'TRUNK': 'yes\n' });
    const heard: string[] = [];
    const unlisten = await g.gyre.store.listen(PROJECT_CHANGED_CHANNEL, (payload) => heard.push(payload));
    try {
      // As another process (or an operator) would: only the database and its NOTIFY.
      await g.gyre.store.query(`UPDATE projects SET default_branch = 'trunk' WHERE slug = 'gh/acme/kept'`);
      await until('the NOTIFY of the change', async () => heard.length > 0);
      expect(await branchOf((await g.trigger('acme/kept')).id)).toBe('trunk');
    } finally {
      await unlisten();
    }
  });

  it("a trigger and its job's number do not announce a change to the project (else no trigger would find it kept)", async () => {
    const heard: string[] = [];
    const unlisten = await g.gyre.store.listen(PROJECT_CHANGED_CHANNEL, (payload) => heard.push(payload));
    try {
      const { id } = await g.trigger('acme/kept');
      await g.firstJobNumber(id);
      // A change that does announce itself, after the trigger's and the job's statements: once it
      // is heard, anything they announced would have been heard before it.
      await g.gyre.store.query(`UPDATE projects SET name = name WHERE slug = 'gh/acme/kept'`);
      await until('the NOTIFY of the change', async () => heard.length > 0);
      expect(heard).toHaveLength(1);
    } finally {
      await unlisten();
    }
  });
});
