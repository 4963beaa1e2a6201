import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Store } from './store';

const MIGRATIONS_DIR = join(__dirname, 'migrations');

/**
 * Applies every `migrations/NNN_name.sql` not yet recorded in `gyre_migrations`, in file-name
 * order, each in its own transaction. An advisory lock keeps two processes starting together from
 * applying the same migration twice.
 */
export async function migrate(store: Store): Promise<string[]> {
  const files = readdirSync(MIGRATIONS_DIR)
    .filter((name) => /^\d+_[\w-]+\.sql$/.test(name))
    .sort();
  return store.transaction(async (tx) => {
    await tx.query('SELECT pg_advisory_xact_lock(724242)');
    await tx.query(
      'CREATE TABLE IF NOT EXISTS gyre_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())',
    );
    const applied = new Set((await tx.query<{ name: string }>('SELECT name FROM gyre_migrations')).map((r) => r.name));
    const done: string[] = [];
    for (const file of files) {
      if (applied.has(file)) continue;
      const sql = readFileSync(join(MIGRATIONS_DIR, file), 'utf8');
      for (const statement of splitStatements(sql)) await tx.query(statement);
      await tx.query('INSERT INTO gyre_migrations (name) VALUES ($1)', [file]);
      done.push(file);
    }
    return done;
  });
}

/** Splits a migration on `;` at line ends; migrations keep `$$` bodies free of such lines. */
function splitStatements(sql: string): string[] {
  return sql
    .split(/;\s*$/m)
    .map((s) => s.replace(/^\s*--.*$/gm, '').trim())
    .filter((s) => s.length > 0);
}
