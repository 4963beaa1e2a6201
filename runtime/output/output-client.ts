import type { TaskContext } from '../dispatcher/dispatcher';
import type { TestCase } from './junit';

/**
 * What an agent's file steps ask of the output role. In-process (the built-in runner) this is
 * `createLocalOutputClient`; a remote agent sends the same calls over HTTP, one request each,
 * with byte bodies streamed. Bodies are gzip-compressed tar streams unless said otherwise.
 */
export interface OutputClient {
  /** Stores one artifact file (raw bytes) under `path` for this task's job and node. */
  uploadArtifact(task: TaskContext, path: string, content: AsyncIterable<Uint8Array>): Promise<void>;
  /** Whether a cache with exactly this key exists in the task's project (caches are immutable). */
  cacheExists(task: TaskContext, key: string): Promise<boolean>;
  /** Saves a cache; `'exists'` when another save of the key won first. */
  saveCache(task: TaskContext, key: string, archive: AsyncIterable<Uint8Array>): Promise<'saved' | 'exists'>;
  /** The cache to restore: the first key, in order, that prefixes a saved key; the most recent such save. */
  findCache(task: TaskContext, keys: readonly string[]): Promise<{ readonly id: string; readonly key: string; readonly bytes: number } | undefined>;
  openCache(task: TaskContext, id: string): Promise<AsyncIterable<Uint8Array>>;
  persistWorkspace(task: TaskContext, archive: AsyncIterable<Uint8Array>): Promise<void>;
  /** The workspace layers this task's job sees, in the order to apply them. */
  workspaceLayers(task: TaskContext): Promise<readonly { readonly id: string; readonly jobName: string }[]>;
  openWorkspaceLayer(task: TaskContext, id: string): Promise<AsyncIterable<Uint8Array>>;
  storeTestResults(task: TaskContext, cases: readonly TestCase[]): Promise<void>;
}
