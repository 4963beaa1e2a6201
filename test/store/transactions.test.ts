import { createTestDatabase } from '../support/database';
import { createPostgresStore } from '../../runtime/store/postgres-store';
import type { Store } from '../../runtime/store/store';

/**
 * Transactions on the PostgreSQL store as a user would notice them going wrong: a first
 * statement's lock that did not hold (two pipelines given the same number, a task claimed twice),
 * a write that stayed after a rollback, or a connection broken mid-transaction (the database
 * restarted, its backend terminated) ending the whole server process instead of one request.
 */
const withPostgres = process.env.DATABASE_URL ? describe : describe.skip;
if (!process.env.DATABASE_URL) console.warn('transactions.test.ts: DATABASE_URL is not set; these cases are skipped');

withPostgres('transactions on PostgreSQL', () => {
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  let store: Store;
  beforeEach(async () => {
    db = await createTestDatabase();
    store = await createPostgresStore({ connectionString: db.url, maxConnections: 4 });
    await store.query('CREATE TABLE counters (id integer PRIMARY KEY, value integer NOT NULL)');
    await store.query('INSERT INTO counters VALUES (1, 0)');
  });
  afterEach(async () => {
    await store.close();
    await db.drop();
  });

  it("holds the first statement's lock until the end: concurrent read-modify-writes lose no update", async () => {
    const increment = () =>
      store.transaction(async (tx) => {
        const [row] = await tx.query<{ value: number }>('SELECT value FROM counters WHERE id = $1 FOR UPDATE', [1]);
        await new Promise((r) => setTimeout(r, 20));
        await tx.query('UPDATE counters SET value = $2 WHERE id = $1', [1, row.value + 1]);
      });
    await Promise.all(Array.from({ length: 12 }, increment));
    expect(await store.query('SELECT value FROM counters WHERE id = $1', [1])).toEqual([{ value: 12 }]);
  });

  it('rolls the first statement back with the rest when the transaction fails', async () => {
    await expect(
      store.transaction(async (tx) => {
        await tx.query('UPDATE counters SET value = 99 WHERE id = $1', [1]);
        throw new Error('the caller gave up');
      }),
    ).rejects.toThrow('the caller gave up');
    await expect(
      store.transaction(async (tx) => {
        await tx.query('UPDATE counters SET value = 98 WHERE id = $1', [1]);
        await tx.query('INSERT INTO counters VALUES (1, 0)');
      }),
    ).rejects.toMatchObject({ code: '23505' });
    expect(await store.query('SELECT value FROM counters WHERE id = $1', [1])).toEqual([{ value: 0 }]);
  });

  it("sends BEGIN with the first statement: that statement's rows are its own, and it runs in the transaction", async () => {
    const [first, second] = await store.transaction(async (tx) => {
      const a = await tx.query<{ xact: string; n: number }>('SELECT pg_current_xact_id()::text AS xact, $1::int AS n', [5]);
      const b = await tx.query<{ xact: string }>('SELECT pg_current_xact_id()::text AS xact');
      return [a, b];
    });
    expect(first).toEqual([{ xact: expect.stringMatching(/^\d+$/), n: 5 }]);
    expect(second).toEqual([{ xact: first[0].xact }]);
    // A first statement without parameters is in the transaction too (undone with it).
    await expect(
      store.transaction(async (tx) => {
        await tx.query('INSERT INTO counters VALUES (2, 0)');
        throw new Error('undo');
      }),
    ).rejects.toThrow('undo');
    expect(await store.query('SELECT id FROM counters ORDER BY id')).toEqual([{ id: 1 }]);
  });

  it('a kept-prepared first statement that fails rolls back alone; the connection runs it again after', async () => {
    const one = await createPostgresStore({ connectionString: db.url, maxConnections: 1 });
    try {
      const add = (n: number) => one.transaction(async (tx) => tx.query<{ value: number }>('UPDATE counters SET value = value + $2 WHERE id = $1 RETURNING value', [1, n]));
      // Prepared from its second run, on the one connection.
      expect(await add(1)).toEqual([{ value: 1 }]);
      expect(await add(1)).toEqual([{ value: 2 }]);
      await expect(add(2 ** 31 - 1)).rejects.toMatchObject({ code: '22003' });
      expect(await add(1)).toEqual([{ value: 3 }]);
      // Failing on the run that prepares it (its second), as a transaction's first statement.
      const times = (n: number) => one.transaction(async (tx) => tx.query<{ value: number }>('UPDATE counters SET value = value * $2 WHERE id = $1 RETURNING value', [1, n]));
      expect(await times(2)).toEqual([{ value: 6 }]);
      await expect(times(2 ** 30)).rejects.toMatchObject({ code: '22003' });
      expect(await times(1)).toEqual([{ value: 6 }]);
      expect(await times(2)).toEqual([{ value: 12 }]);
    } finally {
      await one.close();
    }
  });

  it('answers a transaction with no statement; one whose connection breaks fails alone, without writing, and the process goes on', async () => {
    await expect(store.transaction(async () => 'nothing asked')).resolves.toBe('nothing asked');
    await expect(
      store.transaction(async (tx) => {
        await tx.query('UPDATE counters SET value = 7 WHERE id = $1', [1]);
        await tx.query('SELECT pg_terminate_backend(pg_backend_pid())');
      }),
    ).rejects.toThrow();
    expect(await store.query('SELECT value FROM counters WHERE id = $1', [1])).toEqual([{ value: 0 }]);
    // The pool goes on with a new connection.
    expect(await store.transaction((tx) => tx.query('SELECT value FROM counters WHERE id = $1', [1]))).toEqual([{ value: 0 }]);
  });
});
