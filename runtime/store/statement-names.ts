import { createHash } from 'node:crypto';

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
 * Whether a statement's result columns come from `*`: `SELECT *`, `t.*`, `RETURNING *`, `, *`.
 * Not a `*` in a string (`'*' = ANY($1)`), a comment, `count(*)` or a product (`x * 1000`): the
 * dispatcher's claim has the first, and was planned again every time for it.
 */
export function columnsFromStar(sql: string): boolean {
  // Strings and comments, whichever begins first (a comment may hold an apostrophe).
  const code = sql.replace(/'(?:[^']|'')*'|--[^\n]*/g, ' ');
  return /(?:\bSELECT(?:\s+DISTINCT)?|\bRETURNING|,)\s*\*|[\w"]\.\*/i.test(code);
}

/**
 * Names for the statements worth keeping prepared on each connection. PostgreSQL parses and plans
 * an unnamed statement every time it runs, and on a pipeline's path the planning took more of its
 * time than running them did (docs/speed.md); a named one is parsed once per connection, and after
 * five runs planned once too wherever PostgreSQL finds a generic plan as cheap. Both stores use
 * it: a PostgreSQL server's pool (./postgres-store.ts) and PGlite's one connection
 * (./pglite-store.ts).
 *
 * Prepared: a statement with parameters, from its second run (a text built for one use is never
 * kept), up to MAX_PREPARED texts. Never: one whose columns come from `*` (`SELECT *`, `t.*`,
 * `RETURNING *`: columnsFromStar), since PostgreSQL refuses a prepared statement whose result's
 * columns changed, which a migration adding a column would do to the servers of the release
 * before it during a rolling upgrade. When it refuses one anyway (a column's type changed), every
 * statement is prepared afresh under new names; a connection that does not keep prepared
 * statements at all (a pooler that hands each transaction another server connection) ends
 * preparing for good.
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
      if (names.size >= MAX_PREPARED || columnsFromStar(sql)) return undefined;
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
