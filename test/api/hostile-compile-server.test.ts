import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { makeGitRepo } from '../support/gyre';
import { hostileConfig } from '../support/hostile-compile';
import { apiCall, startServerProcess, until } from '../support/processes';

/**
 * A hostile config once blocked the server's event loop for 16 s: every running task lost its
 * lease. Now configs compile in worker threads within budgets. Against a server process with a
 * short lease, while three hostile pipelines compile at once: /healthz keeps answering, a job
 * that runs through it all finishes on its first attempt, and each hostile pipeline errors naming
 * the budget it crossed.
 */
describe('a server compiling hostile configs', () => {
  const dir = mkdtempSync(join(tmpdir(), 'gyre-hostile-compile-'));
  const token = `hc-${randomBytes(12).toString('hex')}`;
  let server: Awaited<ReturnType<typeof startServerProcess>>;
  beforeAll(async () => {
    server = await startServerProcess({
      GYRE_DATA_DIR: dir,
      DATABASE_URL: '',
      GYRE_ADMIN_TOKEN: token,
      GYRE_RUNNER_SLOTS: '1',
      // A lease of 3 s: a loop blocked for longer than that ends the running attempt (it was blocked 16 s once).
      GYRE_LEASE_TTL_MS: '3000',
      GYRE_MAX_ATTEMPTS: '1',
      GYRE_COMPILE_TIMEOUT_MS: '4000',
    });
  }, 90_000);
  afterAll(async () => {
    if (server?.child.exitCode === null) {
      const exited = new Promise((r) => server.child.once('exit', r));
      server.child.kill('SIGTERM');
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it('keeps serving and keeps every lease while three hostile configs compile', async () => {
    const api = (method: string, path: string, body?: unknown) => apiCall(server.url, token, method, path, body);
    const add = async (name: string, config: string) => api('POST', '/api/v2/projects', { org: 'acme', name, repo_url: makeGitRepo({ '.circleci/config.yml': config }) });
    await add('steady', 'version: 2.1\njobs:\n  long:\n    docker: [{image: x}]\n    steps:\n      - run: sleep 8; echo survived\nworkflows:\n  w:\n    jobs: [long]\n');
    const hostile = ['doubling', 'time-bomb', 'node-bomb'] as const;
    for (const name of hostile) await add(name, hostileConfig(name));

    const steady = await api('POST', '/api/v2/project/gh/acme/steady/pipeline', {});
    await until('the steady job to run', async () => (await api('GET', `/api/v2/pipeline/${steady.id}/workflow`)).items[0]?.status === 'running');

    // Sample /healthz while the hostile pipelines compile.
    const latencies: number[] = [];
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const started = performance.now();
        const res = await fetch(`${server.url}/healthz`);
        await res.arrayBuffer();
        latencies.push(performance.now() - started);
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    const pipelines = await Promise.all(hostile.map((name) => api('POST', `/api/v2/project/gh/acme/${name}/pipeline`, {})));
    const errored = await Promise.all(
      pipelines.map((p) => until(`pipeline ${p.number} to error`, async () => {
        const got = await api('GET', `/api/v2/pipeline/${p.id}`);
        return got.state === 'errored' ? got : undefined;
      }, 60_000)),
    );
    const workflow = await until('the steady job to end', async () => {
      const w = (await api('GET', `/api/v2/pipeline/${steady.id}/workflow`)).items[0];
      return w && w.status !== 'running' ? w : undefined;
    }, 60_000);
    sampling = false;
    await sampler;

    expect(errored.map((p) => p.errors[0]?.message)).toEqual([
      expect.stringMatching(/GYRE_COMPILE_MAX_BYTES/),
      expect.stringMatching(/GYRE_COMPILE_TIMEOUT_MS/),
      expect.stringMatching(/GYRE_COMPILE_MAX_NODES/),
    ]);
    const jobs = await api('GET', `/api/v2/workflow/${workflow.id}/job`);
    const steps = await api('GET', `/api/v2/project/gh/acme/steady/job/${jobs.items[0].job_number}/steps`);
    const output = await (await fetch(`${server.url}/api/v2/project/gh/acme/steady/job/${jobs.items[0].job_number}/output?step=0`, { headers: { 'Circle-Token': token } })).text();
    expect({ status: workflow.status, output }).toEqual({ status: 'success', output: expect.stringContaining('survived') });
    expect(steps.items).toEqual([expect.objectContaining({ attempt: 1, status: 'success' })]);
    // Every probe answered, none near the lease: a blocked loop would show seconds here.
    expect(latencies.length).toBeGreaterThan(20);
    expect(Math.max(...latencies)).toBeLessThan(1000);
  }, 180_000);
});
