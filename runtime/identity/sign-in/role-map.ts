import { appendAudit, SYSTEM_ACTOR } from '../../audit/audit-log';
import { ConfigurationError } from '../../domain/errors';
import { ORG_ROLES, PROJECT_ROLES, type OrgRole, type ProjectRole } from '../../domain/permissions';
import type { Queryable } from '../../store/store';
import * as members from '../sql/members';
import { sourcedRoles } from '../sql/sessions';

/**
 * Group → role mapping for a sign-in provider (GYRE_OIDC_ROLES, GYRE_LDAP_ROLES): rules such as
 * `ci-admins=instance:admin; developers=gh/acme:member; qa=gh/acme/web:read`. At every sign-in the
 * roles a user's groups give are written as memberships whose `source` is the provider, and those
 * the groups no longer give are removed, so leaving a group takes effect at the next sign-in.
 * Roles set in Gyre (source `gyre`) or by another provider are never changed: where one exists
 * the rule is skipped for that user.
 */
export interface RoleRule {
  readonly group: string;
  readonly target: { readonly kind: 'instance' } | { readonly kind: 'org'; readonly name: string } | { readonly kind: 'project'; readonly slug: string };
  readonly role: string;
}

const SLUG_PART = /^[A-Za-z0-9_.-]{1,100}$/;

/** Parses a role map setting; a bad rule throws a ConfigurationError naming the setting and the rule. */
export function parseRoleMap(setting: string, raw: string | undefined): RoleRule[] {
  if (!raw || !raw.trim()) return [];
  const rules: RoleRule[] = [];
  for (const text of raw.split(/[;\n]/).map((r) => r.trim()).filter(Boolean)) {
    const bad = (why: string) => new ConfigurationError(setting, `rule '${text.slice(0, 200)}' ${why} (rules look like group=instance:admin, group=gh/<org>:${ORG_ROLES.join('|')} or group=gh/<org>/<repo>:${PROJECT_ROLES.join('|')}, separated by ';')`);
    const eq = text.lastIndexOf('=');
    if (eq <= 0) throw bad('has no group');
    const group = text.slice(0, eq).trim();
    const rest = text.slice(eq + 1).trim();
    const colon = rest.lastIndexOf(':');
    if (colon <= 0) throw bad('has no role');
    const where = rest.slice(0, colon).trim();
    const role = rest.slice(colon + 1).trim();
    if (where === 'instance') {
      if (role !== 'admin') throw bad(`gives instance role '${role}'; the only instance role is admin`);
      rules.push({ group, target: { kind: 'instance' }, role });
      continue;
    }
    const parts = where.split('/');
    if ((parts[0] !== 'gh' && parts[0] !== 'github') || parts.length < 2 || parts.length > 3 || !parts.slice(1).every((p) => SLUG_PART.test(p))) {
      throw bad(`names '${where}', which is not instance, gh/<org> or gh/<org>/<repo>`);
    }
    if (parts.length === 2) {
      if (!(ORG_ROLES as readonly string[]).includes(role)) throw bad(`gives organisation role '${role}' (allowed: ${ORG_ROLES.join(', ')})`);
      rules.push({ group, target: { kind: 'org', name: parts[1] }, role });
    } else {
      if (!(PROJECT_ROLES as readonly string[]).includes(role)) throw bad(`gives project role '${role}' (allowed: ${PROJECT_ROLES.join(', ')})`);
      rules.push({ group, target: { kind: 'project', slug: `gh/${parts[1]}/${parts[2]}` }, role });
    }
  }
  return rules;
}

/** The stronger of two roles of one kind (earlier in the list is stronger). */
function stronger<T extends string>(order: readonly T[], a: T | undefined, b: T): T {
  return a === undefined || order.indexOf(b) < order.indexOf(a) ? b : a;
}

export interface RoleMapOutcome {
  readonly admin?: boolean;
  readonly changes: readonly string[];
}

/**
 * Brings the roles `provider` keeps for `userId` in line with `groups` under `rules`, in `tx`,
 * recording each change in the audit log. Answers what changed (`+gh/acme:member`, `-gh/acme/web`).
 * Without rules it changes nothing (the provider keeps no roles).
 */
export async function applyRoleMap(tx: Queryable, input: { userId: string; login: string; provider: string; groups: readonly string[]; rules: readonly RoleRule[] }): Promise<RoleMapOutcome> {
  const { userId, login, provider, rules } = input;
  if (rules.length === 0) return { changes: [] };
  const groups = new Set(input.groups);
  const wantOrgs = new Map<string, OrgRole>();
  const wantProjects = new Map<string, ProjectRole>();
  let admin = false;
  const governsAdmin = rules.some((r) => r.target.kind === 'instance');
  for (const rule of rules) {
    if (!groups.has(rule.group)) continue;
    const t = rule.target;
    if (t.kind === 'instance') admin = true;
    else if (t.kind === 'org') wantOrgs.set(t.name, stronger(ORG_ROLES, wantOrgs.get(t.name), rule.role as OrgRole));
    else wantProjects.set(t.slug, stronger(PROJECT_ROLES, wantProjects.get(t.slug), rule.role as ProjectRole));
  }
  const changes: string[] = [];
  const record = (action: string, target: { type: string; id: string }, detail: Record<string, unknown>) =>
    appendAudit(tx, { actor: SYSTEM_ACTOR, action, target, result: 'success', detail: { user: login, source: provider, ...detail } });
  const have = await sourcedRoles(tx, userId, provider);

  for (const [name, role] of wantOrgs) {
    const org = await members.orgByName(tx, name);
    if (!org) continue; // an organisation that does not exist yet: the rule applies once it does
    const [current] = await tx.query<{ role: string; source: string }>(`SELECT role, source FROM organization_members WHERE organization_id = $1 AND user_id = $2`, [org.id, userId]);
    if (current && current.source !== provider) continue;
    if (current?.role === role) continue;
    await members.setOrgRole(tx, org.id, userId, role, provider);
    await record('org.member.set', { type: 'organization', id: `gh/${name}` }, { role });
    changes.push(`+gh/${name}:${role}`);
  }
  for (const o of have.orgs) {
    if (wantOrgs.has(o.name)) continue;
    await members.removeOrgRole(tx, o.id, userId);
    await record('org.member.remove', { type: 'organization', id: `gh/${o.name}` }, { role: o.role });
    changes.push(`-gh/${o.name}`);
  }
  for (const [slug, role] of wantProjects) {
    const [project] = await tx.query<{ id: string }>(`SELECT id FROM projects WHERE slug = $1`, [slug]);
    if (!project) continue;
    const [current] = await tx.query<{ role: string; source: string }>(`SELECT role, source FROM project_members WHERE project_id = $1 AND user_id = $2`, [project.id, userId]);
    if (current && current.source !== provider) continue;
    if (current?.role === role) continue;
    await members.setProjectRole(tx, project.id, userId, role, provider);
    await record('project.member.set', { type: 'project', id: slug }, { role });
    changes.push(`+${slug}:${role}`);
  }
  for (const p of have.projects) {
    if (wantProjects.has(p.slug)) continue;
    await members.removeProjectRole(tx, p.id, userId);
    await record('project.member.remove', { type: 'project', id: p.slug }, { role: p.role });
    changes.push(`-${p.slug}`);
  }
  return { admin: governsAdmin ? admin : undefined, changes };
}
