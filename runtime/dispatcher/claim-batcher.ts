/**
 * Claims that arrive together are served together. Every runner's long-poll, every built-in slot
 * and every Nomad driver loop asks the dispatcher for one task; under load dozens ask at once. A
 * claim costs one round trip and one statement whether it takes one task or sixty-four, so the
 * batcher collects the requests waiting for the same resource classes and claims for all of them
 * with one statement, then hands each requester its own task (or nothing, when the queue ran dry).
 *
 * Requests that arrive while a batch is in flight wait for the next one: with nothing else going
 * on, a lone request is sent at once and pays no extra latency.
 */

export interface ClaimRequest<T> {
  readonly agentId: string;
  /** Who will hold the lease (recorded on it): `builtin`, `runner`, `nomad`. */
  readonly holder: string;
  /** How many times this request's claim was put back because a concurrency limit was full. */
  races: number;
  resolve(claimed: T | undefined): void;
  reject(error: unknown): void;
}

export interface ClaimBatcherOptions<T> {
  /**
   * Claims up to `requests.length` tasks of these classes in one go and settles every request:
   * each one with its task, a retry (`retry(request)`), or `undefined`.
   */
  readonly claimFor: (classes: readonly string[], requests: readonly ClaimRequest<T>[], retry: (request: ClaimRequest<T>) => void) => Promise<void>;
  /** Largest batch. @default 64 */
  readonly maxBatch?: number;
  /** Batches of one set of classes in flight at once. @default 2 */
  readonly maxInFlight?: number;
}

export interface ClaimBatcher<T> {
  claim(agentId: string, classes: readonly string[], holder?: string): Promise<T | undefined>;
}

export function createClaimBatcher<T>({ claimFor, maxBatch = 64, maxInFlight = 2 }: ClaimBatcherOptions<T>): ClaimBatcher<T> {
  interface Line {
    readonly classes: readonly string[];
    waiting: ClaimRequest<T>[];
    inFlight: number;
    scheduled: boolean;
  }
  const lines = new Map<string, Line>();

  const send = (key: string, line: Line) => {
    line.scheduled = false;
    while (line.inFlight < maxInFlight && line.waiting.length > 0) {
      const batch = line.waiting.splice(0, maxBatch);
      line.inFlight++;
      const requeued = new Set<ClaimRequest<T>>();
      const retry = (request: ClaimRequest<T>) => {
        request.races++;
        requeued.add(request);
        line.waiting.unshift(request);
      };
      claimFor(line.classes, batch, retry)
        .catch((error) => {
          // Settling twice is a no-op; a request put back for another round stays queued.
          for (const request of batch) if (!requeued.has(request)) request.reject(error);
        })
        .finally(() => {
          line.inFlight--;
          if (line.waiting.length > 0) send(key, line);
          else if (line.inFlight === 0) lines.delete(key);
        });
    }
  };

  return {
    claim(agentId, classes, holder = 'runner') {
      const key = [...classes].sort().join('\n');
      let line = lines.get(key);
      if (!line) {
        line = { classes: [...classes], waiting: [], inFlight: 0, scheduled: false };
        lines.set(key, line);
      }
      const promise = new Promise<T | undefined>((resolve, reject) => line!.waiting.push({ agentId, holder, races: 0, resolve, reject }));
      // Requests made in the same tick go out as one batch.
      if (!line.scheduled) {
        line.scheduled = true;
        const l = line;
        queueMicrotask(() => send(key, l));
      }
      return promise;
    },
  };
}
