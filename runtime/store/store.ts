/**
 * The `Store` seam: the one datastore, PostgreSQL. Two implementations: PGlite (embedded, one
 * connection, in this process) and a real PostgreSQL server (`DATABASE_URL`, a pool).
 *
 * SQL is plain SQL: migrations in `migrations/`, small query functions next to the role that owns
 * the tables. Nothing here hides locking; callers write `FOR UPDATE SKIP LOCKED` themselves.
 */
export type Row = Record<string, unknown>;

/** Something that runs SQL: the store itself, or a transaction handed to a callback. */
export interface Queryable {
  query<T = Row>(sql: string, params?: readonly unknown[]): Promise<T[]>;
}

export interface Store extends Queryable {
  readonly kind: 'pglite' | 'postgres';
  /** Runs `fn` in one transaction: committed when it resolves, rolled back when it throws. */
  transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T>;
  /** Subscribes to NOTIFY on `channel`; the returned function unsubscribes. */
  listen(channel: string, handler: (payload: string) => void): Promise<() => Promise<void>>;
  notify(channel: string, payload: string): Promise<void>;
  close(): Promise<void>;
}
