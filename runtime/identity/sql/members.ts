import { randomUUID } from 'node:crypto';
import type { OrgRole, ProjectRole } from '../../domain/permissions';
import type { Queryable } from '../../store/store';

/**
 * Organisations and the roles users hold in them and on their projects. An organisation is named
 * by `name` (the `acme` of `gh/acme`); projects belong to it by their `org` column.
 */

export interface OrgRow {
  id: string;
  name: string;
  created_at: Date | string;
}

/** The organisation of this name, made if it does not exist yet (with its first project, or explicitly). */
export async function ensureOrg(tx: Queryable, name: string): Promise<{ org: OrgRow; created: boolean }> {
  const [made] = await tx.query<OrgRow>('INSERT INTO organizations (id, name) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING RETURNING id, name, created_at', [randomUUID(), name]);
  if (made) return { org: made, created: true };
  const [org] = await tx.query<OrgRow>('SELECT id, name, created_at FROM organizations WHERE name = $1', [name]);
  return { org, created: false };
}

export async function orgByName(db: Queryable, name: string): Promise<OrgRow | undefined> {
  const [row] = await db.query<OrgRow>('SELECT id, name, created_at FROM organizations WHERE name = $1', [name]);
  return row;
}

/** Who sees what: every project (an instance admin), one project (a project token), or a user's by their roles. */
export type Visibility = { readonly all: true } | { readonly projectId: string } | { readonly userId: string };

/** Organisations one can see: an admin all; a user those they hold a role in or on a project of; a project token its project's. */
export async function visibleOrgs(db: Queryable, who: Visibility): Promise<(OrgRow & { role: OrgRole | null; projects: number })[]> {
  const userId = 'userId' in who ? who.userId : null;
  return db.query(
    `SELECT o.id, o.name, o.created_at, om.role, (SELECT count(*)::int FROM projects pr WHERE pr.org = o.name) AS projects
       FROM organizations o
       LEFT JOIN organization_members om ON om.organization_id = o.id AND om.user_id = $2
      WHERE $1::boolean
         OR om.role IS NOT NULL
         OR EXISTS (SELECT 1 FROM project_members pm JOIN projects pr ON pr.id = pm.project_id WHERE pr.org = o.name AND pm.user_id = $2)
         OR EXISTS (SELECT 1 FROM projects pr WHERE pr.org = o.name AND pr.id = $3)
      ORDER BY o.name`,
    ['all' in who, userId, 'projectId' in who ? who.projectId : null],
  );
}

/** The SQL condition "project `pr` is visible" for `visibleProjectParams`'s three parameters, numbered from `first`. */
export function visibleProjectCondition(first: number): string {
  const [all, projectId, userId] = [first, first + 1, first + 2].map((n) => `$${n}`);
  return `(${all}::boolean OR pr.id = ${projectId}::uuid
    OR EXISTS (SELECT 1 FROM project_members pm WHERE pm.project_id = pr.id AND pm.user_id = ${userId}::uuid)
    OR EXISTS (SELECT 1 FROM organization_members om JOIN organizations o ON o.id = om.organization_id WHERE o.name = pr.org AND om.user_id = ${userId}::uuid))`;
}

export function visibleProjectParams(who: Visibility): [boolean, string | null, string | null] {
  return ['all' in who, 'projectId' in who ? who.projectId : null, 'userId' in who ? who.userId : null];
}

export interface MemberRow {
  user_id: string;
  login: string;
  name: string;
  role: string;
  source: string;
  updated_at: Date | string;
}

export async function orgMembers(db: Queryable, orgId: string): Promise<MemberRow[]> {
  return db.query<MemberRow>(
    `SELECT u.id AS user_id, u.login, u.name, m.role, m.source, m.updated_at
       FROM organization_members m JOIN users u ON u.id = m.user_id WHERE m.organization_id = $1 ORDER BY u.login`,
    [orgId],
  );
}

export async function projectMembers(db: Queryable, projectId: string): Promise<MemberRow[]> {
  return db.query<MemberRow>(
    `SELECT u.id AS user_id, u.login, u.name, m.role, m.source, m.updated_at
       FROM project_members m JOIN users u ON u.id = m.user_id WHERE m.project_id = $1 ORDER BY u.login`,
    [projectId],
  );
}

/** Gives a user a role (replacing the one they had); answers the role they had before, if any. */
export async function setOrgRole(tx: Queryable, orgId: string, userId: string, role: OrgRole, source = 'gyre'): Promise<string | undefined> {
  const [before] = await tx.query<{ role: string }>('SELECT role FROM organization_members WHERE organization_id = $1 AND user_id = $2 FOR UPDATE', [orgId, userId]);
  await tx.query(
    `INSERT INTO organization_members (organization_id, user_id, role, source) VALUES ($1, $2, $3, $4)
     ON CONFLICT (organization_id, user_id) DO UPDATE SET role = EXCLUDED.role, source = EXCLUDED.source, updated_at = now()`,
    [orgId, userId, role, source],
  );
  return before?.role;
}

export async function removeOrgRole(tx: Queryable, orgId: string, userId: string): Promise<string | undefined> {
  const [row] = await tx.query<{ role: string }>('DELETE FROM organization_members WHERE organization_id = $1 AND user_id = $2 RETURNING role', [orgId, userId]);
  return row?.role;
}

export async function setProjectRole(tx: Queryable, projectId: string, userId: string, role: ProjectRole, source = 'gyre'): Promise<string | undefined> {
  const [before] = await tx.query<{ role: string }>('SELECT role FROM project_members WHERE project_id = $1 AND user_id = $2 FOR UPDATE', [projectId, userId]);
  await tx.query(
    `INSERT INTO project_members (project_id, user_id, role, source) VALUES ($1, $2, $3, $4)
     ON CONFLICT (project_id, user_id) DO UPDATE SET role = EXCLUDED.role, source = EXCLUDED.source, updated_at = now()`,
    [projectId, userId, role, source],
  );
  return before?.role;
}

export async function removeProjectRole(tx: Queryable, projectId: string, userId: string): Promise<string | undefined> {
  const [row] = await tx.query<{ role: string }>('DELETE FROM project_members WHERE project_id = $1 AND user_id = $2 RETURNING role', [projectId, userId]);
  return row?.role;
}

/** A user's organisation roles and project roles, for `gyre user list` and the users page. */
export async function rolesOfUser(db: Queryable, userId: string): Promise<{ orgs: { name: string; role: string }[]; projects: { slug: string; role: string }[] }> {
  const orgs = await db.query<{ name: string; role: string }>(
    'SELECT o.name, m.role FROM organization_members m JOIN organizations o ON o.id = m.organization_id WHERE m.user_id = $1 ORDER BY o.name',
    [userId],
  );
  const projects = await db.query<{ slug: string; role: string }>(
    'SELECT pr.slug, m.role FROM project_members m JOIN projects pr ON pr.id = m.project_id WHERE m.user_id = $1 ORDER BY pr.slug',
    [userId],
  );
  return { orgs, projects };
}
