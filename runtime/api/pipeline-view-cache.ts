import { IDENTITY_CHANGED_CHANNEL } from '../identity/credential-cache';
import { createListenedCache } from '../store/listened-cache';
import type { Store } from '../store/store';

/** The channel migration 660 notifies on: a pipeline's id when its row changes, `*` for many at once. */
export const PIPELINE_CHANGED_CHANNEL = 'gyre_pipeline_changed';

/** How long a cached answer is used at most when no change was heard. */
export const DEFAULT_PIPELINE_VIEW_TTL_MS = 2000;

export interface PipelineViewCacheOptions {
  readonly store: Pick<Store, 'listen'>;
  /** @default DEFAULT_PIPELINE_VIEW_TTL_MS */
  readonly ttlMs?: number;
  /** Answers kept at most; the oldest go first. @default 10000 */
  readonly maxEntries?: number;
  /** @default Date.now */
  readonly now?: () => number;
}

export interface PipelineViewCache {
  /**
   * The answer for pipeline `id`: the cached one, or what `load` reads (kept when `settled` says it
   * will not change on its own soon).
   */
  get<T>(id: string, load: () => Promise<T>, settled: (view: T) => boolean): Promise<T>;
  /** Forgets everything. */
  clear(): void;
  close(): Promise<void>;
}

/**
 * `GET /api/v2/pipeline/{id}` is what clients poll; its answer, read once, is kept in memory so a
 * poll costs no query. The same rules as the credential cache (credential-cache.ts):
 *
 * - a change to the pipeline's row, by any process, drops its answer as soon as the NOTIFY of
 *   migration 660 arrives; a change to projects or users (slug, repository, login) drops all;
 * - whatever happens to notifications, an answer is used for `ttlMs` at most;
 * - an answer read while a change was being announced is not kept (a generation count);
 * - only a pipeline that is `created` or `errored` is kept: one still being set up is read every
 *   time, it is about to change.
 *
 * Who may read a pipeline is decided before this (the route's permission check), never here.
 */
export async function createPipelineViewCache(options: PipelineViewCacheOptions): Promise<PipelineViewCache> {
  const views = await createListenedCache<unknown>({
    store: options.store,
    forgetOn: PIPELINE_CHANGED_CHANNEL,
    clearOn: [IDENTITY_CHANGED_CHANNEL],
    ttlMs: options.ttlMs ?? DEFAULT_PIPELINE_VIEW_TTL_MS,
    ...(options.maxEntries !== undefined ? { maxEntries: options.maxEntries } : {}),
    ...(options.now ? { now: options.now } : {}),
  });
  return {
    clear: views.clear,
    get: <T>(id: string, load: () => Promise<T>, settled: (view: T) => boolean) => views.get(id, load, settled as (view: unknown) => boolean) as Promise<T>,
    close: views.close,
  };
}
