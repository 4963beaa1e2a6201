import { createHash, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { githubSchemaCheck, githubSimpleUser, type GitHubSchemaCheck } from './github-openapi';

/**
 * A stand-in of GitHub (Enterprise Server shaped: the web host serves OAuth, `/api/v3` the REST
 * API) for what Gyre's GitHub sign-in and repository roles ask:
 *
 * - `GET /login/oauth/authorize?client_id&redirect_uri&state&scope&code_challenge&code_challenge_method`:
 *   "signs in" the account chosen with `signInAs` and redirects (302) to `redirect_uri` with `code`
 *   and `state`, or with `error=access_denied` after `denyNext()`. The code remembers its client,
 *   redirect URI, scope and PKCE challenge.
 * - `POST /login/oauth/access_token` (JSON or form body): checks client id and secret, that the code
 *   exists, is this client's and unused (a code works once), the redirect URI, and the PKCE
 *   verifier (S256). Answers JSON when `Accept: application/json` asks, else form-encoded; errors
 *   are 200 with `error` (`incorrect_client_credentials`, `bad_verification_code`,
 *   `redirect_uri_mismatch`), as GitHub answers them.
 * - `GET /api/v3/user`, `GET /api/v3/user/emails` with a user's token (`Authorization: token …` or
 *   `Bearer …`); `GET /api/v3/repos/{owner}/{repo}/collaborators/{username}/permission` with any
 *   token (the server's, `serverToken`). Unknown token 401, unknown repository or user 404.
 *
 * Every API answer is recorded in `sent` with its operation and status, so a test can hold them to
 * GitHub's own OpenAPI description (`githubResponseCheck`): the stand-in cannot drift from the API.
 */
export interface GitHubAccount {
  readonly id: number;
  readonly login: string;
  readonly name?: string | null;
  /** The profile's public address (`/user`'s `email`); null when the person keeps it private. */
  readonly email?: string | null;
  readonly emails?: readonly { email: string; primary: boolean; verified: boolean; visibility?: 'public' | 'private' | null }[];
}

/** A role on a repository: GitHub's five, or a custom role's name with its base permission. */
export type RepositoryRole = 'admin' | 'maintain' | 'write' | 'triage' | 'read' | { readonly custom: string; readonly base: 'admin' | 'write' | 'read' };

/** The REST operations the stand-in serves, by GitHub's operation id, with their path. */
export const STANDIN_OPERATIONS = {
  'users/get-authenticated': '/user',
  'users/list-emails-for-authenticated-user': '/user/emails',
  'repos/get-collaborator-permission-level': '/repos/{owner}/{repo}/collaborators/{username}/permission',
} as const;
export type GitHubOperation = keyof typeof STANDIN_OPERATIONS;

export interface SentAnswer {
  readonly operation: GitHubOperation;
  readonly status: number;
  readonly body: unknown;
}

export interface GitHubStandIn {
  /** The web address (OAuth), e.g. `http://127.0.0.1:41234`: a GitHub Enterprise Server's `webUrl`. */
  readonly url: string;
  /** The REST API: `<url>/api/v3`. */
  readonly apiUrl: string;
  readonly clientId: string;
  readonly clientSecret: string;
  /** A server-side token the permission endpoint accepts (an installation or machine user's). */
  readonly serverToken: string;
  addAccount(account: GitHubAccount): void;
  /** Who the authorize page signs in from now on. */
  signInAs(login: string): void;
  /** The next authorize answers `error=access_denied` (the person pressed Cancel). */
  denyNext(): void;
  /** Makes a repository exist (it answers 404 until then), optionally with collaborators. */
  addRepository(fullName: string): void;
  grant(fullName: string, login: string, role: RepositoryRole): void;
  revoke(fullName: string, login: string): void;
  /**
   * From now on, API requests (or, with `'all'`, OAuth requests too) are answered with this status
   * and GitHub's error body, or never answered (`'hang'`); undefined answers normally again.
   */
  fail(mode: { status: number } | 'hang' | undefined, where?: 'api' | 'all'): void;
  /** From now on this operation answers `body` (200) instead of what GitHub would; undefined stops it. Not recorded in `sent`. */
  override(operation: GitHubOperation, body: unknown): void;
  /** Every request: method, path (without query), query and whether it carried a token. */
  readonly requests: { method: string; path: string; query: Record<string, string>; token?: string }[];
  /** Every API answer the stand-in made itself (not overrides), for the schema check. */
  readonly sent: SentAnswer[];
  /** Every code exchange and how it ended (`ok` or GitHub's error code). */
  readonly exchanges: { code: string; codeVerifier?: string; redirectUri?: string; result: string }[];
  /** Tokens issued to people (never the server token). */
  readonly issuedTokens: string[];
  stop(): Promise<void>;
}

interface Grant {
  readonly code: string;
  readonly login: string;
  readonly clientId: string;
  readonly redirectUri: string;
  readonly scope: string;
  readonly challenge?: string;
  used: boolean;
}

const DOCS = 'https://docs.github.com/rest';
const OAUTH_DOCS = 'https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors';
const BASE_PERMISSION: Record<string, 'admin' | 'write' | 'read'> = { admin: 'admin', maintain: 'write', write: 'write', triage: 'read', read: 'read' };

export async function startGitHubStandIn(options: { clientId?: string; clientSecret?: string; serverToken?: string; accounts?: readonly GitHubAccount[] } = {}): Promise<GitHubStandIn> {
  const clientId = options.clientId ?? 'Ov23liStandIn0000001';
  const clientSecret = options.clientSecret ?? randomBytes(20).toString('hex');
  const serverToken = options.serverToken ?? `ghs_${randomBytes(18).toString('hex')}`;
  const accounts = new Map<string, GitHubAccount>();
  for (const a of options.accounts ?? []) accounts.set(a.login.toLowerCase(), a);
  let signedIn = options.accounts?.[0]?.login;
  let deny = false;
  let failure: { mode: { status: number } | 'hang'; where: 'api' | 'all' } | undefined;
  const overrides = new Map<GitHubOperation, unknown>();
  const repositories = new Map<string, Map<string, RepositoryRole>>();
  const grants = new Map<string, Grant>();
  const tokens = new Map<string, { login: string; scope: string }>();
  const requests: GitHubStandIn['requests'] = [];
  const sent: SentAnswer[] = [];
  const exchanges: GitHubStandIn['exchanges'] = [];
  const issuedTokens: string[] = [];
  let base = '';

  const json = (res: ServerResponse, status: number, body: unknown) => {
    res.writeHead(status, { 'content-type': 'application/json; charset=utf-8' });
    res.end(JSON.stringify(body));
  };
  const apiAnswer = (res: ServerResponse, operation: GitHubOperation, status: number, body: unknown) => {
    sent.push({ operation, status, body });
    json(res, status, body);
  };
  const apiError = (res: ServerResponse, operation: GitHubOperation | undefined, status: number, message: string) => {
    const body = { message, documentation_url: DOCS, status: String(status) };
    if (operation) apiAnswer(res, operation, status, body);
    else json(res, status, body);
  };

  const simpleUser = (a: GitHubAccount) => githubSimpleUser(a, `${base}/api/v3`, base);

  const privateUser = (a: GitHubAccount) => ({
    ...simpleUser(a),
    user_view_type: 'private',
    name: a.name ?? null,
    company: null,
    blog: '',
    location: null,
    email: a.email ?? null,
    hireable: null,
    bio: null,
    twitter_username: null,
    public_repos: 0,
    public_gists: 0,
    followers: 0,
    following: 0,
    created_at: '2011-01-25T18:44:36Z',
    updated_at: '2024-05-01T09:00:00Z',
    private_gists: 0,
    total_private_repos: 0,
    owned_private_repos: 0,
    disk_usage: 0,
    collaborators: 0,
    two_factor_authentication: true,
    plan: { name: 'free', space: 976562499, collaborators: 0, private_repos: 10000 },
  });
  const permissionAnswer = (a: GitHubAccount, role: RepositoryRole | undefined) => {
    const roleName = role === undefined ? 'none' : typeof role === 'string' ? role : role.custom;
    const permission = role === undefined ? 'none' : typeof role === 'string' ? BASE_PERMISSION[role] : role.base;
    const at = (p: string) => ['read', 'write', 'admin'].indexOf(permission) >= ['read', 'write', 'admin'].indexOf(p);
    return {
      permission,
      role_name: roleName,
      user: {
        ...simpleUser(a),
        name: a.name ?? null,
        email: null,
        user_view_type: 'public',
        permissions: { pull: at('read'), triage: at('read'), push: at('write'), maintain: role === 'maintain' || at('admin'), admin: at('admin') },
        role_name: roleName,
      },
    };
  };

  const authorize = (res: ServerResponse, q: URLSearchParams) => {
    const redirectUri = q.get('redirect_uri');
    if (q.get('client_id') !== clientId || !redirectUri) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('Not Found: unknown client_id or no redirect_uri');
      return;
    }
    const back = new URL(redirectUri);
    const state = q.get('state');
    if (deny) {
      deny = false;
      back.searchParams.set('error', 'access_denied');
      back.searchParams.set('error_description', 'The user has denied your application access.');
      back.searchParams.set('error_uri', 'https://docs.github.com/apps/managing-oauth-apps/troubleshooting-authorization-request-errors/#access-denied');
    } else {
      const method = q.get('code_challenge_method');
      const challenge = q.get('code_challenge') ?? undefined;
      if (challenge !== undefined && method !== 'S256') {
        res.writeHead(400, { 'content-type': 'text/plain' }).end('code_challenge_method must be S256');
        return;
      }
      if (!signedIn || !accounts.has(signedIn.toLowerCase())) throw new Error('the stand-in has nobody to sign in: call signInAs');
      const code = randomBytes(10).toString('hex');
      grants.set(code, { code, login: signedIn, clientId, redirectUri, scope: q.get('scope') ?? '', challenge, used: false });
      back.searchParams.set('code', code);
    }
    if (state !== null) back.searchParams.set('state', state);
    res.writeHead(302, { location: back.toString() }).end();
  };

  const accessToken = (req: IncomingMessage, res: ServerResponse, params: Record<string, string>) => {
    const answer = (body: Record<string, string>) => {
      if (/application\/json/.test(req.headers.accept ?? '')) json(res, 200, body);
      else res.writeHead(200, { 'content-type': 'application/x-www-form-urlencoded; charset=utf-8' }).end(new URLSearchParams(body).toString());
    };
    const refuse = (error: string, description: string) => {
      exchanges.push({ code: params.code ?? '', codeVerifier: params.code_verifier, redirectUri: params.redirect_uri, result: error });
      answer({ error, error_description: description, error_uri: `${OAUTH_DOCS}/#${error.replace(/_/g, '-')}` });
    };
    if (params.client_id !== clientId || params.client_secret !== clientSecret) return refuse('incorrect_client_credentials', 'The client_id and/or client_secret passed are incorrect.');
    const grant = grants.get(params.code ?? '');
    if (!grant || grant.used || grant.clientId !== params.client_id) return refuse('bad_verification_code', 'The code passed is incorrect or expired.');
    grant.used = true; // a code is spent by any attempt past the client's credentials
    if (params.redirect_uri !== undefined && params.redirect_uri !== grant.redirectUri) return refuse('redirect_uri_mismatch', 'The redirect_uri MUST match the registered callback URL for this application.');
    if (grant.challenge !== undefined) {
      const verifier = params.code_verifier;
      if (!verifier || createHash('sha256').update(verifier).digest('base64url') !== grant.challenge) return refuse('bad_verification_code', 'The code_verifier does not match the code_challenge.');
    }
    const token = `gho_${randomBytes(18).toString('base64url').replace(/[-_]/g, 'x')}`;
    tokens.set(token, { login: grant.login, scope: grant.scope });
    issuedTokens.push(token);
    exchanges.push({ code: grant.code, codeVerifier: params.code_verifier, redirectUri: params.redirect_uri, result: 'ok' });
    answer({ access_token: token, token_type: 'bearer', scope: grant.scope.split(/[\s,]+/).filter(Boolean).join(',') });
  };

  const api = (res: ServerResponse, method: string, path: string, token: string | undefined) => {
    const parts = path.split('/').slice(1).map((p) => decodeURIComponent(p));
    const operation: GitHubOperation | undefined =
      method === 'GET' && path === '/user'
        ? 'users/get-authenticated'
        : method === 'GET' && path === '/user/emails'
          ? 'users/list-emails-for-authenticated-user'
          : method === 'GET' && parts.length === 6 && parts[0] === 'repos' && parts[3] === 'collaborators' && parts[5] === 'permission'
            ? 'repos/get-collaborator-permission-level'
            : undefined;
    if (!operation) return apiError(res, undefined, 404, 'Not Found');
    const user = token !== undefined ? tokens.get(token) : undefined;
    if (!user && token !== serverToken) return apiError(res, operation, 401, 'Bad credentials');
    if (overrides.has(operation)) return json(res, 200, overrides.get(operation));

    if (operation === 'repos/get-collaborator-permission-level') {
      const [, owner, repo, , username] = parts;
      const collaborators = repositories.get(`${owner}/${repo}`.toLowerCase());
      const account = accounts.get(username.toLowerCase());
      if (!collaborators || !account) return apiError(res, operation, 404, 'Not Found');
      return apiAnswer(res, operation, 200, permissionAnswer(account, collaborators.get(account.login.toLowerCase())));
    }
    // The person's own profile: a user's token only (an installation token is not a person).
    if (!user) return apiError(res, operation, 403, 'Resource not accessible by integration');
    const account = accounts.get(user.login.toLowerCase())!;
    if (operation === 'users/get-authenticated') return apiAnswer(res, operation, 200, privateUser(account));
    if (!/(^|[\s,])user(:email)?($|[\s,])/.test(user.scope)) return apiError(res, operation, 404, 'Not Found');
    return apiAnswer(res, operation, 200, (account.emails ?? []).map((e) => ({ email: e.email, primary: e.primary, verified: e.verified, visibility: e.visibility ?? null })));
  };

  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://stand-in');
    const auth = /^(?:token|bearer)\s+(\S+)$/i.exec(req.headers.authorization ?? '');
    requests.push({ method: req.method ?? '', path: url.pathname, query: Object.fromEntries(url.searchParams), ...(auth ? { token: auth[1] } : {}) });
    const isApi = url.pathname.startsWith('/api/v3/');
    if (failure && (isApi || failure.where === 'all')) {
      if (failure.mode === 'hang') return; // never answered; stop() closes it
      return json(res, failure.mode.status, { message: 'Server Error', documentation_url: DOCS, status: String(failure.mode.status) });
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > 64 * 1024) req.destroy();
      else chunks.push(c);
    });
    req.on('end', () => {
      try {
        if (isApi) return api(res, req.method ?? '', url.pathname.slice('/api/v3'.length), auth?.[1]);
        if (req.method === 'GET' && url.pathname === '/login/oauth/authorize') return authorize(res, url.searchParams);
        if (req.method === 'POST' && url.pathname === '/login/oauth/access_token') {
          const raw = Buffer.concat(chunks).toString('utf8');
          const body: Record<string, unknown> = /json/.test(req.headers['content-type'] ?? '') ? JSON.parse(raw || '{}') : Object.fromEntries(new URLSearchParams(raw));
          const params: Record<string, string> = Object.fromEntries(url.searchParams);
          for (const [k, v] of Object.entries(body)) if (typeof v === 'string') params[k] = v;
          return accessToken(req, res, params);
        }
        res.writeHead(404, { 'content-type': 'text/plain' }).end('Not Found');
      } catch (error) {
        res.writeHead(500, { 'content-type': 'text/plain' }).end(String((error as Error).message));
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  return {
    url: base,
    apiUrl: `${base}/api/v3`,
    clientId,
    clientSecret,
    serverToken,
    requests,
    sent,
    exchanges,
    issuedTokens,
    addAccount: (a) => void accounts.set(a.login.toLowerCase(), a),
    signInAs: (login) => void (signedIn = login),
    denyNext: () => void (deny = true),
    addRepository: (fullName) => void (repositories.has(fullName.toLowerCase()) || repositories.set(fullName.toLowerCase(), new Map())),
    grant(fullName, login, role) {
      if (!repositories.has(fullName.toLowerCase())) repositories.set(fullName.toLowerCase(), new Map());
      repositories.get(fullName.toLowerCase())!.set(login.toLowerCase(), role);
    },
    revoke: (fullName, login) => void repositories.get(fullName.toLowerCase())?.delete(login.toLowerCase()),
    fail: (mode, where = 'api') => void (failure = mode ? { mode, where } : undefined),
    override: (operation, body) => void (body === undefined ? overrides.delete(operation) : overrides.set(operation, body)),
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

export { describedOperation } from './github-openapi';

/** Errors of one answer body against the description's schema for it; empty when it conforms. */
export type GitHubResponseCheck = GitHubSchemaCheck;

/** A check of an answer of `operationId` with `status` against GitHub's description (test/support/github-openapi.ts). */
export function githubResponseCheck(operationId: string, status = 200): GitHubResponseCheck | undefined {
  return githubSchemaCheck(operationId, status);
}
