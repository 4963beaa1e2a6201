import { availableParallelism } from 'node:os';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import type { Logger } from '../logger';
import { checkChunk, checkInflatedBytes, checkRawBytes, INLINE_BYTES, madeByThisProcess, unreadableChunk, type CompressedChunk } from './log-chunk';

/**
 * Checks the output chunks agents send, as `checkChunk` does (gzip that holds exactly the bytes it
 * claims), in worker threads.
 *
 * Why not zlib's thread pool on its own: inflating a chunk of almost 4 MiB makes a buffer as large,
 * and a buffer made by the thread that serves requests counts against V8's limit for that thread's
 * heap until a full collection of the whole heap, the server's modules, caches and requests
 * included. A loud remote step made `gyre server` run one every few chunks: with the checks in
 * its own thread, a fifth of its main thread's CPU was collecting garbage (docs/speed.md, the
 * thirtieth sitting). A worker's buffers are garbage of its own heap, a few MiB to collect, and the
 * server's heap sees only the answer.
 *
 * Small chunks are checked on the calling thread (well under a millisecond). A chunk that finds no
 * worker free waits for one, and one more is started for it while fewer than `workers` run (a
 * start takes some 30-50 ms, after `idleMs` without a chunk, when an idle worker ends). A worker
 * that stops with a chunk has that chunk checked on this thread as before (zlib's thread pool), so
 * no check fails because of a worker; when workers cannot start at all, every check is made so
 * (said once in the log).
 */
export interface ChunkChecker {
  /** Resolves once `chunk` is known good; rejects with an InputError naming what is wrong with it. */
  check(chunk: CompressedChunk): Promise<void>;
  /** Ends the workers (checks under way finish on this thread). */
  close(): Promise<void>;
}

export interface ChunkCheckerOptions {
  readonly log: Logger;
  /** Worker threads at most, started when chunks find none free. @default one per core, up to 4 */
  readonly workers?: number;
  /** How long a worker waits for another chunk before it ends. @default 30_000 */
  readonly idleMs?: number;
  /**
   * The workers' script. @default chunk-check-worker.js beside this file. A script that cannot
   * start (an install missing the file, a thread the host refuses) leaves every check to this
   * thread; tests name one to see that no check is lost then.
   */
  readonly workerScript?: string;
}

/** Plain JavaScript (it needs only zlib), so a worker starts without the TypeScript loader. */
const WORKER = path.join(__dirname, 'chunk-check-worker.js');

type FromWorker = { ready: true } | { id: number; bytes: number } | { id: number; code?: string; message: string };

interface Job {
  readonly id: number;
  readonly chunk: CompressedChunk;
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
}

interface Slot {
  readonly worker: Worker;
  ready: boolean;
  job?: Job;
  idleTimer?: NodeJS.Timeout;
  error?: Error;
}

export function createChunkChecker({ log, workers = Math.max(1, Math.min(4, availableParallelism())), idleMs = 30_000, workerScript = WORKER }: ChunkCheckerOptions): ChunkChecker {
  if (!Number.isInteger(workers) || workers < 1) throw new RangeError(`workers (${workers}) must be a whole number of at least 1`);
  const slots = new Set<Slot>();
  const waiting: Job[] = [];
  let nextId = 0;
  let closed = false;
  /** A worker could not start: every check is made on this thread from then on. */
  let unavailable = false;

  const here = (job: Job) => void checkChunk(job.chunk).then(job.resolve, job.reject);

  function spawn(): void {
    let worker: Worker;
    try {
      // Its heap holds one chunk's bytes at a time, outside the old generation.
      worker = new Worker(workerScript, { resourceLimits: { maxOldGenerationSizeMb: 16, maxYoungGenerationSizeMb: 4 } });
    } catch (error) {
      giveUp(error as Error);
      return;
    }
    // Never what keeps the process alive: a check waiting for it is a request's, or nothing's.
    worker.unref();
    const slot: Slot = { worker, ready: false };
    slots.add(slot);
    worker.on('message', (message: FromWorker) => onMessage(slot, message));
    worker.on('error', (error) => (slot.error = error));
    worker.on('exit', () => onExit(slot));
  }

  function giveUp(error: Error | undefined): void {
    if (unavailable) return;
    unavailable = true;
    log.warn("output chunks from agents are checked on the server's main thread from now on: a worker thread for the checks could not start", { error: error?.message ?? 'it stopped before it was ready' });
    for (const job of waiting.splice(0)) here(job);
  }

  function give(slot: Slot, job: Job): void {
    clearTimeout(slot.idleTimer);
    slot.job = job;
    // A chunk read into shared memory (the agent routes read them so) is not copied on its way.
    slot.worker.postMessage({ id: job.id, gzip: job.chunk.gzip, rawBytes: job.chunk.rawBytes });
  }

  /** The next waiting chunk, or the idle timer. */
  function free(slot: Slot): void {
    const next = waiting.shift();
    if (next) return give(slot, next);
    slot.idleTimer = setTimeout(() => {
      slots.delete(slot);
      void slot.worker.terminate();
    }, idleMs);
    slot.idleTimer.unref();
  }

  function onMessage(slot: Slot, message: FromWorker): void {
    if ('ready' in message) {
      slot.ready = true;
      return free(slot);
    }
    const job = slot.job;
    if (!job || message.id !== job.id) return;
    slot.job = undefined;
    if ('bytes' in message) {
      try {
        checkInflatedBytes(message.bytes, job.chunk.rawBytes);
        job.resolve();
      } catch (error) {
        job.reject(error);
      }
    } else job.reject(unreadableChunk(message, job.chunk.rawBytes));
    free(slot);
  }

  function onExit(slot: Slot): void {
    slots.delete(slot);
    clearTimeout(slot.idleTimer);
    if (slot.job) here(slot.job);
    if (!slot.ready && !closed) giveUp(slot.error);
    // No worker left to take them (closing, or the last one stopped): they are checked here.
    if (slots.size === 0) for (const job of waiting.splice(0)) here(job);
  }

  return {
    async check(chunk) {
      checkRawBytes(chunk.rawBytes);
      if (madeByThisProcess(chunk)) return;
      if (closed || unavailable || chunk.rawBytes < INLINE_BYTES) return checkChunk(chunk);
      return new Promise<void>((resolve, reject) => {
        const job: Job = { id: nextId++, chunk, resolve, reject };
        const idle = [...slots].find((s) => s.ready && !s.job);
        if (idle) return give(idle, job);
        waiting.push(job);
        // One more worker for it, unless those starting are enough for what waits.
        const starting = [...slots].filter((s) => !s.ready).length;
        if (slots.size < workers && starting < waiting.length) spawn();
      });
    },
    async close() {
      closed = true;
      await Promise.all([...slots].map((slot) => slot.worker.terminate()));
    },
  };
}
