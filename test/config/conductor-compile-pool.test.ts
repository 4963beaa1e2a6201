import { join } from 'node:path';
import { openBlobStore } from '../../runtime/blob/open-blob-store';
import { createCompilerPool, type CompilerPool } from '../../runtime/config/compiler-pool';
import { createConductor, type CompileFn, type Conductor } from '../../runtime/conductor/conductor';
import { createDispatcher } from '../../runtime/dispatcher/dispatcher';
import { createGitForge } from '../../runtime/forge/git-forge';
import { createLogger } from '../../runtime/logger';
import { createLogStore } from '../../runtime/output/logs';
import { readSettings } from '../../runtime/settings';
import { startTestGyre, type TestGyre } from '../support/gyre';
import { hostileConfig } from '../support/hostile-compile';

/**
 * The conductor with a CompileFn backed by the compiler pool (as the composition root wires it):
 * a hostile config errors its pipeline with the budget named, a good one creates its workflows,
 * and a continuation is compiled through the pool too. The server runs without its own conductor
 * role so that this one handles the pipelines.
 */
const GOOD = `version: 2.1
jobs:
  build:
    docker: [{image: cimg/base:stable}]
    steps: [{run: make}]
workflows:
  w:
    jobs: [build]
`;
const SETUP = `version: 2.1
setup: true
jobs:
  generate:
    docker: [{image: cimg/base:stable}]
    steps: [{run: generate}]
workflows:
  setup:
    jobs: [generate]
`;

describe('the conductor compiling through the pool', () => {
  let g: TestGyre;
  let pool: CompilerPool;
  let conductor: Conductor;
  let closeLogs: () => Promise<void>;
  let newPool: () => CompilerPool;

  beforeAll(async () => {
    g = await startTestGyre({ env: { GYRE_ROLES: 'api,dispatcher,output', GYRE_RUNNER_SLOTS: '0' } });
    const log = createLogger({ level: 'silent' });
    const settings = readSettings({ GYRE_DATA_DIR: g.dataDir });
    const logs = createLogStore({ store: g.gyre.store, blobs: openBlobStore(settings.blobs, g.dataDir), log, limitBytes: 1024 ** 2 });
    closeLogs = () => logs.close();
    // 5 s: the doubling, the cold worker's first compile, stays within it on a loaded machine.
    pool = createCompilerPool({ log, limits: { timeoutMs: 5000 } });
    newPool = () => (pool = createCompilerPool({ log, limits: { timeoutMs: 5000 } }));
    // What the composition root passes the conductor (`pool` is replaced by one test).
    const compile: CompileFn = (source, trigger) => pool.compile(source, { trigger });
    conductor = createConductor({
      store: g.gyre.store,
      forge: createGitForge({ cacheDir: join(g.dataDir, 'pool-test-mirrors') }),
      compile,
      dispatcher: createDispatcher({ store: g.gyre.store, output: logs, log, config: { leaseTtlMs: 30_000, maxAttempts: 3 } }),
      log,
    });
  });
  afterAll(async () => {
    await pool?.close();
    await closeLogs?.();
    await g?.stop();
  });

  it('errors the pipeline of a hostile config with the budget named, and runs the next good one', async () => {
    await g.addProject('gh/acme/hostile', { '.circleci/config.yml': hostileConfig('doubling') });
    const hostile = await g.trigger('gh/acme/hostile');
    await conductor.startPipeline(hostile.id);
    const errored = await g.api('GET', `/api/v2/pipeline/${hostile.id}`);
    expect(errored.state).toBe('errored');
    expect(errored.errors).toEqual([{ type: 'config', message: expect.stringMatching(/^commands\.c\d+\.steps\[0\]\.c\d+\.x: the config expands to more than 16 MiB \(GYRE_COMPILE_MAX_BYTES\)/) }]);

    await g.addProject('gh/acme/good', { '.circleci/config.yml': GOOD });
    const good = await g.trigger('gh/acme/good');
    await conductor.startPipeline(good.id);
    expect((await g.api('GET', `/api/v2/pipeline/${good.id}`)).state).toBe('created');
    const workflows = (await g.api('GET', `/api/v2/pipeline/${good.id}/workflow`)).items;
    expect(workflows.map((w: { name: string }) => w.name)).toEqual(['w']);
    const config = await g.api('GET', `/api/v2/pipeline/${good.id}/config`);
    expect(config.compiled).toMatch(/^version: 2\n/);
  });

  it('leaves a pipeline pending while the compiler is unavailable, and starts it once it is back', async () => {
    await g.addProject('gh/acme/later', { '.circleci/config.yml': GOOD });
    const { id } = await g.trigger('gh/acme/later');
    await pool.close();
    await conductor.startPipeline(id);
    const pending = await g.api('GET', `/api/v2/pipeline/${id}`);
    expect([pending.state, pending.errors]).toEqual(['pending', []]);
    newPool();
    await conductor.startPipeline(id);
    expect((await g.api('GET', `/api/v2/pipeline/${id}`)).state).toBe('created');
  });

  it('compiles continuations through the pool: a hostile one is refused naming the budget, a good one continues', async () => {
    await g.addProject('gh/acme/dynamic', { '.circleci/config.yml': SETUP });
    const { id } = await g.trigger('gh/acme/dynamic');
    await conductor.startPipeline(id);
    const [{ continuation_key: key }] = await g.gyre.store.query<{ continuation_key: string }>('SELECT continuation_key FROM pipelines WHERE id = $1', [id]);
    await expect(conductor.continuePipeline({ key, configuration: hostileConfig('time-bomb'), parameters: {} })).rejects.toThrow(
      /^the configuration is not valid: .*compiling the config took more than 5 s \(GYRE_COMPILE_TIMEOUT_MS\)/,
    );
    await conductor.continuePipeline({ key, configuration: GOOD, parameters: {} });
    const workflows = (await g.api('GET', `/api/v2/pipeline/${id}/workflow`)).items;
    expect(workflows.map((w: { name: string }) => w.name).sort()).toEqual(['setup', 'w']);
  });
});
