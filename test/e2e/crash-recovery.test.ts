import { spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { startExchange, type Exchange } from '../support/exchange';
import { makeGitRepo } from '../support/gyre';
import { apiCall, freePort, startRunnerProcess, startServerProcess, until } from '../support/processes';

/**
 * `kill -9` of the process that runs a build, mid-step: 5 s later nothing of the step runs, and
 * each step's side effect (a call to a listener of the test's) happens once per successful
 * attempt. The first attempt's step starts a long `sleep` (its own process, found by its
 * unmistakable duration in /proc whatever uid or pid namespace it runs in) and waits for it; the
 * retry runs to its end.
 */
const ROOT = resolve(__dirname, '../..');
const TOKEN = 'crash-test-token-0123456789';
const NOBODY = 65534;

const config = (exchange: string, sleep: number, resourceClass?: string) => `version: 2.1
jobs:
  long:
    machine: true
${resourceClass ? `    resource_class: ${resourceClass}\n` : ''}    steps:
      - run: |
          curl -sf -X POST ${exchange}/hit/start
          if ! curl -sf ${exchange}/k/gate >/dev/null; then
            sleep ${sleep} &
            curl -sf -X PUT --data 1 ${exchange}/k/gate
            wait
          fi
          curl -sf -X POST ${exchange}/hit/effect
workflows:
  w:
    jobs: [long]
`;

/** Pids of processes that run `sleep <seconds>` (any uid, any pid namespace). */
function sleepers(seconds: number): number[] {
  const found: number[] = [];
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      const state = readFileSync(`/proc/${pid}/stat`, 'utf8');
      if (cmdline[0].endsWith('sleep') && cmdline[1] === String(seconds) && !/\) [ZX] /.test(state)) found.push(Number(pid));
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

/** Waits up to 5 s for every `sleep <seconds>` to be gone; returns the ones left. */
async function goneWithin5s(seconds: number): Promise<number[]> {
  const deadline = Date.now() + 5000;
  for (;;) {
    const left = sleepers(seconds);
    if (left.length === 0 || Date.now() > deadline) return left;
    await new Promise((r) => setTimeout(r, 100));
  }
}

const uniqueSleep = () => 1000 + Math.floor(Math.random() * 8000) + (process.pid % 997);

async function finished(api: (m: string, p: string) => Promise<any>, id: string) {
  return until(
    `pipeline ${id} to finish`,
    async () => {
      const [workflow] = (await api('GET', `/api/v2/pipeline/${id}/workflow`)).items;
      if (!workflow || !['success', 'failed', 'canceled', 'error'].includes(workflow.status)) return undefined;
      return { workflow, jobs: (await api('GET', `/api/v2/workflow/${workflow.id}/job`)).items };
    },
    90_000,
    100,
  );
}

function readableBy(uid: number): boolean {
  return spawnSync('setpriv', [`--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', process.execPath, '-e', `require(${JSON.stringify(join(ROOT, 'package.json'))})`]).status === 0;
}

const root = process.getuid?.() === 0;
const bwrap = spawnSync('bwrap', ['--version']).status === 0;
/** Each way a built-in runner may run steps here: [label, env, uid to run the server as]. */
const EXECUTORS: [string, Record<string, string>, number | undefined][] = [
  ['a shell without isolation', { GYRE_EXECUTOR: 'shell' }, undefined],
  ...(root ? [['build uids', { GYRE_EXECUTOR: 'sandbox', GYRE_BUILD_UIDS: '911000-911015' }, undefined] as [string, Record<string, string>, undefined]] : []),
  ...(root && bwrap && readableBy(NOBODY) ? [['bubblewrap, the server an ordinary user', { GYRE_EXECUTOR: 'sandbox', HOME: '/nonexistent' }, NOBODY] as [string, Record<string, string>, number]] : []),
];


describe('kill -9 of the process that runs a build', () => {
  const dirs: string[] = [];
  const children: ChildProcess[] = [];
  let exchange: Exchange;
  beforeEach(async () => {
    exchange = await startExchange();
  });
  afterEach(async () => {
    for (const child of children.splice(0)) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exchange.close();
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  // Every executor, on the embedded database (a server killed mid-build on PostgreSQL, under load,
  // is test/execution/failures.test.ts).
  describe('a server with its built-in runner, on PGlite', () => {
    it.each(EXECUTORS)('with %s: the step dies with the server; the retry after restart runs it once', async (_label, executorEnv, uid) => {
      const dataDir = mkdtempSync(join(tmpdir(), 'gyre-crash-'));
      const sleep = uniqueSleep();
      const repo = makeGitRepo({ '.circleci/config.yml': config(exchange.url, sleep) });
      dirs.push(dataDir, repo);
      if (uid !== undefined) for (const dir of [dataDir, repo]) spawnSync('chown', ['-R', `${uid}:${uid}`, dir]);
      // DATABASE_URL is blanked for the embedded case: the child would otherwise inherit CI's.
      const env: Record<string, string> = { GYRE_DATA_DIR: dataDir, GYRE_LEASE_TTL_MS: '1500', DATABASE_URL: '', GYRE_ADMIN_TOKEN: TOKEN, GYRE_PORT: String(await freePort()), ...executorEnv };
      let server = await startServerProcess(env, { uid });
      children.push(server.child);
      const api = (method: string, path: string, body?: unknown) => apiCall(server.url, TOKEN, method, path, body);
      await api('POST', '/api/v2/projects', { org: 'acme', name: 'crash', repo_url: repo });
      const { id } = await api('POST', '/api/v2/project/gh/acme/crash/pipeline', {});
      await until('the first attempt to start its sleep', async () => exchange.get('gate') !== undefined && sleepers(sleep).length > 0, 60_000, 50);

      server.child.kill('SIGKILL');
      await new Promise((r) => server.child.once('exit', r));
      expect(await goneWithin5s(sleep)).toEqual([]);
      expect(exchange.hits('effect')).toBe(0);

      server = await startServerProcess(env, { uid });
      children.push(server.child);
      const { workflow, jobs } = await finished(api, id);
      expect(workflow.status).toBe('success');
      const steps = (await api('GET', `/api/v2/project/gh/acme/crash/job/${jobs[0].job_number}/steps`)).items;
      expect(steps).toEqual([expect.objectContaining({ attempt: 2, status: 'success' })]);
      expect({ started: exchange.hits('start'), effects: exchange.hits('effect') }).toEqual({ started: 2, effects: 1 });
      server.child.kill('SIGTERM');
      await new Promise((r) => server.child.once('exit', r));
    }, 150_000);
  });

  it('a runner that cannot renew its lease (the server stopped) kills its step before the lease ends, and sends nothing more', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'gyre-crash-'));
    const work = mkdtempSync(join(tmpdir(), 'gyre-crash-runners-'));
    const sleep = uniqueSleep();
    const repo = makeGitRepo({ '.circleci/config.yml': config(exchange.url, sleep, 'acme/runners') });
    dirs.push(dataDir, work, repo);
    const ttl = 3000;
    const server = await startServerProcess({ GYRE_DATA_DIR: dataDir, DATABASE_URL: '', GYRE_ADMIN_TOKEN: TOKEN, GYRE_RUNNER_SLOTS: '0', GYRE_LEASE_TTL_MS: String(ttl) });
    children.push(server.child);
    const api = (method: string, path: string, body?: unknown) => apiCall(server.url, TOKEN, method, path, body);
    await api('POST', '/api/v2/resource-classes', { name: 'acme/runners', cpu: 1, memory_mb: 1024, driver: 'runner' });
    const runnerToken = (await api('POST', '/api/v2/resource-classes/acme%2Frunners/tokens', {})).token as string;
    await api('POST', '/api/v2/projects', { org: 'acme', name: 'crash', repo_url: repo });
    const { id } = await api('POST', '/api/v2/project/gh/acme/crash/pipeline', {});
    const runner = startRunnerProcess(server.url, runnerToken, ['--work-dir', mkdtempSync(join(work, 'r')), '--poll-ms', '1000']);
    children.push(runner);
    await until('the first attempt to start its sleep', async () => exchange.get('gate') !== undefined && sleepers(sleep).length > 0, 60_000, 50);

    // The server stops answering: no renewal can succeed, and the server can end nothing either.
    server.child.kill('SIGSTOP');
    const stoppedAt = Date.now();
    try {
      const deadline = stoppedAt + ttl + 10_000;
      while (sleepers(sleep).length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      // Gone (the step's sleep is far longer), by the agent's own deadline: asserted below from
      // what the runner wrote, since this test's clock on a loaded machine is not the agent's.
      expect(sleepers(sleep)).toEqual([]);
    } finally {
      server.child.kill('SIGCONT');
    }
    // The runner says why, in the line it writes before it kills the step; the test may see the
    // step gone before it has read that line from the runner's pipe.
    const why = 'lease not renewed in time; killing the steps and reporting nothing more';
    await until('the runner to say why it killed the step', async () => runner.output().includes(why), 5000, 50).catch(() => undefined);
    expect(runner.output()).toContain(why);
    // It killed the step before the lease could end: TTL minus a margin since its last renewal.
    const since = Number(/lease not renewed in time;.* sinceRenewalMs=(\d+)/.exec(runner.output())?.[1]);
    expect(since).toBeGreaterThan(0);
    expect(since).toBeLessThan(ttl);
    const { workflow, jobs } = await finished(api, id);
    expect(workflow.status).toBe('success');
    const steps = (await api('GET', `/api/v2/project/gh/acme/crash/job/${jobs[0].job_number}/steps`)).items;
    expect(steps).toEqual([expect.objectContaining({ attempt: 2, status: 'success' })]);
    expect({ started: exchange.hits('start'), effects: exchange.hits('effect') }).toEqual({ started: 2, effects: 1 });
  }, 120_000);

  it.each(EXECUTORS.filter(([, , uid]) => uid === undefined))(
    'a gyre runner with %s: the step dies with the runner; the task runs again on another runner once its lease is over',
    async (_label, executorEnv) => {
      const dataDir = mkdtempSync(join(tmpdir(), 'gyre-crash-'));
      const work = mkdtempSync(join(tmpdir(), 'gyre-crash-runners-'));
      // Build uids must pass through to the runners' task directories.
      chmodSync(work, 0o711);
      const sleep = uniqueSleep();
      const repo = makeGitRepo({ '.circleci/config.yml': config(exchange.url, sleep, 'acme/runners') });
      dirs.push(dataDir, work, repo);
      const server = await startServerProcess({ GYRE_DATA_DIR: dataDir, DATABASE_URL: '', GYRE_ADMIN_TOKEN: TOKEN, GYRE_RUNNER_SLOTS: '0', GYRE_LEASE_TTL_MS: '1500' });
      children.push(server.child);
      const api = (method: string, path: string, body?: unknown) => apiCall(server.url, TOKEN, method, path, body);
      await api('POST', '/api/v2/resource-classes', { name: 'acme/runners', cpu: 1, memory_mb: 1024, driver: 'runner' });
      const runnerToken = (await api('POST', '/api/v2/resource-classes/acme%2Frunners/tokens', {})).token as string;
      await api('POST', '/api/v2/projects', { org: 'acme', name: 'crash', repo_url: repo });
      const { id } = await api('POST', '/api/v2/project/gh/acme/crash/pipeline', {});

      const first = startRunnerProcess(server.url, runnerToken, ['--work-dir', mkdtempSync(join(work, 'r'))], executorEnv);
      children.push(first);
      await until('the first attempt to start its sleep', async () => exchange.get('gate') !== undefined && sleepers(sleep).length > 0, 60_000, 50);
      // The runner alone, not its process group: what it started must die with it all the same.
      first.kill('SIGKILL');
      await new Promise((r) => first.once('exit', r));
      expect(await goneWithin5s(sleep)).toEqual([]);

      const second = startRunnerProcess(server.url, runnerToken, ['--work-dir', mkdtempSync(join(work, 'r'))], executorEnv);
      children.push(second);
      const { workflow, jobs } = await finished(api, id);
      expect(workflow.status).toBe('success');
      const steps = (await api('GET', `/api/v2/project/gh/acme/crash/job/${jobs[0].job_number}/steps`)).items;
      expect(steps).toEqual([expect.objectContaining({ attempt: 2, status: 'success' })]);
      expect({ started: exchange.hits('start'), effects: exchange.hits('effect') }).toEqual({ started: 2, effects: 1 });
    },
    150_000,
  );
});
