import type { Lease, TaskContext } from '../agent-contract';
import type { TestCase } from './junit';

/**
 * A request body that can be sent again: each call opens it anew, from its first item, and must
 * give the same items each time. A client that retries a failed request calls it once per
 * attempt; one that does not calls it once. A plain iterable is accepted too (an array can be sent
 * again; anything else cannot, so its call is not retried once sending has begun).
 */
export type Body<T> = AsyncIterable<T> | readonly T[] | (() => AsyncIterable<T> | Iterable<T> | Promise<AsyncIterable<T> | Iterable<T>>);

/**
 * The same client with `lease` added to every call: what an agent's file steps use, so each of
 * their writes is fenced by its lease.
 */
export function leasedClient(client: OutputClient, lease: Lease): OutputClient {
  const withLease = <O extends CallOptions>(options?: O): O => ({ ...(options ?? ({} as O)), lease });
  return {
    uploadArtifact: (task, path, content, options) => client.uploadArtifact(task, path, content, withLease(options)),
    cacheExists: (task, key, options) => client.cacheExists(task, key, withLease(options)),
    saveCache: (task, key, archive, options) => client.saveCache(task, key, archive, withLease(options)),
    findCache: (task, keys, options) => client.findCache(task, keys, withLease(options)),
    ...(client.withheldCache ? { withheldCache: (task, keys, options) => client.withheldCache!(task, keys, withLease(options)) } : {}),
    openCache: (task, id, options) => client.openCache(task, id, withLease(options)),
    persistWorkspace: (task, archive, options) => client.persistWorkspace(task, archive, withLease(options)),
    workspaceLayers: (task, options) => client.workspaceLayers(task, withLease(options)),
    openWorkspaceLayer: (task, id, options) => client.openWorkspaceLayer(task, id, withLease(options)),
    storeTestResults: (task, cases, options) => client.storeTestResults(task, cases, withLease(options)),
  };
}

/** What a file step adds to one call, beside the task. */
export interface CallOptions {
  /**
   * Told, with a line for the step's output, each time a transient failure (a dropped connection,
   * a 502/503/504) is retried. @default - retries are not reported
   */
  readonly onRetry?: (message: string) => void;
  /**
   * Names one logical write, the same on every attempt of it: a write whose key was stored
   * already is not stored again and answers as the first did (a retry after an answer was lost).
   * Set by the agent API from the request; local callers need none. @default - no deduplication
   */
  readonly requestKey?: string;
  /**
   * The lease of the task the write is for: the write is stored only while it is current (in the
   * transaction that stores it) and its rows carry its attempt. The agent API sets it from the task
   * token; the built-in runner from its claim. @default - no lease check (tools, tests)
   */
  readonly lease?: Lease;
}

/** What a download adds to a call: where to start, for one resuming after a broken connection. */
export interface DownloadOptions extends CallOptions {
  /** The first byte to send, counted from 0. @default 0 */
  readonly start?: number;
}

/**
 * A download's bytes, from the byte it was asked to start at. `size` is the whole object's, so a
 * server can say which part it sends (the agent API answers a `Range` with it).
 */
export interface Download extends AsyncIterable<Uint8Array> {
  /** The whole object's size in bytes. @default - not known */
  readonly size?: number;
}

/**
 * What an agent's file steps ask of the output role. In-process (the built-in runner) this is
 * `createOutputService(...).client`; a remote agent sends the same calls over HTTP, one request
 * each, with byte bodies streamed and transient failures retried. Bodies are gzip-compressed tar
 * streams unless said otherwise.
 */
export interface OutputClient {
  /** Stores one artifact file (raw bytes) under `path` for this task's job and node. */
  uploadArtifact(task: TaskContext, path: string, content: Body<Uint8Array>, options?: CallOptions): Promise<void>;
  /** Whether a cache with exactly this key exists in the task's project (caches are immutable). */
  cacheExists(task: TaskContext, key: string, options?: CallOptions): Promise<boolean>;
  /** Saves a cache; `'exists'` when another save of the key won first. */
  saveCache(task: TaskContext, key: string, archive: Body<Uint8Array>, options?: CallOptions): Promise<'saved' | 'exists'>;
  /** The cache to restore: the first key, in order, that prefixes a saved key; the most recent such save. */
  findCache(task: TaskContext, keys: readonly string[], options?: CallOptions): Promise<{ readonly id: string; readonly key: string; readonly bytes: number } | undefined>;
  /**
   * Why `findCache` found nothing for these keys, when it is because of trust: a cache that a
   * prefix matches exists, but the task runs on a protected branch and the cache was saved on an
   * unprotected one (docs/security.md). Undefined otherwise, and where the client cannot tell.
   */
  withheldCache?(task: TaskContext, keys: readonly string[], options?: CallOptions): Promise<{ readonly key: string; readonly reason: string } | undefined>;
  openCache(task: TaskContext, id: string, options?: DownloadOptions): Promise<Download>;
  persistWorkspace(task: TaskContext, archive: Body<Uint8Array>, options?: CallOptions): Promise<void>;
  /** The workspace layers this task's job sees, in the order to apply them. */
  workspaceLayers(task: TaskContext, options?: CallOptions): Promise<readonly { readonly id: string; readonly jobName: string }[]>;
  openWorkspaceLayer(task: TaskContext, id: string, options?: DownloadOptions): Promise<Download>;
  /** Stores one step's test results, all of them or (on any failure) none. */
  storeTestResults(task: TaskContext, cases: Body<TestCase>, options?: CallOptions): Promise<void>;
}

/** Opens a body for its one and only read (a caller that does not retry). */
export async function openBody<T>(body: Body<T>): Promise<AsyncIterable<T> | Iterable<T>> {
  return typeof body === 'function' ? body() : body;
}
