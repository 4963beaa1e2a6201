import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, type CliIo } from '../../runtime/cli/main';
import { migrateCommand } from '../../runtime/cli/migrate-command';
import { createLogger } from '../../runtime/logger';
import { startGyre } from '../../runtime/server/gyre';
import { readSettings } from '../../runtime/settings';
import { knownMigrations, schemaStatus, SchemaBehindError } from '../../runtime/store/migrate';
import { openStore } from '../../runtime/store/open-store';
import { createPostgresStore } from '../../runtime/store/postgres-store';
import { createTestDatabase } from '../support/database';

function capture(env: Record<string, string | undefined>) {
  let stdout = '';
  let stderr = '';
  const io: CliIo = { stdout: (t) => (stdout += t), stderr: (t) => (stderr += t), env };
  return { io, out: () => stdout, err: () => stderr };
}

/** Tables in the public schema of a database. */
async function tables(url: string): Promise<string[]> {
  const store = await createPostgresStore({ connectionString: url });
  try {
    return (await store.query<{ tablename: string }>(`SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1`)).map((r) => r.tablename);
  } finally {
    await store.close();
  }
}

describe('gyre migrate on the embedded database', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'gyre-migrate-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('applies every migration once, printing each, and then finds the schema up to date', async () => {
    const first = capture({ GYRE_DATA_DIR: dir });
    expect(await run(['migrate'], first.io)).toBe(0);
    expect(first.out().split('\n').filter((l) => l.startsWith('applied ') && l.endsWith('.sql'))).toEqual(knownMigrations().map((m) => `applied ${m}`));

    const again = capture({ GYRE_DATA_DIR: dir });
    expect(await run(['migrate'], again.io)).toBe(0);
    expect(again.out()).toMatch(/^the schema is up to date: all \d+ migrations of this release were applied before\n$/);
  }, 180_000); // a new embedded database: initdb and every migration (46 s for the file under load)

  it('refuses --wait without DATABASE_URL and bad flags, changing nothing', async () => {
    const wait = capture({ GYRE_DATA_DIR: dir });
    expect(await run(['migrate', '--wait'], wait.io)).toBe(2);
    expect(wait.err()).toMatch(/needs DATABASE_URL/);
    const bad = capture({ GYRE_DATA_DIR: dir });
    expect(await run(['migrate', '--wait', '--timeout', 'soon'], bad.io)).toBe(2);
    expect(bad.err()).toMatch(/--timeout 'soon' must be a whole number of seconds/);
    expect(readdirSync(dir)).toEqual([]);
  });
});

describe('GYRE_MIGRATE', () => {
  it('is true unless set false, and names the setting when it is neither', () => {
    expect(readSettings({}).migrate).toBe(true);
    expect(readSettings({ GYRE_MIGRATE: 'false' }).migrate).toBe(false);
    expect(() => readSettings({ GYRE_MIGRATE: 'later' })).toThrow(/GYRE_MIGRATE.*true or false/);
  });

  it('false: a store behind this build is refused with what is missing and what to run; an up-to-date one opens', async () => {
    const err = await openStore({ migrations: 'check' }).catch((e) => e);
    expect(err).toBeInstanceOf(SchemaBehindError);
    expect(err.message).toMatch(/lacks \d+ migrations this release needs \(001_core\.sql, .* and \d+ more\); run `gyre migrate` first .*GYRE_MIGRATE=true/);

    const dir = mkdtempSync(join(tmpdir(), 'gyre-migrate-'));
    try {
      // WHEN a server starts with GYRE_MIGRATE=false on a data directory nothing migrated
      const settings = readSettings({ GYRE_DATA_DIR: dir, GYRE_MIGRATE: 'false', GYRE_PORT: '0', GYRE_OPS_PORT: '0', GYRE_EXAMPLE: 'false', GYRE_RUNNER_SLOTS: '0' });
      await expect(startGyre(settings, createLogger({ level: 'silent' }))).rejects.toThrow(/lacks \d+ migrations this release needs/);
      // THEN after `gyre migrate` it starts
      expect(await run(['migrate'], capture({ GYRE_DATA_DIR: dir }).io)).toBe(0);
      const gyre = await startGyre(settings, createLogger({ level: 'silent' }));
      await gyre.stop();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 180_000);

  it('false: names exactly the migration a database lacks', async () => {
    const store = await openStore({});
    const last = knownMigrations().at(-1)!;
    await store.query('DELETE FROM gyre_migrations WHERE name = $1', [last]);
    expect((await schemaStatus(store)).pending).toEqual([last]);
    await store.close();
  });
});

const withPostgres = process.env.DATABASE_URL ? describe : describe.skip;

withPostgres('gyre migrate on PostgreSQL', () => {
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  beforeEach(async () => {
    db = await createTestDatabase();
  });
  afterEach(() => db.drop());

  it('two at once apply each migration exactly once and both exit 0', async () => {
    const a = capture({ DATABASE_URL: db.url });
    const b = capture({ DATABASE_URL: db.url });
    const [codeA, codeB] = await Promise.all([run(['migrate'], a.io), run(['migrate'], b.io)]);
    expect([codeA, codeB]).toEqual([0, 0]);
    const applied = (out: string) => out.split('\n').filter((l) => /^applied \d+_.*\.sql$/.test(l));
    expect([...applied(a.out()), ...applied(b.out())].sort()).toEqual(knownMigrations().map((m) => `applied ${m}`).sort());
    const store = await openStore({ databaseUrl: db.url, migrations: 'none' });
    expect((await schemaStatus(store)).pending).toEqual([]);
    await store.close();
  });

  it('--wait changes nothing, says what it waits for, gives up after --timeout, and exits 0 once another process migrated', async () => {
    let clock = 0;
    const fast = { now: () => clock, sleep: async (ms: number) => void (clock += ms) };
    const timedOut = capture({ DATABASE_URL: db.url });
    expect(await migrateCommand(['--wait', '--timeout', '10', '--interval', '2'], timedOut.io, fast)).toBe(1);
    expect(timedOut.err()).toMatch(/^\[0s\] waiting for \d+ of \d+ migrations: 001_core\.sql, /);
    expect(timedOut.err()).toMatch(/gave up after 10 s; waiting for \d+ of \d+ migrations.*Is the release's migration Job running\?/);
    expect(await tables(db.url)).toEqual([]);

    // WHEN a migration runs while another process waits (real time, short interval)
    const waiting = capture({ DATABASE_URL: db.url });
    const waited = migrateCommand(['--wait', '--timeout', '60', '--interval', '1'], waiting.io);
    await new Promise((r) => setTimeout(r, 300));
    expect(await run(['migrate'], capture({ DATABASE_URL: db.url }).io)).toBe(0);
    // THEN the wait ends with success
    expect(await waited).toBe(0);
    expect(waiting.out()).toMatch(/^the schema has all \d+ migrations of this release\n$/);
  });

  it('--wait waits for a database that does not answer yet, and says so', async () => {
    let clock = 0;
    const fast = { now: () => clock, sleep: async (ms: number) => void (clock += ms) };
    const out = capture({ DATABASE_URL: 'postgres://gyre@127.0.0.1:1/gyre' });
    expect(await migrateCommand(['--wait', '--timeout', '4'], out.io, fast)).toBe(1);
    expect(out.err()).toMatch(/waiting for the database: .*ECONNREFUSED/);
  });
});
