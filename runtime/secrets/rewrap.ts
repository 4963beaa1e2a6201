import type { Queryable, Row, Store } from '../store/store';
import type { Sealed, SecretBox } from './secret-box';

/**
 * Key rotation's second half: after the wrapping key changed (a new line in the local key file, a
 * new primary version in Cloud KMS or Vault, an alias pointed at a new AWS KMS key), every stored
 * data key still wrapped by an older key is unwrapped and wrapped again by the current one. Values'
 * ciphertexts are not touched, and nothing is decrypted but the data keys.
 *
 * Safe while Gyre serves: rows go in batches, each in its own short transaction that locks its rows
 * (`FOR UPDATE SKIP LOCKED`, so a row being written is left for a later pass instead of waited on),
 * reads all five sealed columns and writes the new wrapped key only where the row still has the
 * key id it was read with. It is also safe to stop and run again.
 */

/** A table with sealed values, one per row, in five columns. */
export interface SealedTable {
  /** The table (`name` or `schema.name`). */
  readonly table: string;
  /** The columns that identify a row (its primary key). */
  readonly keyColumns: readonly string[];
  /** The five sealed columns, when not named `ciphertext`, `iv`, `tag`, `wrapped_key`, `key_id`. */
  readonly columns?: Partial<SealedColumns>;
}

export interface SealedColumns {
  readonly ciphertext: string;
  readonly iv: string;
  readonly tag: string;
  readonly wrappedKey: string;
  readonly keyId: string;
}

/** What `rewrapAll` did in one table. */
export interface RewrapCounts {
  readonly table: string;
  /** Rows moved to the current key. */
  readonly rewrapped: number;
  /** Rows whose data key did not unwrap (their wrapping key is gone, or the row was changed); they stay as they were. */
  readonly failed: number;
  /** Rows still under another key at the end (the failed ones, and any written under an old key meanwhile). */
  readonly remaining: number;
  /** The first failure's message, which names the key id (no key or value bytes). */
  readonly firstError?: string;
}

export interface RewrapResult {
  /** The key id rows were moved to. */
  readonly keyId: string;
  readonly tables: readonly RewrapCounts[];
  readonly rewrapped: number;
  readonly failed: number;
  readonly remaining: number;
}

export interface RewrapOptions {
  /** Rows per transaction. @default 100 */
  readonly batchSize?: number;
  /** Data keys unwrapped and wrapped at once (calls to a key service in flight). @default 8 */
  readonly concurrency?: number;
  /** Called after each batch with the table and the rows it has moved so far (progress on long runs). */
  readonly onProgress?: (table: string, rewrapped: number) => void;
}

const DEFAULT_COLUMNS: SealedColumns = { ciphertext: 'ciphertext', iv: 'iv', tag: 'tag', wrappedKey: 'wrapped_key', keyId: 'key_id' };
/** Passes over a table at most: a pass picks up rows the one before skipped because they were locked. */
const MAX_PASSES = 5;
const IDENTIFIER = /^[a-z_][a-z0-9_]{0,62}$/;

/** A quoted SQL identifier; only plain lower-case names are accepted, so nothing can be injected. */
function quote(name: string, what: string, dotted = false): string {
  const parts = dotted ? name.split('.') : [name];
  if (parts.length > 2 || !parts.every((p) => IDENTIFIER.test(p))) {
    throw new Error(`${what} '${name}' is not a plain SQL name (lower-case letters, digits, '_'${dotted ? "; 'schema.table'" : ''})`);
  }
  return parts.map((p) => `"${p}"`).join('.');
}

function toBuffer(value: unknown): Buffer {
  if (Buffer.isBuffer(value)) return value;
  if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  throw new Error('a sealed column is not bytea');
}

/** Runs `fn` over `items`, at most `limit` at once, answering results in order. */
async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

async function rewrapTable(store: Store, box: SecretBox, spec: SealedTable, options: Required<Omit<RewrapOptions, 'onProgress'>> & Pick<RewrapOptions, 'onProgress'>): Promise<RewrapCounts & { keyId: string }> {
  const table = quote(spec.table, 'table', true);
  if (spec.keyColumns.length === 0) throw new Error(`table ${spec.table}: name the columns that identify a row (keyColumns)`);
  const keys = spec.keyColumns.map((c) => quote(c, `table ${spec.table}: key column`));
  const named = { ...DEFAULT_COLUMNS, ...spec.columns };
  const col = Object.fromEntries(Object.entries(named).map(([k, v]) => [k, quote(v, `table ${spec.table}: column`)])) as unknown as SealedColumns;
  const keyList = keys.join(', ');
  const select = (after: boolean) => {
    const cursor = after ? ` AND (${keyList}) > (${keys.map((_, i) => `$${i + 3}`).join(', ')})` : '';
    return `SELECT ${keys.map((k, i) => `${k} AS k${i}`).join(', ')}, ${col.ciphertext} AS ciphertext, ${col.iv} AS iv, ${col.tag} AS tag,` +
      ` ${col.wrappedKey} AS wrapped_key, ${col.keyId} AS key_id FROM ${table}` +
      ` WHERE ${col.keyId} <> $1${cursor} ORDER BY ${keyList} LIMIT $2 FOR UPDATE SKIP LOCKED`;
  };
  const update = `UPDATE ${table} SET ${col.wrappedKey} = $1, ${col.keyId} = $2 WHERE ${keys.map((k, i) => `${k} = $${i + 4}`).join(' AND ')} AND ${col.keyId} = $3`;

  let rewrapped = 0;
  const failedRows = new Set<string>();
  let firstError: string | undefined;

  const batch = async (tx: Queryable, current: string, after: unknown[] | undefined) => {
    const rows = await tx.query<Row>(select(after !== undefined), [current, options.batchSize, ...(after ?? [])]);
    const keyOf = (row: Row) => spec.keyColumns.map((_, i) => row[`k${i}`]);
    const outcomes = await mapLimit(rows, options.concurrency, async (row) => {
      const sealed: Sealed = {
        ciphertext: toBuffer(row.ciphertext),
        iv: toBuffer(row.iv),
        tag: toBuffer(row.tag),
        wrappedKey: toBuffer(row.wrapped_key),
        keyId: String(row.key_id),
      };
      try {
        return { row, sealed: await box.rewrap(sealed) };
      } catch (error) {
        return { row, error: error as Error };
      }
    });
    let done = 0;
    for (const outcome of outcomes) {
      if (outcome.error) {
        failedRows.add(JSON.stringify(keyOf(outcome.row)));
        firstError ??= outcome.error.message;
        continue;
      }
      failedRows.delete(JSON.stringify(keyOf(outcome.row)));
      const sealed = outcome.sealed!;
      const changed = await tx.query(`${update} RETURNING 1 AS one`, [sealed.wrappedKey, sealed.keyId, outcome.row.key_id, ...keyOf(outcome.row)]);
      done += changed.length;
    }
    return { count: rows.length, done, last: rows.length > 0 ? keyOf(rows[rows.length - 1]) : undefined };
  };

  let current = await box.wrapper.currentKeyId();
  for (let pass = 0; pass < MAX_PASSES; pass++) {
    let progress = 0;
    let after: unknown[] | undefined;
    for (;;) {
      const result = await store.transaction((tx) => batch(tx, current, after));
      progress += result.done;
      if (result.done > 0) options.onProgress?.(spec.table, rewrapped + progress);
      if (result.count < options.batchSize) break;
      after = result.last;
    }
    rewrapped += progress;
    if (progress === 0) break;
    current = await box.wrapper.currentKeyId();
  }
  const [{ n }] = await store.query<{ n: number | string }>(`SELECT count(*) AS n FROM ${table} WHERE ${col.keyId} <> $1`, [current]);
  return { table: spec.table, rewrapped, failed: failedRows.size, remaining: Number(n), ...(firstError ? { firstError } : {}), keyId: current };
}

/**
 * Moves every row of `tables` whose key id is not the wrapper's current one to the current key
 * (see the file's header), table by table. Answers counts per table and in all; rows that fail
 * (their key is gone) are counted and left as they were, so run it again once their key is back.
 */
export async function rewrapAll(store: Store, box: SecretBox, tables: readonly SealedTable[], options: RewrapOptions = {}): Promise<RewrapResult> {
  const batchSize = options.batchSize ?? 100;
  const concurrency = options.concurrency ?? 8;
  if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > 10_000) throw new Error(`batchSize ${batchSize} is out of range (1 to 10000)`);
  if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 64) throw new Error(`concurrency ${concurrency} is out of range (1 to 64)`);
  const counts: RewrapCounts[] = [];
  let keyId: string | undefined;
  for (const spec of tables) {
    const { keyId: movedTo, ...table } = await rewrapTable(store, box, spec, { batchSize, concurrency, onProgress: options.onProgress });
    counts.push(table);
    keyId = movedTo;
  }
  return {
    keyId: keyId ?? (await box.wrapper.currentKeyId()),
    tables: counts,
    rewrapped: counts.reduce((sum, c) => sum + c.rewrapped, 0),
    failed: counts.reduce((sum, c) => sum + c.failed, 0),
    remaining: counts.reduce((sum, c) => sum + c.remaining, 0),
  };
}
