import { AuthenticationError } from '../../domain/errors';

/**
 * Sign-in providers: who a person is, as an identity provider vouches for it. A provider answers
 * an `ExternalIdentity`; the sign-in service (sign-in.ts) finds or makes the Gyre user it is linked
 * to (`user_identities`: provider, subject → user), maps its groups onto roles, and starts a browser
 * session. Providers know nothing of Gyre's users, sessions or cookies.
 */

/** A person as an identity provider knows them. */
export interface ExternalIdentity {
  /** The provider's name as configured (`github`, `oidc`, `ldap`). */
  readonly provider: string;
  /**
   * What identifies the person at the provider for good, and never names someone else later:
   * GitHub's numeric user id, the OIDC `sub`, the LDAP entry's `entryUUID` (its DN if it has none).
   */
  readonly subject: string;
  /** The login the person is known by there (GitHub login, `preferred_username`, LDAP `uid`). */
  readonly login: string;
  readonly name?: string;
  readonly email?: string;
  /** Groups the provider says the person is in (OIDC groups claim, LDAP groups' names); [] where it has none. */
  readonly groups: readonly string[];
}

/**
 * What a redirect sign-in keeps between sending the browser to the provider and its return: kept
 * server-side (never in the browser) for a few minutes, found again by `state`.
 */
export interface SignInTransaction {
  /** The random `state` sent to the provider and checked on return. */
  readonly state: string;
  /** PKCE code verifier. */
  readonly codeVerifier: string;
  /** OIDC nonce, checked in the ID token. */
  readonly nonce?: string;
}

/** A provider that signs in by sending the browser away and back (GitHub OAuth, OpenID Connect). */
export interface RedirectProvider {
  readonly kind: 'redirect';
  /** `github`, `oidc`. */
  readonly name: string;
  /** What the sign-in page's button says (`GitHub`, `Okta`). */
  readonly label: string;
  /** Where to send the browser, and what to keep until it returns to `redirectUri`. */
  begin(redirectUri: string): Promise<{ url: string; transaction: SignInTransaction }>;
  /**
   * The person the provider vouches for, from the URL the browser returned to (`callbackUrl`, with
   * its query) and the transaction kept for its `state`. Throws `SignInError` when the provider
   * refused, the state or nonce does not match, or the code cannot be exchanged.
   */
  finish(callbackUrl: URL, transaction: SignInTransaction, redirectUri: string): Promise<ExternalIdentity>;
}

/** A provider that checks a user name and password (LDAP bind). */
export interface PasswordProvider {
  readonly kind: 'password';
  /** `ldap`. */
  readonly name: string;
  readonly label: string;
  /**
   * The person whose name and password these are; undefined when they are not (an unknown user and
   * a wrong password are told apart by nobody). Throws only when the directory cannot be asked.
   */
  verify(username: string, password: string): Promise<ExternalIdentity | undefined>;
}

export type SignInProvider = RedirectProvider | PasswordProvider;

/** A sign-in the provider refused or that did not check out (401); its message is safe to show the person. */
export class SignInError extends AuthenticationError {}
