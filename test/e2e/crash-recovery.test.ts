import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTestDatabase, testStores } from '../support/database';
import { makeGitRepo } from '../support/gyre';
import { apiCall, startServerProcess } from '../support/processes';

const TOKEN = 'crash-test-token-0123456789';

/** 'gone' once a process has exited (a zombie waiting for its reaper counts as gone). */
function processState(pid: number): 'gone' | 'running' {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return /^\d+ \(.*\) [ZX] /.test(stat) ? 'gone' : 'running';
  } catch {
    return 'gone';
  }
}

const api = (url: string, method: string, path: string, body?: unknown) => apiCall(url, TOKEN, method, path, body);

describe.each(testStores())('a server killed while a job runs, on %s', (store) => {
  const dirs: string[] = [];
  let drop: (() => Promise<void>) | undefined;
  let child: ChildProcess | undefined;
  afterAll(async () => {
    child?.kill('SIGKILL');
    await drop?.();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it('retries the task after restart; it is never left running and completes once', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'gyre-crash-'));
    const work = mkdtempSync(join(tmpdir(), 'gyre-crash-ledger-'));
    dirs.push(dataDir, work);
    // DATABASE_URL is blanked for the embedded case: the child would otherwise inherit CI's.
    const env: Record<string, string> = { GYRE_DATA_DIR: dataDir, GYRE_LEASE_TTL_MS: '1500', DATABASE_URL: '', GYRE_ADMIN_TOKEN: TOKEN };
    if (store === 'postgres') {
      const db = await createTestDatabase();
      drop = db.drop;
      env.DATABASE_URL = db.url;
    }
    const ledger = join(work, 'ledger');
    const gate = join(work, 'first-attempt-seen');
    const sleeper = join(work, 'sleeper.pid');
    // The first attempt records itself and hangs; any later attempt records itself and finishes.
    const repo = makeGitRepo({
      '.circleci/config.yml': `version: 2.1
jobs:
  long:
    docker: [{ image: x }]
    steps:
      - run: |
          echo "attempt start" >> ${ledger}
          if [ ! -f ${gate} ]; then sleep 120 & echo $! > ${sleeper}; touch ${gate}; wait; fi
          echo "attempt done" >> ${ledger}
workflows:
  w:
    jobs: [long]
`,
    });
    dirs.push(repo);

    let server = await startServerProcess(env);
    child = server.child;
    await api(server.url, 'POST', '/api/v2/projects', { org: 'acme', name: 'crash', repo_url: repo });
    const { id } = await api(server.url, 'POST', '/api/v2/project/gh/acme/crash/pipeline', {});
    for (let i = 0; i < 400 && !existsSync(gate); i++) await new Promise((r) => setTimeout(r, 50));
    expect(existsSync(gate)).toBe(true);

    server.child.kill('SIGKILL');
    await new Promise((r) => server.child.once('exit', r));

    server = await startServerProcess(env);
    child = server.child;
    let jobs: any[] = [];
    let workflow: any;
    for (let i = 0; i < 600; i++) {
      [workflow] = (await api(server.url, 'GET', `/api/v2/pipeline/${id}/workflow`)).items;
      jobs = (await api(server.url, 'GET', `/api/v2/workflow/${workflow.id}/job`)).items;
      if (['success', 'failed', 'canceled'].includes(workflow.status)) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(workflow.status).toBe('success');
    expect(jobs[0].status).toBe('success');
    const steps = (await api(server.url, 'GET', `/api/v2/project/gh/acme/crash/job/${jobs[0].job_number}/steps`)).items;
    expect(steps).toHaveLength(1);
    expect(steps[0]).toMatchObject({ attempt: 2, status: 'success' });
    // The hung first attempt's process was stopped when the new server started; only the retry finished.
    await new Promise((r) => setTimeout(r, 300));
    expect(readFileSync(ledger, 'utf8')).toBe('attempt start\nattempt start\nattempt done\n');
    const sleeperPid = Number(readFileSync(sleeper, 'utf8'));
    expect(processState(sleeperPid)).toBe('gone');
    server.child.kill('SIGTERM');
    await new Promise((r) => server.child.once('exit', r));
    child = undefined;
  }, 120_000);
});
