import { randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import type { TestCase } from '../output/junit';
import type { Body, CallOptions, OutputClient } from '../output/output-client';
import { asLost, DEFAULT_RETRY_POLICY, TransientError, transientReason, withRetries, type RetryPolicy, type TaskApi } from './task-api';

export interface HttpOutputClientOptions {
  /** How transient failures (a dropped connection, a 502/503/504) are retried. @default DEFAULT_RETRY_POLICY */
  readonly retry?: Partial<RetryPolicy>;
}

/** Test results go out as NDJSON in pieces of about this many bytes. */
const NDJSON_PIECE_BYTES = 64 * 1024;

/**
 * The OutputClient of a remote agent: each call is one request to the agent API with the task
 * token, archives and artifact files streamed both ways. The server takes the task from the token,
 * so the `task` argument of each method is not sent. A lost lease or refused token is a
 * StaleLeaseError, as for the reporter.
 *
 * Transient failures are retried under the retry policy, a refusal never. A retried write sends
 * its body again (opened anew) with the same `Idempotency-Key`, so the server stores it once
 * however many attempts reached it. A download is retried until its first byte is handed on; one
 * that breaks after that fails with how far it got.
 */
export function createHttpOutputClient(api: TaskApi, options: HttpOutputClientOptions = {}): OutputClient {
  const policy: RetryPolicy = { ...DEFAULT_RETRY_POLICY, ...options.retry };

  const retried = <T>(what: string, opts: CallOptions | undefined, attempt: () => Promise<T>, canRetry?: () => boolean) =>
    withRetries(what, () => asLost(api.taskId, attempt()), { policy, onRetry: opts?.onRetry, canRetry });

  /** One write: the same key on every attempt, the body opened anew for each. */
  const write = <T>(what: string, opts: CallOptions | undefined, body: Body<T>, send: (headers: Record<string, string>, body: AsyncIterable<T>) => Promise<any>) => {
    const headers = { 'Idempotency-Key': randomUUID() };
    const source = reopenable(body);
    return retried(what, opts, async () => send(headers, await source.open()), source.canRetry);
  };

  const download = (what: string, rest: string, opts: CallOptions | undefined) =>
    retried(what, opts, async () => {
      const res = await api.request('GET', rest);
      return res.body ? guarded(what, res.body as WebReadableStream<Uint8Array>) : asAsync<Uint8Array>([]);
    });

  return {
    async uploadArtifact(_task, path, content, opts) {
      await write(`Uploading the artifact ${path}`, opts, content, (headers, stream) => api.call('PUT', '/artifacts', { query: { path }, headers, stream }));
    },
    async cacheExists(_task, key, opts) {
      return (await retried('Looking up the cache', opts, () => api.call('GET', '/cache', { query: { key } }))).exists === true;
    },
    async saveCache(_task, key, archive, opts) {
      const { result } = await write(`Saving the cache ${key}`, opts, archive, (headers, stream) => api.call('PUT', '/cache', { query: { key }, headers, stream }));
      return result === 'exists' ? 'exists' : 'saved';
    },
    async findCache(_task, keys, opts) {
      const { cache } = await retried('Finding a cache', opts, () => api.call('POST', '/cache/find', { json: { keys } }));
      return cache ? { id: String(cache.id), key: String(cache.key), bytes: Number(cache.bytes) } : undefined;
    },
    openCache: (_task, id, opts) => download(`Downloading the cache ${id}`, `/cache/${encodeURIComponent(id)}`, opts),
    async persistWorkspace(_task, archive, opts) {
      await write('Persisting to the workspace', opts, archive, (headers, stream) => api.call('POST', '/workspace', { headers, stream }));
    },
    async workspaceLayers(_task, opts) {
      const { items } = await retried('Listing the workspace layers', opts, () => api.call('GET', '/workspace/layers'));
      return (items as { id: string; job_name: string }[]).map((l) => ({ id: l.id, jobName: l.job_name }));
    },
    openWorkspaceLayer: (_task, id, opts) => download(`Downloading the workspace layer ${id}`, `/workspace/layers/${encodeURIComponent(id)}`, opts),
    async storeTestResults(_task, cases, opts) {
      // One request for all of them: the server stores the lot or nothing.
      await write('Storing the test results', opts, cases, (headers, stream) => api.call('PUT', '/test-results', { headers, stream: ndjson(stream) }));
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
 * A download's bytes, once the first of them arrived. A failure before that is transient (the
 * download is tried again from the start); after that, bytes were handed on already, so it fails
 * with how far it got.
 */
async function guarded(what: string, body: WebReadableStream<Uint8Array>): Promise<AsyncIterable<Uint8Array>> {
  const source = Readable.fromWeb(body);
  const iterator = source[Symbol.asyncIterator]() as AsyncIterator<Uint8Array>;
  let first: IteratorResult<Uint8Array>;
  try {
    first = await iterator.next();
  } catch (error) {
    source.destroy();
    const reason = transientReason(error);
    throw reason === undefined ? error : new TransientError(`${what} broke off before its first byte: ${reason}`, reason, { cause: error });
  }
  let bytes = 0;
  return (async function* () {
    try {
      for (let next = first; !next.done; next = await iterator.next()) {
        bytes += next.value.byteLength;
        yield next.value;
      }
    } catch (error) {
      throw new Error(`${what} broke off after ${bytes} bytes (${transientReason(error) ?? (error as Error).message}); the step stops rather than use part of it`, { cause: error });
    } finally {
      source.destroy();
    }
  })();
}
