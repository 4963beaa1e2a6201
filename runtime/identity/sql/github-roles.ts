import type { ProjectRole } from '../../domain/permissions';
import type { Queryable } from '../../store/store';

/**
 * The SQL of the GitHub role source (../github-roles.ts): the projects it asks GitHub about, the
 * GitHub accounts linked to users, and the project memberships whose `source` is a provider's.
 * Writes touch only rows of that source, whatever happened between reading and writing.
 */

export interface ProjectRow {
  id: string;
  slug: string;
  org: string;
}

/** Projects named like GitHub repositories (`gh/<owner>/<repo>`). */
export async function githubProjects(db: Queryable): Promise<ProjectRow[]> {
  return db.query<ProjectRow>(`SELECT id, slug, org FROM projects WHERE slug LIKE 'gh/%/%' ORDER BY slug`);
}

export interface LinkedAccount {
  user_id: string;
  /** The Gyre user's login. */
  user_login: string;
  /** The account's id at the provider (GitHub's numeric user id). */
  subject: string;
  /** The account's login at the provider, as of its last sign-in. */
  login: string;
}

/** Accounts at `provider` linked to users (one user's only, with `userId`). */
export async function linkedAccounts(db: Queryable, provider: string, userId?: string): Promise<LinkedAccount[]> {
  return db.query<LinkedAccount>(
    `SELECT ui.user_id, u.login AS user_login, ui.subject, ui.login
       FROM user_identities ui JOIN users u ON u.id = ui.user_id
      WHERE ui.provider = $1 AND ui.login IS NOT NULL AND ($2::uuid IS NULL OR ui.user_id = $2::uuid)
      ORDER BY u.login, ui.subject`,
    [provider, userId ?? null],
  );
}

export interface MembershipRow {
  project_id: string;
  user_id: string;
  role: string;
  source: string;
}

/** The project memberships of these users, whatever their source. */
export async function membershipsOf(db: Queryable, userIds: readonly string[]): Promise<MembershipRow[]> {
  if (userIds.length === 0) return [];
  return db.query<MembershipRow>('SELECT project_id, user_id, role, source FROM project_members WHERE user_id = ANY($1::uuid[])', [userIds]);
}

/** One membership, locked for the rest of the transaction. */
export async function lockMembership(tx: Queryable, projectId: string, userId: string): Promise<MembershipRow | undefined> {
  const [row] = await tx.query<MembershipRow>('SELECT project_id, user_id, role, source FROM project_members WHERE project_id = $1 AND user_id = $2 FOR UPDATE', [projectId, userId]);
  return row;
}

/**
 * Gives a user `role` on a project as `source` keeps it: made when there is no membership, changed
 * when there is one of `source`; a membership of another source (a role set in Gyre), even one made
 * a moment ago, is left as it is. Answers whether the row was written.
 */
export async function keepSourcedRole(tx: Queryable, projectId: string, userId: string, role: ProjectRole, source: string): Promise<boolean> {
  const rows = await tx.query(
    `INSERT INTO project_members (project_id, user_id, role, source) VALUES ($1, $2, $3, $4)
     ON CONFLICT (project_id, user_id) DO UPDATE SET role = EXCLUDED.role, updated_at = now()
     WHERE project_members.source = EXCLUDED.source
     RETURNING role`,
    [projectId, userId, role, source],
  );
  return rows.length > 0;
}

/** Removes a user's membership of a project if `source` keeps it; answers the role it had. */
export async function dropSourcedRole(tx: Queryable, projectId: string, userId: string, source: string): Promise<string | undefined> {
  const [row] = await tx.query<{ role: string }>('DELETE FROM project_members WHERE project_id = $1 AND user_id = $2 AND source = $3 RETURNING role', [projectId, userId, source]);
  return row?.role;
}

export interface OrphanRow {
  project_id: string;
  slug: string;
  org: string;
  user_id: string;
  user_login: string;
  role: string;
}

/** Memberships `source` keeps for users no longer linked to an account at `provider` (one user's, with `userId`). */
export async function unlinkedSourcedRoles(db: Queryable, source: string, provider: string, userId?: string): Promise<OrphanRow[]> {
  return db.query<OrphanRow>(
    `SELECT m.project_id, p.slug, p.org, m.user_id, u.login AS user_login, m.role
       FROM project_members m JOIN projects p ON p.id = m.project_id JOIN users u ON u.id = m.user_id
      WHERE m.source = $1 AND ($3::uuid IS NULL OR m.user_id = $3::uuid)
        AND NOT EXISTS (SELECT 1 FROM user_identities ui WHERE ui.user_id = m.user_id AND ui.provider = $2 AND ui.login IS NOT NULL)
      ORDER BY p.slug, u.login`,
    [source, provider, userId ?? null],
  );
}
