import { randomUUID } from 'node:crypto';
import { mkdir, open, readdir, rm, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createGunzip } from 'node:zlib';
import { blobKey, type BlobStore } from '../blob/blob-store';
import { NotFoundError } from '../domain/errors';
import type { Logger } from '../logger';
import { processExists } from '../process-exists';
import type { ChunkChecker } from './chunk-checker';
import { asBuffer, checkChunk, checkedChunk, compressChunk, decompressChunk, isCompressed, type CompressedChunk } from './log-chunk';
import type { Queryable, Store } from '../store/store';

/**
 * Writes fenced by the task's lease (the dispatcher's fencing), announced to output followers
 * when they change something.
 */
export interface Fenced {
  /** Runs `write` inside a transaction that holds the lease. */
  transaction<T>(write: (tx: Queryable) => Promise<T>): Promise<T>;
  /**
   * One statement under the lease (one round trip): `ctes` follow a CTE named `lease` (one row
   * while the lease is current, none otherwise) that the first takes its rows from; `$1` is the
   * task id, `$3` the attempt, `values` are `$4` on. The announcement is made when the CTE named
   * `changed` gives a row. The rows of `select` (at least one while the lease is current).
   */
  statement<T>(ctes: string, values: readonly unknown[], select: string, changed: string): Promise<T[]>;
}

/** Where the dispatcher hands output to: chunks while a step runs, the move when it ends. */
export interface LogSink {
  /**
   * Stores one chunk, as bytes or as the gzip members an agent compressed them to; the same (step,
   * seq) twice is stored once, and so is a chunk of a step already moved. Bytes are compressed, and
   * members checked (InputError if they are not gzip of the size they claim), before `fenced` is
   * called, so the lease is held for the write only.
   */
  appendChunk(fenced: Fenced, taskId: string, attempt: number, step: number, seq: number, data: Uint8Array | CompressedChunk): Promise<void>;
  /**
   * Moves a finished step's output, compressed, to the blob store and drops its chunks. `stored`:
   * the step's chunks in the database once its end was recorded (read in that statement, after the
   * agent's last chunk was stored), so that none is asked for again; a step that wrote nothing then
   * costs no statement here.
   */
  stepFinished(taskId: string, attempt: number, step: number, stored?: StoredChunks): Promise<void>;
}

/** The chunks of a step in the database: their seqs in order, and each one's size (raw bytes). */
export interface StoredChunks {
  readonly seqs: readonly number[];
  readonly bytes: readonly number[];
}

/** One chunk of a step's output, as the agent sent it (after masking and the output cap). */
export interface OutputChunk {
  readonly seq: number;
  readonly data: Uint8Array;
}

export interface LogReader {
  /**
   * A step's output after chunk `afterSeq`, chunk by chunk in order, from the database or the blob
   * store, byte-identical either way. Holds one chunk in memory at a time.
   */
  read(taskId: string, attempt: number, step: number, afterSeq?: number): AsyncIterable<OutputChunk>;
}

/** The output role's log store: chunks in, reads out, and its spools closed when the process stops. */
export interface LogStore extends LogSink, LogReader {
  /**
   * Stops spooling: open spools are closed and removed with this store's spool directory. Steps
   * still running are moved from the database when they end (by this process or another).
   */
  close(): Promise<void>;
}

export interface LogStoreOptions {
  readonly store: Store;
  readonly blobs: BlobStore;
  readonly log: Logger;
  /** Output kept per attempt of a task (a job node); beyond it a marker is written and the rest dropped. */
  readonly limitBytes: number;
  /**
   * Where spool directories go: a directory of Gyre's own, e.g. `spoolDirOf(dataDir)`
   * (runtime/data-dir.ts), not the shared temporary directory. Made 0700; spools are 0600.
   * @default spoolRoot(), in the temporary directory
   */
  readonly spoolRoot?: string;
  /**
   * Where a running step's chunks are held until the step ends: `blobs`, each chunk's gzip members
   * (of 16 KiB or more; smaller ones stay in the database) written to the blob store and only its
   * index (sequence number, length) in `log_chunks`; or `database`, the members in `log_chunks.gzip`. Through the database a 450 KB chunk costs this
   * process and PostgreSQL about 12 ms (the parameter and TOAST), a file about 0.2 ms; a PUT to S3
   * or GCS is a network round trip on the path of every send, so those keep the database.
   * @default 'blobs' when the blob store is a local directory, else 'database'
   */
  readonly liveChunks?: 'blobs' | 'database';
  /**
   * Checks the chunks agents send before they are stored: `createChunkChecker` (worker threads)
   * in a server.
   * @default `checkChunk` on this thread and zlib's thread pool
   */
  readonly checker?: Pick<ChunkChecker, 'check'>;
}

export function truncationMarker(limitBytes: number): string {
  return `\n[gyre] Output truncated: this job reached its output limit of ${limitBytes} bytes (GYRE_JOB_OUTPUT_LIMIT_BYTES); later output was discarded.\n`;
}

/**
 * With `liveChunks: 'blobs'`, chunks compressed to less than this stay in the database: a small
 * parameter costs less than a file made, renamed and removed, and a quiet step (a line every 50
 * ms) would otherwise make a file for each.
 */
const HOLD_MIN_BYTES = 16 * 1024;
/** Chunks per query while moving or reading a step's output (chunks are up to 1 MiB before compression). */
const BATCH = 16;
/** Attempts whose output reached the cap, remembered so later chunks are not compressed for nothing. */
const CUT_OFF_MEMORY = 10_000;
/** A spool not written to for this long belongs to a step that will not finish here; it is dropped. */
const SPOOL_IDLE_MS = 15 * 60_000;
/**
 * Compressed bytes all spools of a process may hold (in the temporary directory, which may be
 * memory): a step that would go past it is moved from the database instead.
 */
const SPOOL_BUDGET_BYTES = 256 * 1024 * 1024;

/**
 * Log spools and archives being written live in a directory per log store under this one, named
 * `<pid>-<random>`: a process that dies mid-step leaves its directory behind, and the next log store
 * to start on the machine removes the directories of processes that are no longer running.
 */
export const spoolRoot = () => join(tmpdir(), 'gyre-log-spools');

/** Removes the spool directories of processes that have ended; returns how many. */
async function sweepSpools(root: string, own: string): Promise<number> {
  let removed = 0;
  for (const name of await readdir(root).catch(() => [] as string[])) {
    const pid = Number(name.split('-')[0]);
    if (name === own || !Number.isInteger(pid) || pid <= 0 || processExists(pid)) continue;
    await rm(join(root, name), { recursive: true, force: true });
    removed++;
  }
  return removed;
}

type ChunkRow = { seq: number; data: Uint8Array | null; gzip: Uint8Array | null; blob_key: string | null; raw_bytes: number | null };
const CHUNK_COLUMNS = 'seq, data, gzip, blob_key, raw_bytes';
/** The `gzip` of a row whose members are in the blob `blob_key` names (migration 680). */
const EMPTY = Buffer.alloc(0);
type ArchivedRow = { blob_key: string; seqs: number[]; ends: (string | number)[] };

/**
 * A step's archive written as its chunks are stored in this process: the stored gzip members in
 * order, with their sequence numbers and uncompressed ends. When the step ends and the database
 * holds exactly these chunks, the file is the archive and nothing is read back.
 */
interface Spool {
  readonly path: string;
  readonly file: Promise<FileHandle>;
  readonly seqs: number[];
  readonly ends: number[];
  /** Compressed bytes written. */
  size: number;
  /** The writes, in order; rejected if one failed. */
  writing: Promise<void>;
  touched: number;
}

/**
 * Stores a chunk in one statement under the lease (Fenced.statement's `$1` task id, `$3` attempt;
 * `$4` step, `$5` seq, `$6` gzip (empty when `$9` names the blob holding it), `$7` raw bytes, `$8`
 * the cap): unless this seq (or the whole step, moved) is already stored, it adds the chunk's
 * length to the attempt's counter while that stays within the cap, and inserts the chunk only when
 * the counter moved. The counter's upsert
 * sees every earlier append of the attempt (it waits for the row); `known` is read from the
 * statement's snapshot, so a retry racing its original fails on the chunk's key instead, and is
 * undone whole (UNIQUE_VIOLATION; appendChunk then looks again). Neither `known` nor `stored`: the
 * cap is reached or would be crossed, and nothing was written.
 */
const APPEND = `
  known AS (
    SELECT EXISTS (SELECT 1 FROM log_chunks WHERE task_id = $1 AND attempt = $3 AND step_index = $4 AND seq = $5)
        OR EXISTS (SELECT 1 FROM step_logs WHERE task_id = $1 AND attempt = $3 AND step_index = $4) AS known
      FROM lease
  ), counted AS (
    INSERT INTO task_output AS o (task_id, attempt, bytes)
    SELECT $1, $3, $7::bigint FROM known WHERE NOT known AND $7::bigint <= $8::bigint
    ON CONFLICT (task_id, attempt) DO UPDATE SET bytes = o.bytes + EXCLUDED.bytes
     WHERE NOT o.truncated AND o.bytes + EXCLUDED.bytes <= $8::bigint
    RETURNING bytes
  ), stored AS (
    INSERT INTO log_chunks (task_id, attempt, step_index, seq, gzip, raw_bytes, blob_key)
    SELECT $1, $3, $4, $5, $6::bytea, $7::int, $9::text FROM counted
    RETURNING seq
  )`;
const APPENDED = 'SELECT known, EXISTS (SELECT 1 FROM stored) AS stored FROM known';
/** PostgreSQL's SQLSTATE for a duplicate key. */
const UNIQUE_VIOLATION = '23505';

const KNOWN = `SELECT EXISTS (SELECT 1 FROM log_chunks WHERE task_id = $1 AND attempt = $2 AND step_index = $3 AND seq = $4)
                   OR EXISTS (SELECT 1 FROM step_logs WHERE task_id = $1 AND attempt = $2 AND step_index = $3) AS known`;

export function createLogStore({ store, blobs, log, limitBytes, spoolRoot: root = spoolRoot(), liveChunks = blobs.kind === 'local' ? 'blobs' : 'database', checker = { check: checkChunk } }: LogStoreOptions): LogStore {
  const marker = Buffer.from(truncationMarker(limitBytes));
  const cutOff = new Set<string>();
  const spools = new Map<string, Spool>();
  let spooledBytes = 0;
  const spoolDirName = `${process.pid}-${randomUUID().slice(0, 8)}`;
  const spoolDir = join(root, spoolDirName);
  let spoolDirMade: Promise<void> | undefined;
  /** A new file in this store's spool directory, which is made (and ended processes' leftovers swept) on first use. */
  function spoolPath(): string {
    return join(spoolDir, `gyre-log-${randomUUID()}.gz`);
  }
  function spoolDirReady(): Promise<void> {
    spoolDirMade ??= (async () => {
      await mkdir(spoolDir, { recursive: true, mode: 0o700 });
      const removed = await sweepSpools(root, spoolDirName).catch(() => 0);
      if (removed > 0) log.info('removed log spools left by processes that ended', { directories: removed });
    })();
    // A failure is seen by the caller; the next use tries again.
    spoolDirMade.catch(() => (spoolDirMade = undefined));
    return spoolDirMade;
  }

  /** The gzip members of a compressed chunk's row, from the blob holding them or the row. */
  async function membersOf(row: ChunkRow): Promise<Buffer> {
    if (row.blob_key) return Buffer.concat(await (await blobs.get(row.blob_key)).toArray());
    return asBuffer(row.gzip!);
  }

  /**
   * Writes a chunk's members to a blob of their own before its row is written (a reader that sees
   * the row finds the blob); undefined, and the chunk goes to the database, when the blob store
   * refuses it. The name is new every time: a retry racing its original never replaces the blob
   * the original's row names.
   */
  async function holdChunk(taskId: string, attempt: number, step: number, seq: number, members: Buffer): Promise<string | undefined> {
    const key = blobKey('logs', taskId, attempt, 'live', `${step}-${seq}-${randomUUID()}.gz`);
    try {
      await blobs.put(key, members);
      return key;
    } catch (error) {
      log.warn('holding an output chunk in the blob store failed; it is kept in the database', { taskId, step, seq, error: (error as Error).message });
      return undefined;
    }
  }

  /** Removes blobs no row names (any more); a failure leaves files behind, never a row without its blob. */
  async function dropHeld(keys: readonly (string | null | undefined)[]): Promise<void> {
    const held = keys.filter((key): key is string => !!key);
    if (held.length === 0) return;
    await blobs.delete(held).catch((error: unknown) => log.warn('removing held output chunks failed', { blobs: held.length, error: (error as Error).message }));
  }

  /** The chunk that reaches the cap is cut and ends with the marker; after it nothing is kept. */
  async function appendAtCap(tx: Queryable, taskId: string, attempt: number, step: number, seq: number, rawOf: () => Promise<Buffer>) {
    const [counter] = await tx.query<{ bytes: string | number; truncated: boolean }>(
      `INSERT INTO task_output (task_id, attempt) VALUES ($1, $2)
       ON CONFLICT (task_id, attempt) DO UPDATE SET bytes = task_output.bytes RETURNING bytes, truncated`,
      [taskId, attempt],
    );
    if (counter.truncated) return { capped: true };
    const used = Number(counter.bytes);
    const raw = await rawOf();
    const capped = used + raw.length > limitBytes;
    const body = capped ? Buffer.concat([raw.subarray(0, Math.max(0, limitBytes - used)), marker]) : raw;
    const { gzip: member } = await compressChunk(body);
    await tx.query('INSERT INTO log_chunks (task_id, attempt, step_index, seq, gzip, raw_bytes) VALUES ($1, $2, $3, $4, $5, $6)', [
      taskId,
      attempt,
      step,
      seq,
      member,
      body.length,
    ]);
    await tx.query('UPDATE task_output SET bytes = bytes + $3, truncated = $4 WHERE task_id = $1 AND attempt = $2', [taskId, attempt, body.length, capped]);
    return { capped, stored: { member, bytes: body.length } };
  }

  /** Adds a just-stored chunk to its step's spool (started by the step's first chunk). */
  function spool(key: string, seq: number, member: Buffer, bytes: number): void {
    const now = Date.now();
    let s = spools.get(key);
    if (!s) {
      if (seq !== 0) return;
      for (const [other, idle] of spools) if (now - idle.touched > SPOOL_IDLE_MS) dropSpool(other);
      const path = spoolPath();
      const file = spoolDirReady().then(() => open(path, 'w', 0o600));
      s = { path, file, seqs: [], ends: [], size: 0, writing: file.then(() => undefined), touched: now };
      spools.set(key, s);
    }
    const spooled = s;
    // Chunks of one step arrive one at a time, in order; anything else (or a spool past the budget)
    // and the move reads the database.
    const last = spooled.seqs[spooled.seqs.length - 1];
    if ((last !== undefined && seq <= last) || spooledBytes + member.length > SPOOL_BUDGET_BYTES) {
      dropSpool(key);
      return;
    }
    spooled.touched = now;
    spooled.size += member.length;
    spooledBytes += member.length;
    spooled.seqs.push(seq);
    spooled.ends.push((spooled.ends[spooled.ends.length - 1] ?? 0) + bytes);
    spooled.writing = spooled.writing.then(async () => {
      await (await spooled.file).write(member);
    });
    // A failed write is seen when the step ends; until then it is handled here.
    spooled.writing.catch(() => undefined);
  }

  /** Takes a spool out of use; its file is closed, and removed unless `keep`. */
  async function closeSpool(key: string, keep: boolean): Promise<Spool | undefined> {
    const s = spools.get(key);
    if (!s) return undefined;
    spools.delete(key);
    spooledBytes -= s.size;
    const written = await s.writing.then(
      () => true,
      () => false,
    );
    await s.file.then((file) => file.close()).catch(() => undefined);
    if (keep && written) return s;
    await rm(s.path, { force: true });
    return undefined;
  }

  function dropSpool(key: string): void {
    void closeSpool(key, false);
  }

  /**
   * A finished step's spool, closed, if it holds exactly the chunks the database holds (`stored`
   * when the caller read them already).
   */
  async function completeSpool(key: string, taskId: string, attempt: number, step: number, stored?: StoredChunks): Promise<Spool | undefined> {
    const s = await closeSpool(key, true);
    if (!s) return undefined;
    const index = stored ?? (await storedChunks(taskId, attempt, step));
    let same = index.seqs.length === s.seqs.length;
    for (let i = 0, end = 0; same && i < index.seqs.length; i++) {
      end += Number(index.bytes[i]);
      same = Number(index.seqs[i]) === s.seqs[i] && end === s.ends[i];
    }
    if (same) return s;
    await rm(s.path, { force: true });
    return undefined;
  }

  async function storedChunks(taskId: string, attempt: number, step: number): Promise<StoredChunks> {
    const rows = await store.query<{ seq: number; bytes: number }>(
      'SELECT seq, coalesce(raw_bytes, length(data)) AS bytes FROM log_chunks WHERE task_id = $1 AND attempt = $2 AND step_index = $3 ORDER BY seq',
      [taskId, attempt, step],
    );
    return { seqs: rows.map((row) => row.seq), bytes: rows.map((row) => row.bytes) };
  }

  /**
   * Writes a step's chunks from the database to a file of the spool directory as gzip members;
   * returns its path and the index. A step that wrote nothing (many do) has no chunks: no file is
   * made for it, and no path is given.
   */
  async function archiveFromDatabase(taskId: string, attempt: number, step: number): Promise<{ path?: string; seqs: number[]; ends: number[] }> {
    const path = spoolPath();
    const seqs: number[] = [];
    const ends: number[] = [];
    let total = 0;
    let file: FileHandle | undefined;
    try {
      for (let after = -1; ; ) {
        const rows = await store.query<ChunkRow>(
          `SELECT ${CHUNK_COLUMNS} FROM log_chunks WHERE task_id = $1 AND attempt = $2 AND step_index = $3 AND seq > $4 ORDER BY seq LIMIT $5`,
          [taskId, attempt, step, after, BATCH],
        );
        for (const row of rows) {
          // A chunk stored before compression came in is compressed now.
          const member = row.data ? (await compressChunk(row.data)).gzip : await membersOf(row);
          total += row.data ? row.data.byteLength : row.raw_bytes!;
          seqs.push(row.seq);
          ends.push(total);
          if (!file) {
            await spoolDirReady();
            file = await open(path, 'w', 0o600);
          }
          await file.write(member);
        }
        if (rows.length < BATCH) break;
        after = rows[rows.length - 1].seq;
      }
    } catch (error) {
      // Nothing half written is left in the spool directory.
      if (file) await file.close().finally(() => rm(path, { force: true }));
      file = undefined;
      throw error;
    } finally {
      await file?.close();
    }
    return file ? { path, seqs, ends } : { seqs, ends };
  }

  async function archivedRow(taskId: string, attempt: number, step: number): Promise<ArchivedRow | undefined> {
    const [row] = await store.query<ArchivedRow>('SELECT blob_key, seqs, ends FROM step_logs WHERE task_id = $1 AND attempt = $2 AND step_index = $3', [
      taskId,
      attempt,
      step,
    ]);
    return row;
  }

  /** The archived output after `afterSeq`, cut back into the chunks it was stored as (`ends` says where). */
  async function* readArchived(row: ArchivedRow, afterSeq: number): AsyncGenerator<OutputChunk> {
    const ends = row.ends.map(Number);
    let i = row.seqs.findIndex((seq) => seq > afterSeq);
    if (i === -1) return;
    const start = i === 0 ? 0 : ends[i - 1];
    let offset = 0;
    let parts: Buffer[] = [];
    const gunzipped = (await blobs.get(row.blob_key)).pipe(createGunzip({ chunkSize: 256 * 1024 }));
    try {
      for await (const piece of gunzipped) {
        let rest = piece as Buffer;
        if (offset + rest.length <= start) {
          offset += rest.length;
          continue;
        }
        if (offset < start) {
          rest = rest.subarray(start - offset);
          offset = start;
        }
        while (i < ends.length) {
          const take = Math.min(ends[i] - offset, rest.length);
          if (take > 0) parts.push(rest.subarray(0, take));
          offset += take;
          rest = rest.subarray(take);
          if (offset < ends[i]) break;
          yield { seq: row.seqs[i], data: parts.length === 1 ? parts[0] : Buffer.concat(parts) };
          parts = [];
          i++;
        }
        if (i === ends.length) return;
      }
    } finally {
      gunzipped.destroy();
    }
    // Chunks of no bytes at the very end (none are stored today) have nothing to wait for.
    for (; i < ends.length && ends[i] <= offset; i++) yield { seq: row.seqs[i], data: Buffer.alloc(0) };
    if (i < ends.length) throw new Error(`archived output ${row.blob_key} ends at byte ${offset}, before its index says (${ends[ends.length - 1]})`);
  }

  return {
    async appendChunk(fenced, taskId, attempt, step, seq, data) {
      const attemptKey = `${taskId}/${attempt}`;
      // Compressed (or, as the agent sent it, checked) before the lease is taken: the task row
      // (and, on PGlite, the one connection) is held for the write only. Past the cap nothing is
      // kept, so nothing is compressed.
      const cut = cutOff.has(attemptKey);
      let raw: Buffer | undefined;
      let chunk: CompressedChunk | undefined;
      if (isCompressed(data)) {
        if (!cut) await checker.check(data);
        chunk = data;
      } else {
        raw = asBuffer(data);
        chunk = cut ? undefined : await compressChunk(raw);
      }
      const rawOf = async () => (raw ??= await checkedChunk(chunk!));
      const result = await (async (): Promise<{ capped: boolean; stored?: { member: Buffer; bytes: number } }> => {
        // Within the cap (all but the last chunk of the loudest steps): one statement.
        if (!cut && chunk) {
          const held = liveChunks === 'blobs' && chunk.gzip.length >= HOLD_MIN_BYTES ? await holdChunk(taskId, attempt, step, seq, chunk.gzip) : undefined;
          const row = await fenced
            .statement<{ known: boolean; stored: boolean }>(APPEND, [step, seq, held ? EMPTY : chunk.gzip, chunk.rawBytes, limitBytes, held ?? null], APPENDED, 'stored')
            .then(
              ([appended]) => appended,
              async (error: unknown) => {
                // A retry racing its original: `known` was read before the original committed, so its
                // insert met the original's row and the whole statement (its count too) was undone.
                // The transaction below looks again, after the lease's lock.
                if ((error as { code?: string }).code === UNIQUE_VIOLATION) return { known: false, stored: false };
                await dropHeld([held]);
                throw error;
              },
            );
          if (row.stored) return { capped: false, stored: { member: chunk.gzip, bytes: chunk.rawBytes } };
          // Known already, at the cap, or racing: no row names the blob.
          await dropHeld([held]);
          if (row.known) return { capped: false };
        }
        return fenced.transaction(async (tx) => {
          if ((await tx.query<{ known: boolean }>(KNOWN, [taskId, attempt, step, seq]))[0].known) return { capped: false };
          return appendAtCap(tx, taskId, attempt, step, seq, rawOf);
        });
      })();
      if (result.stored) spool(`${attemptKey}/${step}`, seq, result.stored.member, result.stored.bytes);
      if (result.capped) {
        if (cutOff.size >= CUT_OFF_MEMORY) cutOff.clear();
        cutOff.add(attemptKey);
      }
    },

    async stepFinished(taskId, attempt, step, stored) {
      let temp: string | undefined;
      let held: (string | null)[] = [];
      try {
        // The stored gzip members, one after another, are the archive: nothing is recompressed,
        // and when this process stored every chunk, nothing is read back either.
        const spooled = await completeSpool(`${taskId}/${attempt}/${step}`, taskId, attempt, step, stored);
        // The step wrote nothing: there is nothing to move, and nothing to read to find that out.
        if (!spooled && stored?.seqs.length === 0) return;
        const { path, seqs, ends } = spooled ?? (await archiveFromDatabase(taskId, attempt, step));
        temp = path;
        if (!temp || seqs.length === 0) return;
        const key = blobKey('logs', taskId, attempt, `${step}.gz`);
        await blobs.put(key, { file: temp });
        // One transaction: a reader sees the chunks or the archived copy, never neither.
        await store.transaction(async (tx) => {
          await tx.query(
            `INSERT INTO step_logs (task_id, attempt, step_index, blob_key, bytes, seqs, ends) VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (task_id, attempt, step_index) DO NOTHING`,
            [taskId, attempt, step, key, ends[ends.length - 1], seqs, ends],
          );
          const moved = await tx.query<{ blob_key: string | null }>(
            'DELETE FROM log_chunks WHERE task_id = $1 AND attempt = $2 AND step_index = $3 AND seq <= $4 RETURNING blob_key',
            [taskId, attempt, step, seqs[seqs.length - 1]],
          );
          held = moved.map((row) => row.blob_key);
        });
        // Committed: the archive is the output now, and no row names the chunks' blobs.
        await dropHeld(held);
      } catch (error) {
        // The chunks stay in the database and remain readable; nothing is lost.
        log.warn('moving step output to the blob store failed', { taskId, step, error: (error as Error).message });
      } finally {
        if (temp) await rm(temp, { force: true });
      }
    },

    async close() {
      await Promise.all([...spools.keys()].map((key) => closeSpool(key, false)));
      if (spoolDirMade) await rm(spoolDir, { recursive: true, force: true });
    },

    async *read(taskId, attempt, step, afterSeq = -1) {
      // The archive first: once it exists it is the whole output (a chunk stored late, by a
      // duplicate racing the move, is never read).
      let archived = await archivedRow(taskId, attempt, step);
      let after = afterSeq;
      reading: while (!archived) {
        const rows = await store.query<ChunkRow>(
          `SELECT ${CHUNK_COLUMNS} FROM log_chunks WHERE task_id = $1 AND attempt = $2 AND step_index = $3 AND seq > $4 ORDER BY seq LIMIT $5`,
          [taskId, attempt, step, after, BATCH],
        );
        for (const row of rows) {
          let data: Uint8Array;
          try {
            data = row.data ?? (await decompressChunk({ gzip: await membersOf(row), rawBytes: row.raw_bytes! }));
          } catch (error) {
            // The step was moved since the rows were read, and its chunks' blobs removed: the
            // archive holds this chunk and the rest.
            if (!(error instanceof NotFoundError) || !(archived = await archivedRow(taskId, attempt, step))) throw error;
            break reading;
          }
          yield { seq: row.seq, data };
          after = row.seq;
        }
        if (rows.length === BATCH) continue;
        if (rows.length > 0) return;
        // Nothing (more) in the database: the output may have been moved meanwhile. The move
        // records the archive and deletes the chunks in one transaction.
        archived = await archivedRow(taskId, attempt, step);
        if (!archived) return;
      }
      yield* readArchived(archived, after);
    },
  };
}
