import { randomUUID } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { createGzip, createGunzip, constants as zlib } from 'node:zlib';
import { blobKey, type BlobStore } from '../blob/blob-store';
import type { Logger } from '../logger';
import type { Queryable, Store } from '../store/store';

/** Where the dispatcher hands output to: chunks while a step runs, the move when it ends. */
export interface LogSink {
  /** Stores one chunk inside the caller's (lease-holding) transaction; the same seq twice is stored once. */
  appendChunk(tx: Queryable, taskId: string, attempt: number, step: number, seq: number, data: Uint8Array): Promise<void>;
  /** Moves a finished step's output, compressed, to the blob store and drops its chunks. */
  stepFinished(taskId: string, attempt: number, step: number): Promise<void>;
}

export interface LogReader {
  /** A step's output after chunk `afterSeq`, from the database or the blob store, byte-identical either way. */
  read(taskId: string, attempt: number, step: number, afterSeq?: number): Promise<{ seq: number; data: Uint8Array }[]>;
}

export interface LogStoreOptions {
  readonly store: Store;
  readonly blobs: BlobStore;
  readonly log: Logger;
  /** Output kept per attempt of a task (a job node); beyond it a marker is written and the rest dropped. */
  readonly limitBytes: number;
}

export function truncationMarker(limitBytes: number): string {
  return `\n[gyre] Output truncated: this job reached its output limit of ${limitBytes} bytes (GYRE_JOB_OUTPUT_LIMIT_BYTES); later output was discarded.\n`;
}

/** Chunks read from the database per query while moving a step's output. */
const MOVE_BATCH = 64;

export function createLogStore({ store, blobs, log, limitBytes }: LogStoreOptions): LogSink & LogReader {
  const marker = Buffer.from(truncationMarker(limitBytes));

  async function archivedRow(taskId: string, attempt: number, step: number) {
    const [row] = await store.query<{ blob_key: string; seqs: number[]; ends: string[] }>(
      'SELECT blob_key, seqs, ends FROM step_logs WHERE task_id = $1 AND attempt = $2 AND step_index = $3',
      [taskId, attempt, step],
    );
    return row;
  }

  async function readArchived(row: { blob_key: string; seqs: number[]; ends: string[] }, afterSeq: number) {
    const ends = row.ends.map(Number);
    const last = row.seqs.length - 1;
    if (last < 0 || row.seqs[last] <= afterSeq) return [];
    let start = 0;
    for (let i = 0; i < row.seqs.length && row.seqs[i] <= afterSeq; i++) start = ends[i];
    const parts: Buffer[] = [];
    let offset = 0;
    const gunzip = (await blobs.get(row.blob_key)).pipe(createGunzip());
    for await (const chunk of gunzip) {
      const b = chunk as Buffer;
      if (offset + b.length > start) parts.push(offset >= start ? b : b.subarray(start - offset));
      offset += b.length;
    }
    return [{ seq: row.seqs[last], data: Buffer.concat(parts) as Uint8Array }];
  }

  return {
    async appendChunk(tx, taskId, attempt, step, seq, data) {
      const seen = await tx.query('SELECT 1 FROM log_chunks WHERE task_id = $1 AND attempt = $2 AND step_index = $3 AND seq = $4', [taskId, attempt, step, seq]);
      if (seen.length) return;
      const [counter] = await tx.query<{ bytes: string; truncated: boolean }>(
        `INSERT INTO task_output (task_id, attempt) VALUES ($1, $2)
         ON CONFLICT (task_id, attempt) DO UPDATE SET bytes = task_output.bytes RETURNING bytes, truncated`,
        [taskId, attempt],
      );
      if (counter.truncated) return;
      const used = Number(counter.bytes);
      let body = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
      let truncated = false;
      if (used + body.length > limitBytes) {
        body = Buffer.concat([body.subarray(0, Math.max(0, limitBytes - used)), marker]);
        truncated = true;
      }
      await tx.query('INSERT INTO log_chunks (task_id, attempt, step_index, seq, data) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING', [taskId, attempt, step, seq, body]);
      await tx.query('UPDATE task_output SET bytes = bytes + $3, truncated = $4 WHERE task_id = $1 AND attempt = $2', [taskId, attempt, body.length, truncated]);
    },

    async stepFinished(taskId, attempt, step) {
      const temp = join(tmpdir(), `gyre-log-${randomUUID()}.gz`);
      try {
        const seqs: number[] = [];
        const ends: number[] = [];
        let total = 0;
        const gzip = createGzip({ level: zlib.Z_BEST_SPEED });
        const done = once(gzip.pipe(createWriteStream(temp)), 'close');
        for (let after = -1; ; ) {
          const rows = await store.query<{ seq: number; data: Uint8Array }>(
            'SELECT seq, data FROM log_chunks WHERE task_id = $1 AND attempt = $2 AND step_index = $3 AND seq > $4 ORDER BY seq LIMIT $5',
            [taskId, attempt, step, after, MOVE_BATCH],
          );
          for (const row of rows) {
            total += row.data.byteLength;
            seqs.push(row.seq);
            ends.push(total);
            if (!gzip.write(row.data)) await once(gzip, 'drain');
          }
          if (rows.length < MOVE_BATCH) break;
          after = rows[rows.length - 1].seq;
        }
        gzip.end();
        await done;
        if (seqs.length === 0) return;
        const key = blobKey('logs', taskId, attempt, `${step}.gz`);
        await blobs.put(key, { file: temp });
        // One transaction: a reader sees the chunks or the archived copy, never neither.
        await store.transaction(async (tx) => {
          await tx.query(
            `INSERT INTO step_logs (task_id, attempt, step_index, blob_key, bytes, seqs, ends) VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (task_id, attempt, step_index) DO NOTHING`,
            [taskId, attempt, step, key, total, seqs, ends],
          );
          await tx.query('DELETE FROM log_chunks WHERE task_id = $1 AND attempt = $2 AND step_index = $3 AND seq <= $4', [taskId, attempt, step, seqs[seqs.length - 1]]);
        });
      } catch (error) {
        // The chunks stay in the database and remain readable; nothing is lost.
        log.warn('moving step output to the blob store failed', { taskId, step, error: (error as Error).message });
      } finally {
        await rm(temp, { force: true });
      }
    },

    async read(taskId, attempt, step, afterSeq = -1) {
      let row = await archivedRow(taskId, attempt, step);
      if (row) return readArchived(row, afterSeq);
      const chunks = await store.query<{ seq: number; data: Uint8Array }>(
        'SELECT seq, data FROM log_chunks WHERE task_id = $1 AND attempt = $2 AND step_index = $3 AND seq > $4 ORDER BY seq',
        [taskId, attempt, step, afterSeq],
      );
      if (chunks.length) return chunks;
      // The move may have committed between the two queries.
      row = await archivedRow(taskId, attempt, step);
      return row ? readArchived(row, afterSeq) : chunks;
    },
  };
}

