import type { Queryable } from '../../store/store';

export interface UserRow {
  id: string;
  login: string;
  name: string;
  email: string | null;
  is_admin: boolean;
  disabled_at: Date | string | null;
  created_at: Date | string;
}

const USER_COLUMNS = 'id, login, name, email, is_admin, disabled_at, created_at';

export async function insertUser(tx: Queryable, u: { id: string; login: string; name: string; email?: string; isAdmin: boolean }): Promise<UserRow | undefined> {
  const [row] = await tx.query<UserRow>(
    `INSERT INTO users (id, login, name, email, is_admin) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (login) DO NOTHING RETURNING ${USER_COLUMNS}`,
    [u.id, u.login, u.name, u.email ?? null, u.isAdmin],
  );
  return row;
}

export async function userByLogin(db: Queryable, login: string, lock = false): Promise<UserRow | undefined> {
  const [row] = await db.query<UserRow>(`SELECT ${USER_COLUMNS} FROM users WHERE login = $1${lock ? ' FOR UPDATE' : ''}`, [login]);
  return row;
}

export async function userById(db: Queryable, id: string): Promise<UserRow | undefined> {
  const [row] = await db.query<UserRow>(`SELECT ${USER_COLUMNS} FROM users WHERE id = $1`, [id]);
  return row;
}

export async function listUsers(db: Queryable, after: string | undefined, limit: number): Promise<UserRow[]> {
  return db.query<UserRow>(`SELECT ${USER_COLUMNS} FROM users WHERE ($1::text IS NULL OR login > $1) ORDER BY login LIMIT $2`, [after ?? null, limit]);
}

export async function updateUser(tx: Queryable, id: string, changes: { name?: string; email?: string | null; isAdmin?: boolean; disabled?: boolean }): Promise<UserRow> {
  const [row] = await tx.query<UserRow>(
    `UPDATE users SET name = COALESCE($2, name),
                      email = CASE WHEN $3::boolean THEN $4 ELSE email END,
                      is_admin = COALESCE($5, is_admin),
                      disabled_at = CASE WHEN $6::boolean IS NULL THEN disabled_at WHEN $6 THEN COALESCE(disabled_at, now()) ELSE NULL END
      WHERE id = $1 RETURNING ${USER_COLUMNS}`,
    [id, changes.name ?? null, changes.email !== undefined, changes.email ?? null, changes.isAdmin ?? null, changes.disabled ?? null],
  );
  return row;
}

/** Instance admins who can still sign in, taken with a lock so two demotions cannot both pass. */
export async function enabledAdmins(tx: Queryable): Promise<string[]> {
  return (await tx.query<{ id: string }>('SELECT id FROM users WHERE is_admin AND disabled_at IS NULL ORDER BY created_at FOR UPDATE')).map((r) => r.id);
}
