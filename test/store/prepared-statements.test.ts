import { createTestDatabase } from '../support/database';
import { createPgliteStore } from '../../runtime/store/pglite-store';
import { createPostgresStore } from '../../runtime/store/postgres-store';
import { MAX_PREPARED, statementNames } from '../../runtime/store/statement-names';
import type { Store } from '../../runtime/store/store';

/**
 * The PostgreSQL store keeps the statements it runs again prepared on each connection (parsed once,
 * and planned once where a generic plan is as cheap: docs/speed.md). What a user would notice is
 * what happens when that goes wrong: a migration of a newer release changing a table under a
 * running server's prepared statements (a rolling upgrade), or a pooler between Gyre and the
 * database that does not keep prepared statements. Neither may fail a query that can be run again.
 */
describe('which statements are kept prepared', () => {
  it('a statement with parameters from its second run; never one whose columns come from *', () => {
    const names = statementNames();
    const sql = 'SELECT id, name FROM projects WHERE id = $1';
    expect(names.nameOf(sql, [1])).toBeUndefined();
    const name = names.nameOf(sql, [2]);
    expect(name).toMatch(/^gyre_0_[0-9a-f]{24}$/);
    expect(names.nameOf(sql, [3])).toBe(name);
    expect(names.nameOf('SELECT 1', [])).toBeUndefined();
    for (const star of [
      'SELECT * FROM projects WHERE id = $1',
      'SELECT pr.* FROM projects pr WHERE id = $1',
      'UPDATE projects SET name = $2 WHERE id = $1 RETURNING *',
      'SELECT DISTINCT * FROM projects WHERE id = $1',
      'SELECT id, * FROM projects WHERE id = $1',
      `SELECT "pr".* FROM projects "pr" WHERE name = '*' AND id = $1`,
      'WITH x AS (SELECT 1) SELECT x.*, 2 * 3 FROM x WHERE $1::int > 0',
      "SELECT t.id -- the task's row\n, t.* FROM tasks t WHERE id = $1",
    ]) {
      names.nameOf(star, [1]);
      expect(names.nameOf(star, [1])).toBeUndefined();
    }
    // A * that names no columns: count(*), a product, a string (the dispatcher's claim), a comment.
    for (const counted of [
      'SELECT count(*) FROM projects WHERE org = $1',
      'SELECT extract(epoch FROM created_at) * 1000 AS ms FROM projects WHERE org = $1',
      `SELECT id FROM tasks WHERE '*' = ANY($1::text[])`,
      "SELECT id -- every class ('*') or one\n FROM tasks WHERE resource_class = ANY($1::text[])",
      "SELECT id FROM tasks -- a machine job's task\n WHERE '*' = ANY($1::text[]) AND note <> 'it''s *'",
    ]) {
      names.nameOf(counted, ['a']);
      expect(names.nameOf(counted, ['a'])).toBeDefined();
    }
  });

  it('no more than MAX_PREPARED texts, however many are built', () => {
    const names = statementNames();
    let named = 0;
    for (let i = 0; i < MAX_PREPARED * 3; i++) {
      const sql = `SELECT id FROM projects WHERE id = $1 AND ${i} = ${i}`;
      names.nameOf(sql, [1]);
      if (names.nameOf(sql, [1])) named++;
    }
    expect(named).toBe(MAX_PREPARED);
  });
});

const withPostgres = process.env.DATABASE_URL ? describe : describe.skip;
if (!process.env.DATABASE_URL) console.warn('prepared-statements.test.ts: DATABASE_URL is not set; the PostgreSQL cases are skipped');

withPostgres('prepared statements on PostgreSQL', () => {
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  let store: Store;
  const warnings: string[] = [];
  beforeEach(async () => {
    db = await createTestDatabase();
    warnings.length = 0;
    // One connection: what the statements left on it can be read back.
    store = await createPostgresStore({ connectionString: db.url, maxConnections: 1, onUnprepared: (why) => warnings.push(why) });
    await store.query('CREATE TABLE items (id integer PRIMARY KEY, size integer NOT NULL)');
    await store.query('INSERT INTO items VALUES (1, 10), (2, 20)');
  });
  afterEach(async () => {
    await store.close();
    await db.drop();
  });

  const prepared = () => store.query<{ statement: string }>('SELECT statement FROM pg_prepared_statements');

  it('keeps a statement run twice prepared, and answers it as before', async () => {
    const sql = 'SELECT size FROM items WHERE id = $1';
    expect(await store.query(sql, [1])).toEqual([{ size: 10 }]);
    expect(await store.query(sql, [2])).toEqual([{ size: 20 }]);
    expect(await store.transaction((tx) => tx.query(sql, [1]))).toEqual([{ size: 10 }]);
    expect((await prepared()).map((p) => p.statement)).toEqual([sql]);
  });

  it('a column type changed under a prepared statement (a newer release migrating): the query is answered, and later ones too', async () => {
    const sql = 'SELECT size FROM items WHERE id = $1';
    await store.query(sql, [1]);
    await store.query(sql, [1]);
    // What another server's migration does meanwhile.
    const other = await createPostgresStore({ connectionString: db.url, maxConnections: 1 });
    await other.query('ALTER TABLE items ALTER COLUMN size TYPE bigint');
    await other.close();
    expect(await store.query(sql, [2])).toEqual([{ size: 20 }]);
    expect(await store.query(sql, [1])).toEqual([{ size: 10 }]);
    // In a transaction the refusal fails that transaction (it cannot be run again by the store);
    // the next one is prepared afresh.
    await store.query('SELECT size FROM items WHERE id = $1 AND size > $2', [1, 0]);
    await store.query('SELECT size FROM items WHERE id = $1 AND size > $2', [1, 0]);
    const other2 = await createPostgresStore({ connectionString: db.url, maxConnections: 1 });
    await other2.query('ALTER TABLE items ALTER COLUMN size TYPE numeric');
    await other2.close();
    await expect(store.transaction((tx) => tx.query('SELECT size FROM items WHERE id = $1 AND size > $2', [1, 0]))).rejects.toThrow(/cached plan must not change result type/);
    expect(await store.transaction((tx) => tx.query('SELECT size FROM items WHERE id = $1 AND size > $2', [1, 0]))).toEqual([{ size: 10 }]);
    expect(warnings).toEqual([]);
  });

  it('a column added under a statement that reads *: it is never prepared, so the new column is simply there', async () => {
    const sql = 'SELECT * FROM items WHERE id = $1';
    await store.query(sql, [1]);
    await store.query(sql, [1]);
    await store.query('ALTER TABLE items ADD COLUMN label text');
    expect(await store.query(sql, [1])).toEqual([{ id: 1, size: 10, label: null }]);
    expect(await prepared()).toEqual([]);
  });

  it('a connection that loses its prepared statements (a pooler in transaction mode): the query is answered, preparing stops, and the operator is told why', async () => {
    const sql = 'SELECT size FROM items WHERE id = $1';
    await store.query(sql, [1]);
    await store.query(sql, [1]);
    // What a pooler does when the next transaction gets another server connection.
    await store.query('DEALLOCATE ALL');
    expect(await store.query(sql, [2])).toEqual([{ size: 20 }]);
    expect(warnings).toEqual([expect.stringMatching(/did not keep a prepared statement .*pooler in transaction mode/)]);
    const again = 'SELECT id FROM items WHERE size = $1';
    await store.query(again, [10]);
    expect(await store.query(again, [10])).toEqual([{ id: 1 }]);
    expect(await prepared()).toEqual([]);
    expect(warnings).toHaveLength(1);
  });
});

describe('prepared statements on the embedded database (PGlite)', () => {
  let store: Store;
  beforeEach(async () => {
    store = await createPgliteStore();
    await store.query('CREATE TABLE items (id integer PRIMARY KEY, data bytea, label text)');
  });
  afterEach(() => store.close());

  it('a statement run again answers as before: its rows, bytes, errors, notifications and transactions', async () => {
    const heard: string[] = [];
    await store.listen('items', (payload) => heard.push(payload));
    const insert = `WITH made AS (INSERT INTO items VALUES ($1, $2, $3) RETURNING id) SELECT id, pg_notify('items', $3) IS NOT NULL AS told FROM made`;
    for (let id = 1; id <= 3; id++) expect(await store.query(insert, [id, Buffer.from([0, id, 255]), `item ${id}`])).toEqual([{ id, told: true }]);
    const read = 'SELECT data, label FROM items WHERE id = $1';
    for (const id of [1, 2, 3]) expect(await store.query(read, [id])).toEqual([{ data: Buffer.from([0, id, 255]), label: `item ${id}` }]);
    for (let i = 0; i < 2; i++) await expect(store.query(insert, [1, null, 'again'])).rejects.toMatchObject({ code: '23505' });
    await expect(
      store.transaction(async (tx) => {
        await tx.query(insert, [10, null, 'rolled back']);
        await tx.query(insert, [11, null, 'rolled back']);
        throw new Error('the caller gave up');
      }),
    ).rejects.toThrow('the caller gave up');
    expect(await store.query('SELECT count(*)::int AS n FROM items WHERE id >= $1', [10])).toEqual([{ n: 0 }]);
    await store.transaction((tx) => tx.query(insert, [12, null, 'committed']));
    expect(await store.query(read, [12])).toEqual([{ data: null, label: 'committed' }]);
    await new Promise((r) => setTimeout(r, 50));
    expect(heard).toEqual(['item 1', 'item 2', 'item 3', 'committed']);
  });

  it('prepared statements lost under it: the query is answered, and the ones after it too', async () => {
    const read = 'SELECT label FROM items WHERE id = $1';
    await store.query('INSERT INTO items VALUES (1, NULL, $1)', ['one']);
    await store.query(read, [1]);
    await store.query(read, [1]);
    await store.query('DEALLOCATE ALL');
    expect(await store.query(read, [1])).toEqual([{ label: 'one' }]);
    expect(await store.query(read, [1])).toEqual([{ label: 'one' }]);
  });
});
