import { createHash, randomBytes, randomUUID } from 'node:crypto';
import type { Principal } from '../domain/principal';
import type { Store } from '../store/store';

export interface Identity {
  /**
   * Makes sure there is an admin. On an empty database it creates one whose token is `token` (or a
   * new random one) and returns that token with `created: true`, so start-up can print it once.
   * With a token given and an admin present, the token is (re)attached to the first admin.
   */
  ensureAdmin(token?: string): Promise<{ created: boolean; token?: string }>;
  authenticate(token: string): Promise<Principal | undefined>;
  /** Creates a new token for a user and returns it in clear, once. */
  createToken(userId: string, label: string): Promise<string>;
}

export function hashToken(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

export function createIdentity({ store }: { store: Store }): Identity {
  const identity: Identity = {
    async ensureAdmin(token) {
      return store.transaction(async (tx) => {
        await tx.query('SELECT pg_advisory_xact_lock(724243)');
        const [admin] = await tx.query<{ id: string }>('SELECT id FROM users WHERE is_admin ORDER BY created_at LIMIT 1');
        if (admin) {
          if (token) {
            await tx.query(
              `INSERT INTO api_tokens (token_hash, user_id, label) VALUES ($1, $2, 'GYRE_ADMIN_TOKEN') ON CONFLICT DO NOTHING`,
              [hashToken(token), admin.id],
            );
          }
          return { created: false };
        }
        const id = randomUUID();
        await tx.query(`INSERT INTO users (id, login, name, is_admin) VALUES ($1, 'admin', 'Administrator', true)`, [id]);
        const clear = token ?? newToken();
        await tx.query(`INSERT INTO api_tokens (token_hash, user_id, label) VALUES ($1, $2, 'first admin')`, [hashToken(clear), id]);
        return { created: true, token: clear };
      });
    },

    async authenticate(token) {
      if (!token) return undefined;
      const [row] = await store.query<{ id: string; login: string; is_admin: boolean }>(
        `SELECT u.id, u.login, u.is_admin FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = $1`,
        [hashToken(token)],
      );
      return row ? { userId: row.id, login: row.login, isAdmin: row.is_admin } : undefined;
    },

    async createToken(userId, label) {
      const clear = newToken();
      await store.query('INSERT INTO api_tokens (token_hash, user_id, label) VALUES ($1, $2, $3)', [hashToken(clear), userId, label]);
      return clear;
    },
  };
  return identity;
}

function newToken(): string {
  return `gyre_${randomBytes(20).toString('hex')}`;
}
