import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import type { ConnectionOptions } from 'node:tls';
import { Client, Filter, FilterParser, InvalidCredentialsError, type Entry } from 'ldapts';
import { ConfigurationError } from '../../domain/errors';
import type { ExternalIdentity, PasswordProvider } from './provider';

/**
 * LDAP sign-in: a user name and password checked against a directory (OpenLDAP, Active Directory,
 * FreeIPA…). The person is found by searching as a service account, then the password is checked by
 * binding as the entry found, then their groups are read.
 */

/** How to reach the directory and find people and their groups in it. */
export interface LdapSettings {
  /** The provider's name (`ldap`). */
  readonly name?: 'ldap';
  /** What the sign-in form says (default `LDAP`). */
  readonly label?: string;
  /** `ldap://host[:port]` or `ldaps://host[:port]`. */
  readonly url: string;
  /** The service account that searches for people; without it, searches are anonymous. */
  readonly bindDn?: string;
  readonly bindPassword?: string;
  /** Where people are searched for (the whole subtree), e.g. `ou=people,dc=example,dc=com`. */
  readonly userBase: string;
  /**
   * The search that finds one person (default `(uid={username})`): `{username}` is replaced by what
   * was typed, escaped (RFC 4515), so it is only ever a value. Exactly one entry must match.
   */
  readonly userFilter?: string;
  /** The attribute that is the person's login (default `uid`; `sAMAccountName` on Active Directory). */
  readonly loginAttribute?: string;
  /** The person's display name (default `cn`). */
  readonly nameAttribute?: string;
  /** The person's email address (default `mail`). */
  readonly emailAttribute?: string;
  /** Where groups are searched for; without it, nobody is in any group. */
  readonly groupBase?: string;
  /**
   * The search for a person's groups (default `(|(member={dn})(uniqueMember={dn})(memberUid={username}))`):
   * `{dn}` is the person's DN and `{username}` their login, both escaped.
   */
  readonly groupFilter?: string;
  /** The attribute that is a group's name, as the role map names groups (default `cn`). */
  readonly groupNameAttribute?: string;
  /** Upgrade an `ldap://` connection to TLS (StartTLS) before sending any password. */
  readonly startTls?: boolean;
  /** A PEM file of the CA(s) the directory's certificate must chain to (default: Node's CA list). */
  readonly tlsCaFile?: string;
  /** The longest one sign-in waits for the directory, in milliseconds (default 5000). */
  readonly timeoutMs?: number;
}

const DEFAULT_USER_FILTER = '(uid={username})';
const DEFAULT_GROUP_FILTER = '(|(member={dn})(uniqueMember={dn})(memberUid={username}))';
const ATTRIBUTE = /^(?:[A-Za-z][A-Za-z0-9-]*|\d+(?:\.\d+)+)$/;

/** Longer user names are nobody's: they are answered without asking the directory. */
const MAX_USERNAME = 256;

/** The connections one sign-in opened (all closed at its end), and whether that end has come. */
interface Session {
  readonly clients: Client[];
  over: boolean;
}

/** The directory could not be asked; the message names its URL (never a password). */
class DirectoryError extends Error {}

/** Replaces `{username}` and `{dn}` in one pass (so a value can never bring in another placeholder), escaping each value. */
function fillFilter(template: string, values: { username: string; dn?: string }): string {
  return template.replace(/\{(username|dn)\}/g, (_, key: 'username' | 'dn') => Filter.escape(values[key] ?? ''));
}

function checkFilter(setting: string, template: string, placeholder: string): void {
  if (!template.includes(placeholder)) throw new ConfigurationError(setting, `'${template}' must contain ${placeholder} (as in ${setting === 'GYRE_LDAP_USER_FILTER' ? DEFAULT_USER_FILTER : DEFAULT_GROUP_FILTER})`);
  try {
    FilterParser.parseString(fillFilter(template, { username: 'x', dn: 'cn=x' }));
  } catch (error) {
    throw new ConfigurationError(setting, `'${template}' is not an LDAP search filter (RFC 4515): ${(error as Error).message}`);
  }
}

function checkAttribute(setting: string, value: string): string {
  if (!ATTRIBUTE.test(value)) throw new ConfigurationError(setting, `'${value}' is not an attribute name (letters, digits and '-', starting with a letter, or an OID)`);
  return value;
}

/** An attribute's values, found whatever case the directory spells its name in. */
function values(entry: Entry, attribute: string): string[] {
  const key = Object.keys(entry).find((k) => k.toLowerCase() === attribute.toLowerCase());
  const raw = key === undefined ? [] : entry[key];
  return (Array.isArray(raw) ? raw : [raw]).map((v) => (Buffer.isBuffer(v) ? v.toString('utf8') : v)).filter((v) => v !== '');
}

/** An attribute's first value, or the one equal (ignoring case) to `prefer` where there is one. */
function first(entry: Entry, attribute: string, prefer?: string): string | undefined {
  const found = values(entry, attribute);
  return (prefer === undefined ? undefined : found.find((v) => v.toLowerCase() === prefer.toLowerCase())) ?? found[0];
}

/** A user name that could be somebody's: not empty, not absurdly long, no control characters. */
function plausibleUsername(username: unknown): username is string {
  return typeof username === 'string' && username.trim() !== '' && username.length <= MAX_USERNAME && !/[\x00-\x1f\x7f]/.test(username);
}

/**
 * An LDAP password provider. Settings are checked here (a bad one throws a ConfigurationError
 * naming it by its environment variable, GYRE_LDAP_URL for `url` and so on); the directory is
 * first asked at the first sign-in.
 *
 * `verify` answers undefined, without telling which, for an unknown user, a wrong password, an empty
 * password (which LDAP would take as an unauthenticated bind and accept), a name that matches more
 * than one entry, or a name that could be nobody's (empty, over 256 characters, control characters).
 * It throws an Error naming the URL when the directory cannot be reached, does not answer within
 * `timeoutMs`, or refuses the service account.
 */
export function createLdapProvider(settings: LdapSettings): PasswordProvider {
  const url = settings.url;
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new ConfigurationError('GYRE_LDAP_URL', `'${url}' is not a URL (allowed: ldap://host[:port] or ldaps://host[:port])`);
  }
  if ((parsed.protocol !== 'ldap:' && parsed.protocol !== 'ldaps:') || !parsed.hostname || parsed.username || parsed.password || (parsed.pathname !== '' && parsed.pathname !== '/') || parsed.search) {
    throw new ConfigurationError('GYRE_LDAP_URL', `'${url}' is not allowed (allowed: ldap://host[:port] or ldaps://host[:port], nothing after the port)`);
  }
  const secure = parsed.protocol === 'ldaps:';
  if (settings.startTls && secure) throw new ConfigurationError('GYRE_LDAP_START_TLS', `applies to ldap:// URLs only; ${url} is already TLS`);
  if (settings.bindDn !== undefined && !settings.bindDn.trim()) throw new ConfigurationError('GYRE_LDAP_BIND_DN', 'is empty (leave it unset to search anonymously)');
  if (settings.bindDn && !settings.bindDn.includes('=')) throw new ConfigurationError('GYRE_LDAP_BIND_DN', `'${settings.bindDn}' is not a DN (as in cn=gyre,ou=services,dc=example,dc=com)`);
  if (settings.bindDn && !settings.bindPassword) throw new ConfigurationError('GYRE_LDAP_BIND_PASSWORD', `is required with GYRE_LDAP_BIND_DN ${settings.bindDn} (an empty password is an unauthenticated bind)`);
  if (!settings.bindDn && settings.bindPassword) throw new ConfigurationError('GYRE_LDAP_BIND_DN', 'is required when GYRE_LDAP_BIND_PASSWORD is set');
  if (!settings.userBase?.trim()) throw new ConfigurationError('GYRE_LDAP_USER_BASE', 'is required: the DN people are searched under, e.g. ou=people,dc=example,dc=com');
  const userFilter = settings.userFilter ?? DEFAULT_USER_FILTER;
  checkFilter('GYRE_LDAP_USER_FILTER', userFilter, '{username}');
  const groupFilter = settings.groupFilter ?? DEFAULT_GROUP_FILTER;
  if (settings.groupBase !== undefined) {
    if (!settings.groupBase.trim()) throw new ConfigurationError('GYRE_LDAP_GROUP_BASE', 'is empty (leave it unset to read no groups)');
    if (!groupFilter.includes('{dn}') && !groupFilter.includes('{username}')) throw new ConfigurationError('GYRE_LDAP_GROUP_FILTER', `'${groupFilter}' must contain {dn} or {username} (as in ${DEFAULT_GROUP_FILTER})`);
    checkFilter('GYRE_LDAP_GROUP_FILTER', groupFilter, groupFilter.includes('{dn}') ? '{dn}' : '{username}');
  }
  const loginAttribute = checkAttribute('GYRE_LDAP_LOGIN_ATTRIBUTE', settings.loginAttribute ?? 'uid');
  const nameAttribute = checkAttribute('GYRE_LDAP_NAME_ATTRIBUTE', settings.nameAttribute ?? 'cn');
  const emailAttribute = checkAttribute('GYRE_LDAP_EMAIL_ATTRIBUTE', settings.emailAttribute ?? 'mail');
  const groupNameAttribute = checkAttribute('GYRE_LDAP_GROUP_NAME_ATTRIBUTE', settings.groupNameAttribute ?? 'cn');
  const timeoutMs = settings.timeoutMs ?? 5000;
  if (!Number.isInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > 600_000) throw new ConfigurationError('GYRE_LDAP_TIMEOUT_MS', `${timeoutMs} is out of range (allowed: 1 to 600000 milliseconds)`);
  let ca: Buffer | undefined;
  if (settings.tlsCaFile) {
    try {
      ca = readFileSync(settings.tlsCaFile);
    } catch (error) {
      throw new ConfigurationError('GYRE_LDAP_CA_FILE', `cannot read ${settings.tlsCaFile}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
    }
  }
  const host = parsed.hostname.replace(/^\[(.*)\]$/, '$1');
  const tls: ConnectionOptions = { host, ...(isIP(host) ? {} : { servername: host }), ...(ca ? { ca } : {}) };
  const name = settings.name ?? 'ldap';

  /**
   * A connection, upgraded with StartTLS when asked. The sign-in's deadline closes it; ldapts' own
   * timeouts are a backstop a little later (so the deadline's message is the one people see).
   */
  async function open(session: Session): Promise<Client> {
    if (session.over) throw new DirectoryError(`LDAP directory ${url} did not answer within ${timeoutMs} ms`);
    const client = new Client({ url: `${parsed.protocol}//${parsed.host}`, timeout: timeoutMs + 1000, connectTimeout: timeoutMs + 1000, ...(secure ? { tlsOptions: tls } : {}) });
    session.clients.push(client);
    if (settings.startTls) await client.startTLS({ ...tls });
    return client;
  }

  async function findPerson(session: Session, username: string): Promise<{ entry: Entry; service: Client } | undefined> {
    const service = await open(session);
    if (settings.bindDn) {
      try {
        await service.bind(settings.bindDn, settings.bindPassword);
      } catch (error) {
        if (error instanceof InvalidCredentialsError) throw new DirectoryError(`LDAP directory ${url} refused the service account ${settings.bindDn}: invalid credentials (check GYRE_LDAP_BIND_DN and GYRE_LDAP_BIND_PASSWORD)`);
        throw error;
      }
    }
    const { searchEntries } = await service.search(settings.userBase, {
      scope: 'sub',
      filter: fillFilter(userFilter, { username }),
      attributes: [loginAttribute, nameAttribute, emailAttribute, 'entryUUID'],
      // Two are enough to know it is not exactly one.
      sizeLimit: 2,
      timeLimit: Math.ceil(timeoutMs / 1000),
    });
    // A DN has an `=`; ldapts would take a bare `EXTERNAL` or `PLAIN` for a SASL mechanism.
    if (searchEntries.length !== 1 || !searchEntries[0].dn.includes('=')) return undefined;
    return { entry: searchEntries[0], service };
  }

  /** True when the password is the entry's, by binding as it on a connection of its own. */
  async function passwordMatches(session: Session, dn: string, password: string): Promise<boolean> {
    const client = await open(session);
    try {
      await client.bind(dn, password);
      return true;
    } catch (error) {
      if (error instanceof InvalidCredentialsError) return false;
      throw error;
    }
  }

  async function groupsOf(service: Client, dn: string, login: string): Promise<string[]> {
    if (settings.groupBase === undefined) return [];
    const { searchEntries } = await service.search(settings.groupBase, {
      scope: 'sub',
      filter: fillFilter(groupFilter, { username: login, dn }),
      attributes: [groupNameAttribute],
      timeLimit: Math.ceil(timeoutMs / 1000),
    });
    const names = new Set<string>();
    for (const group of searchEntries) for (const n of values(group, groupNameAttribute)) names.add(n);
    return [...names].sort();
  }

  async function verifyWith(session: Session, username: string, password: string): Promise<ExternalIdentity | undefined> {
    const found = await findPerson(session, username);
    if (!found) return undefined;
    const { entry, service } = found;
    if (!(await passwordMatches(session, entry.dn, password))) return undefined;
    const login = first(entry, loginAttribute, username.trim()) ?? username.trim();
    return {
      provider: name,
      subject: first(entry, 'entryUUID') ?? entry.dn,
      login,
      name: first(entry, nameAttribute),
      email: first(entry, emailAttribute),
      groups: await groupsOf(service, entry.dn, login),
    };
  }

  return {
    kind: 'password',
    name,
    label: settings.label ?? 'LDAP',
    async verify(username, password) {
      // An empty password is an unauthenticated bind, which directories answer with success.
      if (typeof password !== 'string' || password === '' || !plausibleUsername(username)) return undefined;
      const session: Session = { clients: [], over: false };
      let timer: NodeJS.Timeout | undefined;
      const work = verifyWith(session, username, password);
      const deadline = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new DirectoryError(`LDAP directory ${url} did not answer within ${timeoutMs} ms`)), timeoutMs);
      });
      try {
        return await Promise.race([work, deadline]);
      } catch (error) {
        if (error instanceof DirectoryError) throw error;
        throw new DirectoryError(`LDAP directory ${url} cannot be asked: ${(error as Error).message}`, { cause: error });
      } finally {
        clearTimeout(timer);
        session.over = true;
        work.catch(() => undefined);
        // Unbind closes the socket whether or not the directory answers.
        await Promise.all(session.clients.map((c) => c.unbind().catch(() => undefined)));
      }
    },
  };
}
