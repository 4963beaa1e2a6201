import { randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import type { TestCase } from '../output/junit';
import type { Body, CallOptions, Download, OutputClient } from '../output/output-client';
import { IDEMPOTENCY_KEY_HEADER } from '../agent-contract';
import { asLost, type AgentApiClient, type Upload } from './agent-api-client';
import { createRetries, DEFAULT_RETRY_POLICY, TransientError, withRetries, type RetryPolicy } from './retries';

export interface HttpOutputClientOptions {
  /** How transient failures (a dropped connection, a 502/503/504) are retried. @default DEFAULT_RETRY_POLICY */
  readonly retry?: Partial<RetryPolicy>;
}

/** Test results go out as NDJSON in pieces of about this many bytes. */
const NDJSON_PIECE_BYTES = 64 * 1024;

/**
 * The OutputClient of a remote agent: each call is one request of the AgentApiClient with the task
 * token, archives and artifact files streamed both ways. The server takes the task from the token,
 * so the `task` argument of each method is not sent. A lost lease or refused token is a
 * StaleLeaseError, as for the reporter.
 *
 * Transient failures are retried under the retry policy, a refusal never. A retried write sends
 * its body again (opened anew) with the same `Idempotency-Key`, so the server stores it once
 * however many attempts reached it. A download that breaks after some bytes resumes from the
 * first byte it lacks (a `Range` request), under the same policy.
 */
export function createHttpOutputClient(api: AgentApiClient, options: HttpOutputClientOptions = {}): OutputClient {
  const policy: RetryPolicy = { ...DEFAULT_RETRY_POLICY, ...options.retry };

  const retried = <T>(what: string, opts: CallOptions | undefined, attempt: () => Promise<T>, canRetry?: () => boolean) =>
    withRetries(what, () => asLost(api.taskId, attempt()), { policy, onRetry: opts?.onRetry, canRetry });

  /** One write: the same key on every attempt, the body opened anew for each. */
  const write = <T, A>(what: string, opts: CallOptions | undefined, body: Body<T>, send: (headers: Record<string, string>, body: AsyncIterable<T>) => Promise<A>) => {
    const headers = { [IDEMPOTENCY_KEY_HEADER]: randomUUID() };
    const source = reopenable(body);
    return retried(what, opts, async () => send(headers, await source.open()), source.canRetry);
  };
  const upload = (headers: Record<string, string>, stream: AsyncIterable<Uint8Array>): Upload => ({ headers, stream });

  const download = (what: string, open: OpenDownload, opts: CallOptions | undefined) => resumable(api.taskId, what, open, createRetries(what, { policy, onRetry: opts?.onRetry }));

  return {
    async uploadArtifact(_task, path, content, opts) {
      await write(`Uploading the artifact ${path}`, opts, content, (headers, stream) => api.uploadArtifact(path, upload(headers, stream)));
    },
    async cacheExists(_task, key, opts) {
      return (await retried('Looking up the cache', opts, () => api.cacheExists(key))).exists;
    },
    async saveCache(_task, key, archive, opts) {
      const { result } = await write(`Saving the cache ${key}`, opts, archive, (headers, stream) => api.saveCache(key, upload(headers, stream)));
      return result;
    },
    async findCache(_task, keys, opts) {
      const { cache } = await retried('Finding a cache', opts, () => api.findCache(keys));
      return cache ? { id: cache.id, key: cache.key, bytes: cache.bytes } : undefined;
    },
    async withheldCache(_task, keys, opts) {
      // Answered beside a miss by servers that say why (`withheld`); older ones do not say.
      const { cache, withheld } = await retried('Finding a cache', opts, () => api.findCache(keys));
      if (cache || !withheld) return undefined;
      return { key: withheld.key, reason: withheld.reason };
    },
    openCache: (_task, id, opts) => download(`Downloading the cache ${id}`, (headers) => api.openCache(id, headers), opts),
    async persistWorkspace(_task, archive, opts) {
      await write('Persisting to the workspace', opts, archive, (headers, stream) => api.persistWorkspace(upload(headers, stream)));
    },
    async workspaceLayers(_task, opts) {
      const { items } = await retried('Listing the workspace layers', opts, () => api.workspaceLayers());
      return items.map((l) => ({ id: l.id, jobName: l.job_name }));
    },
    openWorkspaceLayer: (_task, id, opts) => download(`Downloading the workspace layer ${id}`, (headers) => api.openWorkspaceLayer(id, headers), opts),
    async storeTestResults(_task, cases, opts) {
      // One request for all of them: the server stores the lot or nothing.
      await write('Storing the test results', opts, cases, (headers, stream) => api.storeTestResults(upload(headers, ndjson(stream))));
    },
  };
}

/** A body's opener: a function or an array can be opened for every attempt, anything else once. */
function reopenable<T>(body: Body<T>): { open(): Promise<AsyncIterable<T>>; canRetry(): boolean } {
  if (typeof body === 'function' || Array.isArray(body)) {
    return { open: async () => asAsync(typeof body === 'function' ? await body() : (body as readonly T[])), canRetry: () => true };
  }
  let opened = false;
  return {
    async open() {
      if (opened) throw new Error('this body can be sent only once');
      opened = true;
      return body as AsyncIterable<T>;
    },
    canRetry: () => !opened,
  };
}

async function* asAsync<T>(items: AsyncIterable<T> | Iterable<T>): AsyncIterable<T> {
  yield* items;
}

/** Test cases as NDJSON: one JSON object a line, sent in pieces of about NDJSON_PIECE_BYTES. */
async function* ndjson(cases: AsyncIterable<TestCase>): AsyncIterable<Uint8Array> {
  let piece = '';
  for await (const c of cases) {
    piece += `${JSON.stringify({ name: c.name, classname: c.classname, file: c.file, result: c.result, message: c.message, run_time: c.run_time })}\n`;
    if (piece.length >= NDJSON_PIECE_BYTES) {
      yield Buffer.from(piece);
      piece = '';
    }
  }
  if (piece) yield Buffer.from(piece);
}

/**
 * A download's bytes, once the first of them arrived, resuming where it broke off. A failure
 * before the first byte is tried again from the start. After that, bytes were handed on already:
 * the next attempt asks for the rest (`Range: bytes=<received>-`, `If-Range: <ETag>`) and goes on
 * only if the server answers exactly that part of the same object (206, a `Content-Range` from
 * the first missing byte, the same size). Anything else (a 200 with the whole body: the server
 * ignored the range, or the object changed) fails, for the consumer must never get a byte twice
 * or miss one.
 */
/** Opens a download: the whole object, or (with `Range` and `If-Range` headers) its rest. */
type OpenDownload = (headers?: Record<string, string>) => Promise<Response>;

async function resumable(taskId: string, what: string, request: OpenDownload, retries: ReturnType<typeof createRetries>): Promise<Download> {
  let received = 0;
  let size: number | undefined;
  let etag: string | undefined;

  /** One request: the whole object, or its rest once bytes have arrived. */
  const open = async (): Promise<Readable> => {
    if (received === 0) {
      const res = await asLost(taskId, request());
      // Only a strong ETag says the bytes are the same ones: a weak one (W/"…") cannot resume. Nor
      // can a body a proxy re-encoded: its ranges and length count bytes this side never sees.
      const tag = res.headers.get('etag');
      const encoded = res.headers.has('content-encoding');
      etag = tag && !tag.startsWith('W/') && !encoded ? tag : undefined;
      const length = Number(res.headers.get('content-length') ?? NaN);
      size = Number.isSafeInteger(length) && !encoded ? length : undefined;
      return bodyOf(res);
    }
    const cannot = (why: string) => new Error(`${what} broke off after ${received} bytes and cannot resume: ${why}; the step stops rather than use part of it`);
    if (etag === undefined) throw cannot('the server gave no ETag to ask for the rest of the same object with (a Gyre server before resumable downloads?)');
    const res = await asLost(taskId, request({ Range: `bytes=${received}-`, 'If-Range': etag }));
    const range = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(res.headers.get('content-range') ?? '');
    const [from, to, total] = range ? range.slice(1).map(Number) : [];
    if (res.status !== 206 || !range || from !== received || to !== total - 1 || (size !== undefined && total !== size)) {
      await res.body?.cancel().catch(() => undefined);
      throw cannot(
        res.status !== 206
          ? `asked for bytes ${received}- of ${etag}, the server answered ${res.status} with the whole object (it ignored the range, or the object changed)`
          : `asked for bytes ${received}-${size === undefined ? '' : size - 1}, the server answered with '${res.headers.get('content-range') ?? 'no Content-Range'}'`,
      );
    }
    size = total;
    return bodyOf(res);
  };

  async function* chunks(): AsyncGenerator<Uint8Array> {
    for (;;) {
      let source: Readable | undefined;
      try {
        source = await open();
        for await (const chunk of source as AsyncIterable<Uint8Array>) {
          received += chunk.byteLength;
          retries.progressed();
          yield chunk;
        }
        // A connection closed cleanly short of the size is a broken one too.
        if (size !== undefined && received < size) throw new TransientError(`the body ended at byte ${received} of ${size}`, `it ended at byte ${received} of ${size}`);
        return;
      } catch (error) {
        // Every byte arrived and only the connection's end was lost: there is nothing to resume.
        if (size !== undefined && received === size) return;
        await retries.failed(error, received === 0 ? {} : { failure: `broke off after ${received} bytes`, retry: `resuming from byte ${received}` });
      } finally {
        source?.destroy();
      }
    }
  }

  const iterator = chunks();
  const first = await iterator.next();
  return Object.assign(
    (async function* () {
      try {
        if (first.done) return;
        yield first.value;
        yield* iterator;
      } finally {
        // A consumer that stops after the first chunk: the connection still has to go.
        await iterator.return(undefined);
      }
    })(),
    { size },
  );
}

function bodyOf(res: Response): Readable {
  return res.body ? Readable.fromWeb(res.body as WebReadableStream<Uint8Array>) : Readable.from([]);
}
