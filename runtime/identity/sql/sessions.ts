import type { Queryable } from '../../store/store';

/** Browser sessions and redirect sign-ins under way (490_sessions.sql). One function per statement. */

export interface SessionRow {
  id: string;
  user_id: string;
  login: string;
  is_admin: boolean;
  csrf_token: string;
  provider: string;
  expires_at: Date | string;
  /** last_seen_at is more than a minute old: time to write it again. */
  stale: boolean;
}

export async function insertSession(tx: Queryable, s: { idHash: string; userId: string; csrf: string; provider: string; address?: string; ttlMinutes: number }): Promise<{ id: string; expires_at: Date | string }> {
  const [row] = await tx.query<{ id: string; expires_at: Date | string }>(
    `INSERT INTO sessions (id_hash, user_id, csrf_token, provider, address, expires_at)
     VALUES ($1, $2, $3, $4, $5, now() + make_interval(mins => $6::int)) RETURNING id, expires_at`,
    [s.idHash, s.userId, s.csrf, s.provider, s.address ?? null, s.ttlMinutes],
  );
  return row;
}

/** The live session with this hash: not expired, not idle longer than `idleMinutes`, its user enabled. */
export async function liveSession(db: Queryable, idHash: string, idleMinutes: number): Promise<SessionRow | undefined> {
  const [row] = await db.query<SessionRow>(
    `SELECT s.id, s.user_id, u.login, u.is_admin, s.csrf_token, s.provider, s.expires_at,
            (s.last_seen_at < now() - interval '1 minute') AS stale
       FROM sessions s JOIN users u ON u.id = s.user_id
      WHERE s.id_hash = $1 AND s.expires_at > now() AND s.last_seen_at > now() - make_interval(mins => $2::int)
        AND u.disabled_at IS NULL`,
    [idHash, idleMinutes],
  );
  return row;
}

export async function touchSession(db: Queryable, id: string): Promise<void> {
  await db.query(`UPDATE sessions SET last_seen_at = now() WHERE id = $1`, [id]);
}

export async function deleteSession(tx: Queryable, idHash: string): Promise<{ id: string; user_id: string; provider: string } | undefined> {
  const [row] = await tx.query<{ id: string; user_id: string; provider: string }>(`DELETE FROM sessions WHERE id_hash = $1 RETURNING id, user_id, provider`, [idHash]);
  return row;
}

export async function deleteUserSessions(tx: Queryable, userId: string): Promise<number> {
  const rows = await tx.query(`DELETE FROM sessions WHERE user_id = $1 RETURNING id`, [userId]);
  return rows.length;
}

/** Sessions past their end, and idle ones; answers how many went. */
export async function deleteDeadSessions(tx: Queryable, idleMinutes: number): Promise<number> {
  const rows = await tx.query(`DELETE FROM sessions WHERE expires_at <= now() OR last_seen_at <= now() - make_interval(mins => $1::int) RETURNING id`, [idleMinutes]);
  const attempts = await tx.query(`DELETE FROM sign_in_attempts WHERE expires_at <= now() RETURNING state_hash`);
  return rows.length + attempts.length;
}

export interface AttemptRow {
  provider: string;
  code_verifier: string;
  nonce: string | null;
  return_to: string | null;
}

export async function insertAttempt(tx: Queryable, a: { stateHash: string; provider: string; codeVerifier: string; nonce?: string; returnTo?: string; ttlMinutes: number }): Promise<void> {
  await tx.query(
    `INSERT INTO sign_in_attempts (state_hash, provider, code_verifier, nonce, return_to, expires_at)
     VALUES ($1, $2, $3, $4, $5, now() + make_interval(mins => $6::int))`,
    [a.stateHash, a.provider, a.codeVerifier, a.nonce ?? null, a.returnTo ?? null, a.ttlMinutes],
  );
}

/** Takes the attempt with this state (it can be used once): undefined when unknown or expired. */
export async function takeAttempt(tx: Queryable, stateHash: string): Promise<AttemptRow | undefined> {
  const [row] = await tx.query<AttemptRow & { live: boolean }>(
    `DELETE FROM sign_in_attempts WHERE state_hash = $1 RETURNING provider, code_verifier, nonce, return_to, (expires_at > now()) AS live`,
    [stateHash],
  );
  return row?.live ? row : undefined;
}

/** The Gyre user linked to a provider's account, noting that it was seen. */
export async function linkedUser(tx: Queryable, provider: string, subject: string): Promise<string | undefined> {
  const [row] = await tx.query<{ user_id: string }>(
    `UPDATE user_identities SET last_seen_at = now() WHERE provider = $1 AND subject = $2 RETURNING user_id`,
    [provider, subject],
  );
  return row?.user_id;
}

export async function linkIdentity(tx: Queryable, l: { provider: string; subject: string; userId: string; login: string }): Promise<void> {
  await tx.query(
    `INSERT INTO user_identities (provider, subject, user_id, login, last_seen_at) VALUES ($1, $2, $3, $4, now())
     ON CONFLICT (provider, subject) DO UPDATE SET login = EXCLUDED.login, last_seen_at = now()`,
    [l.provider, l.subject, l.userId, l.login],
  );
}

export async function updateIdentityLogin(tx: Queryable, provider: string, subject: string, login: string): Promise<void> {
  await tx.query(`UPDATE user_identities SET login = $3 WHERE provider = $1 AND subject = $2`, [provider, subject, login]);
}

/** Memberships a provider keeps (`source` = its name) for one user: org and project roles. */
export async function sourcedRoles(db: Queryable, userId: string, source: string): Promise<{ orgs: { id: string; name: string; role: string }[]; projects: { id: string; slug: string; role: string }[] }> {
  const orgs = await db.query<{ id: string; name: string; role: string }>(
    `SELECT o.id, o.name, m.role FROM organization_members m JOIN organizations o ON o.id = m.organization_id WHERE m.user_id = $1 AND m.source = $2`,
    [userId, source],
  );
  const projects = await db.query<{ id: string; slug: string; role: string }>(
    `SELECT p.id, p.slug, m.role FROM project_members m JOIN projects p ON p.id = m.project_id WHERE m.user_id = $1 AND m.source = $2`,
    [userId, source],
  );
  return { orgs, projects };
}
