import { createHash } from 'node:crypto';
import { Client, Pool, types, type PoolClient, type QueryConfig } from 'pg';
import type { Queryable, Row, Store } from './store';

// Return BIGINT and NUMERIC as numbers, as PGlite does: counts and sizes here stay far below 2^53.
types.setTypeParser(types.builtins.INT8, (value) => Number(value));
types.setTypeParser(types.builtins.NUMERIC, (value) => Number(value));

export interface PostgresStoreOptions {
  readonly connectionString: string;
  /** @default 10 */
  readonly maxConnections?: number;
  /** Called when the dedicated LISTEN connection drops and is being re-established. */
  readonly onReconnect?: (error: Error) => void;
  /** Told why statements are no longer kept prepared (see `statementNames`), once. */
  readonly onUnprepared?: (why: string) => void;
}

/** At most this many statement texts are kept prepared on each connection. */
export const MAX_PREPARED = 256;

/** What decides which statements are kept prepared, and gives that up when the connection cannot keep them. */
export interface StatementNames {
  /** The name to prepare `sql` under, or undefined to run it unnamed. */
  nameOf(sql: string, params: readonly unknown[]): string | undefined;
  /**
   * Whether `error` came from running a prepared statement (its result's columns changed under
   * it, or the connection lost it): then later statements are prepared afresh, or not at all,
   * and the one that failed may be run again unnamed (it did nothing).
   */
  recover(error: unknown): boolean;
}

/**
 * Names for the statements worth keeping prepared on each connection. PostgreSQL parses and plans
 * an unnamed statement every time it runs, and on a pipeline's path the planning took more of its
 * time than running them did (docs/speed.md); a named one is parsed once per connection, and after
 * five runs planned once too wherever PostgreSQL finds a generic plan as cheap.
 *
 * Prepared: a statement with parameters, from its second run (a text built for one use is never
 * kept), up to MAX_PREPARED texts. Never: one whose columns come from `*` (`SELECT *`, `t.*`,
 * `RETURNING *`), since PostgreSQL refuses a prepared statement whose result's columns changed,
 * which a migration adding a column would do to the servers of the release before it during a
 * rolling upgrade. When it refuses one anyway (a column's type changed), every statement is
 * prepared afresh under new names; a connection that does not keep prepared statements at all (a
 * pooler that hands each transaction another server connection) ends preparing for good.
 */
export function statementNames(onUnprepared?: (why: string) => void): StatementNames {
  const seen = new Map<string, number>();
  const names = new Map<string, string>();
  let generation = 0;
  let off = false;
  const stop = (why: string) => {
    if (off) return;
    off = true;
    names.clear();
    seen.clear();
    onUnprepared?.(why);
  };
  return {
    nameOf(sql, params) {
      if (off || params.length === 0) return undefined;
      const known = names.get(sql);
      if (known) return known;
      if (names.size >= MAX_PREPARED || sql.replace(/\(\*\)/g, '').includes('*')) return undefined;
      const runs = (seen.get(sql) ?? 0) + 1;
      if (runs < 2) {
        // Texts seen once are forgotten in bulk: built-for-one-use texts must not grow this.
        if (seen.size >= 4 * MAX_PREPARED) seen.clear();
        seen.set(sql, runs);
        return undefined;
      }
      seen.delete(sql);
      const name = `gyre_${generation}_${createHash('sha256').update(sql).digest('hex').slice(0, 24)}`;
      names.set(sql, name);
      return name;
    },
    recover(error) {
      const { code, message } = (error ?? {}) as { code?: unknown; message?: unknown };
      if (code === '0A000' && typeof message === 'string' && message.includes('cached plan must not change result type')) {
        names.clear();
        if (++generation > 3) stop('PostgreSQL refused prepared statements whose columns changed more than three times');
        return true;
      }
      // "prepared statement … does not exist" / "… already exists": the server connection under
      // this one is not the one the statement was prepared on.
      if (code === '26000' || code === '42P05') {
        stop(`the database connection did not keep a prepared statement (${String(message)}): a connection pooler in transaction mode? Statements are no longer prepared`);
        return true;
      }
      return false;
    },
  };
}

function statement(sql: string, params: readonly unknown[], name: string | undefined): QueryConfig {
  return name ? { name, text: sql, values: params as unknown[] } : { text: sql, values: params as unknown[] };
}

/**
 * A real PostgreSQL server. Queries go through a pool; LISTEN uses one dedicated connection that is
 * re-opened (and every channel re-subscribed) whenever it drops, so a restarted database is
 * picked up without restarting Gyre.
 */
export async function createPostgresStore(options: PostgresStoreOptions): Promise<Store> {
  const pool = new Pool({ connectionString: options.connectionString, max: options.maxConnections ?? 10 });
  // An idle client erroring (database restarted) must not crash the process; the pool replaces it.
  pool.on('error', () => undefined);
  await pool.query('SELECT 1');

  const handlers = new Map<string, Set<(payload: string) => void>>();
  let listener: Client | undefined;
  let listenerReady: Promise<Client> | undefined;
  let closed = false;

  const openListener = async (): Promise<Client> => {
    const client = new Client({ connectionString: options.connectionString });
    client.on('notification', (message) => {
      for (const handler of handlers.get(message.channel) ?? []) handler(message.payload ?? '');
    });
    client.on('error', (error) => {
      if (closed) return;
      listener = undefined;
      listenerReady = undefined;
      options.onReconnect?.(error);
      void reconnect();
    });
    await client.connect();
    for (const channel of handlers.keys()) await client.query(`LISTEN ${quoteIdent(channel)}`);
    listener = client;
    return client;
  };
  const reconnect = async (): Promise<void> => {
    for (let attempt = 0; !closed; attempt++) {
      try {
        await ensureListener();
        return;
      } catch {
        listenerReady = undefined;
        await new Promise((resolve) => setTimeout(resolve, Math.min(2000, 100 * 2 ** attempt)));
      }
    }
  };
  const ensureListener = (): Promise<Client> => {
    if (listener) return Promise.resolve(listener);
    listenerReady ??= openListener();
    return listenerReady;
  };

  const names = statementNames(options.onUnprepared);
  const query = async <T = Row>(sql: string, params: readonly unknown[] = []): Promise<T[]> => {
    const name = names.nameOf(sql, params);
    try {
      return (await pool.query(statement(sql, params, name))).rows as T[];
    } catch (error) {
      // The prepared statement failed before it ran: once more, unnamed.
      if (name && names.recover(error)) return (await pool.query(statement(sql, params, undefined))).rows as T[];
      throw error;
    }
  };

  return {
    kind: 'postgres',
    query,
    transaction: async <T>(fn: (tx: Queryable) => Promise<T>): Promise<T> => {
      const client: PoolClient = await pool.connect();
      try {
        await client.query('BEGIN');
        const result = await fn({
          query: async <R = Row>(sql: string, params: readonly unknown[] = []) => {
            const name = names.nameOf(sql, params);
            try {
              return (await client.query(statement(sql, params, name))).rows as R[];
            } catch (error) {
              // The transaction has failed; the statements of later ones are prepared afresh (or not at all).
              if (name) names.recover(error);
              throw error;
            }
          },
        });
        await client.query('COMMIT');
        return result;
      } catch (error) {
        await client.query('ROLLBACK').catch(() => undefined);
        throw error;
      } finally {
        client.release();
      }
    },
    listen: async (channel, handler) => {
      let set = handlers.get(channel);
      const first = !set;
      if (!set) handlers.set(channel, (set = new Set()));
      set.add(handler);
      const client = await ensureListener();
      if (first) await client.query(`LISTEN ${quoteIdent(channel)}`);
      return async () => {
        set!.delete(handler);
        if (set!.size === 0) {
          handlers.delete(channel);
          await listener?.query(`UNLISTEN ${quoteIdent(channel)}`).catch(() => undefined);
        }
      };
    },
    notify: async (channel, payload) => {
      await pool.query('SELECT pg_notify($1, $2)', [channel, payload]);
    },
    close: async () => {
      closed = true;
      await listener?.end().catch(() => undefined);
      await pool.end();
    },
  };
}

function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}
