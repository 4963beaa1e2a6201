import { createHash } from 'node:crypto';
import type { AccessTarget, Standing } from '../domain/permissions';
import type { Principal } from '../domain/principal';
import { ExpiringMap } from '../domain/expiring-map';
import type { Store } from '../store/store';

/** The channel migration 615 notifies on a change to tokens, users, organisations, projects or memberships. */
export const IDENTITY_CHANGED_CHANNEL = 'gyre_identity_changed';

/** How long a cached answer is used at most when no change was heard (a notification lost while the listener reconnected). */
export const DEFAULT_CREDENTIAL_CACHE_TTL_MS = 2000;

export interface CredentialCacheOptions {
  /** What a cache miss asks: the identity service. */
  readonly identity: {
    authenticate(token: string): Promise<Principal | undefined>;
    standing(principal: Principal, target: AccessTarget): Promise<Standing>;
  };
  /** For the NOTIFY of migration 615, and each token's expiry. */
  readonly store: Pick<Store, 'listen' | 'query'>;
  /** @default DEFAULT_CREDENTIAL_CACHE_TTL_MS */
  readonly ttlMs?: number;
  /** Entries of each map at most; the oldest go first. @default 10000 */
  readonly maxEntries?: number;
  /** @default Date.now */
  readonly now?: () => number;
}

export interface CredentialCache {
  authenticate(token: string): Promise<Principal | undefined>;
  standing(principal: Principal, target: AccessTarget): Promise<Standing>;
  /** Forgets everything (what a notification does). */
  clear(): void;
  /** Stops listening. */
  close(): Promise<void>;
}

/**
 * The answers of `authenticate` and `standing` for the requests of the API's hot path, kept in
 * memory so a GET costs one query rather than three. Correctness before speed:
 *
 * - any change to tokens, users, organisations, projects or memberships, by any process, clears
 *   the whole cache as soon as its NOTIFY arrives (triggers of migration 615), so a revoked token
 *   or a removed role stops working at once;
 * - whatever happens to notifications, an answer is used for `ttlMs` at most (2 s), and a token
 *   never past its expiry;
 * - an answer read while a change was being announced is not kept (a generation count), so a slow
 *   read cannot put back what the change removed;
 * - only answers that let a caller in are kept: an unknown token, or a pipeline that does not exist
 *   yet, is asked again every time.
 *
 * A token's use is noted (last_used_at, once a minute) by `authenticate` on a miss, so for a token
 * in use it is noted at most `ttlMs` later than without the cache.
 */
export async function createCredentialCache(options: CredentialCacheOptions): Promise<CredentialCache> {
  const ttl = options.ttlMs ?? DEFAULT_CREDENTIAL_CACHE_TTL_MS;
  const max = options.maxEntries ?? 10_000;
  const now = options.now ?? Date.now;
  const principals = new ExpiringMap<Principal>(max, now);
  const standings = new ExpiringMap<Standing>(max, now);
  let generation = 0;

  const clear = () => {
    generation++;
    principals.clear();
    standings.clear();
  };
  const unlisten = await options.store.listen(IDENTITY_CHANGED_CHANNEL, clear);

  return {
    clear,
    async authenticate(token) {
      if (!token || token.length > 1024) return undefined;
      // Keyed by a hash: the cache never holds a token in the clear.
      const key = createHash('sha256').update(token).digest('base64');
      const cached = principals.get(key);
      if (cached) return cached;
      const seen = generation;
      const principal = await options.identity.authenticate(token);
      if (principal && seen === generation) {
        const expires = await expiryOf(principal);
        principals.set(key, principal, Math.min(now() + ttl, expires ?? Infinity));
      }
      return principal;
    },
    async standing(principal, target) {
      const key = `${principal.userId}\u0000${target.kind}\u0000${'slug' in target ? target.slug : 'name' in target ? target.name : target.id}`;
      const cached = standings.get(key);
      if (cached) return cached;
      const seen = generation;
      const standing = await options.identity.standing(principal, target);
      if (standing.exists && seen === generation) standings.set(key, standing, now() + ttl);
      return standing;
    },
    async close() {
      await unlisten();
      clear();
    },
  };

  /** The token's expiry, so a cached principal never outlives it. */
  async function expiryOf(principal: Principal): Promise<number | undefined> {
    if (!principal.token) return undefined;
    const [row] = await options.store.query<{ expires_at: Date | string | null }>('SELECT expires_at FROM api_tokens WHERE id = $1', [principal.token.id]);
    return row?.expires_at ? new Date(row.expires_at).getTime() : undefined;
  }
}
