import { Client, Pool, Query, types, type PoolClient, type QueryConfig } from 'pg';
import { statementNames } from './statement-names';
import type { Queryable, Row, Store } from './store';

// Return BIGINT and NUMERIC as numbers, as PGlite does: counts and sizes here stay far below 2^53.
types.setTypeParser(types.builtins.INT8, (value) => Number(value));
types.setTypeParser(types.builtins.NUMERIC, (value) => Number(value));

export interface PostgresStoreOptions {
  readonly connectionString: string;
  /** @default 10 */
  readonly maxConnections?: number;
  /** How long a pooled connection may sit unused before it is closed (IDLE_CONNECTION_MS). */
  readonly idleConnectionMs?: number;
  /** Called when the dedicated LISTEN connection drops and is being re-established. */
  readonly onReconnect?: (error: Error) => void;
  /** Told why statements are no longer kept prepared (see ./statement-names.ts), once. */
  readonly onUnprepared?: (why: string) => void;
}

function statement(sql: string, params: readonly unknown[], name: string | undefined): QueryConfig {
  return name ? { name, text: sql, values: params as unknown[] } : { text: sql, values: params as unknown[] };
}

/** What of node-postgres' `Query` and its connection `QueryAfterBegin` uses (its types declare less). */
interface PgConnection {
  readonly stream: { cork?(): void; uncork?(): void };
  readonly parsedStatements: Record<string, string>;
  readonly submittedNamedStatements: Record<string, string>;
  parse(message: { text: string; name: string; types: unknown[] }): void;
  bind(message: { portal: string; statement: string; values: unknown[] }): void;
  execute(message: { portal: string; rows: number }): void;
}
interface PgQuery {
  name?: string;
  submit(connection: PgConnection): Error | null;
  handleCommandComplete(message: unknown, connection: PgConnection): void;
  handleError(error: Error, connection: PgConnection): void;
}
type QueryCallback = (error: Error | undefined, result: { rows: Row[] }) => void;
const PgQueryClass = Query as unknown as new (config: QueryConfig & { queryMode?: 'extended' }, values: undefined, callback: QueryCallback) => PgQuery;

/**
 * A transaction's first statement, sent in one write with the BEGIN before it and answered with
 * one ReadyForQuery: a round trip less for every transaction (three a pipeline). BEGIN goes as
 * Parse, Bind and Execute of the unnamed statement, then the statement as node-postgres sends any
 * (always through the extended protocol: a simple Query would end the sequence), then the one
 * Sync. PostgreSQL runs them in order; after a BEGIN the Sync does not commit, and a statement
 * that fails leaves the block aborted for the ROLLBACK, as before. node-postgres has no pipelining
 * of its own, so its `Query` is extended here where it must be: BEGIN's CommandComplete is not the
 * statement's result, and its ParseComplete must not mark the statement's name as parsed on the
 * connection (the client does that for the active query's name), so the name shows only once
 * BEGIN has completed.
 */
class QueryAfterBegin extends PgQueryClass {
  // Declared, not initialised: a field initialiser would run after the base constructor has set `name`.
  private declare statementName: string | undefined;
  private declare submitting: boolean;
  private declare begun: boolean;

  constructor(config: QueryConfig, callback: QueryCallback) {
    super({ ...config, queryMode: 'extended' }, undefined, callback);
    this.statementName = config.name;
    this.submitting = false;
    this.begun = false;
  }

  get name(): string | undefined {
    return this.submitting || this.begun ? this.statementName : undefined;
  }
  set name(value: string | undefined) {
    this.statementName = value;
  }

  override submit(connection: PgConnection): Error | null {
    // node-postgres' own checks first, so that nothing is written for a statement it would refuse.
    const { text, values } = this as unknown as { text?: unknown; values?: unknown };
    const name = this.statementName;
    const previous = name ? (connection.parsedStatements[name] ?? connection.submittedNamedStatements[name]) : undefined;
    if (typeof text !== 'string') return new Error('A statement in a transaction must have a text.');
    if (previous !== undefined && previous !== text) return new Error(`Prepared statements must be unique - '${name}' was used for a different statement`);
    if (values !== undefined && !Array.isArray(values)) return new Error('Query values must be an array');
    connection.stream.cork?.();
    this.submitting = true;
    try {
      connection.parse({ text: 'BEGIN', name: '', types: [] });
      connection.bind({ portal: '', statement: '', values: [] });
      connection.execute({ portal: '', rows: 0 });
      return super.submit(connection);
    } finally {
      this.submitting = false;
      connection.stream.uncork?.();
    }
  }

  override handleCommandComplete(message: unknown, connection: PgConnection): void {
    if (!this.begun) {
      this.begun = true;
      return;
    }
    super.handleCommandComplete(message, connection);
  }

  override handleError(error: Error, connection: PgConnection): void {
    // Failed before BEGIN completed: the client could not see the name to forget it was sent.
    if (!this.begun && this.statementName) delete connection.submittedNamedStatements[this.statementName];
    super.handleError(error, connection);
  }
}

/**
 * How long a pooled connection is kept open unused: five minutes, where node-postgres' default is
 * 10 s. A connection opened anew costs its backend far more than the statements it then runs: a
 * process forked and authenticated, the catalog read into its caches, every statement prepared
 * again and planned afresh five times before PostgreSQL keeps a generic plan. Measured on a
 * two-core machine (docs/speed.md, twenty-second sitting): 100 pipelines triggered back to back
 * 12 s after an earlier burst cost PostgreSQL 20–22 ms of CPU a pipeline with 10 s (the burst
 * opened 7–8 connections again) and 12–13 ms with the connections kept. Pipelines come in bursts,
 * seconds to minutes apart; an idle server still gives its connections back after five minutes.
 */
export const IDLE_CONNECTION_MS = 5 * 60_000;

/**
 * A real PostgreSQL server. Queries go through a pool; LISTEN uses one dedicated connection that is
 * re-opened (and every channel re-subscribed) whenever it drops, so a restarted database is
 * picked up without restarting Gyre.
 */
export async function createPostgresStore(options: PostgresStoreOptions): Promise<Store> {
  const pool = new Pool({
    connectionString: options.connectionString,
    max: options.maxConnections ?? 10,
    idleTimeoutMillis: options.idleConnectionMs ?? IDLE_CONNECTION_MS,
    // Idle connections (and their timers) do not keep a process alive: a command that ends without
    // closing its store ends then, not five minutes later.
    allowExitOnIdle: true,
  });
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
      // BEGIN goes with the first statement (QueryAfterBegin); a transaction that runs none sends neither it nor COMMIT.
      let begun = false;
      const run = (config: QueryConfig): Promise<{ rows: Row[] }> => {
        if (begun) return client.query(config);
        begun = true;
        return new Promise((resolve, reject) => {
          client.query(new QueryAfterBegin(config, (error, result) => (error ? reject(error) : resolve(result))) as unknown as QueryConfig);
        });
      };
      try {
        const result = await fn({
          query: async <R = Row>(sql: string, params: readonly unknown[] = []) => {
            const name = names.nameOf(sql, params);
            try {
              return (await run(statement(sql, params, name))).rows as R[];
            } catch (error) {
              // The transaction has failed; the statements of later ones are prepared afresh (or not at all).
              if (name) names.recover(error);
              throw error;
            }
          },
        });
        if (begun) await client.query('COMMIT');
        return result;
      } catch (error) {
        if (begun) await client.query('ROLLBACK').catch(() => undefined);
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
