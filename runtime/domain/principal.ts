/**
 * Who is calling. The HTTP layer turns credentials into one of these; services and the policy
 * (`permissions.ts`) decide with it. Identity (users, tokens) belongs to the domain, not to the router.
 */

/**
 * The actor of what no Gyre user started: a pipeline a schedule attributed to the system started, a
 * push or pull request from a GitHub account no Gyre user is linked to. CircleCI names its
 * scheduling actor `system-actor`; Gyre gives it this fixed id wherever API v2 needs a user's id (a
 * workflow's `started_by`, a schedule's `actor.id`). No user has it.
 */
export const SYSTEM_ACTOR_ID = '00000000-0000-0000-0000-000000000000';

/** What a project token may do on its project: `read` its pipelines, jobs and output; `trigger` also starts, cancels and approves. */
export const PROJECT_TOKEN_SCOPES = ['read', 'trigger'] as const;
export type ProjectTokenScope = (typeof PROJECT_TOKEN_SCOPES)[number];

/** The API token a request came with. */
export type PrincipalToken =
  /** A user's own token (the bootstrap admin's included): it acts with the user's roles. */
  | { readonly id: string; readonly kind: 'personal' }
  /** A browser session (sign-in): it acts with the user's roles, like a personal token. */
  | { readonly id: string; readonly kind: 'session' }
  /** A project token: it acts on its one project with its scope, whoever made it, and on nothing else. */
  | { readonly id: string; readonly kind: 'project'; readonly projectId: string; readonly org: string; readonly scope: ProjectTokenScope };

/** A caller authenticated with an API token (header or basic auth) or a browser session's cookie. */
export interface Principal {
  /**
   * The user the token belongs to; for a project token, the user who made it (pipelines it
   * triggers name them). Rights never come from this user for a project token: the policy reads
   * `token` first.
   */
  readonly userId: string;
  readonly login: string;
  /** The instance admin: every permission everywhere. Never true for a project token. */
  readonly isAdmin: boolean;
  /** The token used. Absent for principals made in process (tests): they act as a personal token. */
  readonly token?: PrincipalToken;
}
