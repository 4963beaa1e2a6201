import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { GyreError } from '../domain/errors';
import type { Queryable, Store } from './store';

export const MIGRATIONS_DIR = join(__dirname, 'migrations');

/** A migration file's name: a number, an underscore, a name, `.sql`. */
const MIGRATION_FILE = /^\d+_[\w-]+\.sql$/;

/** Any value, as long as every Gyre release uses the same one: it serializes `migrate` across processes. */
const MIGRATION_LOCK = 724242;

/** The migrations this build knows, in the order they apply. */
export function knownMigrations(): string[] {
  return readdirSync(MIGRATIONS_DIR)
    .filter((name) => MIGRATION_FILE.test(name))
    .sort();
}

/**
 * Applies every `migrations/NNN_name.sql` not yet recorded in `gyre_migrations`, in file-name
 * order, in one transaction. An advisory lock keeps two processes that migrate at once (two
 * migration Jobs, or servers starting together) from applying the same migration twice: the second
 * waits for the first and then finds nothing left to do. Answers the names it applied.
 */
export async function migrate(store: Store): Promise<string[]> {
  const files = knownMigrations();
  return store.transaction(async (tx) => {
    await tx.query(`SELECT pg_advisory_xact_lock(${MIGRATION_LOCK})`);
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

export interface SchemaStatus {
  /** Migrations this build knows that the database has not had. */
  readonly pending: string[];
  /** Migrations the database has had that this build does not know (a newer release applied them). */
  readonly newer: string[];
  /** How many migrations the database records. */
  readonly applied: number;
}

/** Compares the database's migrations with this build's, changing nothing. */
export async function schemaStatus(db: Queryable): Promise<SchemaStatus> {
  const known = knownMigrations();
  const [{ exists }] = await db.query<{ exists: boolean }>(`SELECT to_regclass('gyre_migrations') IS NOT NULL AS exists`);
  const applied = exists ? (await db.query<{ name: string }>('SELECT name FROM gyre_migrations')).map((r) => r.name) : [];
  const have = new Set(applied);
  const knownSet = new Set(known);
  return { pending: known.filter((m) => !have.has(m)), newer: applied.filter((m) => !knownSet.has(m)).sort(), applied: applied.length };
}

/** The database lacks migrations this build needs, and this process was told not to apply them. */
export class SchemaBehindError extends GyreError {
  constructor(readonly pending: readonly string[]) {
    super(
      `the database schema lacks ${pending.length} migration${pending.length === 1 ? '' : 's'} this release needs (${describe(pending)}); ` +
        'run `gyre migrate` first (in a cluster: the release\'s gyre-migrate Job), or start with GYRE_MIGRATE=true to apply them at start',
    );
    this.name = 'SchemaBehindError';
  }
}

/** A list of migration names, cut after a few. */
export function describe(names: readonly string[]): string {
  return names.length <= 5 ? names.join(', ') : `${names.slice(0, 5).join(', ')} and ${names.length - 5} more`;
}

/** Splits a migration on `;` at line ends; migrations keep `$$` bodies free of such lines. */
export function splitStatements(sql: string): string[] {
  return sql
    .split(/;\s*$/m)
    .map((s) => s.replace(/^\s*--.*$/gm, '').trim())
    .filter((s) => s.length > 0);
}
