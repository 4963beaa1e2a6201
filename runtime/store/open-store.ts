import { mkdirSync } from 'node:fs';
import { tightenTree } from '../data-dir';
import { join } from 'node:path';
import { migrate, schemaStatus, SchemaBehindError } from './migrate';
import { prepareNewDatabase } from './new-database';
import { createPgliteStore, wouldRunInitdb } from './pglite-store';
import { createPostgresStore } from './postgres-store';
import type { Store } from './store';

export interface OpenStoreOptions {
  /** Use this PostgreSQL server; otherwise the embedded one. */
  readonly databaseUrl?: string;
  /** Where the embedded database lives; undefined means in memory. */
  readonly dataDir?: string;
  /**
   * `apply`: bring the schema up to date (GYRE_MIGRATE=true, and the embedded default); `check`:
   * apply nothing and refuse (SchemaBehindError) a schema that lacks a migration this build knows
   * (GYRE_MIGRATE=false, where a migration Job applies them); `none`: neither (`gyre migrate`).
   * @default 'apply'
   */
  readonly migrations?: 'apply' | 'check' | 'none';
  /** Where the store says what an operator should know (PostgreSQL: statements no longer prepared, and why). */
  readonly warn?: (message: string) => void;
}

/** Opens the configured store and brings its schema up to date (or checks it is, or neither). */
export async function openStore(options: OpenStoreOptions): Promise<Store> {
  let store: Store;
  let dir: string | undefined;
  const mode = options.migrations ?? 'apply';
  if (options.databaseUrl) {
    store = await createPostgresStore({ connectionString: options.databaseUrl, onUnprepared: options.warn });
  } else {
    if (options.dataDir) {
      dir = join(options.dataDir, 'pgdata');
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      // A first start: made (and migrated) in a process that gives its memory back when it ends.
      if (wouldRunInitdb(dir)) await prepareNewDatabase(dir, { migrate: mode === 'apply' });
    }
    store = await createPgliteStore(dir);
  }
  try {
    if (mode === 'apply') await migrate(store);
    if (mode === 'check') {
      const { pending } = await schemaStatus(store);
      if (pending.length > 0) throw new SchemaBehindError(pending);
    }
  } catch (error) {
    await store.close().catch(() => undefined);
    throw error;
  }
  // PGlite writes the files it starts a database with 0666 whatever the umask: only Gyre's user
  // may read them (the task-token signing key is in there). Later files follow the umask.
  if (dir) await tightenTree(dir);
  return store;
}
