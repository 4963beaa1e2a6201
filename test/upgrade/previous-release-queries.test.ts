import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Store } from '../../runtime/store/store';
import { openTestStore, testStores } from '../support/database';
import { KNOWN_BREAKS } from '../support/migration-lint';

interface Captured {
  readonly release: string;
  readonly commit: string;
  readonly migrations: string[];
  readonly queries: { file: string; line: number; sql: string }[];
}
const previous = JSON.parse(readFileSync(join(__dirname, '../fixtures/previous-release/queries.json'), 'utf8')) as Captured;

/**
 * Whether one of the previous release's statements still works on this schema, without running it:
 * PostgreSQL parses, analyses and plans it as a prepared statement (the way `pg` sends it, with
 * parameters whose types it infers), which finds missing tables, columns and functions, type
 * changes, and ON CONFLICT targets with no unique constraint. An INSERT must also name every column
 * that is NOT NULL without a default, or its rows would be refused when it runs.
 */
async function problemOf(store: Store, sql: string): Promise<string | undefined> {
  return store.transaction(async (tx) => {
    await tx.query('SET LOCAL plan_cache_mode = force_generic_plan');
    // Prepared statements outlive a rolled-back transaction: a savepoint keeps the connection usable
    // after a failure, and the statement is deallocated whatever happened.
    await tx.query('SAVEPOINT probe');
    let problem: string | undefined;
    try {
      await tx.query(`PREPARE previous_release AS ${sql}`);
      const [{ count }] = await tx.query<{ count: number }>(`SELECT cardinality(parameter_types) AS count FROM pg_prepared_statements WHERE name = 'previous_release'`);
      await tx.query(`EXPLAIN EXECUTE previous_release${count > 0 ? `(${Array(count).fill('NULL').join(', ')})` : ''}`);
    } catch (error) {
      problem = (error as Error).message;
      await tx.query('ROLLBACK TO SAVEPOINT probe');
    }
    if ((await tx.query(`SELECT 1 FROM pg_prepared_statements WHERE name = 'previous_release'`)).length > 0) await tx.query('DEALLOCATE previous_release');
    if (problem) return problem;
    const insert = /^INSERT INTO (\w+)\s*\(([^)]*)\)/i.exec(sql);
    if (insert) {
      const named = new Set(insert[2].split(',').map((c) => c.trim()));
      const required = await tx.query<{ column_name: string }>(
        `SELECT column_name FROM information_schema.columns
          WHERE table_schema = current_schema() AND table_name = $1 AND is_nullable = 'NO'
            AND column_default IS NULL AND is_identity = 'NO' AND is_generated = 'NEVER'`,
        [insert[1]],
      );
      const missing = required.map((r) => r.column_name).filter((c) => !named.has(c));
      if (missing.length > 0) return `leaves out ${missing.join(', ')}, NOT NULL without a default`;
    }
    return undefined;
  });
}

const isKnownBreak = (sql: string) => KNOWN_BREAKS.some((b) => b.queries.some((q) => sql.includes(q)));

/** The previous release's SQL (test/fixtures/previous-release, captured by capture.ts) on a database migrated to this build. */
describe.each(testStores())(`the previous release's queries on this schema (%s)`, (kind) => {
  let store: Store;
  let drop: (() => Promise<void>) | undefined;
  beforeAll(async () => {
    ({ store, drop } = await openTestStore(kind));
  });
  afterAll(async () => {
    await store?.close();
    await drop?.();
  });

  it(`all of ${previous.release}'s queries still work`, async () => {
    expect(previous.queries.length).toBeGreaterThan(100);
    const broken: string[] = [];
    for (const q of previous.queries) {
      if (isKnownBreak(q.sql)) continue;
      const problem = await problemOf(store, q.sql);
      if (problem) broken.push(`${q.file}:${q.line}: ${problem}\n  ${q.sql.slice(0, 300)}`);
    }
    expect(broken).toEqual([]);
  });

  it('the known breaks still break (or come off the list in test/support/migration-lint.ts)', async () => {
    for (const { queries } of KNOWN_BREAKS) {
      for (const text of queries) {
        const captured = previous.queries.filter((q) => q.sql.includes(text));
        expect(captured).not.toHaveLength(0);
        for (const q of captured) expect(await problemOf(store, q.sql)).toMatch(/ON CONFLICT|constraint/);
      }
    }
  });

  it('finds a query the schema no longer serves: a dropped column, a new NOT NULL column', async () => {
    await store.query('CREATE TABLE lint_probe (id int PRIMARY KEY, old_name text)');
    await store.query('INSERT INTO lint_probe (id, old_name) VALUES (1, $1)', ['x']);
    const select = 'SELECT old_name FROM lint_probe WHERE id = $1';
    const insert = 'INSERT INTO lint_probe (id, old_name) VALUES ($1, $2)';
    expect(await problemOf(store, select)).toBeUndefined();
    expect(await problemOf(store, insert)).toBeUndefined();
    await store.query('ALTER TABLE lint_probe RENAME COLUMN old_name TO new_name');
    expect(await problemOf(store, select)).toMatch(/old_name/);
    await store.query('ALTER TABLE lint_probe RENAME COLUMN new_name TO old_name');
    await store.query(`ALTER TABLE lint_probe ADD COLUMN owner text NOT NULL DEFAULT 'x'`);
    await store.query('ALTER TABLE lint_probe ALTER COLUMN owner DROP DEFAULT');
    expect(await problemOf(store, insert)).toMatch(/leaves out owner/);
    await store.query('DROP TABLE lint_probe');
  });
});
