import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createTestDatabase } from '../support/database';
import { createPostgresStore } from '../../runtime/store/postgres-store';
import type { Store } from '../../runtime/store/store';

/**
 * The PostgreSQL store's connections as a user would notice them: a burst of pipelines after a
 * pause of some seconds runs on the connections of the burst before (a connection opened anew
 * costs PostgreSQL a new backend, its caches and its plans: two thirds more of the database’s CPU a
 * pipeline over the next hundred), and a command that ends without closing its store still ends.
 */
const withPostgres = process.env.DATABASE_URL ? describe : describe.skip;
if (!process.env.DATABASE_URL) console.warn('pool-connections.test.ts: DATABASE_URL is not set; these cases are skipped');

const ROOT = resolve(__dirname, '../..');

withPostgres('the PostgreSQL store’s connections', () => {
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  let store: Store | undefined;
  beforeEach(async () => {
    db = await createTestDatabase();
  });
  afterEach(async () => {
    await store?.close();
    store = undefined;
    await db.drop();
  });

  /** The backends four concurrent transactions ran on (each holds its connection for a moment). */
  const burst = async (s: Store) =>
    new Set(
      await Promise.all(
        Array.from({ length: 4 }, () =>
          s.transaction(async (tx) => {
            const [row] = await tx.query<{ pid: number }>('SELECT pg_backend_pid() AS pid, pg_sleep(0.1)');
            return row.pid;
          }),
        ),
      ),
    );

  it("keeps a burst's connections for the next burst after a pause longer than node-postgres' 10 s", async () => {
    store = await createPostgresStore({ connectionString: db.url });
    const first = await burst(store);
    expect(first.size).toBe(4);
    await new Promise((r) => setTimeout(r, 11_000));
    const second = await burst(store);
    expect([...second].sort()).toEqual([...first].sort());
  }, 30_000);

  it('closes a connection left unused for longer than it is told to keep one', async () => {
    store = await createPostgresStore({ connectionString: db.url, idleConnectionMs: 200 });
    const first = await burst(store);
    await new Promise((r) => setTimeout(r, 1_000));
    const second = await burst(store);
    expect([...second].filter((pid) => first.has(pid))).toEqual([]);
  });

  it('does not keep a command running once its queries are done, when it ends without closing the store', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gyre-pool-exit-'));
    try {
      const script = join(dir, 'leaves-store-open.ts');
      writeFileSync(
        script,
        `import { createPostgresStore } from ${JSON.stringify(join(ROOT, 'runtime/store/postgres-store'))};
(async () => {
  const store = await createPostgresStore({ connectionString: process.env.STORE_URL! });
  await Promise.all([1, 2, 3].map((n) => store.query('SELECT $1::int AS n', [n])));
  console.log('queried');
})();
`,
      );
      const child = spawn(process.execPath, [join(ROOT, 'bin/run-ts.js'), script], { env: { ...process.env, STORE_URL: db.url }, stdio: ['ignore', 'pipe', 'pipe'] });
      let output = '';
      child.stdout.on('data', (d) => (output += d));
      child.stderr.on('data', (d) => (output += d));
      const started = Date.now();
      const code = await new Promise<number | null>((resolveExit) => {
        const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
        child.on('exit', (c) => (clearTimeout(timer), resolveExit(c)));
      });
      expect(output).toContain('queried');
      expect(code).toBe(0);
      // node-postgres alone would hold the process until its idle connections closed.
      expect(Date.now() - started).toBeLessThan(9_000);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 30_000);
});
