import type { ProjectTokenScope } from '../../domain/principal';
import type { Queryable } from '../../store/store';

/** API tokens: stored as SHA-256 hashes (see `hashToken`), looked up by hash, listed by owner. */

export type TokenKind = 'personal' | 'bootstrap' | 'project';

export interface TokenRow {
  id: string;
  kind: TokenKind;
  label: string;
  hint: string;
  scope: ProjectTokenScope | null;
  project_id: string | null;
  created_at: Date | string;
  expires_at: Date | string | null;
  last_used_at: Date | string | null;
  created_by_login: string | null;
}

export async function insertToken(
  tx: Queryable,
  t: { hash: string; kind: TokenKind; label: string; hint: string; userId?: string; projectId?: string; scope?: ProjectTokenScope; createdBy?: string; expiresInDays?: number },
): Promise<TokenRow> {
  const [row] = await tx.query<TokenRow>(
    `INSERT INTO api_tokens (token_hash, kind, label, hint, user_id, project_id, scope, created_by, expires_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, CASE WHEN $9::int IS NULL THEN NULL ELSE now() + make_interval(days => $9::int) END)
     RETURNING id, kind, label, hint, scope, project_id, created_at, expires_at, last_used_at, NULL::text AS created_by_login`,
    [t.hash, t.kind, t.label, t.hint, t.userId ?? null, t.projectId ?? null, t.scope ?? null, t.createdBy ?? null, t.expiresInDays ?? null],
  );
  return row;
}

export interface CredentialRow {
  id: string;
  kind: TokenKind;
  project_id: string | null;
  scope: ProjectTokenScope | null;
  org: string | null;
  expired: boolean;
  /** last_used_at is unset or more than a minute old: time to write it again. */
  stale: boolean;
  user_id: string;
  login: string;
  is_admin: boolean;
  disabled: boolean;
}

/** The token with this hash and the user it belongs to (for a project token, who made it). */
export async function credentialOf(db: Queryable, hash: string): Promise<CredentialRow | undefined> {
  const [row] = await db.query<CredentialRow>(
    `SELECT t.id, t.kind, t.project_id, t.scope, pr.org,
            (t.expires_at IS NOT NULL AND t.expires_at <= now()) AS expired,
            (t.last_used_at IS NULL OR t.last_used_at < now() - interval '1 minute') AS stale,
            u.id AS user_id, u.login, u.is_admin, (u.disabled_at IS NOT NULL) AS disabled
       FROM api_tokens t
       JOIN users u ON u.id = COALESCE(t.user_id, t.created_by)
       LEFT JOIN projects pr ON pr.id = t.project_id
      WHERE t.token_hash = $1`,
    [hash],
  );
  return row;
}

/** Notes a use, unless one was noted in the last minute (by this process or another). */
export async function touchToken(db: Queryable, id: string): Promise<void> {
  await db.query(`UPDATE api_tokens SET last_used_at = now() WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')`, [id]);
}

const TOKEN_COLUMNS = `t.id, t.kind, t.label, t.hint, t.scope, t.project_id, t.created_at, t.expires_at, t.last_used_at, c.login AS created_by_login`;

export async function userTokens(db: Queryable, userId: string): Promise<TokenRow[]> {
  return db.query<TokenRow>(`SELECT ${TOKEN_COLUMNS} FROM api_tokens t LEFT JOIN users c ON c.id = t.created_by WHERE t.user_id = $1 ORDER BY t.created_at, t.id`, [userId]);
}

export async function projectTokens(db: Queryable, projectId: string): Promise<TokenRow[]> {
  return db.query<TokenRow>(`SELECT ${TOKEN_COLUMNS} FROM api_tokens t LEFT JOIN users c ON c.id = t.created_by WHERE t.project_id = $1 ORDER BY t.created_at, t.id`, [projectId]);
}

/** Deletes a token of this owner (a user's own, or a project's); answers it, or undefined when the owner has no such token. */
export async function deleteToken(tx: Queryable, id: string, owner: { userId: string } | { projectId: string }): Promise<{ id: string; label: string; kind: TokenKind } | undefined> {
  const [row] =
    'userId' in owner
      ? await tx.query<{ id: string; label: string; kind: TokenKind }>('DELETE FROM api_tokens WHERE id = $1 AND user_id = $2 RETURNING id, label, kind', [id, owner.userId])
      : await tx.query<{ id: string; label: string; kind: TokenKind }>('DELETE FROM api_tokens WHERE id = $1 AND project_id = $2 RETURNING id, label, kind', [id, owner.projectId]);
  return row;
}

/** Deletes tokens that expired more than `keepDays` ago (until then they are listed as expired). */
export async function deleteExpiredTokens(tx: Queryable, keepDays: number): Promise<{ id: string; kind: TokenKind; label: string; user_id: string | null; project_id: string | null }[]> {
  return tx.query(
    `DELETE FROM api_tokens WHERE expires_at IS NOT NULL AND expires_at < now() - make_interval(days => $1)
     RETURNING id, kind, label, user_id, project_id`,
    [keepDays],
  );
}
