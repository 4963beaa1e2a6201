import type { Principal } from './principal';

/**
 * Roles and permissions: the one policy every API request is decided by (`decide`). Routes declare
 * the permission they need (`config: { permission: 'project:trigger' }`); the HTTP boundary finds
 * the caller's standing toward the route's organisation or project (the identity service's
 * `standing`) and asks `decide`. Pure: no I/O here, so the table below is the whole policy.
 *
 * A project the caller cannot see answers 404, exactly as one that does not exist; one they can see
 * but not act on answers 403. The same for organisations.
 */

/** Roles in an organisation: admin (everything in it), member (read and trigger every project), viewer (read every project). */
export const ORG_ROLES = ['admin', 'member', 'viewer'] as const;
export type OrgRole = (typeof ORG_ROLES)[number];

/** Roles on one project: admin (its settings, members and tokens), write (trigger, cancel, approve), read. */
export const PROJECT_ROLES = ['admin', 'write', 'read'] as const;
export type ProjectRole = (typeof PROJECT_ROLES)[number];

export const PERMISSIONS = [
  /** Any valid API token: lists (filtered to what it can see), config compilation, the orb list. */
  'authenticated',
  /** A user acting for themselves: their profile and personal tokens (not a project token). */
  'user:self',
  /** The instance admin: users, resource classes, limits, orb imports, the whole audit log. */
  'instance:admin',
  /** See an organisation and its members. */
  'org:read',
  /** Manage an organisation: its members' roles, its projects, its audit log. */
  'org:admin',
  /** See a project: pipelines, workflows, jobs, output, artifacts, tests, settings, members. */
  'project:read',
  /** Start pipelines, cancel workflows, approve jobs. */
  'project:trigger',
  /** A project's settings, members and project tokens. */
  'project:admin',
] as const;
export type Permission = (typeof PERMISSIONS)[number];

/** What a permission is about: the instance, an organisation, or a project. */
export function scopeOf(permission: Permission): 'instance' | 'org' | 'project' {
  if (permission.startsWith('org:')) return 'org';
  if (permission.startsWith('project:')) return 'project';
  return 'instance';
}

/**
 * Where a principal stands toward the organisation or project a request is about, as the identity
 * service reads it from the database.
 */
export interface Standing {
  /** The organisation or project exists. */
  readonly exists: boolean;
  /** The organisation's name (`acme` of `gh/acme`), of the organisation itself or the project's. */
  readonly org?: string;
  /** The project's id, when the target is a project. */
  readonly projectId?: string;
  /** The principal's role in the organisation. */
  readonly orgRole?: OrgRole;
  /** The principal's role on the project (a project target only). */
  readonly projectRole?: ProjectRole;
  /** The principal has a role on some project of the organisation (an organisation target only). */
  readonly inOrg?: boolean;
}

export type Decision = 'allow' | 'forbidden' | 'not-found';

const PROJECT_RANK: Record<ProjectRole, number> = { read: 1, write: 2, admin: 3 };
/** What an organisation role gives on each of the organisation's projects. */
const PROJECT_ROLE_OF_ORG_ROLE: Record<OrgRole, ProjectRole> = { viewer: 'read', member: 'write', admin: 'admin' };
/** The project role a project permission needs. */
const NEEDS: Record<'project:read' | 'project:trigger' | 'project:admin', ProjectRole> = { 'project:read': 'read', 'project:trigger': 'write', 'project:admin': 'admin' };

/** The role a user has on a project: the higher of their own role on it and what their organisation role gives. */
export function effectiveProjectRole(standing: Pick<Standing, 'orgRole' | 'projectRole'>): ProjectRole | undefined {
  const fromOrg = standing.orgRole ? PROJECT_ROLE_OF_ORG_ROLE[standing.orgRole] : undefined;
  const own = standing.projectRole;
  if (!fromOrg) return own;
  if (!own) return fromOrg;
  return PROJECT_RANK[own] >= PROJECT_RANK[fromOrg] ? own : fromOrg;
}

/**
 * The policy. `standing` is needed for organisation and project permissions; without it (or when
 * the target does not exist) only the instance admin is let through, so a handler can still answer
 * "not found" or create what is missing.
 */
export function decide(principal: Principal, permission: Permission, standing?: Standing): Decision {
  const scope = scopeOf(permission);
  const token = principal.token;

  if (token?.kind === 'project') {
    // A project token sees its one project and nothing else; it is never an admin of anything.
    if (permission === 'authenticated') return 'allow';
    if (scope === 'instance') return 'forbidden';
    if (!standing?.exists) return 'not-found';
    if (scope === 'org') return standing.org === token.org ? 'forbidden' : 'not-found';
    if (standing.projectId !== token.projectId) return 'not-found';
    if (permission === 'project:read') return 'allow';
    if (permission === 'project:trigger') return token.scope === 'trigger' ? 'allow' : 'forbidden';
    return 'forbidden';
  }

  if (principal.isAdmin) return 'allow';
  if (permission === 'authenticated' || permission === 'user:self') return 'allow';
  if (permission === 'instance:admin') return 'forbidden';
  if (!standing?.exists) return 'not-found';

  if (scope === 'org') {
    if (!standing.orgRole) return standing.inOrg ? 'forbidden' : 'not-found';
    if (permission === 'org:read') return 'allow';
    return standing.orgRole === 'admin' ? 'allow' : 'forbidden';
  }

  const role = effectiveProjectRole(standing);
  if (!role) return 'not-found';
  const needs = NEEDS[permission as keyof typeof NEEDS];
  return PROJECT_RANK[role] >= PROJECT_RANK[needs] ? 'allow' : 'forbidden';
}

/** What a route's organisation or project permission is about, read from its path. */
export type AccessTarget =
  | { readonly kind: 'project'; readonly slug: string }
  | { readonly kind: 'org'; readonly name: string }
  | { readonly kind: 'pipeline' | 'workflow' | 'job'; readonly id: string }
  /** An organisation or a project by its id (the `/org/{orgID}/…` routes). */
  | { readonly kind: 'org-id' | 'project-id'; readonly id: string }
  /** A context (runtime/secrets): its organisation. */
  | { readonly kind: 'context'; readonly id: string }
  /** A schedule (runtime/schedules): its project. */
  | { readonly kind: 'schedule'; readonly id: string }
  /** An outbound webhook (runtime/notifications): its project. */
  | { readonly kind: 'webhook'; readonly id: string };

/** The kinds of id a route's `:id` can name, whose project (or, for `org-id`, organisation) the policy finds. */
export const ID_TARGETS = ['pipeline', 'workflow', 'job', 'org-id', 'project-id', 'context', 'schedule', 'webhook'] as const;
export type IdTarget = (typeof ID_TARGETS)[number];

/** What an id target is about: `org-id` and `context` an organisation (for an `org:` permission), the others a project (for a `project:` one). */
export function idTargetScope(target: IdTarget): 'org' | 'project' {
  return target === 'org-id' || target === 'context' ? 'org' : 'project';
}

/** Who holds a permission, in words, for 403 messages and the docs. */
export const WHO_HOLDS: Record<Permission, string> = {
  authenticated: 'any valid API token',
  'user:self': 'a user (not a project token)',
  'instance:admin': 'an instance administrator',
  'org:read': "a role in the organisation (admin, member or viewer)",
  'org:admin': "the organisation's admin role",
  'project:read': 'any role on the project or its organisation, or a project token',
  'project:trigger': "the project's write or admin role, the organisation's member or admin role, or a project token with the trigger scope",
  'project:admin': "the project's admin role or the organisation's admin role",
};
