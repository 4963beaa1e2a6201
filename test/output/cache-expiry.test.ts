import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTestDatabase } from '../support/database';
import { flowStore, makeGitRepo, startTestGyre, type TestGyre } from '../support/gyre';

/** Caches saved on protected branches (these tests' default branch) and every other, one table each. */
const CACHE_TABLES = ['caches', 'protected_caches'];

// Each run restores the newest `deps-` cache (or says there was none) and saves its own under its
// build number, so a run never replaces an older cache by reusing its key.
const CONFIG = `version: 2.1
jobs:
  build:
    docker: [{ image: cimg/base:stable }]
    steps:
      - restore_cache: { keys: ['deps-'] }
      - run: cat deps/made-by.txt 2>/dev/null || echo 'no cache restored'
      - run: mkdir -p deps && printf 'run-%s\\n' "$CIRCLE_BUILD_NUM" > deps/made-by.txt
      - save_cache: { key: 'deps-{{ .BuildNum }}', paths: [deps] }
workflows:
  main:
    jobs: [build]
`;

describe.each(flowStore())('expired caches on %s', (store) => {
  let dataDir: string;
  let repo: string;
  let database: { url: string; drop(): Promise<void> } | undefined;
  let gyre: TestGyre | undefined;
  // The same data directory, database and admin token for each start: a restart of one Gyre.
  const token = `test-token-${randomBytes(12).toString('hex')}`;
  const start = async () => (gyre = await startTestGyre({ env: { GYRE_DATA_DIR: dataDir, GYRE_ADMIN_TOKEN: token, ...(database ? { DATABASE_URL: database.url } : {}) } }));

  beforeAll(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'gyre-cache-expiry-'));
    repo = makeGitRepo({ '.circleci/config.yml': CONFIG });
    if (store === 'postgres') database = await createTestDatabase();
  });

  afterAll(async () => {
    await gyre?.stop();
    await database?.drop();
    rmSync(dataDir, { recursive: true, force: true });
    rmSync(repo, { recursive: true, force: true });
  });

  // The helpers' own token is not the admin's here (the admin was made with the shared one).
  async function api(g: TestGyre, method: string, path: string, body?: unknown): Promise<any> {
    const r = await g.raw(method, path, { body: body === undefined ? undefined : JSON.stringify(body), headers: { 'Circle-Token': token } });
    if (r.status >= 400) throw new Error(`${method} ${path} → ${r.status}: ${r.text}`);
    return r.body;
  }

  async function run(g: TestGyre): Promise<{ number: number; restored: string }> {
    const { id } = await api(g, 'POST', '/api/v2/project/gh/acme/cached/pipeline', {});
    const deadline = Date.now() + 30_000;
    let job: any;
    for (;;) {
      const [workflow] = (await api(g, 'GET', `/api/v2/pipeline/${id}/workflow`)).items;
      if (workflow && !['running', 'on_hold', 'failing'].includes(workflow.status)) {
        [job] = (await api(g, 'GET', `/api/v2/workflow/${workflow.id}/job`)).items;
        break;
      }
      if (Date.now() > deadline) throw new Error(`pipeline ${id} did not finish`);
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(job.status).toBe('success');
    const number = job.job_number;
    const steps = (await api(g, 'GET', `/api/v2/project/gh/acme/cached/job/${number}/steps`)).items;
    const catStep = steps.find((s: any) => /^cat deps/.test(s.name));
    const output = await g.raw('GET', `/api/v2/project/gh/acme/cached/job/${number}/output?step=${catStep.index}`, { headers: { 'Circle-Token': token } });
    return { number, restored: output.text.trim() };
  }

  const caches = (g: TestGyre) => g.gyre.store.query<{ key: string; blob_key: string }>('SELECT key, blob_key FROM (SELECT id, key, blob_key, created_at FROM caches UNION ALL SELECT id, key, blob_key, created_at FROM protected_caches) c ORDER BY created_at');
  const blobPath = (key: string) => join(dataDir, 'blobs', key);

  test('an expired cache is not restored, and the sweep deletes its row and its blob', async () => {
    const first = await start();
    await api(first, 'POST', '/api/v2/projects', { org: 'acme', name: 'cached', repo_url: repo });

    const one = await run(first);
    expect(one.restored).toBe('no cache restored');
    const [old] = await caches(first);
    expect(old.key).toBe(`deps-${one.number}`);
    expect(existsSync(blobPath(old.blob_key))).toBe(true);

    // Past the 15-day expiry.
    for (const table of CACHE_TABLES) await first.gyre.store.query(`UPDATE ${table} SET created_at = now() - interval '16 days' WHERE key = $1`, [old.key]);
    const two = await run(first);
    expect(two.restored).toBe('no cache restored');
    const live = (await caches(first)).find((c) => c.key === `deps-${two.number}`)!;
    expect(live).toBeDefined();

    // A restart sweeps at once (then every few minutes).
    await first.stop();
    gyre = undefined;
    const second = await start();
    expect((await caches(second)).map((c) => c.key)).toEqual([live.key]);
    expect(existsSync(blobPath(old.blob_key))).toBe(false);
    expect(existsSync(blobPath(live.blob_key))).toBe(true);

    // The cache that has not expired still restores.
    const three = await run(second);
    expect(three.restored).toBe(`run-${two.number}`);
  }, 120_000);

  test('saving over an expired key replaces the cache and deletes the old archive', async () => {
    const g = gyre ?? (await start());
    const fixedRepo = makeGitRepo({ '.circleci/config.yml': CONFIG.replace("'deps-{{ .BuildNum }}'", "'fixed-key'").replace("['deps-']", "['fixed-']") });
    try {
      await api(g, 'POST', '/api/v2/projects', { org: 'acme', name: 'fixed', repo_url: fixedRepo });
      const runFixed = async () => {
        const { id } = await api(g, 'POST', '/api/v2/project/gh/acme/fixed/pipeline', {});
        for (let i = 0; i < 300; i++) {
          const [workflow] = (await api(g, 'GET', `/api/v2/pipeline/${id}/workflow`)).items;
          if (workflow?.status === 'success') return;
          if (workflow && ['failed', 'canceled'].includes(workflow.status)) throw new Error(`workflow ${workflow.status}`);
          await new Promise((r) => setTimeout(r, 100));
        }
        throw new Error('pipeline did not finish');
      };
      const fixed = async () => (await caches(g)).filter((c) => c.key === 'fixed-key');
      await runFixed();
      const [old] = await fixed();
      expect(existsSync(blobPath(old.blob_key))).toBe(true);
      for (const table of CACHE_TABLES) await g.gyre.store.query(`UPDATE ${table} SET created_at = now() - interval '16 days' WHERE key = 'fixed-key'`);
      await runFixed();
      const now = await fixed();
      expect(now).toHaveLength(1);
      expect(now[0].blob_key).not.toBe(old.blob_key);
      expect(existsSync(blobPath(now[0].blob_key))).toBe(true);
      expect(existsSync(blobPath(old.blob_key))).toBe(false);
    } finally {
      rmSync(fixedRepo, { recursive: true, force: true });
    }
  }, 120_000);

  test('a restart forgets the request keys of writes stored more than a day ago, and keeps recent ones', async () => {
    const first = gyre ?? (await start());
    const [job] = await first.gyre.store.query<{ id: string }>('SELECT id FROM jobs LIMIT 1');
    await first.gyre.store.query(
      `INSERT INTO output_requests (job_id, request_key, answer, created_at) VALUES ($1, 'old-key', 'saved', now() - interval '2 days'), ($1, 'recent-key', 'saved', now() - interval '1 hour')`,
      [job.id],
    );
    await first.stop();
    gyre = undefined;
    const second = await start();
    const keys = await second.gyre.store.query<{ request_key: string }>('SELECT request_key FROM output_requests WHERE job_id = $1 ORDER BY request_key', [job.id]);
    expect(keys.map((k) => k.request_key)).toEqual(['recent-key']);
  }, 60_000);
});
