import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { appendAudit, SYSTEM_ACTOR, type Audit } from '../audit/audit-log';
import { ConflictError, InputError, NotFoundError } from '../domain/errors';
import { ORG_ROLES, PROJECT_ROLES, type AccessTarget, type OrgRole, type ProjectRole, type Standing } from '../domain/permissions';
import { PROJECT_TOKEN_SCOPES, type Principal, type ProjectTokenScope } from '../domain/principal';
import type { Store } from '../store/store';
import * as members from './sql/members';
import { standingOf } from './sql/standing';
import * as tokens from './sql/tokens';
import * as users from './sql/users';

/**
 * Users, organisations, the roles users hold in them, and API tokens: the identity service. Every
 * change takes the request's `Audit` and records itself in the transaction that makes it.
 *
 * Sign-in with an identity provider (GitHub, OIDC, LDAP) builds on this: a provider's account is a
 * row of `user_identities` (provider, subject → user), found or made at sign-in, and roles a
 * provider keeps (GitHub repository permissions) are memberships whose `source` is that provider,
 * refreshed by a `RoleSource` the identity role runs (role-sources.ts).
 */
export interface Identity {
  /**
   * Makes sure there is an admin. On an empty database it creates one whose token is `token` (or a
   * new random one) and returns that token with `created: true`, so start-up can print it once.
   * With a token given and an admin present, the token becomes the first admin's bootstrap token,
   * replacing the one it had (`replaced: true` when there was another): a new GYRE_ADMIN_TOKEN
   * takes the old one's place, it is not one more.
   */
  ensureAdmin(token?: string): Promise<{ created: boolean; token?: string; replaced?: boolean }>;
  /** The principal a token stands for; undefined for an unknown, expired or revoked token, or a disabled user's. */
  authenticate(token: string): Promise<Principal | undefined>;
  /** Where a principal stands toward an organisation or project (for the policy). */
  standing(principal: Principal, target: AccessTarget): Promise<Standing>;

  readonly users: Users;
  readonly tokens: Tokens;
  readonly orgs: Organizations;
  /** Deletes tokens that expired more than EXPIRED_TOKEN_KEEP_DAYS ago, recording each; answers how many. */
  sweepExpiredTokens(): Promise<number>;
}

export interface UserView {
  readonly id: string;
  readonly login: string;
  readonly name: string;
  readonly email: string | null;
  readonly admin: boolean;
  readonly disabled: boolean;
  readonly created_at: string;
}

export interface Users {
  /** Adds a user and issues their first personal token, returned in clear once. */
  add(input: { login: string; name?: string; email?: string; admin?: boolean }, audit?: Audit): Promise<{ user: UserView; token: string }>;
  list(options?: { after?: string; limit?: number }): Promise<(UserView & { organizations: { name: string; role: string }[]; projects: { slug: string; role: string }[] })[]>;
  get(login: string): Promise<UserView>;
  byId(id: string): Promise<UserView>;
  /** Changes a user's name, instance admin flag or disabled state; the last enabled instance admin cannot lose either. */
  update(login: string, changes: { name?: string; email?: string | null; admin?: boolean; disabled?: boolean }, audit?: Audit): Promise<UserView>;
}

export interface TokenView {
  readonly id: string;
  readonly label: string;
  readonly kind: 'personal' | 'bootstrap' | 'project';
  /** The token's first characters, to tell it apart; never enough to use it. */
  readonly hint: string;
  readonly scope?: ProjectTokenScope;
  readonly created_at: string;
  readonly created_by?: string;
  readonly expires_at: string | null;
  readonly expired: boolean;
  readonly last_used_at: string | null;
}

export interface TokenOptions {
  readonly label?: string;
  /** Days until the token stops working (1 to 3650); without it, it works until revoked. */
  readonly expiresInDays?: number;
}

export interface Tokens {
  /** Issues a personal token for a user; the clear token is in the answer, once, and never again. */
  createPersonal(userId: string, options: TokenOptions, audit?: Audit): Promise<{ token: string; view: TokenView }>;
  listPersonal(userId: string): Promise<TokenView[]>;
  revokePersonal(userId: string, tokenId: string, audit?: Audit): Promise<void>;
  /** Issues a project token (scope read or trigger) made by `createdBy`. */
  createProject(project: { id: string; slug: string }, createdBy: string, options: TokenOptions & { scope: ProjectTokenScope }, audit?: Audit): Promise<{ token: string; view: TokenView }>;
  listProject(projectId: string): Promise<TokenView[]>;
  revokeProject(project: { id: string; slug: string }, tokenId: string, audit?: Audit): Promise<void>;
}

export interface OrgView {
  readonly id: string;
  readonly name: string;
  readonly slug: string;
  readonly 'vcs-type': 'github';
  /** The caller's role in it, if any. */
  readonly role: OrgRole | null;
  readonly projects: number;
}

export interface MemberView {
  readonly id: string;
  readonly login: string;
  readonly name: string;
  readonly role: string;
  /** Who keeps the role: `gyre`, or a provider that refreshes it (`github`). */
  readonly source: string;
}

export interface Organizations {
  /** Makes an organisation explicitly (it is also made with its first project). */
  create(name: string, audit?: Audit): Promise<OrgView>;
  /** The organisations a principal can see, with their role in each. */
  visible(principal: Principal): Promise<OrgView[]>;
  get(name: string): Promise<OrgView>;
  members(name: string): Promise<MemberView[]>;
  setRole(name: string, login: string, role: OrgRole, audit?: Audit): Promise<MemberView>;
  removeMember(name: string, login: string, audit?: Audit): Promise<void>;
  projectMembers(projectId: string): Promise<MemberView[]>;
  setProjectRole(project: { id: string; slug: string }, login: string, role: ProjectRole, audit?: Audit): Promise<MemberView>;
  removeProjectMember(project: { id: string; slug: string }, login: string, audit?: Audit): Promise<void>;
}

/** Expired tokens stay listed (as expired) this long, then the identity role deletes them. */
export const EXPIRED_TOKEN_KEEP_DAYS = 30;

/** Logins: what GitHub allows, plus `.`, `_`, `@` and `+` for directory and SSO names; up to 100. */
const LOGIN = /^[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}$/;
const ORG_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;
/** Labels the bootstrap token uses; a personal token cannot take them (a new GYRE_ADMIN_TOKEN would replace it). */
const BOOTSTRAP_LABELS = ['first admin', 'GYRE_ADMIN_TOKEN'];

/**
 * Tokens are 160 random bits, so a fast hash is enough: nobody can guess a preimage, and looking a
 * token up by its hash on every request must be cheap. (A slow, salted hash is for passwords, which
 * are guessable; it would buy nothing here and cost every request.) GYRE_ADMIN_TOKEN is chosen by
 * the operator: docs/security.md says to make it as random.
 */
export function hashToken(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

function newToken(): string {
  return `gyre_${randomBytes(20).toString('hex')}`;
}

/** The first characters of a token: its prefix and four characters of the random part. */
function hintOf(token: string): string {
  return token.startsWith('gyre_') ? token.slice(0, 9) : token.slice(0, 4);
}

const iso = (d: Date | string | null | undefined): string | null => (d ? new Date(d).toISOString() : null);

export function checkLogin(login: string): string {
  if (!LOGIN.test(login)) throw new InputError(`login '${login.slice(0, 100)}' may use letters, digits, '.', '_', '@', '+' and '-' (up to 100, starting with a letter or digit)`, 'login');
  return login;
}

export function checkOrgName(name: string): string {
  if (!ORG_NAME.test(name)) throw new InputError(`organization '${name.slice(0, 100)}' may use letters, digits, '.', '_' and '-' (up to 100)`, 'name');
  return name;
}

function checkTokenOptions(options: TokenOptions): { label: string; expiresInDays?: number } {
  const label = (options.label ?? '').trim() || 'token';
  if (label.length > 200) throw new InputError('label may be at most 200 characters', 'label');
  if (BOOTSTRAP_LABELS.includes(label)) throw new InputError(`label '${label}' is reserved for the bootstrap admin token`, 'label');
  const days = options.expiresInDays;
  if (days !== undefined && (!Number.isInteger(days) || days < 1 || days > 3650)) throw new InputError(`expires_in_days (${days}) must be a whole number of days from 1 to 3650`, 'expires_in_days');
  return { label, expiresInDays: days };
}

function userView(r: users.UserRow): UserView {
  return { id: r.id, login: r.login, name: r.name, email: r.email, admin: r.is_admin, disabled: r.disabled_at !== null, created_at: iso(r.created_at)! };
}

function tokenView(r: tokens.TokenRow): TokenView {
  const expiresAt = iso(r.expires_at);
  return {
    id: r.id,
    label: r.label,
    kind: r.kind,
    hint: r.hint,
    ...(r.scope ? { scope: r.scope } : {}),
    created_at: iso(r.created_at)!,
    ...(r.created_by_login ? { created_by: r.created_by_login } : {}),
    expires_at: expiresAt,
    expired: expiresAt !== null && Date.parse(expiresAt) <= Date.now(),
    last_used_at: iso(r.last_used_at),
  };
}

function memberView(r: members.MemberRow): MemberView {
  return { id: r.user_id, login: r.login, name: r.name, role: r.role, source: r.source };
}

function orgView(r: members.OrgRow & { role?: OrgRole | null; projects?: number }): OrgView {
  return { id: r.id, name: r.name, slug: `gh/${r.name}`, 'vcs-type': 'github', role: r.role ?? null, projects: r.projects ?? 0 };
}

export function visibilityOf(principal: Principal): members.Visibility {
  if (principal.token?.kind === 'project') return { projectId: principal.token.projectId };
  if (principal.isAdmin) return { all: true };
  return { userId: principal.userId };
}

export function createIdentity({ store }: { store: Store }): Identity {
  const userOrFail = async (db: Parameters<typeof users.userByLogin>[0], login: string, lock = false) => {
    const user = await users.userByLogin(db, checkLogin(login), lock);
    if (!user) throw new NotFoundError('user', login);
    return user;
  };
  const orgOrFail = async (db: Parameters<typeof members.orgByName>[0], name: string) => {
    const org = await members.orgByName(db, name);
    if (!org) throw new NotFoundError('organization', `gh/${name}`);
    return org;
  };

  const usersPart: Users = {
    async add(input, audit) {
      const login = checkLogin(input.login);
      const name = (input.name ?? '').trim() || login;
      if (name.length > 200) throw new InputError('name may be at most 200 characters', 'name');
      return store.transaction(async (tx) => {
        const row = await users.insertUser(tx, { id: randomUUID(), login, name, email: input.email, isAdmin: input.admin === true });
        if (!row) throw new ConflictError(`user '${login}' already exists`);
        const clear = newToken();
        await tokens.insertToken(tx, { hash: hashToken(clear), kind: 'personal', label: 'first token', hint: hintOf(clear), userId: row.id });
        await audit?.record(tx, { target: { type: 'user', id: login }, detail: { admin: row.is_admin } });
        return { user: userView(row), token: clear };
      });
    },
    async list({ after, limit = 100 } = {}) {
      const rows = await users.listUsers(store, after, limit);
      return Promise.all(
        rows.map(async (r) => {
          const roles = await members.rolesOfUser(store, r.id);
          return { ...userView(r), organizations: roles.orgs, projects: roles.projects };
        }),
      );
    },
    async get(login) {
      return userView(await userOrFail(store, login));
    },
    async byId(id) {
      const row = /^[0-9a-f-]{36}$/i.test(id) ? await users.userById(store, id) : undefined;
      if (!row) throw new NotFoundError('user', id);
      return userView(row);
    },
    async update(login, changes, audit) {
      if (changes.name !== undefined && (changes.name.trim() === '' || changes.name.length > 200)) throw new InputError('name must be 1 to 200 characters', 'name');
      return store.transaction(async (tx) => {
        const admins = await users.enabledAdmins(tx);
        const user = await userOrFail(tx, login, true);
        const losesAdmin = (changes.admin === false || changes.disabled === true) && user.is_admin && user.disabled_at === null;
        if (losesAdmin && admins.length <= 1 && admins[0] === user.id) {
          throw new ConflictError(`'${login}' is the last enabled instance admin; make another user an admin first`);
        }
        const updated = await users.updateUser(tx, user.id, { name: changes.name?.trim(), email: changes.email, isAdmin: changes.admin, disabled: changes.disabled });
        const detail: Record<string, unknown> = {};
        if (changes.admin !== undefined && changes.admin !== user.is_admin) detail.admin = changes.admin;
        if (changes.disabled !== undefined && changes.disabled !== (user.disabled_at !== null)) detail.disabled = changes.disabled;
        if (changes.name !== undefined && changes.name.trim() !== user.name) detail.name = changes.name.trim();
        await audit?.record(tx, { target: { type: 'user', id: login }, detail });
        return userView(updated);
      });
    },
  };

  const tokensPart: Tokens = {
    async createPersonal(userId, options, audit) {
      const { label, expiresInDays } = checkTokenOptions(options);
      return store.transaction(async (tx) => {
        const user = await users.userById(tx, userId);
        if (!user) throw new NotFoundError('user', userId);
        const clear = newToken();
        const row = await tokens.insertToken(tx, { hash: hashToken(clear), kind: 'personal', label, hint: hintOf(clear), userId, expiresInDays });
        await audit?.record(tx, { target: { type: 'token', id: row.id }, detail: { user: user.login, label, kind: 'personal', ...(expiresInDays ? { expires_in_days: expiresInDays } : {}) } });
        return { token: clear, view: tokenView(row) };
      });
    },
    async listPersonal(userId) {
      return (await tokens.userTokens(store, userId)).map(tokenView);
    },
    async revokePersonal(userId, tokenId, audit) {
      await store.transaction(async (tx) => {
        const gone = /^[0-9a-f-]{36}$/i.test(tokenId) ? await tokens.deleteToken(tx, tokenId, { userId }) : undefined;
        if (!gone) throw new NotFoundError('token', tokenId);
        await audit?.record(tx, { target: { type: 'token', id: tokenId }, detail: { label: gone.label, kind: gone.kind } });
      });
    },
    async createProject(project, createdBy, options, audit) {
      const { label, expiresInDays } = checkTokenOptions(options);
      if (!(PROJECT_TOKEN_SCOPES as readonly string[]).includes(options.scope)) throw new InputError(`scope '${options.scope}' is not a project token scope (allowed: ${PROJECT_TOKEN_SCOPES.join(', ')})`, 'scope');
      return store.transaction(async (tx) => {
        const clear = newToken();
        const row = await tokens.insertToken(tx, { hash: hashToken(clear), kind: 'project', label, hint: hintOf(clear), projectId: project.id, scope: options.scope, createdBy, expiresInDays });
        await audit?.record(tx, { target: { type: 'token', id: row.id }, project: project.slug, detail: { label, kind: 'project', scope: options.scope, ...(expiresInDays ? { expires_in_days: expiresInDays } : {}) } });
        const [listed] = (await tokens.projectTokens(tx, project.id)).filter((t) => t.id === row.id);
        return { token: clear, view: tokenView(listed ?? row) };
      });
    },
    async listProject(projectId) {
      return (await tokens.projectTokens(store, projectId)).map(tokenView);
    },
    async revokeProject(project, tokenId, audit) {
      await store.transaction(async (tx) => {
        const gone = /^[0-9a-f-]{36}$/i.test(tokenId) ? await tokens.deleteToken(tx, tokenId, { projectId: project.id }) : undefined;
        if (!gone) throw new NotFoundError('token', tokenId);
        await audit?.record(tx, { target: { type: 'token', id: tokenId }, project: project.slug, detail: { label: gone.label, kind: gone.kind } });
      });
    },
  };

  const orgsPart: Organizations = {
    async create(name, audit) {
      checkOrgName(name);
      return store.transaction(async (tx) => {
        const { org, created } = await members.ensureOrg(tx, name);
        if (!created) throw new ConflictError(`organization gh/${name} already exists`);
        await audit?.record(tx, { target: { type: 'organization', id: `gh/${name}` }, org: name });
        return orgView(org);
      });
    },
    async visible(principal) {
      return (await members.visibleOrgs(store, visibilityOf(principal))).map(orgView);
    },
    async get(name) {
      let org = await members.orgByName(store, name);
      const [{ count }] = await store.query<{ count: number }>('SELECT count(*)::int AS count FROM projects WHERE org = $1', [name]);
      // An organisation with projects but no row yet (a previous release made the project): made now.
      if (!org && count > 0) org = (await store.transaction((tx) => members.ensureOrg(tx, name))).org;
      if (!org) throw new NotFoundError('organization', `gh/${name}`);
      return orgView({ ...org, projects: count });
    },
    async members(name) {
      const org = await members.orgByName(store, name);
      return org ? (await members.orgMembers(store, org.id)).map(memberView) : [];
    },
    async setRole(name, login, role, audit) {
      if (!(ORG_ROLES as readonly string[]).includes(role)) throw new InputError(`role '${role}' is not an organization role (allowed: ${ORG_ROLES.join(', ')})`, 'role');
      return store.transaction(async (tx) => {
        const user = await userOrFail(tx, login);
        const { org } = await members.ensureOrg(tx, checkOrgName(name));
        const before = await members.setOrgRole(tx, org.id, user.id, role);
        await audit?.record(tx, { target: { type: 'user', id: user.login }, org: name, detail: { role, ...(before ? { was: before } : {}) } });
        return { id: user.id, login: user.login, name: user.name, role, source: 'gyre' };
      });
    },
    async removeMember(name, login, audit) {
      await store.transaction(async (tx) => {
        const user = await userOrFail(tx, login);
        const org = await orgOrFail(tx, name);
        const was = await members.removeOrgRole(tx, org.id, user.id);
        if (!was) throw new NotFoundError('member', `${login} of gh/${name}`);
        await audit?.record(tx, { target: { type: 'user', id: user.login }, org: name, detail: { was } });
      });
    },
    async projectMembers(projectId) {
      return (await members.projectMembers(store, projectId)).map(memberView);
    },
    async setProjectRole(project, login, role, audit) {
      if (!(PROJECT_ROLES as readonly string[]).includes(role)) throw new InputError(`role '${role}' is not a project role (allowed: ${PROJECT_ROLES.join(', ')})`, 'role');
      return store.transaction(async (tx) => {
        const user = await userOrFail(tx, login);
        const before = await members.setProjectRole(tx, project.id, user.id, role);
        await audit?.record(tx, { target: { type: 'user', id: user.login }, project: project.slug, detail: { role, ...(before ? { was: before } : {}) } });
        return { id: user.id, login: user.login, name: user.name, role, source: 'gyre' };
      });
    },
    async removeProjectMember(project, login, audit) {
      await store.transaction(async (tx) => {
        const user = await userOrFail(tx, login);
        const was = await members.removeProjectRole(tx, project.id, user.id);
        if (!was) throw new NotFoundError('member', `${login} of ${project.slug}`);
        await audit?.record(tx, { target: { type: 'user', id: user.login }, project: project.slug, detail: { was } });
      });
    },
  };

  return {
    users: usersPart,
    tokens: tokensPart,
    orgs: orgsPart,

    async ensureAdmin(token) {
      return store.transaction(async (tx) => {
        await tx.query('SELECT pg_advisory_xact_lock(724243)');
        const [admin] = await tx.query<{ id: string; login: string }>('SELECT id, login FROM users WHERE is_admin ORDER BY disabled_at IS NOT NULL, created_at LIMIT 1');
        if (admin) {
          if (!token) return { created: false };
          const hash = hashToken(token);
          const [current] = await tx.query<{ kind: string; user_id: string | null }>('SELECT kind, user_id FROM api_tokens WHERE token_hash = $1', [hash]);
          if (current?.kind === 'bootstrap' && current.user_id === admin.id) return { created: false, replaced: false };
          // The old bootstrap token goes (labels as the previous release wrote them count too);
          // the admin's other tokens stay.
          const old = await tx.query(
            `DELETE FROM api_tokens WHERE user_id = $1 AND token_hash <> $2 AND (kind = 'bootstrap' OR (kind = 'personal' AND label = ANY($3::text[]))) RETURNING id`,
            [admin.id, hash, BOOTSTRAP_LABELS],
          );
          await tx.query(
            `INSERT INTO api_tokens (token_hash, kind, label, hint, user_id) VALUES ($1, 'bootstrap', 'GYRE_ADMIN_TOKEN', $2, $3)
             ON CONFLICT (token_hash) DO UPDATE SET kind = 'bootstrap', label = 'GYRE_ADMIN_TOKEN', user_id = EXCLUDED.user_id,
               project_id = NULL, scope = NULL, created_by = NULL, expires_at = NULL`,
            [hash, hintOf(token), admin.id],
          );
          await appendAudit(tx, { actor: SYSTEM_ACTOR, action: 'admin.token.replace', target: { type: 'user', id: admin.login }, result: 'success', detail: { setting: 'GYRE_ADMIN_TOKEN', replaced: old.length } });
          return { created: false, replaced: old.length > 0 };
        }
        const id = randomUUID();
        await tx.query(`INSERT INTO users (id, login, name, is_admin) VALUES ($1, 'admin', 'Administrator', true)`, [id]);
        const clear = token ?? newToken();
        await tx.query(`INSERT INTO api_tokens (token_hash, kind, label, hint, user_id) VALUES ($1, 'bootstrap', 'first admin', $2, $3)`, [hashToken(clear), hintOf(clear), id]);
        await appendAudit(tx, { actor: SYSTEM_ACTOR, action: 'admin.create', target: { type: 'user', id: 'admin' }, result: 'success', detail: { token: token ? 'GYRE_ADMIN_TOKEN' : 'generated' } });
        return { created: true, token: clear };
      });
    },

    async authenticate(token) {
      if (!token || token.length > 1024) return undefined;
      const row = await tokens.credentialOf(store, hashToken(token));
      if (!row || row.expired) return undefined;
      if (row.kind !== 'project' && row.disabled) return undefined;
      // last_used_at is written at most once a minute per token, not on every request.
      if (row.stale) await tokens.touchToken(store, row.id);
      if (row.kind === 'project') {
        return { userId: row.user_id, login: row.login, isAdmin: false, token: { id: row.id, kind: 'project', projectId: row.project_id!, org: row.org ?? '', scope: row.scope! } };
      }
      return { userId: row.user_id, login: row.login, isAdmin: row.is_admin, token: { id: row.id, kind: 'personal' } };
    },

    async standing(principal, target) {
      return standingOf(store, principal.userId, target);
    },

    async sweepExpiredTokens() {
      return store.transaction(async (tx) => {
        const gone = await tokens.deleteExpiredTokens(tx, EXPIRED_TOKEN_KEEP_DAYS);
        for (const t of gone) {
          await appendAudit(tx, { actor: SYSTEM_ACTOR, action: 'token.expire', target: { type: 'token', id: t.id }, result: 'success', detail: { label: t.label, kind: t.kind } });
        }
        return gone.length;
      });
    },
  };
}
