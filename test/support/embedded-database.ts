import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { knownMigrations, MIGRATIONS_DIR } from '../../runtime/store/migrate';
import { prepareNewDatabase } from '../../runtime/store/new-database';

/**
 * A migrated embedded database for `gyre server` processes that tests start on a fresh data
 * directory, when the test is not about a first start: made once per machine and schema (by the
 * code a first start runs, runtime/store/new-database.ts) and copied into the data directory's
 * `pgdata`, so the server opens it as on a restart. A first start costs 6–10 s of CPU here (initdb
 * and every migration in PGlite), a copy a few milliseconds. test/e2e/quick-start.test.ts and
 * test/store/new-database.test.ts still make their databases the way a user's first start does.
 */
export async function seedEmbeddedDatabase(dataDir: string): Promise<void> {
  const target = join(dataDir, 'pgdata');
  if (existsSync(join(target, 'PG_VERSION'))) return;
  const template = await migratedTemplate();
  mkdirSync(dataDir, { recursive: true });
  cpSync(template, target, { recursive: true, preserveTimestamps: true });
}

let made: Promise<string> | undefined;

/** The migrated template's directory, made once per machine and schema (test/global-setup.js makes it before the workers start). */
export function migratedTemplate(): Promise<string> {
  made ??= (async () => {
    const hash = createHash('sha256');
    hash.update(readFileSync(join(__dirname, '../../node_modules/@electric-sql/pglite/package.json')));
    for (const name of knownMigrations()) hash.update(name).update(readFileSync(join(MIGRATIONS_DIR, name)));
    const dir = join(tmpdir(), `gyre-test-pgdata-${hash.digest('hex').slice(0, 16)}`);
    if (existsSync(join(dir, 'PG_VERSION'))) return dir;
    // Made beside it and renamed into place: another test file may be making the same one.
    const building = mkdtempSync(join(tmpdir(), 'gyre-test-pgdata-building-'));
    try {
      await prepareNewDatabase(building, { migrate: true });
      try {
        renameSync(building, dir);
      } catch (error) {
        if (!existsSync(join(dir, 'PG_VERSION'))) throw error;
      }
    } finally {
      rmSync(building, { recursive: true, force: true });
    }
    return dir;
  })();
  return made;
}
