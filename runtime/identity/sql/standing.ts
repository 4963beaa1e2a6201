import type { AccessTarget, OrgRole, ProjectRole, Standing } from '../../domain/permissions';
import type { Queryable } from '../../store/store';

/**
 * Where a user stands toward the organisation or project a request is about: one query per
 * request, by slug, organisation name, or the id of a pipeline, workflow, job or schedule (whose
 * project it finds). What the caller may do with that is `decide`'s business (runtime/domain/permissions.ts).
 */

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** From a project row (`pr`) to the user's roles on it and in its organisation. */
const ROLES_OF_PROJECT = `
  LEFT JOIN organizations o ON o.name = pr.org
  LEFT JOIN organization_members om ON om.organization_id = o.id AND om.user_id = $2
  LEFT JOIN project_members pm ON pm.project_id = pr.id AND pm.user_id = $2`;

const PROJECT_OF: Record<Exclude<AccessTarget['kind'], 'org' | 'org-id' | 'context'>, string> = {
  project: 'FROM projects pr',
  'project-id': 'FROM projects pr',
  pipeline: 'FROM pipelines p JOIN projects pr ON pr.id = p.project_id',
  workflow: 'FROM workflows w JOIN pipelines p ON p.id = w.pipeline_id JOIN projects pr ON pr.id = p.project_id',
  job: 'FROM jobs j JOIN projects pr ON pr.id = j.project_id',
  schedule: 'FROM schedules s JOIN projects pr ON pr.id = s.project_id',
  webhook: 'FROM webhooks wh JOIN projects pr ON pr.id = wh.project_id',
};
const KEY_OF: Record<Exclude<AccessTarget['kind'], 'org' | 'org-id' | 'context'>, string> = { project: 'pr.slug', 'project-id': 'pr.id', pipeline: 'p.id', workflow: 'w.id', job: 'j.id', schedule: 's.id', webhook: 'wh.id' };

export async function standingOf(db: Queryable, userId: string, target: AccessTarget): Promise<Standing> {
  if (target.kind === 'org-id') {
    const [org] = UUID.test(target.id) ? await db.query<{ name: string }>('SELECT name FROM organizations WHERE id = $1', [target.id]) : [];
    return org ? standingOf(db, userId, { kind: 'org', name: org.name }) : { exists: false };
  }
  // A context (runtime/secrets) belongs to an organisation: the caller stands toward it as toward that.
  if (target.kind === 'context') {
    const [context] = UUID.test(target.id) ? await db.query<{ name: string }>('SELECT o.name FROM contexts c JOIN organizations o ON o.id = c.organization_id WHERE c.id = $1', [target.id]) : [];
    return context ? standingOf(db, userId, { kind: 'org', name: context.name }) : { exists: false };
  }
  if (target.kind === 'org') {
    const [row] = await db.query<{ exists: boolean; role: OrgRole | null; in_org: boolean }>(
      `SELECT (EXISTS (SELECT 1 FROM organizations WHERE name = $1) OR EXISTS (SELECT 1 FROM projects WHERE org = $1)) AS exists,
              (SELECT m.role FROM organization_members m JOIN organizations o ON o.id = m.organization_id WHERE o.name = $1 AND m.user_id = $2) AS role,
              EXISTS (SELECT 1 FROM project_members pm JOIN projects pr ON pr.id = pm.project_id WHERE pr.org = $1 AND pm.user_id = $2) AS in_org`,
      [target.name, userId],
    );
    return { exists: row.exists, org: target.name, orgRole: row.role ?? undefined, inOrg: row.in_org };
  }
  const key = target.kind === 'project' ? target.slug : target.id;
  if (target.kind !== 'project' && !UUID.test(key)) return { exists: false };
  const [row] = await db.query<{ id: string; org: string; org_role: OrgRole | null; project_role: ProjectRole | null }>(
    `SELECT pr.id, pr.org, om.role AS org_role, pm.role AS project_role ${PROJECT_OF[target.kind]} ${ROLES_OF_PROJECT} WHERE ${KEY_OF[target.kind]} = $1`,
    [key, userId],
  );
  if (!row) return { exists: false };
  return { exists: true, org: row.org, projectId: row.id, orgRole: row.org_role ?? undefined, projectRole: row.project_role ?? undefined };
}
