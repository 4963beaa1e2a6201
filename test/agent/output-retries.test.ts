import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHttpOutputClient } from '../../runtime/agent/http-output-client';
import { createAgentClient } from '../../runtime/agent/http-reporter';
import { retryPolicyOf } from '../../runtime/cli/agent-command';
import { AgentApiClient } from '../../runtime/agent/agent-api-client';
import type { RetryPolicy } from '../../runtime/agent/retries';
import { StaleLeaseError } from '../../runtime/domain/errors';
import type { TestCase } from '../../runtime/output/junit';
import { createLocalBlobStore } from '../../runtime/blob/local-blob-store';
import { createLogger } from '../../runtime/logger';
import type { OutputClient } from '../../runtime/output/output-client';
import { createOutputService } from '../../runtime/output/output-service';
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy';
import { flowStore, startTestGyre, type TestGyre } from '../support/gyre';
import { freePort } from '../support/processes';
import { claimTasks, configOnClass, runnerClass, type Claimed } from '../support/runner-tasks';

const CLASS = 'acme/retries';
const config = configOnClass(CLASS);

/** Retries without waiting: what is retried is asserted, never how long it took. */
const NO_WAIT: Partial<RetryPolicy> = { sleep: async () => undefined };

async function collect(source: AsyncIterable<Uint8Array>): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of source) chunks.push(Buffer.from(c));
  return Buffer.concat(chunks).toString('utf8');
}

/** A body that can be opened again, counting how often it was. */
function body(text: string, pieces = 4) {
  const opened = { count: 0 };
  const open = async function* () {
    opened.count++;
    const size = Math.ceil(text.length / pieces);
    for (let i = 0; i < text.length; i += size) yield Buffer.from(text.slice(i, i + size));
  };
  return { open, opened };
}

const cases = (n: number, tag: string): TestCase[] =>
  Array.from({ length: n }, (_, i) => ({ name: `${tag} ${i}`, classname: tag, file: `${tag}.test.js`, result: i % 7 ? 'success' : 'failure', message: i % 7 ? '' : 'expected 1, got 2', run_time: i / 100 }));

/** The bytes of a download, as a SHA-256 and a count (a mismatch prints two lines, not megabytes). */
async function digest(source: AsyncIterable<Uint8Array>): Promise<{ sha256: string; bytes: number }> {
  const hash = createHash('sha256');
  let bytes = 0;
  for await (const c of source) {
    hash.update(c);
    bytes += c.byteLength;
  }
  return { sha256: hash.digest('hex'), bytes };
}
const digestOf = (b: Buffer) => ({ sha256: createHash('sha256').update(b).digest('hex'), bytes: b.length });

/**
 * A remote agent's file steps through an HTTP proxy on loopback that drops connections and answers
 * 503 where told: every write arrives exactly once, refusals are never retried, downloads resume
 * where they broke off (or fail when the server cannot resume them), and test results are stored
 * all or nothing.
 */
describe.each(flowStore())('file steps of a remote agent through a faulty network (%s)', (store) => {
  let g: TestGyre;
  let proxy: FaultProxy;
  const claimed: Claimed[] = [];
  let next = 0;
  /** A task of its own for each test, so counts are the test's own. */
  const claim = () => claimed[next++];

  const clientFor = (c: Claimed, notes: string[] = [], retry: Partial<RetryPolicy> = NO_WAIT, url = proxy.url): OutputClient & { notes: string[] } => {
    const client = createHttpOutputClient(new AgentApiClient({ url, token: c.token, taskId: c.task.taskId }), { retry });
    return Object.assign(Object.create(client), client, { notes });
  };
  const noted = (notes: string[]) => ({ onRetry: (m: string) => notes.push(m) });
  const count = async (sql: string, params: unknown[]) => Number((await g.gyre.store.query<{ n: string }>(`SELECT count(*) AS n FROM ${sql}`, params))[0].n);
  const testsOf = async (c: Claimed) => (await g.api('GET', `/api/v2/project/${c.task.projectSlug}/${c.task.jobNumber}/tests`)).items as TestCase[];

  beforeAll(async () => {
    // The tasks are claimed here and never renewed: a lease of 10 minutes outlasts the file on a
    // loaded machine (the default 30 s did not always).
    g = await startTestGyre({ store, env: { GYRE_RUNNER_SLOTS: '0', GYRE_LEASE_TTL_MS: '600000' } });
    proxy = await startFaultProxy(g.url);
    const token = await runnerClass(g, CLASS);
    const projects = 21;
    for (let i = 0; i < projects; i++) {
      await g.addProject(`acme/p${i}`, { '.circleci/config.yml': config });
      await g.trigger(`acme/p${i}`);
    }
    claimed.push(...(await claimTasks(g.url, token, projects)));
  }, 120_000);
  afterAll(async () => {
    await proxy?.close();
    await g?.stop();
  });

  it('takes the retry policy given to `gyre runner` / `gyre agent` (--retry-attempts, GYRE_AGENT_RETRY_ATTEMPTS)', async () => {
    const none = claim();
    const agentOf = (c: Claimed, policy: ReturnType<typeof retryPolicyOf>) => createAgentClient({ url: proxy.url, token: c.token, taskId: c.task.taskId, retry: policy }).output();
    proxy.fail('PUT', /\/artifacts$/, { kind: 'status', status: 503 });
    const before = proxy.seen.length;
    await expect(agentOf(none, retryPolicyOf({ 'retry-attempts': '1' }, { GYRE_AGENT_RETRY_ATTEMPTS: '9' })).uploadArtifact(none.task, 'once.txt', body('once').open)).rejects.toThrow(/503/);
    expect(proxy.seen.slice(before).filter((r) => r.startsWith('PUT '))).toHaveLength(1);

    const two = claim();
    const notes: string[] = [];
    proxy.fail('PUT', /\/artifacts$/, { kind: 'status', status: 503 });
    await agentOf(two, retryPolicyOf({}, { GYRE_AGENT_RETRY_ATTEMPTS: '2' })).uploadArtifact(two.task, 'twice.txt', body('twice').open, noted(notes));
    expect(notes).toEqual([expect.stringMatching(/\(attempt 2 of 2\)$/)]);

    expect(() => retryPolicyOf({ 'retry-attempts': '0' }, {})).toThrow("--retry-attempts (or GYRE_AGENT_RETRY_ATTEMPTS) '0' must be a whole number from 1 to 20 (1: no retries)");
    expect(() => retryPolicyOf({}, { GYRE_AGENT_RETRY_SECONDS: 'soon' })).toThrow("--retry-seconds (or GYRE_AGENT_RETRY_SECONDS) 'soon' must be a number of seconds from 0 to 3600");
    expect(retryPolicyOf({ 'retry-seconds': '90' }, { GYRE_AGENT_RETRY_SECONDS: '5' })).toEqual({ budgetMs: 90_000 });
  });

  it('stores an artifact once when the answer to its upload was lost, and the download is the file', async () => {
    const c = claim();
    const notes: string[] = [];
    const { open, opened } = body('the artifact, whole');
    proxy.fail('PUT', /\/artifacts$/, { kind: 'drop-after' });
    await clientFor(c).uploadArtifact(c.task, 'reports/a.txt', open, noted(notes));

    expect(opened.count).toBe(2);
    expect(notes).toEqual([expect.stringMatching(/^Uploading the artifact reports\/a\.txt failed \(.+\); retrying in \d+\.\ds \(attempt 2 of 5\)$/)]);
    const items = (await g.api('GET', `/api/v2/project/${c.task.projectSlug}/${c.task.jobNumber}/artifacts`)).items;
    expect(items.map((a: any) => a.path)).toEqual(['reports/a.txt']);
    expect(await (await fetch(items[0].url)).text()).toBe('the artifact, whole');
  });

  it('sends an upload cut off midway and then answered 503 again, whole, and stores it once', async () => {
    const c = claim();
    const notes: string[] = [];
    const text = 'x'.repeat(100_000);
    const { open, opened } = body(text, 10);
    proxy.fail('PUT', /\/artifacts$/, { kind: 'drop-midway', bytes: 30_000 });
    proxy.fail('PUT', /\/artifacts$/, { kind: 'status', status: 503 });
    await clientFor(c).uploadArtifact(c.task, 'big.bin', open, noted(notes));

    expect(opened.count).toBe(3);
    expect(notes).toHaveLength(2);
    expect(notes[1]).toMatch(/failed \(HTTP 503\); retrying/);
    const rows = await g.gyre.store.query<{ path: string; bytes: string }>('SELECT path, bytes FROM artifacts WHERE job_id = $1', [c.task.jobId]);
    expect(rows.map((r) => [r.path, Number(r.bytes)])).toEqual([['big.bin', 100_000]]);
  });

  it('answers "saved" to a cache save retried after its first try was stored, and keeps one cache', async () => {
    const c = claim();
    const key = `deps-${c.task.jobId}`;
    proxy.fail('PUT', /\/cache$/, { kind: 'drop-after' });
    const client = clientFor(c);
    expect(await client.saveCache(c.task, key, body('cache bytes').open)).toBe('saved');
    expect(await count('(SELECT id, key, blob_key, created_at FROM caches UNION ALL SELECT id, key, blob_key, created_at FROM protected_caches) c WHERE key = $1', [key])).toBe(1);
    const found = await client.findCache(c.task, [key]);
    expect(await collect(await client.openCache(c.task, found!.id))).toBe('cache bytes');
    // A save of the same key by another step still finds it taken.
    expect(await client.saveCache(c.task, key, body('other bytes').open)).toBe('exists');
  });

  it('makes one workspace layer of a persist retried after its first try was stored', async () => {
    const c = claim();
    proxy.fail('POST', /\/workspace$/, { kind: 'drop-after' });
    proxy.fail('POST', /\/workspace$/, { kind: 'status', status: 502 });
    await clientFor(c).persistWorkspace(c.task, body('layer').open);
    expect(proxy.count('POST', new RegExp(`/${c.task.taskId}/workspace$`))).toBe(3);
    expect(await count('workspace_layers WHERE job_id = $1', [c.task.jobId])).toBe(1);
  });

  it('stores test results once when their upload is retried after its first try was stored', async () => {
    const c = claim();
    const notes: string[] = [];
    proxy.fail('PUT', /\/test-results$/, { kind: 'drop-after' });
    await clientFor(c).storeTestResults(c.task, cases(3000, 'retried'), noted(notes));
    expect(notes).toHaveLength(1);
    expect(await count('test_results WHERE job_id = $1', [c.task.jobId])).toBe(3000);
    const tests = await testsOf(c);
    expect(tests[7]).toEqual({ name: 'retried 7', classname: 'retried', file: 'retried.test.js', result: 'failure', message: 'expected 1, got 2', run_time: 0.07, source: '' });
  });

  it('stores nothing of test results whose one upload broke off midway', async () => {
    const c = claim();
    proxy.fail('PUT', /\/test-results$/, { kind: 'drop-midway', bytes: 200_000 });
    // One attempt only: the failure is what the step sees.
    const client = clientFor(c, [], { ...NO_WAIT, attempts: 1 });
    await expect(client.storeTestResults(c.task, cases(5000, 'cut'))).rejects.toThrow(/Storing the test results failed after 1 attempt; the last failure: /);
    expect(await testsOf(c)).toEqual([]);
    expect(await count('test_results WHERE job_id = $1', [c.task.jobId])).toBe(0);
  });

  it('refuses test results with a bad line anywhere in them, naming the line, and stores none of them', async () => {
    const c = claim();
    const lines = cases(2000, 'bad').map((t) => JSON.stringify(t));
    lines[1500] = JSON.stringify({ ...JSON.parse(lines[1500]), result: 'exploded' });
    const res = await fetch(`${g.url}/api/v2/agent/task/${c.task.taskId}/test-results`, { method: 'PUT', headers: { Authorization: `Bearer ${c.token}` }, body: lines.join('\n') });
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({ message: 'line 1501.result must be one of success, failure, skipped' });
    const broken = await fetch(`${g.url}/api/v2/agent/task/${c.task.taskId}/test-results`, { method: 'PUT', headers: { Authorization: `Bearer ${c.token}` }, body: `${lines[0]}\n{"name": \n` });
    expect(broken.status).toBe(400);
    expect(((await broken.json()) as any).message).toMatch(/^test results line 2 is not JSON: /);
    expect(await testsOf(c)).toEqual([]);
  });

  it('refuses test results larger than the limit, naming it, and stores none of them', async () => {
    const c = claim();
    const dir = mkdtempSync(join(tmpdir(), 'gyre-tests-limit-'));
    try {
      const output = createOutputService({ store: g.gyre.store, blobs: createLocalBlobStore({ root: dir }), log: createLogger({ level: 'silent' }), limits: { testResultsBytes: 10_000 } });
      await expect(output.client.storeTestResults(c.task, cases(500, 'many'))).rejects.toThrow(
        'the test results are larger than the limit of 9.8 KiB (10000 bytes) of JSON, one line per test; nothing of them was stored',
      );
      expect(await count('test_results WHERE job_id = $1', [c.task.jobId])).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('never retries a refusal: a 413 from a proxy, a 400 from the server, a lost lease', async () => {
    const c = claim();
    const notes: string[] = [];
    const client = clientFor(c);
    proxy.fail('PUT', /\/artifacts$/, { kind: 'status', status: 413 });
    const big = body('too big for the proxy');
    await expect(client.uploadArtifact(c.task, 'big.txt', big.open, noted(notes))).rejects.toThrow(/→ 413: /);
    expect(big.opened.count).toBe(1);

    const escaping = body('x');
    await expect(client.uploadArtifact(c.task, '../up.txt', escaping.open, noted(notes))).rejects.toThrow(/400: refused '\.\.\/up\.txt'/);
    expect(escaping.opened.count).toBe(1);
    expect(notes).toEqual([]);
    expect(await count('artifacts WHERE job_id = $1', [c.task.jobId])).toBe(0);

    // The lease ends: a 409, which the agent takes as a lost task at once.
    expect((await fetch(`${g.url}/api/v2/agent/task/${c.task.taskId}/complete`, { method: 'POST', headers: { Authorization: `Bearer ${c.token}` }, body: JSON.stringify({ outcome: 'success' }) })).status).toBe(200);
    const before = proxy.count('PUT', /\/cache$/);
    await expect(client.saveCache(c.task, 'late', body('late').open, noted(notes))).rejects.toBeInstanceOf(StaleLeaseError);
    expect(proxy.count('PUT', /\/cache$/) - before).toBe(1);
    expect(notes).toEqual([]);
  });

  it('gives up after the policy’s attempts with what it tried, having said so at each retry', async () => {
    const c = claim();
    const notes: string[] = [];
    proxy.fail('GET', /\/cache$/, { kind: 'status', status: 503 }, 5);
    await expect(clientFor(c).cacheExists(c.task, 'anything', noted(notes))).rejects.toThrow('Looking up the cache failed after 5 attempts; the last failure: HTTP 503');
    expect(notes.map((n) => n.replace(/in \d+\.\ds/, 'in Ns'))).toEqual([2, 3, 4, 5].map((n) => `Looking up the cache failed (HTTP 503); retrying in Ns (attempt ${n} of 5)`));
  });

  it('retries a download that broke before its first byte from the start', async () => {
    const c = claim();
    const notes: string[] = [];
    const client = clientFor(c);
    const key = `dl-${c.task.jobId}`;
    const content = 'y'.repeat(50_000);
    expect(await client.saveCache(c.task, key, body(content).open)).toBe('saved');
    const found = await client.findCache(c.task, [key]);
    const path = new RegExp(`/cache/${found!.id}$`);

    proxy.fail('GET', path, { kind: 'drop-before' });
    proxy.fail('GET', path, { kind: 'status', status: 504 });
    expect(await collect(await client.openCache(c.task, found!.id, noted(notes)))).toBe(content);
    expect(proxy.count('GET', path)).toBe(3);
    // The reset before any answer is sent again at once by the task API (a GET is idempotent), so
    // only the 504 costs the step a retry and a note.
    expect(notes.map((n) => n.replace(/in \d+\.\ds/, 'in Ns'))).toEqual([`Downloading the cache ${found!.id} failed (HTTP 504); retrying in Ns (attempt 2 of 5)`]);
    // Nothing had arrived: neither try asked for a range.
    expect(proxy.requests.filter((r) => path.test(r.path)).map((r) => r.headers.range)).toEqual([undefined, undefined, undefined]);
  });

  it.each([1, 2])('resumes a cache download cut midway %i time(s) from the byte it lacks, and hands on every byte once', async (cuts) => {
    const c = claim();
    const notes: string[] = [];
    const client = clientFor(c);
    const key = `resume-${c.task.jobId}`;
    const content = randomBytes(400_000);
    expect(await client.saveCache(c.task, key, [content])).toBe('saved');
    const found = await client.findCache(c.task, [key]);
    const path = new RegExp(`/cache/${found!.id}$`);

    // Each cut passes 100 000 bytes of its answer on: the first at 0, the second at 100 000.
    proxy.fail('GET', path, { kind: 'cut-answer', bytes: 100_000 }, cuts);
    const download = await client.openCache(c.task, found!.id, noted(notes));
    expect(await digest(download)).toEqual(digestOf(content));

    const at = Array.from({ length: cuts }, (_, i) => (i + 1) * 100_000);
    expect(notes.map((n) => n.replace(/in \d+\.\ds/, 'in Ns'))).toEqual(
      at.map((n, i) => expect.stringMatching(new RegExp(`^Downloading the cache ${found!.id} broke off after ${n} bytes \\(.+\\); resuming from byte ${n} in Ns \\(attempt ${i + 2} of 5\\)$`))),
    );
    const asked = proxy.requests.filter((r) => path.test(r.path));
    expect(asked.map((r) => r.headers.range)).toEqual([undefined, ...at.map((n) => `bytes=${n}-`)]);
    expect(asked.slice(1).map((r) => r.headers['if-range'])).toEqual(at.map(() => `"cache-${found!.id}"`));
  });

  it.each([1, 2])('resumes a workspace layer download cut midway %i time(s), and hands on every byte once', async (cuts) => {
    const c = claim();
    const notes: string[] = [];
    const client = clientFor(c);
    const content = randomBytes(300_000);
    await client.persistWorkspace(c.task, [content]);
    const [layer] = await g.gyre.store.query<{ id: string }>('SELECT id FROM workspace_layers WHERE job_id = $1', [c.task.jobId]);
    const path = new RegExp(`/workspace/layers/${layer.id}$`);

    proxy.fail('GET', path, { kind: 'cut-answer', bytes: 70_000 }, cuts);
    expect(await digest(await client.openWorkspaceLayer(c.task, layer.id, noted(notes)))).toEqual(digestOf(content));

    const at = Array.from({ length: cuts }, (_, i) => (i + 1) * 70_000);
    expect(notes).toHaveLength(cuts);
    at.forEach((n, i) => expect(notes[i]).toMatch(new RegExp(`^Downloading the workspace layer ${layer.id} broke off after ${n} bytes \\(.+\\); resuming from byte ${n} in \\d+\\.\\ds \\(attempt ${i + 2} of 5\\)$`)));
    expect(proxy.requests.filter((r) => path.test(r.path)).map((r) => r.headers.range)).toEqual([undefined, ...at.map((n) => `bytes=${n}-`)]);
  });

  it('fails a download whose resume is answered with the whole object, having handed on only the bytes before the break', async () => {
    const c = claim();
    const client = clientFor(c);
    const key = `whole-${c.task.jobId}`;
    const content = randomBytes(200_000);
    expect(await client.saveCache(c.task, key, [content])).toBe('saved');
    const found = await client.findCache(c.task, [key]);
    const path = new RegExp(`/cache/${found!.id}$`);

    // A proxy that drops the Range header: the server answers 200 with the whole object.
    proxy.fail('GET', path, { kind: 'cut-answer', bytes: 50_000 });
    proxy.fail('GET', path, { kind: 'strip-range' });
    const received: Buffer[] = [];
    const download = await client.openCache(c.task, found!.id);
    await expect(
      (async () => {
        for await (const chunk of download) received.push(Buffer.from(chunk));
      })(),
    ).rejects.toThrow(/^Downloading the cache \S+ broke off after 50000 bytes and cannot resume: asked for bytes 50000- of "cache-\S+", the server answered 200 with the whole object .*; the step stops rather than use part of it$/);
    expect(Buffer.concat(received).equals(content.subarray(0, 50_000))).toBe(true);
    expect(proxy.count('GET', path)).toBe(2);
  });

  it('gives up on a download that keeps breaking after the policy’s attempts, saying how far it got', async () => {
    const c = claim();
    const notes: string[] = [];
    const client = clientFor(c);
    const key = `broken-${c.task.jobId}`;
    const content = randomBytes(100_000);
    expect(await client.saveCache(c.task, key, [content])).toBe('saved');
    const found = await client.findCache(c.task, [key]);
    const path = new RegExp(`/cache/${found!.id}$`);

    proxy.fail('GET', path, { kind: 'cut-answer', bytes: 10_000 }, 5);
    const download = await client.openCache(c.task, found!.id, noted(notes));
    await expect(digest(download)).rejects.toThrow(/^Downloading the cache \S+ broke off after 50000 bytes and failed after 5 attempts; the last failure: .+$/);
    expect(notes).toHaveLength(4);
    expect(proxy.count('GET', path)).toBe(5);
  });

  it('waits out a refused connection (a server restarting) and then stores the write', async () => {
    const c = claim();
    const notes: string[] = [];
    const port = await freePort();
    let late: FaultProxy | undefined;
    // Nothing listens on `port` until the client waits before its first retry.
    const retry: Partial<RetryPolicy> = {
      sleep: async () => {
        late ??= await startFaultProxy(g.url, port);
      },
    };
    try {
      await clientFor(c, [], retry, `http://127.0.0.1:${port}`).persistWorkspace(c.task, body('after restart').open, noted(notes));
      expect(notes).toEqual([expect.stringMatching(/^Persisting to the workspace failed \(ECONNREFUSED\); retrying/)]);
      expect(await count('workspace_layers WHERE job_id = $1', [c.task.jobId])).toBe(1);
    } finally {
      await late?.close();
    }
  });

  it('does not retry a body that cannot be produced again once it was sent in part', async () => {
    const c = claim();
    async function* once(): AsyncIterable<Uint8Array> {
      for (let i = 0; i < 10; i++) yield Buffer.alloc(10_000, 1);
    }
    proxy.fail('PUT', /\/artifacts$/, { kind: 'drop-midway', bytes: 20_000 });
    await expect(clientFor(c).uploadArtifact(c.task, 'once.bin', once())).rejects.toThrow(/cannot be retried: its body was already sent in part and cannot be produced again/);
    expect(await count('artifacts WHERE job_id = $1', [c.task.jobId])).toBe(0);
  });
});
