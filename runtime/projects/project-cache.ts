import { IDENTITY_CHANGED_CHANNEL } from '../identity/credential-cache';
import { createListenedCache } from '../store/listened-cache';
import type { Store } from '../store/store';
import { normaliseSlug, type Project, type Projects } from './projects';

/** The channel migration 690 notifies on when a project's row changes in what a Project is made of. */
export const PROJECT_CHANGED_CHANNEL = 'gyre_project_changed';

/** How long a project read is used at most when no change was heard (a notification lost while the listener reconnected). */
export const DEFAULT_PROJECT_CACHE_TTL_MS = 2000;

export interface ProjectCacheOptions {
  /** What a miss reads: the project as stored (Projects.get). */
  readonly read: Projects['get'];
  /** For the NOTIFY of migrations 690 and 615. */
  readonly store: Pick<Store, 'listen'>;
  /** @default DEFAULT_PROJECT_CACHE_TTL_MS */
  readonly ttlMs?: number;
  /** Projects kept at most; the oldest go first. @default 10000 */
  readonly maxEntries?: number;
  /** @default Date.now */
  readonly now?: () => number;
}

export interface ProjectCache {
  /** The project, as `read` would answer it: kept from an earlier read unless it may have changed since. */
  get(slug: string): Promise<Project>;
  /** Stops listening. */
  close(): Promise<void>;
}

/**
 * The project a trigger is for, kept in memory: every trigger (REST, webhook, schedule) reads its
 * project before anything else, one query on the way to the answer, and under a burst of triggers
 * that query waited its turn on the database like the pipeline's own (docs/speed.md). The same
 * rules as the API's other caches (runtime/store/listened-cache.ts):
 *
 * - a change to a project's row in anything a Project is made of (its repository, default branch,
 *   protected branches, settings), by any process, this one too, clears the cache as soon as the
 *   NOTIFY of migration 690 arrives; a change to organisations (migration 615) too. What a trigger
 *   reads of its project (its id, repository and default branch) no API request changes, so no
 *   answer goes out before the cache has heard of a change it made;
 * - whatever happens to notifications, a read is used for `ttlMs` at most;
 * - a read made while a change was being announced is not kept (a generation count);
 * - a project that does not exist is asked for again every time.
 *
 * A trigger's pipeline number comes from its own statement, never from here.
 */
export async function createProjectCache(options: ProjectCacheOptions): Promise<ProjectCache> {
  const projects = await createListenedCache<Project>({
    store: options.store,
    clearOn: [PROJECT_CHANGED_CHANNEL, IDENTITY_CHANGED_CHANNEL],
    ttlMs: options.ttlMs ?? DEFAULT_PROJECT_CACHE_TTL_MS,
    ...(options.maxEntries !== undefined ? { maxEntries: options.maxEntries } : {}),
    ...(options.now ? { now: options.now } : {}),
  });
  return {
    async get(slug) {
      const canonical = normaliseSlug(slug);
      return projects.get(canonical, async () => {
        const project = await options.read(canonical);
        // Shared by every caller once kept: none may change it.
        return Object.freeze({ ...project, protectedBranches: Object.freeze([...project.protectedBranches]) }) as Project;
      });
    },
    close: projects.close,
  };
}
