import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy';
import { flowStore, startTestGyre, type StoreKind, type TestGyre } from '../support/gyre';
import { startNomadStandIn, type NomadStandIn } from '../support/nomad-stand-in';
import { killGroup, startRunnerProcess } from '../support/processes';

const JUNIT = `<?xml version="1.0" encoding="UTF-8"?>
<testsuite name="remote" tests="2" failures="1">
  <testcase classname="remote.upload" name="sends the bytes" time="0.25" file="test/upload.test.js"/>
  <testcase classname="remote.upload" name="refuses a stale lease" time="0.5" file="test/upload.test.js">
    <failure message="expected 409">got 200</failure>
  </testcase>
</testsuite>
`;

const RESOURCE_CLASS = 'acme/remote';

/** Three jobs on the remote agents' resource class that hand files to each other through the output role. */
const CONFIG = `version: 2.1
jobs:
  produce:
    machine: true
    resource_class: ${RESOURCE_CLASS}
    steps:
      - checkout
      - run: |
          mkdir -p ws/first out reports deps
          echo "from produce" > ws/first/a.txt
          head -c 200000 /dev/urandom > out/payload.bin
          sha256sum out/payload.bin
          echo "cached by $CIRCLE_JOB" > deps/lib.txt
          cp report.xml reports/junit.xml
      - persist_to_workspace: { root: ws, paths: [first] }
      - save_cache: { key: 'deps-v1-{{ .Branch }}', paths: [deps] }
      - store_artifacts: { path: out/payload.bin, destination: build/payload.bin }
      - store_test_results: { path: reports }
  extend:
    machine: true
    resource_class: ${RESOURCE_CLASS}
    steps:
      - attach_workspace: { at: ws }
      - run: |
          grep -q "from produce" ws/first/a.txt
          mkdir -p ws/second && echo "from extend" > ws/second/b.txt
      - persist_to_workspace: { root: ws, paths: [second] }
  check:
    machine: true
    resource_class: ${RESOURCE_CLASS}
    steps:
      - attach_workspace: { at: ws }
      - run: |
          test -f ws/first/a.txt && grep -q "from produce" ws/first/a.txt
          test -f ws/second/b.txt && grep -q "from extend" ws/second/b.txt
      - restore_cache: { keys: ['deps-v1-'] }
      - run: grep -q "cached by produce" deps/lib.txt
workflows:
  main:
    jobs:
      - produce
      - extend: { requires: [produce] }
      - check: { requires: [extend] }
`;

/**
 * Both kinds of remote agent: a `gyre runner` process (on each store the runner tests use), and
 * `gyre agent` as a Nomad allocation runs it (started by the Nomad stand-in's client).
 */
// The runner on one store (the file steps' queries run on both in the store-level files), Nomad on PGlite.
const CASES: [StoreKind, 'runner' | 'nomad'][] = [...flowStore().map((s): [StoreKind, 'runner'] => [s, 'runner']), ['pglite', 'nomad']];

describe.each(CASES)('file steps on a remote agent (%s, %s driver)', (store, driver) => {
  let g: TestGyre;
  let runner: ReturnType<typeof startRunnerProcess> | undefined;
  let nomad: NomadStandIn | undefined;
  const workDir = mkdtempSync(join(tmpdir(), 'gyre-remote-output-'));

  beforeAll(async () => {
    nomad = driver === 'nomad' ? await startNomadStandIn() : undefined;
    // No built-in slots: every task runs in another process, through the agent API.
    g = await startTestGyre({ store, env: { GYRE_RUNNER_SLOTS: '0', ...(nomad ? { NOMAD_ADDR: nomad.url } : {}) } });
    await g.api('POST', '/api/v2/resource-classes', { name: RESOURCE_CLASS, cpu: 1, memory_mb: 1024, driver });
    if (driver === 'runner') {
      const { token } = await g.api('POST', `/api/v2/resource-classes/${encodeURIComponent(RESOURCE_CLASS)}/tokens`, {});
      runner = startRunnerProcess(g.url, token, ['--work-dir', workDir, '--poll-ms', '2000']);
    }
  }, 60_000);
  afterAll(async () => {
    if (runner) await killGroup(runner);
    await g?.stop();
    await nomad?.close();
    rmSync(workDir, { recursive: true, force: true });
  });

  test('workspaces, a cache, artifacts and test results cross three jobs and read back through the API', async () => {
    const slug = 'gh/acme/remote-files';
    await g.addProject('acme/remote-files', { '.circleci/config.yml': CONFIG, 'report.xml': JUNIT });
    const { jobs } = await g.waitForPipeline((await g.trigger(slug)).id, 300_000);
    const statuses = Object.fromEntries(Object.entries(jobs).map(([name, job]) => [name, job.status]));
    if (statuses.check !== 'success') {
      // Say which step failed and why, not only that something did.
      for (const job of Object.values(jobs).filter((j) => j.job_number)) {
        for (const step of (await g.api('GET', `/api/v2/project/${slug}/job/${job.job_number}/steps`)).items) {
          process.stderr.write(`${job.name} #${step.index} ${step.name}: ${step.status}\n${(await g.raw('GET', `/api/v2/project/${slug}/job/${job.job_number}/output?step=${step.index}`)).text}\n`);
        }
      }
      process.stderr.write(runner?.output() ?? '');
    }
    expect(statuses).toEqual({ produce: 'success', extend: 'success', check: 'success' });

    // Every task ran in the remote agent, none in the server.
    if (runner) {
      const agents = await g.gyre.store.query<{ agent_id: string }>('SELECT DISTINCT agent_id FROM tasks');
      expect(agents.map((a) => a.agent_id)).toEqual([/runner (\S+) polling/.exec(runner.output())?.[1]]);
    } else {
      // One Nomad job per task, each `gyre agent` in its own process.
      expect(nomad!.registered).toHaveLength(3);
    }

    // The artifact downloads byte for byte as the job wrote it (the job printed its digest).
    const produce = jobs.produce.job_number;
    const printed = (await g.raw('GET', `/api/v2/project/${slug}/job/${produce}/output?step=1`)).text;
    const artifacts = (await g.api('GET', `/api/v2/project/${slug}/${produce}/artifacts`)).items;
    expect(artifacts.map((a: any) => a.path)).toEqual(['build/payload.bin']);
    const bytes = Buffer.from(await (await fetch(artifacts[0].url)).arrayBuffer());
    expect(bytes.length).toBe(200_000);
    expect(printed).toContain(`${createHash('sha256').update(bytes).digest('hex')}  out/payload.bin`);

    const tests = (await g.api('GET', `/api/v2/project/${slug}/${produce}/tests`)).items;
    expect(tests).toEqual([
      { name: 'sends the bytes', classname: 'remote.upload', file: 'test/upload.test.js', result: 'success', message: '', run_time: 0.25, source: '' },
      { name: 'refuses a stale lease', classname: 'remote.upload', file: 'test/upload.test.js', result: 'failure', message: 'expected 409', run_time: 0.5, source: '' },
    ]);
  }, 400_000);
});

/**
 * The same workflow with a `gyre runner` behind a proxy that breaks the first try of every file
 * step: uploads cut off midway (so the step must produce the body again), writes whose answer is
 * lost after the server stored them, downloads dropped before their first byte, 502/503s. The jobs
 * succeed, each file arrives exactly once, and the step output says what was retried.
 */
describe.each(flowStore())('file steps on a remote agent through a faulty network (%s)', (store) => {
  let g: TestGyre;
  let proxy: FaultProxy;
  let runner: ReturnType<typeof startRunnerProcess> | undefined;
  const workDir = mkdtempSync(join(tmpdir(), 'gyre-remote-faults-'));

  beforeAll(async () => {
    g = await startTestGyre({ store, env: { GYRE_RUNNER_SLOTS: '0' } });
    proxy = await startFaultProxy(g.url);
    await g.api('POST', '/api/v2/resource-classes', { name: RESOURCE_CLASS, cpu: 1, memory_mb: 1024, driver: 'runner' });
    const { token } = await g.api('POST', `/api/v2/resource-classes/${encodeURIComponent(RESOURCE_CLASS)}/tokens`, {});
    const task = /^\/api\/v2\/agent\/task\/[^/]+/.source;
    proxy.fail('PUT', new RegExp(`${task}/artifacts$`), { kind: 'drop-midway', bytes: 50_000 });
    proxy.fail('PUT', new RegExp(`${task}/cache$`), { kind: 'drop-midway', bytes: 100 });
    proxy.fail('PUT', new RegExp(`${task}/cache$`), { kind: 'drop-after' });
    proxy.fail('POST', new RegExp(`${task}/workspace$`), { kind: 'drop-after' }, 2);
    proxy.fail('PUT', new RegExp(`${task}/test-results$`), { kind: 'drop-after' });
    proxy.fail('GET', new RegExp(`${task}/workspace/layers/[^/]+$`), { kind: 'status', status: 503 }, 2);
    proxy.fail('GET', new RegExp(`${task}/cache/[^/]+$`), { kind: 'drop-before' });
    runner = startRunnerProcess(proxy.url, token, ['--work-dir', workDir, '--poll-ms', '2000']);
  }, 60_000);
  afterAll(async () => {
    if (runner) await killGroup(runner);
    await proxy?.close();
    await g?.stop();
    rmSync(workDir, { recursive: true, force: true });
  });

  test('every file step succeeds after its retries and stores its files once', async () => {
    const slug = 'gh/acme/faulty-files';
    await g.addProject('acme/faulty-files', { '.circleci/config.yml': CONFIG, 'report.xml': JUNIT });
    const { jobs } = await g.waitForPipeline((await g.trigger(slug)).id, 300_000);
    const stepOutput = async (job: string, step: number) => (await g.raw('GET', `/api/v2/project/${slug}/job/${jobs[job].job_number}/output?step=${step}`)).text;
    const statuses = Object.fromEntries(Object.entries(jobs).map(([name, job]) => [name, job.status]));
    if (statuses.check !== 'success') process.stderr.write(`${runner?.output()}\n${proxy.seen.join('\n')}\n`);
    expect(statuses).toEqual({ produce: 'success', extend: 'success', check: 'success' });

    // Each fault was met (the first try of each was broken) and retried.
    const retried = (method: string, path: RegExp) => proxy.count(method, path);
    expect(retried('PUT', /\/artifacts$/)).toBe(2);
    expect(retried('PUT', /\/cache$/)).toBe(3);
    expect(retried('PUT', /\/test-results$/)).toBe(2);

    // produce: 2 persist_to_workspace, 3 save_cache, 4 store_artifacts, 5 store_test_results.
    expect(await stepOutput('produce', 4)).toMatch(/Uploading the artifact build\/payload\.bin failed \(.+\); retrying in \d+\.\ds \(attempt 2 of 5\)/);
    expect(await stepOutput('produce', 3)).toMatch(/Saving the cache deps-v1-main failed \(.+\); retrying[\s\S]*attempt 3 of 5[\s\S]*Stored cache in/);
    expect(await stepOutput('produce', 5)).toMatch(/Storing the test results failed \(.+\); retrying[\s\S]*Stored 2 test results \(1 failed\)/);

    const produce = jobs.produce.job_number;
    const printed = await stepOutput('produce', 1);
    const artifacts = (await g.api('GET', `/api/v2/project/${slug}/${produce}/artifacts`)).items;
    expect(artifacts.map((a: any) => a.path)).toEqual(['build/payload.bin']);
    const bytes = Buffer.from(await (await fetch(artifacts[0].url)).arrayBuffer());
    expect(printed).toContain(`${createHash('sha256').update(bytes).digest('hex')}  out/payload.bin`);

    expect((await g.api('GET', `/api/v2/project/${slug}/${produce}/tests`)).items).toHaveLength(2);
    const layers = await g.gyre.store.query<{ name: string }>('SELECT j.name FROM workspace_layers l JOIN jobs j ON j.id = l.job_id ORDER BY l.created_at');
    expect(layers.map((l) => l.name)).toEqual(['produce', 'extend']);
    expect(await g.gyre.store.query('SELECT key FROM caches UNION ALL SELECT key FROM protected_caches')).toEqual([{ key: 'deps-v1-main' }]);
  }, 400_000);
});
