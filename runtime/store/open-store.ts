import { mkdirSync } from 'node:fs';
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
  if (options.databaseUrl) {
    store = await createPostgresStore({ connectionString: options.databaseUrl });
  } else {
    let dir: string | undefined;
    if (options.dataDir) {
      dir = join(options.dataDir, 'pgdata');
      mkdirSync(dir, { recursive: true });
    }
    store = await createPgliteStore(dir);
  }
  await migrate(store);
  return store;
}
