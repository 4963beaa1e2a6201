import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createLogger } from '../../runtime/logger';
import { startRunner, type Runner } from '../../runtime/scheduler/runner';
import { until } from '../support/processes';
import { flowStore, startTestGyre, type TestGyre } from '../support/gyre';

const ROOT = resolve(__dirname, '../..');

const config = (resourceClass: string, command: string, parallelism = 1) => `version: 2.1
jobs:
  work:
    machine: true
    resource_class: ${resourceClass}
    parallelism: ${parallelism}
    steps:
      - run:
          name: Work
          command: ${JSON.stringify(command)}
workflows:
  main:
    jobs: [work]
`;

async function output(g: TestGyre, slug: string, jobNumber: number, node: number): Promise<string> {
  const res = await fetch(`${g.url}/api/v2/project/${slug}/job/${jobNumber}/output?node_index=${node}&step=0`, { headers: { 'Circle-Token': g.token } });
  return res.text();
}

async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await fn();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe.each(flowStore())('runners and the agent API on %s', (store) => {
  let g: TestGyre;
  let runnerToken: string;
  const runners: Runner[] = [];
  const dirs: string[] = [];
  const log = createLogger({ level: 'silent' });
  const workRoot = () => {
    const d = mkdtempSync(join(tmpdir(), 'gyre-runner-test-'));
    dirs.push(d);
    return d;
  };

  beforeAll(async () => {
    // Queue gauges are read from the database on a timer, never by a scrape: a short one here.
    g = await startTestGyre({ store, env: { GYRE_METRICS_REFRESH_MS: '200' } });
    await g.api('POST', '/api/v2/resource-classes', { name: 'acme/small', cpu: 1, memory_mb: 1024, driver: 'runner' });
    runnerToken = (await g.api('POST', '/api/v2/resource-classes/acme%2Fsmall/tokens', {})).token;
  });
  afterAll(async () => {
    for (const r of runners) r.stop();
    await Promise.all(runners.map((r) => r.done.catch(() => undefined)));
    await g.stop();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it('runs a parallel job on a runner of its resource class, never on the built-in slots', async () => {
    await g.addProject('acme/par', { '.circleci/config.yml': config('acme/small', 'echo "node $CIRCLE_NODE_INDEX of $CIRCLE_NODE_TOTAL"', 3) });
    const { id } = await g.trigger('acme/par');
    // No runner yet: the task waits in the queue (the built-in slots do not serve a runner class).
    // The gauge is read from the database on the dispatcher's timer: wait for it to show the three.
    const metrics = await until('the queue depth on /metrics', async () => {
      const text = await (await fetch(`${g.gyre.opsUrl}/metrics`)).text();
      return /gyre_queue_depth\{resource_class="acme\/small"\} 3/.test(text) ? text : undefined;
    }, 15_000);
    expect(metrics).toMatch(/gyre_queue_depth\{resource_class="acme\/small"\} 3/);
    const runner = startRunner({ url: g.url, token: runnerToken, log, workRoot: workRoot(), slots: 2, pollMs: 2000 });
    runners.push(runner);
    const { jobs } = await g.waitForPipeline(id);
    expect(jobs.work.status).toBe('success');
    const outputs = await Promise.all([0, 1, 2].map((n) => output(g, 'gh/acme/par', jobs.work.job_number, n)));
    expect(outputs.map((o) => o.trim())).toEqual(['node 0 of 3', 'node 1 of 3', 'node 2 of 3']);
    const agents = await g.gyre.store.query<{ agent_id: string }>(`SELECT DISTINCT agent_id FROM tasks WHERE resource_class = 'acme/small'`);
    expect(agents.map((a) => a.agent_id)).toEqual([runner.id]);
    const after = await (await fetch(`${g.gyre.opsUrl}/metrics`)).text();
    expect(after).toMatch(/gyre_queue_wait_seconds_count\{resource_class="acme\/small"\} 3/);
  });

  it('refuses a task token for any other task, a forged token, and a token whose lease is gone', async () => {
    await g.addProject('acme/tok', { '.circleci/config.yml': config('acme/tok', 'true', 2) });
    await g.api('POST', '/api/v2/resource-classes', { name: 'acme/tok', cpu: 1, memory_mb: 512, driver: 'runner' });
    const tok = (await g.api('POST', '/api/v2/resource-classes/acme%2Ftok/tokens', {})).token;
    await g.trigger('acme/tok');
    const claim = async () => {
      const res = await fetch(`${g.url}/api/v2/agent/claim`, { method: 'POST', headers: { Authorization: `Bearer ${tok}` }, body: JSON.stringify({ wait_ms: 5000 }) });
      expect(res.status).toBe(200);
      return (await res.json()) as { token: string; task: { taskId: string } };
    };
    const a = await claim();
    const b = await claim();
    const call = (token: string, taskId: string, path = '/heartbeat') =>
      fetch(`${g.url}/api/v2/agent/task/${taskId}${path}`, { method: 'POST', headers: { Authorization: `Bearer ${token}` } }).then((r) => r.status);
    expect(await call(a.token, a.task.taskId)).toBe(200);
    expect(await call(a.token, b.task.taskId)).toBe(403);
    expect(await call(b.token, a.task.taskId, '/complete')).toBe(403);
    const forged = a.token.replace(/\.[^.]+$/, '.AAAA');
    expect(await call(forged, a.task.taskId)).toBe(401);
    // A runner token is not a task token, and a task token is not a runner token.
    expect(await call(tok, a.task.taskId)).toBe(401);
    expect((await fetch(`${g.url}/api/v2/agent/claim`, { method: 'POST', headers: { Authorization: `Bearer ${a.token}` } })).status).toBe(401);
    const complete = (t: { token: string; task: { taskId: string } }) =>
      fetch(`${g.url}/api/v2/agent/task/${t.task.taskId}/complete`, { method: 'POST', headers: { Authorization: `Bearer ${t.token}` }, body: JSON.stringify({ outcome: 'success' }) }).then((r) => r.status);
    expect(await complete(a)).toBe(200);
    expect(await complete(a)).toBe(409);
    expect(await call(a.token, a.task.taskId)).toBe(409);
    expect(await complete(b)).toBe(200);
  });

  it('answers an agent\'s cancel long-poll as soon as its job is canceled, and only for its own task', async () => {
    await g.addProject('acme/poll', { '.circleci/config.yml': config('acme/poll', 'true', 2) });
    await g.api('POST', '/api/v2/resource-classes', { name: 'acme/poll', cpu: 1, memory_mb: 512, driver: 'runner' });
    const tok = (await g.api('POST', '/api/v2/resource-classes/acme%2Fpoll/tokens', {})).token;
    const { id } = await g.trigger('acme/poll');
    const claim = async () => {
      const res = await fetch(`${g.url}/api/v2/agent/claim`, { method: 'POST', headers: { Authorization: `Bearer ${tok}` }, body: JSON.stringify({ wait_ms: 5000 }) });
      expect(res.status).toBe(200);
      const body = (await res.json()) as { token: string; lease_ttl_ms: number; task: { taskId: string } };
      expect(body.lease_ttl_ms).toBeGreaterThan(0);
      return body;
    };
    const a = await claim();
    const b = await claim();
    const poll = (token: string, taskId: string, waitMs: number) =>
      fetch(`${g.url}/api/v2/agent/task/${taskId}/cancellation?wait_ms=${waitMs}`, { headers: { Authorization: `Bearer ${token}` } });
    expect((await poll(a.token, b.task.taskId, 0)).status).toBe(403);
    expect(await (await poll(b.token, b.task.taskId, 0)).json()).toEqual({ cancel_requested: false });

    let answered = false;
    const waiting = poll(a.token, a.task.taskId, 30_000).then(async (r) => {
      answered = true;
      return r.json();
    });
    await new Promise((r) => setTimeout(r, 300));
    expect(answered).toBe(false);
    const workflow = (await g.api('GET', `/api/v2/pipeline/${id}/workflow`)).items[0];
    await g.api('POST', `/api/v2/workflow/${workflow.id}/cancel`);
    expect(await waiting).toEqual({ cancel_requested: true });
    expect(await (await poll(b.token, b.task.taskId, 30_000)).json()).toEqual({ cancel_requested: true });

    const complete = (t: { token: string; task: { taskId: string } }) =>
      fetch(`${g.url}/api/v2/agent/task/${t.task.taskId}/complete`, { method: 'POST', headers: { Authorization: `Bearer ${t.token}` }, body: JSON.stringify({ outcome: 'canceled' }) });
    expect((await complete(a)).status).toBe(200);
    expect((await complete(b)).status).toBe(200);
    // The lease is gone with the attempt: the long-poll says so rather than waiting.
    expect((await poll(a.token, a.task.taskId, 30_000)).status).toBe(409);
  });

  it('stops a running step within seconds of a cancel (not at the end of its sleep 60) and ends the job canceled', async () => {
    const runner = startRunner({ url: g.url, token: runnerToken, log, workRoot: workRoot(), pollMs: 2000 });
    runners.push(runner);
    await g.addProject('acme/cancel', { '.circleci/config.yml': config('acme/small', 'echo started; sleep 60; echo never') });
    const { id } = await g.trigger('acme/cancel');
    const workflow = await waitFor('the workflow', async () => (await g.api('GET', `/api/v2/pipeline/${id}/workflow`)).items[0]);
    await waitFor('the step to print', async () => {
      const jobs = (await g.api('GET', `/api/v2/workflow/${workflow.id}/job`)).items;
      const n = jobs[0]?.job_number;
      return n && (await output(g, 'gh/acme/cancel', n, 0)).includes('started') ? true : undefined;
    });
    const asked = Date.now();
    await g.api('POST', `/api/v2/workflow/${workflow.id}/cancel`);
    const { jobs } = await g.waitForPipeline(id);
    const elapsed = Date.now() - asked;
    expect(jobs.work.status).toBe('canceled');
    // About 0.5 s on an idle machine; the bound leaves room for a loaded one (the server, the
    // runner and this test share one process here).
    expect(elapsed).toBeLessThan(10_000);
    expect(await output(g, 'gh/acme/cancel', jobs.work.job_number, 0)).not.toContain('never');
  });

  it('gyre runner --drain as a separate process runs what is queued and exits', async () => {
    for (const r of runners) r.stop();
    await Promise.all(runners.map((r) => r.done));
    await g.addProject('acme/drain', { '.circleci/config.yml': config('acme/small', 'echo drained') });
    const { id } = await g.trigger('acme/drain');
    await waitFor('the task to be queued', async () =>
      (await g.gyre.store.query(`SELECT 1 FROM tasks t JOIN jobs j ON j.id = t.job_id JOIN projects p ON p.id = j.project_id WHERE p.slug = 'gh/acme/drain'`)).length > 0 || undefined,
    );
    const child = spawn(process.execPath, [join(ROOT, 'bin/gyre.js'), 'runner', '--url', g.url, '--token', runnerToken, '--drain', '--work-dir', workRoot()], {
      env: { ...process.env, GYRE_LOG_LEVEL: 'silent' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr!.on('data', (d) => (stderr += d));
    const code = await new Promise<number | null>((r) => child.on('exit', r));
    expect({ code, stderr }).toEqual({ code: 0, stderr: expect.stringMatching(/stopped after 1 task/) });
    const { jobs } = await g.waitForPipeline(id);
    expect(jobs.work.status).toBe('success');
  });
});
