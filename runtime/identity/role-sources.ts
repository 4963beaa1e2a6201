/**
 * Roles kept outside Gyre. A provider that knows who may do what (GitHub's repository permissions:
 * admin, write, read) keeps the memberships whose `source` is its name up to date; the identity
 * role runs each source's `refresh` at start and every `intervalMs`. None exist yet: the GitHub
 * sign-in adds one (it maps a user's repository permissions onto project roles, and replaces only
 * the rows it made, so roles set in Gyre stay).
 */
export interface RoleSource {
  /** The `source` of the memberships it keeps (`github`). */
  readonly name: string;
  /** How often to refresh. */
  readonly intervalMs: number;
  /** Brings the memberships it keeps up to date; records its changes in the audit log itself. */
  refresh(): Promise<void>;
}
