import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { PGlite, parse, protocol } from '@electric-sql/pglite';
import { statementNames } from './statement-names';
import type { Queryable, Row, Store } from './store';

/** PostgreSQL's type oid of bytea. */
const BYTEA = 17;

function toBuffer(value: unknown): Buffer {
  if (Buffer.isBuffer(value)) return value;
  if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  return Buffer.from(String(value));
}

/**
 * A blank cluster (a data directory just after initdb, from PGlite's `dumpDataDir`) that a new
 * database starts from instead of running initdb again, which is most of the time PGlite takes to
 * start a database. The test run sets it once (test/global-setup.js): hundreds of databases, two
 * seconds each. A data directory that already holds a cluster is opened as it is.
 */
let blankCluster: Blob | undefined;

export function useBlankCluster(image: Blob | undefined): void {
  blankCluster = image;
}

/** Whether `dataDir` still needs a cluster made (in memory, or a directory without PG_VERSION). */
function isNew(dataDir: string | undefined): boolean {
  if (dataDir === undefined || dataDir.startsWith('memory://')) return true;
  return !existsSync(join(dataDir, 'PG_VERSION'));
}

/**
 * Whether opening `dataDir` would run PGlite's initdb: a directory without a cluster, and no blank
 * cluster image to start it from. initdb runs a second PGlite beside the first and copies the
 * cluster it made over as a tar; the process that does it keeps hundreds of MiB it never uses
 * again (see runtime/store/new-database.ts).
 */
export function wouldRunInitdb(dataDir: string): boolean {
  return !blankCluster && isNew(dataDir);
}

/**
 * PGlite's own start parameters, and a smaller buffer pool: PGlite touches all of
 * `shared_buffers` (PostgreSQL's default 128 MB) at start, so the default costs a server about
 * 120 MiB of memory before it stores anything. A CI server's working set is small, and what does
 * not fit is read through the host's page cache.
 */
const START_PARAMS = [...PGlite.defaultStartParams, '-c', 'shared_buffers=16MB'];

/**
 * The embedded store. PGlite is one connection: statements from concurrent callers are serialised
 * by PGlite itself, and a transaction holds the connection until it ends, so keep them short.
 * `dataDir` undefined means in memory (tests).
 */
export async function createPgliteStore(dataDir?: string): Promise<Store> {
  const db = await PGlite.create(dataDir, {
    ...(blankCluster && isNew(dataDir) ? { loadDataDir: blankCluster } : {}),
    startParams: START_PARAMS,
    // A bytea parameter goes as its bytes: PGlite binds a value that is a byte array in binary
    // format, so there is no hex text to build, encode and parse (a 1 MiB value is stored about
    // twice as fast). The serializer's declared type says string, hence the cast.
    serializers: { [BYTEA]: toBuffer as unknown as (value: unknown) => string },
    // Results come back as text: Node's hex codec reads them (PGlite's own goes byte by byte in
    // JavaScript, about 4 MB/s).
    parsers: { [BYTEA]: (text: string) => Buffer.from(text.slice(2), 'hex') },
  });
  const names = statementNames();
  /** The parameters' type oids of each statement prepared on the connection, by name. */
  const prepared = new Map<string, readonly number[]>();
  /**
   * Runs a statement kept prepared: PGlite's `query` makes a call into PostgreSQL (WebAssembly, on
   * this process's thread) to parse, to describe, to bind, to describe, to execute and to sync,
   * every time; a named statement is parsed and described once, then each run is one call that
   * binds, executes and syncs (0.2 ms instead of 0.65-1.4 for a join on the 2-core machine).
   * Under PGlite's locks as its `query` is: `inTransaction`, the query lock inside the
   * transaction the caller holds; otherwise both, so it never runs inside someone's transaction.
   */
  const runPrepared = async <T>(name: string, sql: string, params: readonly unknown[], inTransaction: boolean): Promise<T[]> => {
    const run = async () => {
      let types = prepared.get(name);
      if (!types) {
        const described = await db.execProtocol(messagesOf([protocol.serialize.parse({ name, text: sql }), protocol.serialize.describe({ type: 'S', name }), protocol.serialize.sync()]), { syncToFs: false });
        types = parse.parseDescribeStatementResults(described.messages);
        prepared.set(name, types);
      }
      const values = params.map((value, i) => {
        if (value === null || value === undefined) return null;
        const serialize = db.serializers[types[i]];
        return serialize ? serialize(value) : String(value);
      });
      const result = await db.execProtocol(
        messagesOf([protocol.serialize.bind({ statement: name, values: values as string[] }), protocol.serialize.describe({ type: 'P' }), protocol.serialize.execute({}), protocol.serialize.sync()]),
        { syncToFs: !inTransaction },
      );
      return (parse.parseResults(result.messages, db.parsers)[0]?.rows ?? []) as T[];
    };
    return inTransaction ? db._runExclusiveQuery(run) : db._runExclusiveTransaction(() => db._runExclusiveQuery(run));
  };
  const forget = () => prepared.clear();
  const query = async <T = Row>(sql: string, params: readonly unknown[] = []): Promise<T[]> => {
    const name = names.nameOf(sql, params);
    if (name) {
      try {
        return await runPrepared<T>(name, sql, params, false);
      } catch (error) {
        if (!names.recover(error)) throw error;
        forget();
      }
    }
    const result = await db.query<T>(sql, params as unknown[]);
    return result.rows;
  };
  return {
    kind: 'pglite',
    query,
    transaction: <T>(fn: (tx: Queryable) => Promise<T>) =>
      db.transaction(async (tx) =>
        fn({
          query: async <R = Row>(sql: string, params: readonly unknown[] = []) => {
            const name = names.nameOf(sql, params);
            if (!name) return (await tx.query<R>(sql, params as unknown[])).rows;
            try {
              return await runPrepared<R>(name, sql, params, true);
            } catch (error) {
              if (names.recover(error)) forget();
              throw error;
            }
          },
        }),
      ),
    listen: async (channel, handler) => {
      const unsubscribe = await db.listen(channel, handler);
      return unsubscribe;
    },
    notify: async (channel, payload) => {
      await db.query('SELECT pg_notify($1, $2)', [channel, payload]);
    },
    close: () => db.close(),
  };
}

function messagesOf(messages: readonly Uint8Array[]): Uint8Array {
  return Buffer.concat(messages);
}
