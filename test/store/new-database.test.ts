import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { prepareNewDatabase } from '../../runtime/store/new-database';
import { apiCall, startServerProcess, until } from '../support/processes';

// A first start (a new data directory: PGlite's initdb and every migration) makes and migrates the
// embedded database in a child process, so the server holds no more memory than after a restart.

const TOKEN = 'new-database-token-0123456789';

function rssMiB(pid: number): number {
  return Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;
}

/** Paths under `dir` that anyone but their owner may read, write or enter. */
function openToOthers(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: 'utf8' }).filter((p) => (statSync(join(dir, p)).mode & 0o077) !== 0);
}

describe('a first start of the embedded server', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  it('comes up on a new data directory with its database migrated, the example pipeline started, and a bounded RSS', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'gyre-first-start-'));
    dirs.push(dataDir);
    const server = await startServerProcess({ GYRE_DATA_DIR: dataDir, DATABASE_URL: '', GYRE_ADMIN_TOKEN: TOKEN, GYRE_EXAMPLE: 'true' });
    try {
      // Read at once. A restart holds about 250 MiB; a first start that made the database itself
      // held 730 MiB, or 360–400 MiB when a full garbage collection happened to run during a slow
      // start (what the C heap keeps is not given back). Measured on a loaded 2-core machine:
      // 237–268 MiB now, hence the margin.
      expect(rssMiB(server.child.pid!)).toBeLessThan(330);
      // The schema is there: the example project was stored and its pipeline compiled into a
      // workflow (test/e2e/quick-start.test.ts runs it to success).
      const api = (method: string, path: string) => apiCall(server.url, TOKEN, method, path);
      const workflow = await until('the example pipeline to have its workflow', async () => {
        const [pipeline] = (await api('GET', '/api/v2/project/gh/gyre/example/pipeline')).items;
        return pipeline && (await api('GET', `/api/v2/pipeline/${pipeline.id}/workflow`)).items[0];
      });
      expect(workflow.name).toBe('build-test-deploy');
      // The database the child process made is the server's user's alone, as one made in-process was.
      expect(openToOthers(join(dataDir, 'pgdata'))).toEqual([]);
    } finally {
      server.child.kill('SIGTERM');
      await new Promise((r) => server.child.once('exit', r));
    }
  }, 120_000);

  it('says why when the database cannot be made', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gyre-first-start-'));
    dirs.push(dir);
    writeFileSync(join(dir, 'pgdata'), 'not a directory');
    await expect(prepareNewDatabase(join(dir, 'pgdata'), { migrate: true })).rejects.toThrow(/could not make the embedded database in .*pgdata: the file system refused \(ENOTDIR\)/);
  }, 30_000);
});
