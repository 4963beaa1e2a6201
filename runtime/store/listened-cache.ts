import { ExpiringMap } from '../domain/expiring-map';
import type { Store } from './store';

export interface ListenedCacheOptions {
  readonly store: Pick<Store, 'listen'>;
  /** Channels whose every notification empties the cache. */
  readonly clearOn: readonly string[];
  /** A channel whose notification names the one key to drop (empty or `*`: all of them). */
  readonly forgetOn?: string;
  /** How long a value is used at most when no change was heard (a notification lost while the listener reconnected). */
  readonly ttlMs: number;
  /** Values kept at most; the oldest go first. @default 10000 */
  readonly maxEntries?: number;
  /** @default Date.now */
  readonly now?: () => number;
}

export interface ListenedCache<V> {
  /** The value kept for `key`, or what `load` reads (kept unless `keep` says no, or a change was heard while it read). */
  get(key: string, load: () => Promise<V>, keep?: (value: V) => boolean): Promise<V>;
  /** Forgets everything (what a notification on a `clearOn` channel does). */
  clear(): void;
  /** Stops listening and forgets everything. */
  close(): Promise<void>;
}

/**
 * Values read from the database, kept in memory until a NOTIFY says they may have changed: the
 * rules the API's caches share (the pipeline answers, the project a trigger is for; the credential
 * cache keeps its own, with tokens' expiry):
 *
 * - a notification on a `clearOn` channel empties the cache, one on `forgetOn` drops the key it
 *   names, as soon as it arrives;
 * - whatever happens to notifications, a value is used for `ttlMs` at most;
 * - a value read while a change was being announced is not kept (a generation count), so a slow
 *   read cannot put back what the change removed;
 * - a read that fails is not kept: what does not exist is asked for every time.
 */
export async function createListenedCache<V>(options: ListenedCacheOptions): Promise<ListenedCache<V>> {
  const now = options.now ?? Date.now;
  const values = new ExpiringMap<V>(options.maxEntries ?? 10_000, now);
  let generation = 0;
  const clear = () => {
    generation++;
    values.clear();
  };
  const unlisten: (() => Promise<void>)[] = [];
  if (options.forgetOn !== undefined) {
    unlisten.push(
      await options.store.listen(options.forgetOn, (payload) => {
        generation++;
        if (!payload || payload === '*') values.clear();
        else values.delete(payload);
      }),
    );
  }
  for (const channel of options.clearOn) unlisten.push(await options.store.listen(channel, clear));
  return {
    clear,
    async get(key, load, keep) {
      const cached = values.get(key);
      if (cached !== undefined) return cached;
      const seen = generation;
      const value = await load();
      if (seen === generation && (!keep || keep(value))) values.set(key, value, now() + options.ttlMs);
      return value;
    },
    async close() {
      for (const off of unlisten) await off();
      clear();
    },
  };
}
