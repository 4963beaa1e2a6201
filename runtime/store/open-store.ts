import { mkdirSync } from 'node:fs';
import { tightenTree } from '../data-dir';
import { join } from 'node:path';
import { migrate } from './migrate';
import { createPgliteStore } from './pglite-store';
import { createPostgresStore } from './postgres-store';
import type { Store } from './store';

export interface OpenStoreOptions {
  /** Use this PostgreSQL server; otherwise the embedded one. */
  readonly databaseUrl?: string;
  /** Where the embedded database lives; undefined means in memory. */
  readonly dataDir?: string;
}

/** Opens the configured store and brings its schema up to date. */
export async function openStore(options: OpenStoreOptions): Promise<Store> {
  let store: Store;
  let dir: string | undefined;
  if (options.databaseUrl) {
    store = await createPostgresStore({ connectionString: options.databaseUrl });
  } else {
    if (options.dataDir) {
      dir = join(options.dataDir, 'pgdata');
      mkdirSync(dir, { recursive: true, mode: 0o700 });
    }
    store = await createPgliteStore(dir);
  }
  await migrate(store);
  // PGlite writes the files it starts a database with 0666 whatever the umask: only Gyre's user
  // may read them (the task-token signing key is in there). Later files follow the umask.
  if (dir) await tightenTree(dir);
  return store;
}
