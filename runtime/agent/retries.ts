import { TaskApiError } from './agent-api-client';

/**
 * How a call retries transient failures: a few attempts, each wait about twice the one before
 * (with jitter, so agents cut off by one server restart do not all come back at once), and no new
 * attempt once `budgetMs` has passed since the first.
 */
export interface RetryPolicy {
  /** Attempts in all, the first included. @default 5 */
  readonly attempts: number;
  /** The wait before the first retry. @default 500 */
  readonly firstDelayMs: number;
  /** The longest wait between two attempts (a `Retry-After` asking for more is cut to this). @default 8000 */
  readonly maxDelayMs: number;
  /** No retry starts later than this after the first attempt started. @default 30000 */
  readonly budgetMs: number;
  /** Waits between attempts. @default - a timer */
  readonly sleep?: (ms: number) => Promise<void>;
}

export const DEFAULT_RETRY_POLICY: RetryPolicy = { attempts: 5, firstDelayMs: 500, maxDelayMs: 8000, budgetMs: 30_000 };

/** Statuses a load balancer or a restarting server answers with, that mean "try again shortly". */
const TRANSIENT_STATUSES = new Set([429, 502, 503, 504]);
/** Socket errors of a connection that broke or could not be made (undici gives them as a cause). */
const TRANSIENT_CODES = new Set(['ECONNRESET', 'ECONNREFUSED', 'ECONNABORTED', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN', 'UND_ERR_SOCKET', 'UND_ERR_CLOSED', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT']);

/** An error a caller marks as worth another attempt (e.g. a download that broke before any byte was used). */
export class TransientError extends Error {
  constructor(
    message: string,
    readonly reason: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'TransientError';
  }
}

/**
 * Why `error` is worth another attempt (a short reason for the step's output), or undefined when
 * it is not: a refusal (400, 401, 403, 404, 409, 413, any 4xx but 429), a 500, a body that failed
 * to produce, an abort.
 */
export function transientReason(error: unknown): string | undefined {
  if (error instanceof TransientError) return error.reason;
  if (error instanceof TaskApiError) return TRANSIENT_STATUSES.has(error.status) ? `HTTP ${error.status}` : undefined;
  // fetch fails with a TypeError ("fetch failed" before an answer, "terminated" while reading one)
  // whose cause is the socket's error.
  // (By name: fetch's errors may come from another realm than this module's TypeError.)
  const { name, message } = (error ?? {}) as { name?: unknown; message?: unknown };
  if (name !== 'TypeError' || typeof message !== 'string' || !/^(fetch failed|terminated)$/.test(message)) return undefined;
  let cause = (error as { cause?: unknown }).cause;
  for (let depth = 0; cause && depth < 3; depth++) {
    const { code, message } = cause as { code?: unknown; message?: unknown };
    if (typeof code === 'string' && TRANSIENT_CODES.has(code)) return typeof message === 'string' && message && code.startsWith('UND_ERR') ? message : code;
    cause = (cause as { cause?: unknown }).cause;
  }
  return message === 'terminated' ? 'the connection was cut' : undefined;
}

/**
 * Whether `error` is the server's refusal of what was sent (a 4xx but 408 and 429; 401, 403 and
 * 409 are a lost lease, not this): sending the same again would get the same answer.
 */
export function isRefusal(error: unknown): error is TaskApiError {
  return error instanceof TaskApiError && error.status >= 400 && error.status < 500 && error.status !== 408 && error.status !== 429;
}

/**
 * Runs `attempt` until it succeeds, retrying transient failures under `policy`. `onRetry` is told
 * of each retry with a line for the step's output. `canRetry` says whether another attempt is
 * possible at all (a body that cannot be produced again). A refusal is thrown as it is; transient
 * failures that outlast the policy are thrown with what was tried.
 */
export async function withRetries<T>(
  what: string,
  attempt: (n: number) => Promise<T>,
  options: { policy?: RetryPolicy; onRetry?: (message: string) => void; canRetry?: () => boolean } = {},
): Promise<T> {
  const retries = createRetries(what, options);
  for (;;) {
    try {
      return await attempt(retries.attempt);
    } catch (error) {
      await retries.failed(error, { canRetry: options.canRetry });
    }
  }
}

/** How one failure is told, besides its reason (a download says how far it got and where it resumes). */
export interface RetryWording {
  /** What happened, after the call's name. @default 'failed' */
  readonly failure?: string;
  /** What the next attempt does. @default 'retrying' */
  readonly retry?: string;
  /** Whether another attempt is possible at all. @default - it is */
  readonly canRetry?: () => boolean;
}

/**
 * The policy's count of one call's attempts, for a call that runs its attempts itself (a download
 * that resumes where it broke off, after its first bytes were handed on, which `withRetries`
 * cannot wrap). All the call's attempts count towards `attempts`; the budget counts from the
 * first attempt or from the last `progressed()`, so a long download that keeps making progress is
 * not cut off by it, while one stuck failing is.
 */
export function createRetries(what: string, options: { policy?: RetryPolicy; onRetry?: (message: string) => void } = {}) {
  const policy = options.policy ?? DEFAULT_RETRY_POLICY;
  const sleep = policy.sleep ?? ((ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms)));
  let started = Date.now();
  let n = 1;
  return {
    /** The attempt under way, from 1. */
    get attempt() {
      return n;
    },
    /** The call got somewhere (bytes arrived): the budget counts from now. */
    progressed() {
      started = Date.now();
    },
    /**
     * After attempt `attempt` failed with `error`: throws it when it is a refusal, or an error
     * saying what was tried when the policy allows no more; otherwise tells `onRetry`, waits, and
     * returns for the next attempt.
     */
    async failed(error: unknown, wording: RetryWording = {}): Promise<void> {
      const reason = transientReason(error);
      if (reason === undefined) throw error;
      const failure = wording.failure ?? 'failed';
      const base = Math.min(policy.maxDelayMs, policy.firstDelayMs * 2 ** (n - 1));
      const asked = error instanceof TaskApiError && error.retryAfterMs !== undefined ? Math.min(policy.maxDelayMs, error.retryAfterMs) : undefined;
      const delay = asked ?? Math.round(base / 2 + (Math.random() * base) / 2);
      const elapsed = Date.now() - started;
      const tries = `${n} attempt${n === 1 ? '' : 's'}`;
      const left = n >= policy.attempts ? `after ${tries}` : elapsed + delay > policy.budgetMs ? `after ${tries} in ${(elapsed / 1000).toFixed(1)}s (retries stop at ${policy.budgetMs / 1000}s)` : undefined;
      const failed = failure === 'failed' ? 'failed' : `${failure} and failed`;
      if (left !== undefined) throw new Error(`${what} ${failed} ${left}; the last failure: ${reason}`, { cause: error });
      if (wording.canRetry && !wording.canRetry()) throw new Error(`${what} ${failed} (${reason}) and cannot be retried: its body was already sent in part and cannot be produced again`, { cause: error });
      options.onRetry?.(`${what} ${failure} (${reason}); ${wording.retry ?? 'retrying'} in ${(delay / 1000).toFixed(1)}s (attempt ${n + 1} of ${policy.attempts})`);
      await sleep(delay);
      n++;
    },
  };
}
