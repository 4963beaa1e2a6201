/**
 * Who is calling. The HTTP layer turns credentials into one of these; services and the policy
 * decide with it. Identity (users, tokens) belongs to the domain, not to the router.
 */

/** A user, authenticated with an API token (header, basic auth or the UI's cookie). */
export interface Principal {
  readonly userId: string;
  readonly login: string;
  readonly isAdmin: boolean;
}
