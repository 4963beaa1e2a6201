import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from 'pg';
import { createTestDatabase } from '../support/database';
import { makeGitRepo } from '../support/gyre';
import { apiCall, freePort, killGroup, startRunnerProcess, startServerProcess, until } from '../support/processes';

const TOKEN = 'execution-failure-token-0123456789';
const pg = process.env.DATABASE_URL ? describe : describe.skip;
if (!process.env.DATABASE_URL) console.log('test/execution/failures: skipped, DATABASE_URL is not set (these tests need a PostgreSQL server)');

/** A config of `jobs` jobs, each appending `<job>-<node>` to the ledger once. */
function ledgerConfig(ledger: string, jobs: number, parallelism: number, resourceClass: string, extra = ''): string {
  const names = Array.from({ length: jobs }, (_, i) => `j${i}`);
  return `version: 2.1
jobs:
${names
  .map(
    (n) => `  ${n}:
    machine: true
    resource_class: ${resourceClass}
    parallelism: ${parallelism}
    steps:
      - run: |
          ${extra}
          echo "start ${n}"
          echo "${n}-$CIRCLE_NODE_INDEX" >> ${ledger}
          echo "done ${n}"
`,
  )
  .join('')}workflows:
  w:
    jobs: [${names.join(', ')}]
`;
}

pg('execution under failure, on PostgreSQL', () => {
  const cleanup: (() => Promise<void> | void)[] = [];
  const children: ChildProcess[] = [];
  afterAll(async () => {
    for (const c of children) await killGroup(c).catch(() => undefined);
    for (const fn of cleanup.reverse()) await fn();
  });

  async function setup(env: Record<string, string> = {}) {
    const db = await createTestDatabase();
    const dataDir = mkdtempSync(join(tmpdir(), 'gyre-exec-'));
    const work = mkdtempSync(join(tmpdir(), 'gyre-exec-work-'));
    cleanup.push(() => db.drop(), () => rmSync(dataDir, { recursive: true, force: true }), () => rmSync(work, { recursive: true, force: true }));
    const port = await freePort();
    const serverEnv = { GYRE_DATA_DIR: dataDir, DATABASE_URL: db.url, GYRE_ADMIN_TOKEN: TOKEN, GYRE_PORT: String(port), GYRE_RUNNER_SLOTS: '0', ...env };
    const server = await startServerProcess(serverEnv);
    children.push(server.child);
    const api = (method: string, path: string, body?: unknown) => apiCall(server.url, TOKEN, method, path, body);
    await api('POST', '/api/v2/resource-classes', { name: 'acme/runners', cpu: 1, memory_mb: 1024, driver: 'runner' });
    const runnerToken = (await api('POST', '/api/v2/resource-classes/acme%2Frunners/tokens', {})).token as string;
    return { db, dataDir, work, server, serverEnv, api, runnerToken };
  }

  async function pipelineDone(api: (m: string, p: string) => Promise<any>, id: string, timeoutMs = 120_000) {
    return until(
      `pipeline ${id}`,
      async () => {
        const workflows = (await api('GET', `/api/v2/pipeline/${id}/workflow`)).items;
        if (workflows.length === 0 || !workflows.every((w: any) => ['success', 'failed', 'canceled', 'error'].includes(w.status))) return undefined;
        const jobs = (await api('GET', `/api/v2/workflow/${workflows[0].id}/job`)).items;
        return { workflow: workflows[0], jobs };
      },
      timeoutMs,
      200,
    );
  }

  it('exactly once: 4 runner processes and 200 tasks; every id once in the ledger, every job success', async () => {
    const { work, api, runnerToken, server } = await setup();
    const ledger = join(work, 'ledger');
    for (let p = 0; p < 4; p++) {
      children.push(startRunnerProcess(server.url, runnerToken, ['--slots', '3', '--work-dir', mkdtempSync(join(work, 'r'))]));
    }
    const ids: string[] = [];
    for (let p = 0; p < 4; p++) {
      await api('POST', '/api/v2/projects', { org: 'acme', name: `once${p}`, repo_url: makeGitRepo({ '.circleci/config.yml': ledgerConfig(ledger, 10, 5, 'acme/runners').replaceAll('"j', `"p${p}j`) }) });
      ids.push((await api('POST', `/api/v2/project/gh/acme/once${p}/pipeline`, {})).id);
    }
    for (const id of ids) {
      const { workflow, jobs } = await pipelineDone(api, id);
      expect(workflow.status).toBe('success');
      expect(jobs.map((j: any) => j.status)).toEqual(Array(10).fill('success'));
    }
    const lines = readFileSync(ledger, 'utf8').trim().split('\n');
    const expected = [0, 1, 2, 3].flatMap((p) => Array.from({ length: 10 }, (_, j) => [0, 1, 2, 3, 4].map((n) => `p${p}j${j}-${n}`)).flat());
    expect(lines).toHaveLength(200);
    expect([...lines].sort()).toEqual([...expected].sort());
  }, 240_000);

  it('an agent killed mid-step: the lease expires, the task is retried, and after the last attempt it is an infrastructure failure', async () => {
    const { work, api, runnerToken, server, db } = await setup({ GYRE_LEASE_TTL_MS: '1500', GYRE_MAX_ATTEMPTS: '2' });
    const marker = join(work, 'attempts');
    const repo = makeGitRepo({
      '.circleci/config.yml': `version: 2.1
jobs:
  hang:
    machine: true
    resource_class: acme/runners
    steps:
      - run: echo attempt >> ${marker}; sleep 60
workflows:
  w:
    jobs: [hang]
`,
    });
    await api('POST', '/api/v2/projects', { org: 'acme', name: 'hang', repo_url: repo });
    const { id } = await api('POST', '/api/v2/project/gh/acme/hang/pipeline', {});
    const attempts = () => readFileSync(marker, 'utf8').trim().split('\n').length;
    for (let attempt = 1; attempt <= 2; attempt++) {
      const runner = startRunnerProcess(server.url, runnerToken, ['--work-dir', mkdtempSync(join(work, 'r'))]);
      children.push(runner);
      await until(`attempt ${attempt} to start`, async () => attempts() >= attempt, 30_000);
      await killGroup(runner);
    }
    const { jobs } = await pipelineDone(api, id, 30_000);
    expect(jobs[0].status).toBe('infrastructure_fail');
    const client = new Client({ connectionString: db.url });
    await client.connect();
    const { rows } = await client.query(`SELECT status, attempt, failure_reason FROM tasks`);
    await client.end();
    expect(rows).toEqual([{ status: 'infrastructure_fail', attempt: 2, failure_reason: expect.stringMatching(/attempt 2 of 2/) }]);
    expect(attempts()).toBe(2);
  }, 120_000);

  it('a server killed under load: after restart no task is lost, none completes twice, every log is whole', async () => {
    const { work, api, runnerToken, server, serverEnv, db } = await setup({ GYRE_LEASE_TTL_MS: '10000' });
    const ledger = join(work, 'ledger');
    for (let p = 0; p < 2; p++) children.push(startRunnerProcess(server.url, runnerToken, ['--slots', '3', '--work-dir', mkdtempSync(join(work, 'r'))]));
    await api('POST', '/api/v2/projects', { org: 'acme', name: 'load', repo_url: makeGitRepo({ '.circleci/config.yml': ledgerConfig(ledger, 10, 4, 'acme/runners', 'sleep 0.3') }) });
    const { id } = await api('POST', '/api/v2/project/gh/acme/load/pipeline', {});
    await until('some tasks to finish', async () => readFileSync(ledger, 'utf8').split('\n').length > 8, 60_000);
    server.child.kill('SIGKILL');
    await new Promise((r) => server.child.once('exit', r));
    await new Promise((r) => setTimeout(r, 1000));
    const again = await startServerProcess(serverEnv);
    children.push(again.child);
    const { workflow, jobs } = await pipelineDone(api, id);
    expect(workflow.status).toBe('success');
    expect(jobs.map((j: any) => j.status)).toEqual(Array(10).fill('success'));
    const client = new Client({ connectionString: db.url });
    await client.connect();
    const tasks = (await client.query(`SELECT t.id, t.status, t.attempt, j.name || '-' || t.node_index AS ledger_id FROM tasks t JOIN jobs j ON j.id = t.job_id`)).rows;
    // The attempt that completed each task, and its one step.
    const final = (await client.query(
      `SELECT s.task_id, s.status FROM tasks t JOIN steps s ON s.task_id = t.id AND s.attempt = t.attempt`,
    )).rows;
    await client.end();
    expect(tasks).toHaveLength(40);
    expect(tasks.every((t) => t.status === 'success')).toBe(true);
    expect(final).toHaveLength(40);
    expect(final.every((f) => f.status === 'success')).toBe(true);
    // Every node's log, as a user reads it through the API, is whole: the completing attempt's
    // output from its first line to its last, nothing missing or doubled.
    for (const job of jobs) {
      for (let node = 0; node < 4; node++) {
        const res = await fetch(`${server.url}/api/v2/project/gh/acme/load/job/${job.job_number}/output?node_index=${node}&step=0`, { headers: { 'Circle-Token': TOKEN } });
        expect(res.status).toBe(200);
        expect(await res.text()).toBe(`start ${job.name}\ndone ${job.name}\n`);
      }
    }
    // Nothing lost: every id is in the ledger. A command runs again only when its first attempt's
    // lease ran out while the server was down (that attempt could not report); such a task has a
    // later attempt, and still completed once.
    const lines = readFileSync(ledger, 'utf8').trim().split('\n');
    expect([...new Set(lines)].sort()).toEqual(tasks.map((t) => t.ledger_id).sort());
    const attempts = new Map(tasks.map((t) => [t.ledger_id, t.attempt]));
    for (const id of new Set(lines)) expect(lines.filter((l) => l === id).length).toBeLessThanOrEqual(attempts.get(id));
  }, 240_000);

  it('PostgreSQL drops every connection: the server and its runners carry on by themselves', async () => {
    const { api, runnerToken, server, work, db } = await setup();
    children.push(startRunnerProcess(server.url, runnerToken, ['--work-dir', mkdtempSync(join(work, 'r'))]));
    const ledger = join(work, 'ledger');
    await api('POST', '/api/v2/projects', { org: 'acme', name: 'pg', repo_url: makeGitRepo({ '.circleci/config.yml': ledgerConfig(ledger, 1, 1, 'acme/runners') }) });
    const first = await api('POST', '/api/v2/project/gh/acme/pg/pipeline', {});
    expect((await pipelineDone(api, first.id)).workflow.status).toBe('success');
    const admin = new Client({ connectionString: db.url });
    await admin.connect();
    const { rows } = await admin.query(`SELECT pg_terminate_backend(pid) AS killed FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()`);
    await admin.end();
    expect(rows.length).toBeGreaterThan(0);
    // The first request after the drop may fail once per dead pooled connection; after that it all works.
    const second = await until('a pipeline to be accepted', () => api('POST', '/api/v2/project/gh/acme/pg/pipeline', {}), 20_000, 250);
    const { workflow } = await pipelineDone(api, second.id, 60_000);
    expect(workflow.status).toBe('success');
  }, 120_000);
});
