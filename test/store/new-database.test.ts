import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { prepareNewDatabase } from '../../runtime/store/new-database';

// A first start (a new data directory: PGlite's initdb and every migration) makes and migrates the
// embedded database in a child process, so the server holds no more memory than after a restart;
// test/e2e/quick-start.test.ts starts one and bounds its RSS. Here: a failure says why.

describe('a first start of the embedded server', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  it('says why when the database cannot be made', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gyre-first-start-'));
    dirs.push(dir);
    writeFileSync(join(dir, 'pgdata'), 'not a directory');
    await expect(prepareNewDatabase(join(dir, 'pgdata'), { migrate: true })).rejects.toThrow(/could not make the embedded database in .*pgdata: the file system refused \(ENOTDIR\)/);
  }, 120_000);
});
