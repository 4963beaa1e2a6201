import { ConfigurationError } from '../../domain/errors';
import { checkGitHubUrl, defaultGitHubApiUrl } from './github-urls';
import { parseRoleMap, type RoleRule } from './role-map';
import type { SessionSettings } from './sign-in';

type Env = Readonly<Record<string, string | undefined>>;

/** Sign-in settings (README: "Sign-in"): sessions, and each provider that is configured. */
export interface SignInSettings {
  readonly session: SessionSettings;
  /** GYRE_SIGN_IN_CREATE_USERS: make a Gyre user at a provider account's first sign-in. */
  readonly createUsers: boolean;
  readonly github?: GitHubSettings;
  readonly oidc?: OidcProviderSettings;
  readonly ldap?: LdapProviderSettings;
  /** Group → role rules per provider name (GYRE_OIDC_ROLES, GYRE_LDAP_ROLES). */
  readonly roleMaps: Readonly<Record<string, readonly RoleRule[]>>;
}

export interface GitHubSettings {
  readonly clientId: string;
  readonly clientSecret: string;
  /** github.com, or a GitHub Enterprise Server's address. */
  readonly webUrl: string;
  readonly apiUrl: string;
  /** A server-side token that may read repository collaborators: repository roles follow GitHub when set. */
  readonly token?: string;
  readonly syncMinutes: number;
}

export interface OidcProviderSettings {
  readonly issuer: string;
  readonly clientId: string;
  readonly clientSecret: string;
  readonly label: string;
  readonly scopes: readonly string[];
  readonly groupsClaim: string;
  readonly loginClaim: string;
  /** GYRE_OIDC_ALLOW_INSECURE_HTTP: an http:// issuer (a test provider on loopback), never for real use. */
  readonly allowInsecureHttp: boolean;
}

export interface LdapProviderSettings {
  readonly url: string;
  readonly label: string;
  readonly bindDn?: string;
  readonly bindPassword?: string;
  readonly userBase: string;
  readonly userFilter?: string;
  readonly groupBase?: string;
  readonly groupFilter?: string;
  readonly startTls: boolean;
  readonly tlsCaFile?: string;
}

function integer(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  if (!/^\d+$/.test(raw.trim())) throw new ConfigurationError(name, `'${raw}' is not a whole number (allowed: ${min} to ${max})`);
  const value = Number(raw.trim());
  if (value < min || value > max) throw new ConfigurationError(name, `${value} is out of range (allowed: ${min} to ${max})`);
  return value;
}

function url(env: Env, name: string, fallback?: string, schemes = ['http', 'https']): string | undefined {
  const raw = env[name] || fallback;
  if (!raw) return undefined;
  let parsed: URL;
  try {
    parsed = new URL(raw);
  } catch {
    throw new ConfigurationError(name, `'${raw}' is not a URL`);
  }
  if (!schemes.includes(parsed.protocol.slice(0, -1))) throw new ConfigurationError(name, `'${raw}' must be a ${schemes.map((s) => `${s}://`).join(' or ')} URL`);
  return raw.replace(/\/+$/, '');
}

/** Settings that belong together: all of `names` or none. */
function together(env: Env, names: readonly string[]): boolean {
  const set = names.filter((n) => env[n]);
  if (set.length === 0) return false;
  const missing = names.filter((n) => !env[n]);
  if (missing.length) throw new ConfigurationError(missing[0], `is required with ${set.join(', ')}`);
  return true;
}

/** Reads the sign-in settings; a bad value throws a ConfigurationError naming the setting. */
export function readSignInSettings(env: Env): SignInSettings {
  const hours = integer(env, 'GYRE_SESSION_HOURS', 12, 1, 24 * 90);
  const idle = integer(env, 'GYRE_SESSION_IDLE_MINUTES', 120, 5, 24 * 90 * 60);
  const createUsers = !/^(false|0|no|off)$/i.test(env.GYRE_SIGN_IN_CREATE_USERS ?? '');
  if (env.GYRE_SIGN_IN_CREATE_USERS && !/^(true|1|yes|on|false|0|no|off)$/i.test(env.GYRE_SIGN_IN_CREATE_USERS)) {
    throw new ConfigurationError('GYRE_SIGN_IN_CREATE_USERS', `'${env.GYRE_SIGN_IN_CREATE_USERS}' is not a boolean (allowed: true or false)`);
  }

  let github: GitHubSettings | undefined;
  if (together(env, ['GYRE_GITHUB_CLIENT_ID', 'GYRE_GITHUB_CLIENT_SECRET'])) {
    const webUrl = checkGitHubUrl('GYRE_GITHUB_URL', env.GYRE_GITHUB_URL || 'https://github.com');
    const apiUrl = env.GYRE_GITHUB_API_URL ? checkGitHubUrl('GYRE_GITHUB_API_URL', env.GYRE_GITHUB_API_URL) : defaultGitHubApiUrl(webUrl);
    github = {
      clientId: env.GYRE_GITHUB_CLIENT_ID!,
      clientSecret: env.GYRE_GITHUB_CLIENT_SECRET!,
      webUrl,
      apiUrl,
      token: env.GYRE_GITHUB_TOKEN || undefined,
      syncMinutes: integer(env, 'GYRE_GITHUB_ROLE_SYNC_MINUTES', 60, 1, 24 * 60),
    };
  }

  let oidc: OidcProviderSettings | undefined;
  if (together(env, ['GYRE_OIDC_ISSUER', 'GYRE_OIDC_CLIENT_ID', 'GYRE_OIDC_CLIENT_SECRET'])) {
    const scopes = (env.GYRE_OIDC_SCOPES || 'openid profile email').split(/[\s,]+/).filter(Boolean);
    if (!scopes.includes('openid')) throw new ConfigurationError('GYRE_OIDC_SCOPES', `'${env.GYRE_OIDC_SCOPES}' must include openid`);
    const issuer = url(env, 'GYRE_OIDC_ISSUER')!;
    const allowInsecureHttp = /^(true|1|yes|on)$/i.test(env.GYRE_OIDC_ALLOW_INSECURE_HTTP ?? '');
    if (issuer.startsWith('http:') && !allowInsecureHttp) {
      throw new ConfigurationError('GYRE_OIDC_ISSUER', `'${issuer}' must be an https:// URL (GYRE_OIDC_ALLOW_INSECURE_HTTP=true allows http:// for a test provider)`);
    }
    oidc = {
      issuer,
      allowInsecureHttp,
      clientId: env.GYRE_OIDC_CLIENT_ID!,
      clientSecret: env.GYRE_OIDC_CLIENT_SECRET!,
      label: env.GYRE_OIDC_LABEL || 'Single sign-on',
      scopes,
      groupsClaim: env.GYRE_OIDC_GROUPS_CLAIM || 'groups',
      loginClaim: env.GYRE_OIDC_LOGIN_CLAIM || 'preferred_username',
    };
  }

  let ldap: LdapProviderSettings | undefined;
  if (together(env, ['GYRE_LDAP_URL', 'GYRE_LDAP_USER_BASE'])) {
    if (Boolean(env.GYRE_LDAP_BIND_DN) !== Boolean(env.GYRE_LDAP_BIND_PASSWORD)) {
      throw new ConfigurationError(env.GYRE_LDAP_BIND_DN ? 'GYRE_LDAP_BIND_PASSWORD' : 'GYRE_LDAP_BIND_DN', 'the service account needs both GYRE_LDAP_BIND_DN and GYRE_LDAP_BIND_PASSWORD');
    }
    for (const name of ['GYRE_LDAP_USER_FILTER', 'GYRE_LDAP_GROUP_FILTER']) {
      const filter = env[name];
      if (filter && !/^\(.*\)$/s.test(filter.trim())) throw new ConfigurationError(name, `'${filter}' must be an LDAP filter in parentheses, e.g. (uid={username})`);
    }
    if (env.GYRE_LDAP_USER_FILTER && !env.GYRE_LDAP_USER_FILTER.includes('{username}')) {
      throw new ConfigurationError('GYRE_LDAP_USER_FILTER', `'${env.GYRE_LDAP_USER_FILTER}' must contain {username}`);
    }
    ldap = {
      url: url(env, 'GYRE_LDAP_URL', undefined, ['ldap', 'ldaps'])!,
      label: env.GYRE_LDAP_LABEL || 'Directory (LDAP)',
      bindDn: env.GYRE_LDAP_BIND_DN || undefined,
      bindPassword: env.GYRE_LDAP_BIND_PASSWORD || undefined,
      userBase: env.GYRE_LDAP_USER_BASE!,
      userFilter: env.GYRE_LDAP_USER_FILTER || undefined,
      groupBase: env.GYRE_LDAP_GROUP_BASE || undefined,
      groupFilter: env.GYRE_LDAP_GROUP_FILTER || undefined,
      startTls: /^(true|1|yes|on)$/i.test(env.GYRE_LDAP_START_TLS ?? ''),
      tlsCaFile: env.GYRE_LDAP_CA_FILE || undefined,
    };
  }

  const roleMaps: Record<string, RoleRule[]> = {};
  const oidcRoles = parseRoleMap('GYRE_OIDC_ROLES', env.GYRE_OIDC_ROLES);
  const ldapRoles = parseRoleMap('GYRE_LDAP_ROLES', env.GYRE_LDAP_ROLES);
  if (oidcRoles.length && !oidc) throw new ConfigurationError('GYRE_OIDC_ROLES', 'is set but OpenID Connect is not (GYRE_OIDC_ISSUER, GYRE_OIDC_CLIENT_ID, GYRE_OIDC_CLIENT_SECRET)');
  if (ldapRoles.length && !ldap) throw new ConfigurationError('GYRE_LDAP_ROLES', 'is set but LDAP is not (GYRE_LDAP_URL, GYRE_LDAP_USER_BASE)');
  if (oidcRoles.length) roleMaps.oidc = oidcRoles;
  if (ldapRoles.length) roleMaps.ldap = ldapRoles;

  return { session: { ttlMinutes: hours * 60, idleMinutes: idle }, createUsers, github, oidc, ldap, roleMaps };
}
