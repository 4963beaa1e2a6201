import { Client, Pool, types, type PoolClient, type QueryConfig } from 'pg';
import { statementNames } from './statement-names';
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
  /** Told why statements are no longer kept prepared (see ./statement-names.ts), once. */
  readonly onUnprepared?: (why: string) => void;
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
      // A connection that breaks while held (the database restarted, the backend terminated)
      // says so as an 'error' event, which unheard would end the process; it is closed, not
      // handed to the next caller.
      let broken: Error | undefined;
      const onError = (error: Error) => (broken ??= error);
      client.on('error', onError);
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
        client.off('error', onError);
        client.release(broken);
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
