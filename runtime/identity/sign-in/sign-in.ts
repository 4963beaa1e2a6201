import { createHash, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import { appendAudit, SYSTEM_ACTOR, type AuditActor } from '../../audit/audit-log';
import { AuthenticationError, InputError, NotFoundError, RateLimitError } from '../../domain/errors';
import type { Principal } from '../../domain/principal';
import type { Logger } from '../../logger';
import type { Queryable, Store } from '../../store/store';
import type { Identity } from '../identity';
import * as sessions from '../sql/sessions';
import * as users from '../sql/users';
import { SignInError, type ExternalIdentity, type PasswordProvider, type RedirectProvider, type SignInProvider } from './provider';
import { applyRoleMap, type RoleRule } from './role-map';

/**
 * Sign-in: turns a credential (an API token, a provider's word for who someone is, a directory
 * password) into a browser session, and a session cookie back into the principal it stands for.
 *
 * - A provider's account is linked to one Gyre user (`user_identities`: provider, subject). On its
 *   first sign-in a user is made for it (unless GYRE_SIGN_IN_CREATE_USERS=false), named after its
 *   login, or `<login>-<provider>` when a Gyre user already has that name: an account at a provider
 *   never takes over a Gyre user it was not linked to.
 * - The roles the provider's groups give (role-map.ts) are written at every sign-in.
 * - The session cookie holds 32 random bytes; the database keeps their SHA-256. Each session has a
 *   CSRF token the UI sends back on every write (`X-Gyre-CSRF`).
 * - Every sign-in, failed sign-in and sign-out is in the audit log. Failures per address and per
 *   user name are throttled (SIGN_IN_FAILURES in SIGN_IN_WINDOW_MS, then refused until the window passes).
 */
export interface SignIn {
  /** The configured providers, for the sign-in page. */
  providers(): readonly { name: string; label: string; kind: SignInProvider['kind'] }[];
  /** A session for the user of a personal API token (not a project token). */
  withToken(token: string, context: SignInContext): Promise<StartedSession>;
  /** A session for a directory user name and password (LDAP). */
  withPassword(provider: string, username: string, password: string, context: SignInContext): Promise<StartedSession>;
  /** Starts a redirect sign-in: where to send the browser, and the `state` to keep in its cookie. */
  begin(provider: string, redirectUri: string, returnTo?: string): Promise<{ url: string; state: string }>;
  /**
   * Finishes a redirect sign-in the browser returned from (`callbackUrl` with its query). `stateCookie`
   * is the state kept in the browser at `begin`: a callback another browser started is refused.
   */
  finish(provider: string, callbackUrl: URL, stateCookie: string | undefined, redirectUri: string, context: SignInContext): Promise<StartedSession & { returnTo?: string }>;
  /** The principal a session cookie stands for, with its CSRF token; undefined when it is not a live session. */
  session(cookie: string): Promise<SessionPrincipal | undefined>;
  /** Ends the session of a cookie (sign-out). */
  signOut(cookie: string, context: SignInContext): Promise<void>;
  /** Deletes ended sessions and abandoned redirect sign-ins; answers how many. */
  sweep(): Promise<number>;
}

export interface SignInContext {
  /** The client's address, for the audit log and the failure throttle. */
  readonly address: string;
}

export interface StartedSession {
  /** The session cookie's value. */
  readonly cookie: string;
  readonly csrf: string;
  readonly expiresAt: Date;
  readonly login: string;
  readonly provider: string;
}

export interface SessionPrincipal {
  readonly principal: Principal;
  readonly csrf: string;
  readonly provider: string;
  readonly expiresAt: Date;
}

export interface SessionSettings {
  /** How long a session lasts at most (GYRE_SESSION_HOURS). */
  readonly ttlMinutes: number;
  /** How long a session lasts without a request (GYRE_SESSION_IDLE_MINUTES). */
  readonly idleMinutes: number;
}

export interface SignInDeps {
  readonly store: Store;
  readonly identity: Identity;
  readonly providers: readonly SignInProvider[];
  /** Group → role rules per provider name. */
  readonly roleMaps?: Readonly<Record<string, readonly RoleRule[]>>;
  readonly session: SessionSettings;
  /** Make a Gyre user for a provider account seen for the first time. @default true */
  readonly createUsers?: boolean;
  /** Runs after a provider sign-in (GitHub: refresh that user's repository roles). Its failure is logged, not fatal. */
  readonly afterSignIn?: (provider: string, userId: string) => Promise<void>;
  readonly log: Logger;
  /** Clock, for the failure throttle in tests. */
  readonly now?: () => number;
}

export const SIGN_IN_FAILURES = 10;
export const SIGN_IN_WINDOW_MS = 15 * 60_000;
/** How long a redirect sign-in may take. */
const ATTEMPT_MINUTES = 10;
const LOGIN_CHARS = /[^A-Za-z0-9._@+-]/g;

const sha256 = (value: string) => createHash('sha256').update(value).digest('hex');
const random = () => randomBytes(32).toString('base64url');

/** A return path inside the UI (`#/pipeline/…`): anything else is dropped, so sign-in never redirects off-site. */
export function safeReturnTo(value: unknown): string | undefined {
  return typeof value === 'string' && value.length <= 500 && /^#\/[A-Za-z0-9_\-./%~:@]*$/.test(value) ? value : undefined;
}

export function createSignIn(deps: SignInDeps): SignIn {
  const { store, identity, log } = deps;
  const now = deps.now ?? Date.now;
  const byName = new Map(deps.providers.map((p) => [p.name, p] as const));
  const failures = new Map<string, number[]>();

  const provider = <K extends SignInProvider['kind']>(name: string, kind: K): Extract<SignInProvider, { kind: K }> => {
    const found = byName.get(name);
    if (!found || found.kind !== kind) {
      const names = deps.providers.filter((p) => p.kind === kind).map((p) => p.name);
      throw new NotFoundError('sign-in provider', `${name} (configured: ${names.join(', ') || 'none'})`);
    }
    return found as Extract<SignInProvider, { kind: K }>;
  };

  /** Refuses when the address or the user name has failed too often lately. */
  const throttle = (keys: string[]) => {
    const cutoff = now() - SIGN_IN_WINDOW_MS;
    for (const key of keys) {
      const recent = (failures.get(key) ?? []).filter((t) => t > cutoff);
      if (recent.length === 0) failures.delete(key);
      else failures.set(key, recent);
      if (recent.length >= SIGN_IN_FAILURES) {
        const seconds = Math.max(1, Math.ceil((recent[0] + SIGN_IN_WINDOW_MS - now()) / 1000));
        throw new RateLimitError(`Too many failed sign-ins; try again in ${seconds} s.`, seconds);
      }
    }
  };
  const failed = async (keys: string[], actor: AuditActor, providerName: string, context: SignInContext, reason: string) => {
    for (const key of keys) failures.set(key, [...(failures.get(key) ?? []), now()]);
    if (failures.size > 100_000) failures.clear(); // bounded: a flood of distinct names cannot grow it without end
    await appendAudit(store, { actor, action: 'session.sign-in', address: context.address, result: 'failed', detail: { provider: providerName, reason } }).catch((error) =>
      log.error('could not record a failed sign-in', { error: (error as Error).message }),
    );
  };

  const startSession = async (tx: Queryable, user: { id: string; login: string }, providerName: string, context: SignInContext, detail: Record<string, unknown> = {}): Promise<StartedSession> => {
    const cookie = random();
    const csrf = random();
    const row = await sessions.insertSession(tx, { idHash: sha256(cookie), userId: user.id, csrf, provider: providerName, address: context.address, ttlMinutes: deps.session.ttlMinutes });
    await appendAudit(tx, {
      actor: { userId: user.id, login: user.login, tokenId: row.id, tokenKind: 'session' },
      action: 'session.sign-in',
      target: { type: 'session', id: row.id },
      address: context.address,
      result: 'success',
      detail: { provider: providerName, ...detail },
    });
    return { cookie, csrf, expiresAt: new Date(row.expires_at), login: user.login, provider: providerName };
  };

  /** The Gyre user an external identity stands for, made on first sign-in; its roles from its groups. */
  const signInExternal = async (external: ExternalIdentity, context: SignInContext): Promise<{ session: StartedSession; userId: string }> => {
    const result = await store.transaction(async (tx) => {
      let userId = await sessions.linkedUser(tx, external.provider, external.subject);
      let created = false;
      if (!userId) {
        if (deps.createUsers === false) {
          throw new SignInError(`No Gyre user is linked to this ${external.provider} account (${external.login}); ask an admin to add you.`);
        }
        const row = await insertUniqueUser(tx, external);
        userId = row.id;
        created = true;
        await sessions.linkIdentity(tx, { provider: external.provider, subject: external.subject, userId, login: external.login });
        await appendAudit(tx, { actor: SYSTEM_ACTOR, action: 'user.create', target: { type: 'user', id: row.login }, address: context.address, result: 'success', detail: { provider: external.provider, provider_login: external.login } });
      } else {
        await sessions.updateIdentityLogin(tx, external.provider, external.subject, external.login);
      }
      const user = await users.userById(tx, userId);
      if (!user) throw new SignInError('The Gyre user linked to this account no longer exists.');
      if (user.disabled_at) throw new SignInError(`The Gyre user ${user.login} is disabled.`);
      const roles = await applyRoleMap(tx, { userId, login: user.login, provider: external.provider, groups: external.groups, rules: deps.roleMaps?.[external.provider] ?? [] });
      if (roles.admin !== undefined && roles.admin !== user.is_admin) {
        const admins = await users.enabledAdmins(tx);
        // The last enabled instance admin keeps the flag even if a group no longer gives it.
        if (roles.admin || admins.filter((id) => id !== userId).length > 0) {
          await users.updateUser(tx, userId, { isAdmin: roles.admin });
          await appendAudit(tx, { actor: SYSTEM_ACTOR, action: 'user.update', target: { type: 'user', id: user.login }, address: context.address, result: 'success', detail: { user: user.login, admin: roles.admin, source: external.provider } });
        }
      }
      const session = await startSession(tx, { id: userId, login: user.login }, external.provider, context, { created, ...(roles.changes.length ? { roles: roles.changes } : {}) });
      return { session, userId };
    });
    if (deps.afterSignIn) {
      await deps.afterSignIn(external.provider, result.userId).catch((error) => log.warn('after sign-in step failed', { provider: external.provider, error: (error as Error).message }));
    }
    return result;
  };

  return {
    providers() {
      return deps.providers.map((p) => ({ name: p.name, label: p.label, kind: p.kind }));
    },

    async withToken(token, context) {
      const keys = [`addr:${context.address}`];
      throttle(keys);
      const principal = token ? await identity.authenticate(token) : undefined;
      if (!principal || principal.token?.kind === 'project') {
        await failed(keys, { login: 'anonymous' }, 'token', context, principal ? 'project token' : 'token not valid');
        throw new AuthenticationError(principal ? 'A project token cannot sign in to the UI; use a personal token.' : 'That token was not accepted.');
      }
      return store.transaction((tx) => startSession(tx, { id: principal.userId, login: principal.login }, 'token', context, { token_id: principal.token?.id }));
    },

    async withPassword(name, username, password, context) {
      const p: PasswordProvider = provider(name, 'password');
      if (typeof username !== 'string' || !username.trim() || username.length > 256) throw new InputError('username must be 1 to 256 characters', 'username');
      if (typeof password !== 'string' || password.length === 0 || password.length > 1024) throw new InputError('password must be 1 to 1024 characters', 'password');
      const keys = [`addr:${context.address}`, `user:${name}:${username.trim().toLowerCase()}`];
      throttle(keys);
      const external = await p.verify(username.trim(), password);
      if (!external) {
        await failed(keys, { login: username.trim().slice(0, 100) }, name, context, 'wrong user name or password');
        throw new SignInError('The user name or password is not right.');
      }
      try {
        return (await signInExternal(external, context)).session;
      } catch (error) {
        if (error instanceof SignInError) await failed(keys, { login: external.login }, name, context, error.message);
        throw error;
      }
    },

    async begin(name, redirectUri, returnTo) {
      const p: RedirectProvider = provider(name, 'redirect');
      const { url, transaction } = await p.begin(redirectUri);
      await sessions.insertAttempt(store, {
        stateHash: sha256(transaction.state),
        provider: name,
        codeVerifier: transaction.codeVerifier,
        nonce: transaction.nonce,
        returnTo: safeReturnTo(returnTo),
        ttlMinutes: ATTEMPT_MINUTES,
      });
      return { url, state: transaction.state };
    },

    async finish(name, callbackUrl, stateCookie, redirectUri, context) {
      const p: RedirectProvider = provider(name, 'redirect');
      const keys = [`addr:${context.address}`];
      throttle(keys);
      const state = callbackUrl.searchParams.get('state') ?? '';
      const refuse = async (reason: string, shown: string): Promise<never> => {
        await failed(keys, { login: 'anonymous' }, name, context, reason);
        throw new SignInError(shown);
      };
      // The state must be the one this browser was given (its cookie): a link that finishes someone
      // else's sign-in in this browser (login CSRF) is refused.
      if (!state || !stateCookie || state.length !== stateCookie.length || !timingSafeEqual(Buffer.from(state), Buffer.from(stateCookie))) {
        return refuse('state does not match the browser', 'This sign-in was not started in this browser, or it took too long; start again.');
      }
      const attempt = await store.transaction((tx) => sessions.takeAttempt(tx, sha256(state)));
      if (!attempt || attempt.provider !== name) return refuse('unknown or expired state', 'This sign-in has expired or was already used; start again.');
      let external: ExternalIdentity;
      try {
        external = await p.finish(callbackUrl, { state, codeVerifier: attempt.code_verifier, nonce: attempt.nonce ?? undefined }, redirectUri);
      } catch (error) {
        if (error instanceof SignInError) return refuse(error.message, error.message);
        throw error;
      }
      try {
        const { session } = await signInExternal(external, context);
        return { ...session, returnTo: attempt.return_to ?? undefined };
      } catch (error) {
        if (error instanceof SignInError) await failed(keys, { login: external.login }, name, context, error.message);
        throw error;
      }
    },

    async session(cookie) {
      if (!cookie || cookie.length > 100) return undefined;
      const row = await sessions.liveSession(store, sha256(cookie), deps.session.idleMinutes);
      if (!row) return undefined;
      if (row.stale) await sessions.touchSession(store, row.id);
      return {
        principal: { userId: row.user_id, login: row.login, isAdmin: row.is_admin, token: { id: row.id, kind: 'session' } },
        csrf: row.csrf_token,
        provider: row.provider,
        expiresAt: new Date(row.expires_at),
      };
    },

    async signOut(cookie, context) {
      if (!cookie || cookie.length > 100) return;
      await store.transaction(async (tx) => {
        const gone = await sessions.deleteSession(tx, sha256(cookie));
        if (!gone) return;
        const user = await users.userById(tx, gone.user_id);
        await appendAudit(tx, {
          actor: { userId: gone.user_id, login: user?.login ?? 'unknown', tokenId: gone.id, tokenKind: 'session' },
          action: 'session.sign-out',
          target: { type: 'session', id: gone.id },
          address: context.address,
          result: 'success',
          detail: { provider: gone.provider },
        });
      });
    },

    async sweep() {
      return store.transaction((tx) => sessions.deleteDeadSessions(tx, deps.session.idleMinutes));
    },
  };
}

/** Makes the user for a first sign-in: its login, or `<login>-<provider>`, `<login>-<provider>-2`… when taken. */
async function insertUniqueUser(tx: Queryable, external: ExternalIdentity): Promise<users.UserRow> {
  let base = external.login.replace(LOGIN_CHARS, '-').replace(/^[^A-Za-z0-9]+/, '').slice(0, 80);
  if (!base) base = `${external.provider}-user`;
  const candidates = [base, `${base}-${external.provider}`, ...Array.from({ length: 20 }, (_, i) => `${base}-${external.provider}-${i + 2}`)];
  for (const login of candidates) {
    const row = await users.insertUser(tx, { id: randomUUID(), login, name: (external.name ?? '').slice(0, 200) || login, email: external.email?.slice(0, 320), isAdmin: false });
    if (row) return row;
  }
  throw new SignInError(`Could not find a free Gyre user name for ${external.login}; ask an admin to add you.`);
}
