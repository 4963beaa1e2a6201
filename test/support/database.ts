import { createHash, randomBytes } from 'node:crypto';
import { Client } from 'pg';
import { openStore } from '../../runtime/store/open-store';
import type { Store } from '../../runtime/store/store';

export type StoreKind = 'pglite' | 'postgres';

/** The stores end-to-end tests run against: PGlite always, PostgreSQL when DATABASE_URL is set. */
export function testStores(): StoreKind[] {
  return process.env.DATABASE_URL ? ['pglite', 'postgres'] : ['pglite'];
}

/**
 * One store, for an end-to-end flow whose queries other files already run on both stores (the
 * store-level files keep `testStores`). With DATABASE_URL, half of these files run on PostgreSQL
 * and half on the embedded PGlite, fixed per file by its path, so both stores still carry flows
 * while CI runs each flow once; without it, PGlite. The describe title names the store.
 */
export function flowStore(): StoreKind[] {
  if (!process.env.DATABASE_URL) return ['pglite'];
  const path = (expect.getState().testPath ?? '').replace(/\\/g, '/');
  const file = path.slice(path.lastIndexOf('/test/') + 1);
  return [createHash('sha256').update(file).digest()[0] % 2 === 0 ? 'postgres' : 'pglite'];
}

/** Makes a fresh, empty database on the PostgreSQL server DATABASE_URL names; drop() removes it. */
export async function createTestDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  const base = process.env.DATABASE_URL;
  if (!base) throw new Error('DATABASE_URL is not set: the PostgreSQL tests need a server');
  const name = `gyre_test_${randomBytes(6).toString('hex')}`;
  const admin = new Client({ connectionString: base });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const url = new URL(base);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    async drop() {
      const c = new Client({ connectionString: base });
      await c.connect();
      await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await c.end();
    },
  };
}


/**
 * A migrated store of `kind`: a fresh database on the PostgreSQL server DATABASE_URL names (its
 * `url`; `drop` removes it once the store is closed), or PGlite in memory (no `drop`).
 */
export async function openTestStore(kind: StoreKind): Promise<{ store: Store; url?: string; drop?: () => Promise<void> }> {
  if (kind === 'pglite') return { store: await openStore({}) };
  const db = await createTestDatabase();
  return { store: await openStore({ databaseUrl: db.url }), url: db.url, drop: db.drop };
}
