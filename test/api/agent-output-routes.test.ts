import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AGENT_ROUTES, agentPath, checkAnswer, ClaimAnswer } from '../../runtime/agent-contract';
import { createAgentClient } from '../../runtime/agent/http-reporter';
import { registerAgentOutputRoutes } from '../../runtime/api/agent-output-routes';
import { createHttpApp, listen, type RunningHttpServer } from '../../runtime/api/http-app';
import { createLocalBlobStore } from '../../runtime/blob/local-blob-store';
import { createDispatcher } from '../../runtime/dispatcher/dispatcher';
import { StaleLeaseError } from '../../runtime/domain/errors';
import { createLogger } from '../../runtime/logger';
import type { TestCase } from '../../runtime/output/junit';
import { createOutputService } from '../../runtime/output/output-service';
import { createTaskTokens, loadTaskTokenSecret } from '../../runtime/scheduler/task-token';
import { startTestGyre, type TestGyre } from '../support/gyre';
import { claimTasks, configOnClass, runnerClass, type Claimed } from '../support/runner-tasks';

const CLASS = 'acme/manual';
const config = configOnClass(CLASS);

async function* bytes(...parts: string[]): AsyncIterable<Uint8Array> {
  for (const p of parts) yield Buffer.from(p);
}

async function collect(source: AsyncIterable<Uint8Array>): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of source) chunks.push(Buffer.from(c));
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * The agent's file-step routes, called as an agent would: two tasks of two projects, claimed by
 * hand with a runner token (no runner runs them), so each test holds real task tokens and leases.
 */
describe('agent output routes', () => {
  let g: TestGyre;
  let a: Claimed;
  let b: Claimed;

  const agentFetch = (token: string, taskId: string, path: string, init: RequestInit = {}) =>
    fetch(`${g.url}/api/v2/agent/task/${taskId}${path}`, { ...init, headers: { Authorization: `Bearer ${token}`, ...init.headers } });
  const outputOf = (c: Claimed) => createAgentClient({ url: g.url, token: c.token, taskId: c.task.taskId }).output();

  beforeAll(async () => {
    // The tasks are claimed by hand and never renewed: an hour's lease outlasts the file on a
    // loaded machine (the default 30 s did not always).
    g = await startTestGyre({ env: { GYRE_RUNNER_SLOTS: '0', GYRE_LEASE_TTL_MS: '3600000' } });
    const token = await runnerClass(g, CLASS);
    for (const name of ['one', 'two']) {
      await g.addProject(`acme/${name}`, { '.circleci/config.yml': config });
      await g.trigger(`acme/${name}`);
    }
    const claimed = await claimTasks(g.url, token, 2);
    a = claimed.find((c) => c.task.projectSlug === 'gh/acme/one')!;
    b = claimed.find((c) => c.task.projectSlug === 'gh/acme/two')!;
  }, 60_000);
  afterAll(async () => {
    await g?.stop();
  });

  it('serves every route of the agent contract, as the agent or a runner calls it, and claims answer as the contract says', async () => {
    const served = g.gyre.routes.filter((r) => r.url.startsWith('/api/v2/agent/')).map((r) => `${r.method} ${r.url} (${r.auth})`);
    const contract = Object.entries(AGENT_ROUTES).map(([name, r]) => `${r.method} ${r.path} (${name === 'claim' ? 'runner' : 'task'})`);
    expect(served.sort()).toEqual(contract.sort());
    // The paths the agent builds are the ones served, parameters encoded.
    expect(agentPath('stepOutput', { id: 'a/b', index: 2, seq: 0 })).toBe('/api/v2/agent/task/a%2Fb/step/2/output/0');
    expect(checkAnswer(ClaimAnswer, a, 'POST claim').task.taskId).toBe(a.task.taskId);
  });

  it('round-trips a cache and a workspace layer for the caller’s own task', async () => {
    const client = outputOf(b);
    expect(await client.cacheExists(b.task, 'deps-b')).toBe(false);
    expect(await client.saveCache(b.task, 'deps-b', bytes('cache ', 'of b'))).toBe('saved');
    expect(await client.saveCache(b.task, 'deps-b', bytes('second save'))).toBe('exists');
    expect(await client.cacheExists(b.task, 'deps-b')).toBe(true);
    const found = await client.findCache(b.task, ['nothing-', 'deps-']);
    expect(found).toEqual({ id: expect.any(String), key: 'deps-b', bytes: 10 });
    expect(await collect(await client.openCache(b.task, found!.id))).toBe('cache of b');
    await client.persistWorkspace(b.task, bytes('layer of b'));
    // The job has no upstream job, so it sees no layers (its own layer is for the jobs after it).
    expect(await client.workspaceLayers(b.task)).toEqual([]);
  });

  it('refuses a task token for another task’s cache, workspace layer and artifacts (403), and stores nothing', async () => {
    const [cache] = await g.gyre.store.query<{ id: string }>(`SELECT id FROM (SELECT id, key, blob_key, created_at FROM caches UNION ALL SELECT id, key, blob_key, created_at FROM protected_caches) c WHERE key = 'deps-b'`);
    const [layer] = await g.gyre.store.query<{ id: string }>('SELECT id FROM workspace_layers WHERE job_id = $1', [b.task.jobId]);
    expect(cache && layer).toBeTruthy();

    const cacheRes = await agentFetch(a.token, b.task.taskId, `/cache/${cache.id}`);
    expect(cacheRes.status).toBe(403);
    expect(await cacheRes.json()).toEqual({ message: 'This task token is for another task.' });
    expect((await agentFetch(a.token, b.task.taskId, `/workspace/layers/${layer.id}`)).status).toBe(403);
    expect((await agentFetch(a.token, b.task.taskId, '/workspace/layers')).status).toBe(403);
    const upload = await agentFetch(a.token, b.task.taskId, '/artifacts?path=planted.txt', { method: 'PUT', body: 'planted' });
    expect(upload.status).toBe(403);
    const save = await agentFetch(a.token, b.task.taskId, '/cache?key=poisoned', { method: 'PUT', body: 'poisoned' });
    expect(save.status).toBe(403);
    expect(await g.gyre.store.query('SELECT 1 FROM artifacts WHERE job_id = $1', [b.task.jobId])).toEqual([]);
    expect(await g.gyre.store.query(`SELECT 1 FROM (SELECT id, key, blob_key, created_at FROM caches UNION ALL SELECT id, key, blob_key, created_at FROM protected_caches) c WHERE key = 'poisoned'`)).toEqual([]);

    // Under its own task, another project's cache and another workflow's layer are not there to open.
    const client = outputOf(a);
    await expect(client.openCache(a.task, cache.id)).rejects.toThrow(/400: cache .* is not in this project/);
    await expect(client.openWorkspaceLayer(a.task, layer.id)).rejects.toThrow(/400: workspace layer .* is not in this workflow/);
    expect(await client.findCache(a.task, ['deps-'])).toBeUndefined();
  });

  it('refuses an artifact path that would leave the job’s artifacts with a clear 400', async () => {
    const res = await agentFetch(a.token, a.task.taskId, `/artifacts?path=${encodeURIComponent('reports/../../escape.txt')}`, { method: 'PUT', body: 'x' });
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({ message: "refused 'reports/../../escape.txt': '..' would leave the root" });
    const missing = await agentFetch(a.token, a.task.taskId, '/artifacts', { method: 'PUT', body: 'x' });
    expect(missing.status).toBe(400);
    expect(((await missing.json()) as any).message).toBe('query.path is required');
    await expect(outputOf(a).uploadArtifact(a.task, '../up.txt', bytes('x'))).rejects.toThrow(/'\.\.' would leave the root/);
    expect(await g.gyre.store.query('SELECT 1 FROM artifacts WHERE job_id = $1', [a.task.jobId])).toEqual([]);
  });

  it('stores test results in one streamed request, past the 32 MiB a JSON body may have, and refuses a malformed case', async () => {
    const bad = await agentFetch(a.token, a.task.taskId, '/test-results', {
      method: 'POST',
      body: JSON.stringify({ cases: [{ name: 'n', classname: 'c', file: '', result: 'exploded', message: '', run_time: 1 }] }),
    });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as any).message).toBe('cases[0].result must be one of success, failure, skipped');
    // About 36 MiB of JSON: more than a JSON request body may carry (32 MiB); as NDJSON it is streamed, in one request.
    const cases: TestCase[] = Array.from({ length: 3000 }, (_, i) => ({ name: `t${i}`, classname: 'big', file: 'big.test.js', result: i % 10 ? 'success' : 'failure', message: 'm'.repeat(12_500), run_time: i / 1000 }));
    await outputOf(a).storeTestResults(a.task, cases);
    const [{ n }] = await g.gyre.store.query<{ n: string }>('SELECT count(*) AS n FROM test_results WHERE job_id = $1', [a.task.jobId]);
    expect(Number(n)).toBe(3000);
  });

  it('stores a write sent twice with the same Idempotency-Key once, and refuses a malformed key', async () => {
    const put = (key: string, body: string) =>
      agentFetch(a.token, a.task.taskId, '/artifacts?path=twice.txt', { method: 'PUT', body, headers: { 'Idempotency-Key': key } });
    const first = await put('0b6c1b2e-upload-1', 'the first body');
    const again = await put('0b6c1b2e-upload-1', 'the first body');
    expect([first.status, again.status]).toEqual([200, 200]);
    const rows = await g.gyre.store.query<{ bytes: string }>(`SELECT bytes FROM artifacts WHERE job_id = $1 AND path = 'twice.txt'`, [a.task.jobId]);
    expect(rows.map((r) => Number(r.bytes))).toEqual([14]);
    // Another key is another write.
    expect((await put('0b6c1b2e-upload-2', 'a second')).status).toBe(200);
    expect(await g.gyre.store.query(`SELECT 1 FROM artifacts WHERE job_id = $1 AND path = 'twice.txt'`, [a.task.jobId])).toHaveLength(2);

    const bad = await put('not a key!', 'x');
    expect(bad.status).toBe(400);
    expect(await bad.json()).toEqual({ message: "the Idempotency-Key header must be 1 to 128 letters, digits, '.', '_', ':' or '-'" });
  });

  it('refuses every call once the lease is gone (409), and the agent client reports a lost lease', async () => {
    // The earlier runs' test timings are the holder's to read while the lease is current.
    expect((await agentFetch(a.token, a.task.taskId, '/test-timings')).status).toBe(200);
    expect((await agentFetch(a.token, a.task.taskId, '/previous-test-results')).status).toBe(200);
    const res = await agentFetch(a.token, a.task.taskId, '/complete', { method: 'POST', body: JSON.stringify({ outcome: 'success' }) });
    expect(res.status).toBe(200);
    expect((await agentFetch(a.token, a.task.taskId, '/test-timings')).status).toBe(409);
    expect((await agentFetch(a.token, a.task.taskId, '/previous-test-results')).status).toBe(409);
    expect((await agentFetch(a.token, a.task.taskId, '/workspace/layers')).status).toBe(409);
    expect((await agentFetch(a.token, a.task.taskId, '/artifacts?path=late.txt', { method: 'PUT', body: 'late' })).status).toBe(409);
    await expect(outputOf(a).uploadArtifact(a.task, 'late.txt', bytes('late'))).rejects.toBeInstanceOf(StaleLeaseError);
    await expect(outputOf(a).saveCache(a.task, 'late', bytes('late'))).rejects.toBeInstanceOf(StaleLeaseError);
    expect(await g.gyre.store.query(`SELECT 1 FROM artifacts WHERE job_id = $1 AND path = 'late.txt'`, [a.task.jobId])).toEqual([]);
  });

  it('bounds an upload by the output limits without taking it whole, and stores nothing of it', async () => {
    // A second API in front of the same store, with a 64 KiB artifact limit.
    const store = g.gyre.store;
    const dir = mkdtempSync(join(tmpdir(), 'gyre-limit-blobs-'));
    const log = createLogger({ level: 'silent' });
    const output = createOutputService({ store, blobs: createLocalBlobStore({ root: dir }), log, limits: { artifactBytes: 64 * 1024 } });
    const tokens = createTaskTokens(await loadTaskTokenSecret(store));
    const app = await createHttpApp({ log, credentials: { user: async () => undefined, task: (t) => tokens.verify(t), runner: async () => undefined } });
    await registerAgentOutputRoutes(app, {
      store,
      dispatcher: createDispatcher({ store, log, config: { leaseTtlMs: 60_000, maxAttempts: 3 } }),
      output: output.client,
      limits: { artifactBytes: 64 * 1024 },
    });
    let http: RunningHttpServer | undefined;
    try {
      http = await listen(app, 0, '127.0.0.1', false);
      const client = createAgentClient({ url: `http://127.0.0.1:${http.port}`, token: b.token, taskId: b.task.taskId }).output();
      let produced = 0;
      async function* endless(): AsyncIterable<Uint8Array> {
        // 64 MiB if it were all read; the server must refuse it long before.
        for (let i = 0; i < 1024; i++) {
          produced += 64 * 1024;
          yield new Uint8Array(64 * 1024);
        }
      }
      await expect(client.uploadArtifact(b.task, 'huge.bin', endless())).rejects.toThrow(/413: an artifact may be at most 65536 bytes/);
      expect(produced).toBeLessThan(64 * 1024 * 1024);
      await client.uploadArtifact(b.task, 'small.bin', bytes('fits'));
      const rows = await store.query<{ path: string; bytes: string }>('SELECT path, bytes FROM artifacts WHERE job_id = $1', [b.task.jobId]);
      expect(rows.map((r) => [r.path, Number(r.bytes)])).toEqual([['small.bin', 4]]);
    } finally {
      await http?.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
