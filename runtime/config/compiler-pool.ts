import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import { UnavailableError } from '../domain/errors';
import type { Logger } from '../logger';
import { budgetMessage, DEFAULT_COMPILE_BUDGETS, type CompileBudgets } from './compile/budget';
import type { OrbSource } from './orb-source';
import type { CompileResult, TriggerContext } from './plan';

/**
 * Config compilation off the event loop: a small pool of worker threads, each with a capped heap
 * (`resourceLimits`) and a wall-clock timeout after which it is terminated and replaced. However
 * hostile a config, the thread that serves requests and renews leases only passes messages.
 *
 * Orb lookups stay on this thread (the OrbSource reads the database): a worker asks by message
 * and waits for the answer. A compilation that crosses a budget, or a worker that runs out of
 * memory, times out or crashes, gives a compile error naming the budget: that is the config's
 * doing. When the compiler itself is unavailable (the pool is closing, or too much is waiting)
 * `compile` rejects with CompilerUnavailableError instead, which says nothing about the config:
 * the conductor leaves the pipeline pending for its sweep to retry, an API route answers 503.
 */

/** The compiler cannot take this compilation now (shutting down, or busy); try again later. */
export class CompilerUnavailableError extends UnavailableError {}

export interface CompilerLimits extends CompileBudgets {
  /** A worker's heap (V8 old generation) in MiB; a worker that needs more is stopped. Setting: GYRE_COMPILE_MEMORY_MB. */
  readonly memoryMb: number;
}

export const DEFAULT_COMPILER_LIMITS: CompilerLimits = { ...DEFAULT_COMPILE_BUDGETS, memoryMb: 256 };

export interface CompilerPoolOptions {
  /** Where orbs are found (Gyre's orb registry). Without it, a config that imports an orb is refused naming it. */
  readonly orbs?: OrbSource;
  /** @default DEFAULT_COMPILER_LIMITS (each field separately) */
  readonly limits?: Partial<CompilerLimits>;
  /** Worker threads at most; they start when first needed. Setting: GYRE_COMPILE_WORKERS. @default 2 */
  readonly workers?: number;
  readonly log: Logger;
  /**
   * How long past `timeoutMs` a worker that has not stopped itself is terminated. The compiler
   * checks its own deadline, so this only matters for work between its checks (parsing, rendering).
   * @default 1000
   */
  readonly graceMs?: number;
  /**
   * Config text waiting for a worker, at most, in characters; a compilation asked for beyond it is
   * refused at once with CompilerUnavailableError (busy). Bounds the memory a flood of large
   * configs can hold while they wait.
   * @default 256 MiB
   */
  readonly maxWaitingChars?: number;
  /**
   * How long a compilation waits for a busy worker before another is started for it (see dispatch).
   * @default 50
   */
  readonly spareAfterMs?: number;
}

export interface CompilerPool {
  /**
   * Compiles in a worker thread. Whatever the config does, resolves (to a compile error when it
   * crosses a budget or kills its worker); rejects only with CompilerUnavailableError.
   */
  compile(source: string, options: { readonly trigger: TriggerContext }): Promise<CompileResult>;
  /**
   * Starts a worker now when none is running or starting, so the first compilation does not wait
   * for one (a thread loading the compiler: 200-300 ms on a small machine, and 15-20 MiB). A worker
   * that cannot start is said in the log, as on a compilation's way.
   */
  warm(): void;
  /** Stops the workers; compilations still waiting or running reject with CompilerUnavailableError. */
  close(): Promise<void>;
}

/** Messages to a worker. */
export type ToWorker =
  | { type: 'compile'; id: number; source: string; trigger: TriggerContext; budgets: CompileBudgets; orbs: boolean }
  | { type: 'orb'; id: number; found?: { version: string; source: string }; error?: string };

/** Messages from a worker. */
export type FromWorker =
  | { type: 'ready' }
  | { type: 'orb'; id: number; name: string; versionRef: string }
  | { type: 'result'; id: number; result: CompileResult }
  | { type: 'failed'; id: number; message: string };

/** A plain-JS entry that registers the TypeScript loader in the thread, then loads compiler-worker.ts. */
const WORKER_ENTRY = path.join(__dirname, 'compiler-worker-entry.js');

interface Job {
  readonly id: number;
  readonly source: string;
  readonly trigger: TriggerContext;
  /** performance.now() when it was asked for. */
  readonly queuedAt: number;
  readonly resolve: (result: CompileResult) => void;
  readonly reject: (error: CompilerUnavailableError) => void;
}

interface Slot {
  readonly worker: Worker;
  /** The worker's thread id (a stopped worker reports -1). */
  readonly threadId: number;
  ready: boolean;
  job?: Job;
  timer?: NodeJS.Timeout;
  /** Why this pool stopped the worker, when it did. */
  stoppedFor?: 'time' | 'close';
  error?: Error & { code?: string };
}

const failure = (message: string): CompileResult => ({ ok: false, problems: [{ message }] });
const SHUTTING_DOWN = 'the config compiler has been stopped (Gyre is shutting down); try again once it is back';

export function createCompilerPool({ orbs, limits: given = {}, workers = 2, log, graceMs = 1000, maxWaitingChars = 256 * 1024 * 1024, spareAfterMs = 50 }: CompilerPoolOptions): CompilerPool {
  const limits: CompilerLimits = { ...DEFAULT_COMPILER_LIMITS, ...given };
  if (!Number.isInteger(workers) || workers < 1) throw new RangeError(`workers (${workers}) must be a whole number of at least 1`);
  const budgets: CompileBudgets = { maxBytes: limits.maxBytes, maxNodes: limits.maxNodes, timeoutMs: limits.timeoutMs };
  const slots = new Set<Slot>();
  const queue: Job[] = [];
  let nextJob = 1;
  let closed = false;
  /** Set while jobs wait for a worker and a further one may be started for them (dispatch). */
  let spareTimer: NodeJS.Timeout | undefined;
  const waitingChars = () => queue.reduce((n, job) => n + job.source.length, 0);

  function spawn(): boolean {
    let worker: Worker;
    try {
      worker = new Worker(WORKER_ENTRY, { resourceLimits: { maxOldGenerationSizeMb: limits.memoryMb } });
    } catch (error) {
      // Called from event handlers too: nothing may throw out of here.
      const reason = `the config compiler could not start: ${(error as Error)?.message ?? String(error)}`;
      log.error('config compiler worker could not start', { error: reason });
      for (const waiting of queue.splice(0)) waiting.reject(new CompilerUnavailableError(reason));
      return false;
    }
    const slot: Slot = { worker, threadId: worker.threadId, ready: false };
    slots.add(slot);
    log.info('config compiler worker starting', { threadId: slot.threadId, workers: slots.size });
    worker.unref(); // an idle worker does not keep the process alive; a busy one is ref'd in start()
    worker.on('message', (message: FromWorker) => onMessage(slot, message));
    worker.on('error', (error) => (slot.error = error));
    worker.on('exit', (code) => onExit(slot, code));
    return true;
  }

  function start(slot: Slot, job: Job): void {
    slot.job = job;
    slot.worker.ref();
    slot.timer = setTimeout(() => {
      slot.stoppedFor = 'time';
      void slot.worker.terminate();
    }, limits.timeoutMs + graceMs);
    slot.timer.unref();
    try {
      slot.worker.postMessage({ type: 'compile', id: job.id, source: job.source, trigger: job.trigger, budgets, orbs: orbs !== undefined } satisfies ToWorker);
    } catch (error) {
      // A trigger that cannot be copied to the thread (called from event handlers: nothing may throw out of here).
      finish(slot, failure(`the config compiler could not be given this compilation: ${(error as Error)?.message ?? String(error)}`));
      queueMicrotask(dispatch);
    }
  }

  /**
   * Gives waiting jobs to idle workers. The first worker starts at once; more (up to the pool size)
   * only for jobs still waiting `spareAfterMs` later: a worker compiles an ordinary config in a
   * few milliseconds, so a burst of pipelines is served by the worker there is, where a new one would
   * take a few hundred milliseconds of the machine to start. A config that holds its worker (the
   * budgets allow seconds) gets the others a worker of their own that soon.
   */
  function dispatch(): void {
    if (closed) return;
    for (const slot of slots) {
      if (queue.length === 0) return;
      if (slot.ready && !slot.job) start(slot, queue.shift()!);
    }
    if (queue.length === 0) return;
    if (slots.size === 0) {
      spawn();
      return;
    }
    if (slots.size < workers && !spareTimer) spareAfter(spareAfterMs);
  }

  function spareAfter(ms: number): void {
    spareTimer = setTimeout(() => {
      spareTimer = undefined;
      grow();
    }, ms);
    spareTimer.unref();
  }

  /** Starts workers (up to the pool size) for the jobs that have waited `spareAfterMs`, beyond those that starting workers will take. */
  function grow(): void {
    if (closed || queue.length === 0 || slots.size >= workers) return;
    const waited = performance.now() - queue[0].queuedAt;
    if (waited < spareAfterMs) return spareAfter(spareAfterMs - waited);
    let starting = [...slots].filter((s) => !s.ready).length;
    while (queue.length > starting && slots.size < workers) {
      if (!spawn()) return;
      starting++;
    }
  }

  function finish(slot: Slot, result: CompileResult | CompilerUnavailableError): void {
    const job = slot.job;
    clearTimeout(slot.timer);
    slot.job = undefined;
    slot.worker.unref();
    if (result instanceof CompilerUnavailableError) job?.reject(result);
    else job?.resolve(result);
  }

  function onMessage(slot: Slot, message: FromWorker): void {
    switch (message.type) {
      case 'ready':
        slot.ready = true;
        break;
      case 'orb':
        lookUpOrb(slot, message);
        return;
      case 'result':
      case 'failed':
        if (message.id !== slot.job?.id) return;
        finish(slot, message.type === 'result' ? message.result : failure(`the config compiler failed: ${message.message}`));
        break;
    }
    dispatch();
  }

  function lookUpOrb(slot: Slot, request: Extract<FromWorker, { type: 'orb' }>): void {
    // A worker terminated meanwhile simply never reads the answer.
    const answer = (m: ToWorker) => slot.worker.postMessage(m);
    if (!orbs) return answer({ type: 'orb', id: request.id, error: 'no orb registry is configured' });
    orbs.resolve(request.name, request.versionRef).then(
      (found) => answer({ type: 'orb', id: request.id, ...(found ? { found: { version: found.version, source: found.source } } : {}) }),
      (error: unknown) => answer({ type: 'orb', id: request.id, error: (error as Error)?.message ?? String(error) }),
    );
  }

  function onExit(slot: Slot, code: number): void {
    slots.delete(slot);
    clearTimeout(slot.timer);
    const job = slot.job;
    if (job && slot.stoppedFor === 'close') finish(slot, new CompilerUnavailableError(SHUTTING_DOWN));
    else if (job) {
      const reason =
        slot.stoppedFor === 'time'
          ? budgetMessage('time', limits.timeoutMs)
          : slot.error?.code === 'ERR_WORKER_OUT_OF_MEMORY'
            ? budgetMessage('memory', limits.memoryMb)
            : `the config compiler stopped while compiling this config (${slot.error?.message ?? `exit code ${code}`})`;
      log.warn('config compiler worker stopped; a new one replaces it', { reason, threadId: slot.threadId });
      finish(slot, failure(reason));
    } else if (!slot.ready && !closed) {
      // It died before it could take work: refuse the waiting compilations rather than start
      // workers that would die the same way, over and over (the next compile tries again).
      const reason = `the config compiler could not start: ${slot.error?.message ?? `exit code ${code}`}`;
      log.error('config compiler worker could not start', { error: slot.error?.message ?? `exit code ${code}` });
      for (const waiting of queue.splice(0)) waiting.reject(new CompilerUnavailableError(reason));
    }
    dispatch();
  }

  return {
    compile(source, { trigger }) {
      if (closed) return Promise.reject(new CompilerUnavailableError(SHUTTING_DOWN));
      if (typeof source !== 'string') return Promise.resolve(failure('the config must be text'));
      const waiting = waitingChars();
      if (queue.length > 0 && waiting + source.length > maxWaitingChars) {
        log.warn('config compiler busy; a compilation was refused', { waiting: queue.length, waitingChars: waiting });
        const size = waiting < 1024 * 1024 ? `${Math.ceil(waiting / 1024)} KiB` : `${Math.ceil(waiting / 1024 / 1024)} MiB`;
        return Promise.reject(new CompilerUnavailableError(`the config compiler is busy (${queue.length} configs, ${size} in all, are waiting for it); try again shortly`));
      }
      return new Promise<CompileResult>((resolve, reject) => {
        queue.push({ id: nextJob++, source, trigger, queuedAt: performance.now(), resolve, reject });
        dispatch();
      });
    },

    warm() {
      if (!closed && slots.size === 0) spawn();
    },

    async close() {
      closed = true;
      clearTimeout(spareTimer);
      for (const waiting of queue.splice(0)) waiting.reject(new CompilerUnavailableError(SHUTTING_DOWN));
      await Promise.all(
        [...slots].map((slot) => {
          slot.stoppedFor = 'close';
          return slot.worker.terminate();
        }),
      );
    },
  };
}
