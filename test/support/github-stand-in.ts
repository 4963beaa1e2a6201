import { execFileSync, spawn } from 'node:child_process';
import { createHmac, generateKeyPairSync, randomBytes, verify as verifySignature, type KeyObject } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import Ajv, { type ValidateFunction } from 'ajv';
import addFormats from 'ajv-formats';
import { githubDescription, githubSimpleUser } from './github-openapi';

/**
 * A stand-in of GitHub (Enterprise Server shaped: the web host serves git, `/api/v3` the REST API)
 * for what Gyre's GitHub App integration asks, over real git repositories:
 *
 * - REST, as the app (a JWT signed with the app's key, RS256, `iss` the app id, checked):
 *   `GET /repos/{owner}/{repo}/installation`, `POST /app/installations/{id}/access_tokens` (the
 *   body's `repositories` and `permissions` narrow the token, as GitHub's do);
 * - REST, as an installation (a token it minted, for the repositories it covers):
 *   `GET /repos/{owner}/{repo}`, `…/branches/{branch}`, `…/git/ref/{ref}`, `…/git/tags/{sha}`,
 *   `…/git/commits/{sha}`, `…/contents/{path}?ref=` (raw or JSON), and
 *   `POST /repos/{owner}/{repo}/statuses/{sha}` (a commit of the repository, with a token that may
 *   write statuses; recorded in `statuses`, or refused or failed as `failStatuses` says);
 * - git's smart HTTP (`/{owner}/{repo}.git/…`, read only) through `git http-backend`: a private
 *   repository wants an installation token that covers it as the basic-auth password (401 and a
 *   `WWW-Authenticate` challenge without one, as GitHub answers);
 * - webhook deliveries to Gyre (`deliver`), their payloads made from @octokit/webhooks-examples
 *   and checked against @octokit/webhooks-schemas before they are sent, signed as GitHub signs.
 *
 * Every REST request is recorded with the operation it was served as (`requests`), every answer
 * with its body (`sent`) and every JSON request body (`received`), so a test holds them to
 * GitHub's OpenAPI description (`checkAgainstOpenApi`): the stand-in cannot drift from the API.
 */
export interface GitHubAppStandIn {
  /** The web host: git, and a GitHub Enterprise Server's `GYRE_GITHUB_URL`. */
  readonly url: string;
  /** `<url>/api/v3`. */
  readonly apiUrl: string;
  readonly appId: number;
  /** The app's private key (PKCS#1 PEM, as GitHub hands it out) in a file. */
  readonly privateKeyFile: string;
  readonly webhookSecret: string;
  /** The settings Gyre runs with against this stand-in. */
  readonly env: Record<string, string>;
  /** Makes a repository (bare, served over git's smart HTTP) with these files on its default branch. */
  createRepository(fullName: string, options?: { private?: boolean; files?: Record<string, string>; defaultBranch?: string; forkOf?: StandInRepository }): StandInRepository;
  repository(fullName: string): StandInRepository;
  /** Installs the app on an account for these repositories; answers the installation's id. */
  install(account: { login: string; id?: number; type?: 'Organization' | 'User' }, repositories: readonly StandInRepository[]): number;
  uninstall(installationId: number): void;
  /** Every REST request: method, path, the operation it was served as, the status answered, how it was authenticated. */
  readonly requests: { method: string; path: string; operation?: string; status: number; auth: 'app' | 'installation' | 'none' | 'bad' }[];
  /** Every JSON answer the stand-in made itself, by operation and status, for the schema check. */
  readonly sent: { operation: string; status: number; body: unknown }[];
  /** Every JSON request body, by operation, for the schema check. */
  readonly received: { operation: string; body: unknown }[];
  /** Tokens minted: to whom and for what. */
  readonly tokens: { token: string; installationId: number; repositories?: readonly string[]; permissions?: Record<string, string> }[];
  /** Commit statuses posted and accepted, in the order they came. */
  readonly statuses: CommitStatus[];
  /**
   * The next `times` status posts are answered with `status` instead of being recorded: 422
   * (GitHub's "Validation Failed", a refusal) or 502 (a server error, to be retried).
   */
  failStatuses(status: 422 | 502, times: number): void;
  /** git requests: the repository, the service, and whether it was let through. */
  readonly gitRequests: { repository: string; service: string; status: number }[];
  /** Webhook payloads, from GitHub's examples, checked against its schemas. */
  readonly payloads: WebhookPayloads;
  /**
   * Delivers an event to Gyre as GitHub does: JSON, `X-GitHub-Event`, `X-GitHub-Delivery`, and
   * `X-Hub-Signature-256` with the secret (`secret` overrides it, `null` sends no signature).
   */
  deliver(to: string, event: string, payload: unknown, options?: { deliveryId?: string; secret?: string | null; body?: string }): Promise<{ status: number; body: any; deliveryId: string }>;
  /** Every operation the stand-in serves, as it serves it: `{ operation: { method, path } }`. */
  readonly operations: Readonly<Record<string, { method: string; path: string }>>;
  stop(): Promise<void>;
}

/** A commit status as GitHub took it. */
export interface CommitStatus {
  readonly repository: string;
  readonly sha: string;
  readonly state: string;
  readonly context: string;
  readonly description: string | null;
  readonly target_url: string | null;
}

export interface StandInRepository {
  readonly id: number;
  readonly fullName: string;
  readonly owner: string;
  readonly name: string;
  readonly private: boolean;
  readonly defaultBranch: string;
  /** The bare repository the stand-in serves. */
  readonly gitDir: string;
  /** `<url>/<owner>/<name>.git`. */
  readonly cloneUrl: string;
  /** Commits files onto a branch (made from the default branch when new) and pushes it; answers the commit. */
  commit(branch: string, files: Record<string, string>, message?: string): string;
  /** Tags a commit (annotated: a tag object, as `git tag -a` makes). */
  tag(name: string, sha: string, annotated?: boolean): void;
  /** What a ref points at (a commit, or a tag object). */
  rev(ref: string): string;
  /** Copies a commit of another repository (a fork) in as `refs/pull/<n>/head`, as GitHub does for a pull request. */
  pullRequestRef(number: number, from: StandInRepository, branch: string): void;
}

/** The operations the stand-in serves, by GitHub's operation id: method and path as GitHub's description has them. */
export const STAND_IN_OPERATIONS = {
  'apps/get-repo-installation': { method: 'get', path: '/repos/{owner}/{repo}/installation' },
  'apps/create-installation-access-token': { method: 'post', path: '/app/installations/{installation_id}/access_tokens' },
  'repos/get': { method: 'get', path: '/repos/{owner}/{repo}' },
  'repos/get-branch': { method: 'get', path: '/repos/{owner}/{repo}/branches/{branch}' },
  'git/get-ref': { method: 'get', path: '/repos/{owner}/{repo}/git/ref/{ref}' },
  'git/get-tag': { method: 'get', path: '/repos/{owner}/{repo}/git/tags/{tag_sha}' },
  'git/get-commit': { method: 'get', path: '/repos/{owner}/{repo}/git/commits/{commit_sha}' },
  'repos/get-content': { method: 'get', path: '/repos/{owner}/{repo}/contents/{path}' },
  'repos/create-commit-status': { method: 'post', path: '/repos/{owner}/{repo}/statuses/{sha}' },
} as const;

const HTTP_BACKEND = '/usr/lib/git-core/git-http-backend';

interface Installation {
  readonly id: number;
  readonly account: { login: string; id: number; type: 'Organization' | 'User' };
  readonly repositories: Set<string>;
}

interface Token {
  readonly installationId: number;
  /** Lower-case full names the token may read; undefined: every repository of the installation. */
  readonly repositories?: ReadonlySet<string>;
  /** What the token may do; undefined: everything the installation may. */
  readonly permissions?: Readonly<Record<string, string>>;
  readonly expiresAt: number;
}

export async function startGitHubAppStandIn(): Promise<GitHubAppStandIn> {
  const root = mkdtempSync(join(tmpdir(), 'gyre-github-'));
  const gitRoot = join(root, 'git');
  const workRoot = join(root, 'work');
  mkdirSync(gitRoot);
  mkdirSync(workRoot);
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const privateKeyFile = join(root, 'app.private-key.pem');
  writeFileSync(privateKeyFile, privateKey.export({ type: 'pkcs1', format: 'pem' }) as string, { mode: 0o600 });
  const appId = 100_000 + Math.floor(Math.random() * 800_000);
  const webhookSecret = randomBytes(24).toString('hex');
  const repositories = new Map<string, StandInRepository>();
  const installations = new Map<number, Installation>();
  const tokens = new Map<string, Token>();
  const requests: GitHubAppStandIn['requests'] = [];
  const sent: GitHubAppStandIn['sent'] = [];
  const received: GitHubAppStandIn['received'] = [];
  const tokenLog: GitHubAppStandIn['tokens'] = [];
  const gitRequests: GitHubAppStandIn['gitRequests'] = [];
  const statuses: CommitStatus[] = [];
  let statusFailures: { status: 422 | 502; times: number } = { status: 502, times: 0 };
  let nextStatusId = 1;
  let nextRepoId = 700_000;
  let nextInstallationId = 40_000;
  let base = '';

  const server = createServer((req, res) => {
    handle(req, res).catch((error) => {
      if (!res.headersSent) json(res, 500, { message: String((error as Error).message) });
      else res.destroy();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const apiUrl = `${base}/api/v3`;

  const json = (res: ServerResponse, status: number, body: unknown) => {
    res.writeHead(status, { 'content-type': 'application/json; charset=utf-8' });
    res.end(JSON.stringify(body));
  };

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', base);
    if (url.pathname.startsWith('/api/v3/')) return api(req, res, url);
    const git = /^\/([^/]+)\/([^/]+?)\.git(\/.*)$/.exec(url.pathname);
    if (git) return gitHttp(req, res, url, `${git[1]}/${git[2]}`, git[3]);
    json(res, 404, { message: 'Not Found' });
  }

  // --- REST -------------------------------------------------------------------------------------

  /** Who the Authorization header says is calling. */
  const authOf = (req: IncomingMessage): { kind: 'app' } | { kind: 'installation'; token: Token } | { kind: 'none' } | { kind: 'bad' } => {
    const header = req.headers.authorization ?? '';
    const m = /^(bearer|token) (.+)$/i.exec(header);
    if (!m) return { kind: 'none' };
    const credential = m[2].trim();
    if (credential.split('.').length === 3) return checkJwt(credential, publicKey, appId) ? { kind: 'app' } : { kind: 'bad' };
    const token = tokens.get(credential);
    return token && token.expiresAt > Date.now() && installations.has(token.installationId) ? { kind: 'installation', token } : { kind: 'bad' };
  };

  async function api(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    const path = url.pathname.slice('/api/v3'.length);
    const auth = authOf(req);
    const record = (operation: string | undefined, status: number) => requests.push({ method: req.method ?? '', path, operation, status, auth: auth.kind });
    const answer = (operation: string, status: number, body: unknown) => {
      record(operation, status);
      sent.push({ operation, status, body });
      json(res, status, body);
    };
    const error = (operation: string | undefined, status: number, message: string) => {
      record(operation, status);
      json(res, status, { message, documentation_url: 'https://docs.github.com/enterprise-server@3.17/rest', status: String(status) });
    };
    const route = matchRoute(req.method ?? 'GET', path);
    if (!route) return error(undefined, 404, 'Not Found');
    const { operation, params } = route;
    if (auth.kind === 'bad') return error(operation, 401, 'Bad credentials');

    if (operation === 'apps/get-repo-installation' || operation === 'apps/create-installation-access-token') {
      if (auth.kind !== 'app') return error(operation, 401, 'A JSON web token could not be decoded');
      if (operation === 'apps/get-repo-installation') {
        const installation = installationOf(`${params.owner}/${params.repo}`);
        if (!installation) return error(operation, 404, 'Not Found');
        return answer(operation, 200, installationBody(installation));
      }
      const installation = installations.get(Number(params.installation_id));
      if (!installation) return error(operation, 404, 'Not Found');
      const body = (await readJson(req)) as { repositories?: string[]; repository_ids?: number[]; permissions?: Record<string, string> } | undefined;
      received.push({ operation, body: body ?? {} });
      let names: Set<string> | undefined;
      if (body?.repositories) {
        names = new Set();
        for (const name of body.repositories) {
          const full = `${installation.account.login}/${name}`.toLowerCase();
          if (!installation.repositories.has(full)) return error(operation, 422, `There is at least one repository that does not exist or is not accessible to the parent installation.`);
          names.add(full);
        }
      }
      const token = `ghs_${randomBytes(18).toString('base64url').replace(/[-_]/g, 'x').slice(0, 36)}`;
      const expiresAt = Date.now() + 3600_000;
      tokens.set(token, { installationId: installation.id, repositories: names, permissions: body?.permissions, expiresAt });
      tokenLog.push({ token, installationId: installation.id, repositories: body?.repositories, permissions: body?.permissions });
      return answer(operation, 201, {
        token,
        expires_at: new Date(expiresAt).toISOString().replace(/\.\d{3}Z$/, 'Z'),
        permissions: body?.permissions ?? { contents: 'read', metadata: 'read', pull_requests: 'read', statuses: 'write', checks: 'write' },
        repository_selection: names ? 'selected' : 'all',
      });
    }

    // Installation routes: the repository must be one the token reads.
    if (auth.kind !== 'installation') return error(operation, 401, 'Requires authentication');
    const fullName = `${params.owner}/${params.repo}`.toLowerCase();
    const repository = [...repositories.values()].find((r) => r.fullName.toLowerCase() === fullName);
    const covered = installations.get(auth.token.installationId)?.repositories.has(fullName) && (!auth.token.repositories || auth.token.repositories.has(fullName));
    if (!repository || !covered) return error(operation, 404, 'Not Found');
    const git = (...args: string[]) => execFileSync('git', ['--git-dir', repository.gitDir, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    const tryGit = (...args: string[]) => {
      try {
        return git(...args);
      } catch {
        return undefined;
      }
    };
    switch (operation) {
      case 'repos/get':
        return answer(operation, 200, fullRepositoryBody(repository, base, apiUrl));
      case 'repos/get-branch': {
        const sha = tryGit('rev-parse', '--verify', '--quiet', `refs/heads/${params.branch}^{commit}`)?.trim();
        if (!sha) return error(operation, 404, 'Branch not found');
        return answer(operation, 200, branchBody(repository, params.branch, commitOf(git, sha), apiUrl, base));
      }
      case 'git/get-ref': {
        const ref = `refs/${params.ref}`;
        const sha = tryGit('rev-parse', '--verify', '--quiet', ref)?.trim();
        if (!sha) return error(operation, 404, 'Not Found');
        const type = git('cat-file', '-t', sha).trim();
        return answer(operation, 200, { ref, node_id: nodeId('Ref', ref), url: `${apiUrl}/repos/${repository.fullName}/git/${ref}`, object: { type, sha, url: `${apiUrl}/repos/${repository.fullName}/git/${type}s/${sha}` } });
      }
      case 'git/get-tag': {
        if (tryGit('cat-file', '-t', params.tag_sha)?.trim() !== 'tag') return error(operation, 404, 'Not Found');
        const raw = git('cat-file', 'tag', params.tag_sha);
        const header = raw.slice(0, raw.indexOf('\n\n'));
        const field = (name: string) => new RegExp(`^${name} (.*)$`, 'm').exec(header)?.[1] ?? '';
        const tagger = /^(.*) <(.*)> (\d+) [+-]\d{4}$/.exec(field('tagger'));
        return answer(operation, 200, {
          node_id: nodeId('Tag', params.tag_sha),
          tag: field('tag'),
          sha: params.tag_sha,
          url: `${apiUrl}/repos/${repository.fullName}/git/tags/${params.tag_sha}`,
          message: raw.slice(raw.indexOf('\n\n') + 2),
          tagger: { name: tagger?.[1] ?? '', email: tagger?.[2] ?? '', date: new Date(Number(tagger?.[3] ?? 0) * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z') },
          object: { type: field('type'), sha: field('object'), url: `${apiUrl}/repos/${repository.fullName}/git/${field('type')}s/${field('object')}` },
          verification: { verified: false, reason: 'unsigned', signature: null, payload: null, verified_at: null },
        });
      }
      case 'git/get-commit': {
        if (tryGit('cat-file', '-t', params.commit_sha)?.trim() !== 'commit') return error(operation, 404, 'Not Found');
        return answer(operation, 200, gitCommitBody(repository, commitOf(git, params.commit_sha), apiUrl, base));
      }
      case 'repos/create-commit-status': {
        const body = (await readJson(req)) as { state?: string; target_url?: string | null; description?: string | null; context?: string } | undefined;
        received.push({ operation, body: body ?? {} });
        if (auth.token.permissions && auth.token.permissions.statuses !== 'write') return error(operation, 403, 'Resource not accessible by integration');
        if (statusFailures.times > 0) {
          statusFailures.times--;
          if (statusFailures.status === 502) return error(operation, 502, 'Server Error');
          return error(operation, 422, 'Validation Failed');
        }
        if (tryGit('cat-file', '-t', params.sha)?.trim() !== 'commit') return error(operation, 422, `No commit found for SHA: ${params.sha}`);
        if (!body || !['error', 'failure', 'pending', 'success'].includes(body.state ?? '')) return error(operation, 422, 'Validation Failed');
        if ((body.description ?? '').length > 140) return error(operation, 422, 'Validation Failed');
        const context = body.context ?? 'default';
        statuses.push({ repository: repository.fullName, sha: params.sha, state: body.state!, context, description: body.description ?? null, target_url: body.target_url ?? null });
        const id = nextStatusId++;
        const now = new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');
        return answer(operation, 201, {
          url: `${apiUrl}/repos/${repository.fullName}/statuses/${params.sha}`,
          avatar_url: `${base}/avatars/app/${appId}`,
          id,
          node_id: nodeId('StatusContext', id),
          state: body.state,
          description: body.description ?? null,
          target_url: body.target_url ?? null,
          context,
          created_at: now,
          updated_at: now,
          creator: githubSimpleUser({ login: 'gyre-ci[bot]', id: 41_000_000 + appId, type: 'Bot' }, apiUrl, base),
        });
      }
      case 'repos/get-content': {
        const ref = url.searchParams.get('ref') ?? repository.defaultBranch;
        const content = tryGit('show', `${ref}:${params.path}`);
        if (content === undefined) return error(operation, 404, 'Not Found');
        const accept = String(req.headers.accept ?? '');
        if (/application\/vnd\.github(\.v3)?\.raw/.test(accept)) {
          record(operation, 200);
          res.writeHead(200, { 'content-type': 'application/vnd.github.raw; charset=utf-8' });
          res.end(content);
          return;
        }
        const blob = git('rev-parse', `${ref}:${params.path}`).trim();
        const self = `${apiUrl}/repos/${repository.fullName}/contents/${params.path}?ref=${encodeURIComponent(ref)}`;
        return answer(operation, 200, {
          type: 'file',
          encoding: 'base64',
          size: Buffer.byteLength(content),
          name: params.path.split('/').pop(),
          path: params.path,
          content: Buffer.from(content).toString('base64'),
          sha: blob,
          url: self,
          git_url: `${apiUrl}/repos/${repository.fullName}/git/blobs/${blob}`,
          html_url: `${base}/${repository.fullName}/blob/${ref}/${params.path}`,
          download_url: `${base}/${repository.fullName}/raw/${ref}/${params.path}`,
          _links: { self, git: `${apiUrl}/repos/${repository.fullName}/git/blobs/${blob}`, html: `${base}/${repository.fullName}/blob/${ref}/${params.path}` },
        });
      }
    }
    return error(operation, 404, 'Not Found');
  }

  /** The operation a request is, and its path parameters (decoded; a `{path}` or `{ref}` keeps its slashes). */
  function matchRoute(method: string, path: string): { operation: string; params: Record<string, string> } | undefined {
    for (const [operation, op] of Object.entries(STAND_IN_OPERATIONS)) {
      if (op.method !== method.toLowerCase()) continue;
      const names: string[] = [];
      const pattern = op.path.replace(/\{(\w+)\}/g, (_, name: string) => {
        names.push(name);
        return name === 'path' || name === 'ref' || name === 'branch' ? '(.+)' : '([^/]+)';
      });
      const m = new RegExp(`^${pattern}$`).exec(path);
      if (!m) continue;
      return { operation, params: Object.fromEntries(names.map((n, i) => [n, decodeURIComponent(m[i + 1])])) };
    }
    return undefined;
  }

  const installationOf = (fullName: string) => [...installations.values()].find((i) => i.repositories.has(fullName.toLowerCase()));

  function installationBody(i: Installation) {
    return {
      id: i.id,
      account: githubSimpleUser(i.account, apiUrl, base),
      repository_selection: 'selected',
      access_tokens_url: `${apiUrl}/app/installations/${i.id}/access_tokens`,
      repositories_url: `${apiUrl}/installation/repositories`,
      html_url: `${base}/organizations/${i.account.login}/settings/installations/${i.id}`,
      app_id: appId,
      target_id: i.account.id,
      target_type: i.account.type,
      permissions: { contents: 'read', metadata: 'read', pull_requests: 'read', statuses: 'write', checks: 'write' },
      events: ['push', 'pull_request', 'create', 'installation', 'installation_repositories'],
      created_at: '2026-01-05T10:00:00Z',
      updated_at: '2026-01-05T10:00:00Z',
      single_file_name: null,
      has_multiple_single_files: false,
      single_file_paths: [],
      app_slug: 'gyre-ci',
      suspended_by: null,
      suspended_at: null,
      contact_email: null,
    };
  }

  // --- git's smart HTTP -------------------------------------------------------------------------

  async function gitHttp(req: IncomingMessage, res: ServerResponse, url: URL, fullName: string, rest: string): Promise<void> {
    const repository = [...repositories.values()].find((r) => r.fullName.toLowerCase() === fullName.toLowerCase());
    const service = url.searchParams.get('service') ?? rest.replace(/^\//, '');
    const refuse = (status: number, message: string) => {
      gitRequests.push({ repository: fullName, service, status });
      res.writeHead(status, { 'content-type': 'text/plain', ...(status === 401 ? { 'www-authenticate': 'Basic realm="GitHub"' } : {}) });
      res.end(message);
    };
    if (!repository) return refuse(404, 'Repository not found.');
    // Read only: pushes are never served.
    if (service.includes('receive-pack')) return refuse(403, 'Write access to repository not granted.');
    if (repository.private) {
      const header = req.headers.authorization ?? '';
      const basic = /^basic (.+)$/i.exec(header);
      const password = basic ? Buffer.from(basic[1], 'base64').toString('utf8').split(':').slice(1).join(':') : '';
      const token = tokens.get(password);
      const ok = token && token.expiresAt > Date.now() && installations.get(token.installationId)?.repositories.has(repository.fullName.toLowerCase()) && (!token.repositories || token.repositories.has(repository.fullName.toLowerCase()));
      if (!ok) return refuse(401, 'Invalid username or token. Password authentication is not supported for Git operations.');
    }
    gitRequests.push({ repository: fullName, service, status: 200 });
    const child = spawn(HTTP_BACKEND, [], {
      env: {
        PATH: process.env.PATH,
        GIT_PROJECT_ROOT: gitRoot,
        GIT_HTTP_EXPORT_ALL: '1',
        PATH_INFO: `/${repository.fullName}.git${rest}`,
        QUERY_STRING: url.search.slice(1),
        REQUEST_METHOD: req.method ?? 'GET',
        CONTENT_TYPE: req.headers['content-type'] ?? '',
        ...(req.headers['content-length'] ? { CONTENT_LENGTH: req.headers['content-length'] } : {}),
        ...(req.headers['content-encoding'] ? { HTTP_CONTENT_ENCODING: req.headers['content-encoding'] } : {}),
        ...(req.headers['git-protocol'] ? { GIT_PROTOCOL: String(req.headers['git-protocol']) } : {}),
        REMOTE_ADDR: '127.0.0.1',
      },
      stdio: ['pipe', 'pipe', 'ignore'],
    });
    req.pipe(child.stdin);
    const chunks: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => chunks.push(c));
    await new Promise<void>((resolve) => child.on('close', () => resolve()));
    const out = Buffer.concat(chunks);
    const split = out.indexOf('\r\n\r\n') >= 0 ? out.indexOf('\r\n\r\n') : out.indexOf('\n\n');
    const sep = out.indexOf('\r\n\r\n') >= 0 ? 4 : 2;
    const headerText = out.subarray(0, split).toString('latin1');
    const headers: Record<string, string> = {};
    let status = 200;
    for (const line of headerText.split(/\r?\n/)) {
      const at = line.indexOf(':');
      if (at < 0) continue;
      const name = line.slice(0, at).trim();
      const value = line.slice(at + 1).trim();
      if (name.toLowerCase() === 'status') status = Number(value.split(' ')[0]);
      else headers[name] = value;
    }
    res.writeHead(status, headers);
    res.end(out.subarray(split + sep));
  }

  // --- repositories and installations -----------------------------------------------------------

  const gitEnv = { ...process.env, GIT_AUTHOR_NAME: 'Octo Cat', GIT_AUTHOR_EMAIL: 'octocat@example.com', GIT_COMMITTER_NAME: 'Octo Cat', GIT_COMMITTER_EMAIL: 'octocat@example.com', GIT_TERMINAL_PROMPT: '0' };

  function createRepository(fullName: string, options: { private?: boolean; files?: Record<string, string>; defaultBranch?: string; forkOf?: StandInRepository } = {}): StandInRepository {
    const [owner, name] = fullName.split('/');
    const gitDir = join(gitRoot, owner, `${name}.git`);
    const work = join(workRoot, owner, name);
    const defaultBranch = options.defaultBranch ?? 'main';
    mkdirSync(dirname(gitDir), { recursive: true });
    const inWork = (...args: string[]) => execFileSync('git', args, { cwd: work, env: gitEnv, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
    if (options.forkOf) {
      execFileSync('git', ['clone', '--quiet', '--bare', options.forkOf.gitDir, gitDir], { env: gitEnv, stdio: 'pipe' });
      execFileSync('git', ['clone', '--quiet', gitDir, work], { env: gitEnv, stdio: 'pipe' });
    } else {
      execFileSync('git', ['init', '--quiet', '--bare', `--initial-branch=${defaultBranch}`, gitDir], { env: gitEnv, stdio: 'pipe' });
      mkdirSync(work, { recursive: true });
      inWork('init', '--quiet', `--initial-branch=${defaultBranch}`);
      inWork('remote', 'add', 'origin', gitDir);
    }
    const repository: StandInRepository = {
      id: nextRepoId++,
      fullName,
      owner,
      name,
      private: options.private ?? false,
      defaultBranch,
      gitDir,
      cloneUrl: `${base}/${fullName}.git`,
      commit(branch, files, message = `change ${branch}`) {
        const exists = Boolean(inWork('ls-remote', '--heads', 'origin', branch));
        if (exists) {
          inWork('fetch', '--quiet', 'origin', `+refs/heads/${branch}:refs/remotes/origin/${branch}`);
          inWork('checkout', '--quiet', '-B', branch, `origin/${branch}`);
        } else if (inWork('ls-remote', '--heads', 'origin', defaultBranch)) {
          inWork('fetch', '--quiet', 'origin', `+refs/heads/${defaultBranch}:refs/remotes/origin/${defaultBranch}`);
          inWork('checkout', '--quiet', '-B', branch, `origin/${defaultBranch}`);
        } else inWork('checkout', '--quiet', '-B', branch);
        for (const [path, content] of Object.entries(files)) {
          mkdirSync(dirname(join(work, path)), { recursive: true });
          writeFileSync(join(work, path), content);
        }
        inWork('add', '-A');
        inWork('commit', '--quiet', '--allow-empty', '-m', message);
        inWork('push', '--quiet', '--force', 'origin', `HEAD:refs/heads/${branch}`);
        return inWork('rev-parse', 'HEAD');
      },
      tag(tagName, sha, annotated = false) {
        const args = annotated ? ['tag', '-f', '-a', '-m', `release ${tagName}`, tagName, sha] : ['tag', '-f', tagName, sha];
        execFileSync('git', ['--git-dir', gitDir, ...args], { env: gitEnv, stdio: 'pipe' });
      },
      rev: (ref) => execFileSync('git', ['--git-dir', gitDir, 'rev-parse', ref], { encoding: 'utf8' }).trim(),
      pullRequestRef(number, from, branch) {
        execFileSync('git', ['--git-dir', gitDir, 'fetch', '--quiet', from.gitDir, `+refs/heads/${branch}:refs/pull/${number}/head`], { env: gitEnv, stdio: 'pipe' });
      },
    };
    repositories.set(fullName.toLowerCase(), repository);
    if (!options.forkOf) repository.commit(defaultBranch, options.files ?? { 'README.md': `# ${name}\n` }, 'first commit');
    return repository;
  }

  return {
    url: base,
    apiUrl,
    appId,
    privateKeyFile,
    webhookSecret,
    env: {
      GYRE_GITHUB_APP_ID: String(appId),
      GYRE_GITHUB_APP_PRIVATE_KEY_FILE: privateKeyFile,
      GYRE_GITHUB_WEBHOOK_SECRET: webhookSecret,
      GYRE_GITHUB_URL: base,
      GYRE_GITHUB_API_URL: apiUrl,
    },
    createRepository,
    repository(fullName) {
      const r = repositories.get(fullName.toLowerCase());
      if (!r) throw new Error(`no repository ${fullName}`);
      return r;
    },
    install(account, repos) {
      const id = nextInstallationId++;
      installations.set(id, { id, account: { login: account.login, id: account.id ?? 9000 + id, type: account.type ?? 'Organization' }, repositories: new Set(repos.map((r) => r.fullName.toLowerCase())) });
      return id;
    },
    uninstall: (id) => void installations.delete(id),
    requests,
    sent,
    received,
    tokens: tokenLog,
    statuses,
    failStatuses(status, times) {
      statusFailures = { status, times };
    },
    gitRequests,
    payloads: createWebhookPayloads(base, apiUrl),
    operations: STAND_IN_OPERATIONS,
    async deliver(to, event, payload, options = {}) {
      const body = options.body ?? JSON.stringify(payload);
      const deliveryId = options.deliveryId ?? randomUUIDish();
      const secret = options.secret === undefined ? webhookSecret : options.secret;
      const headers: Record<string, string> = {
        'content-type': 'application/json',
        'user-agent': 'GitHub-Hookshot/standin',
        'x-github-event': event,
        'x-github-delivery': deliveryId,
        'x-github-hook-id': '1',
        'x-github-hook-installation-target-type': 'integration',
        'x-github-hook-installation-target-id': String(appId),
      };
      if (secret !== null) headers['x-hub-signature-256'] = `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
      // A connection of its own per delivery, as GitHub makes: a kept-alive one the server is just
      // closing (after a stall of a loaded machine) would reset the delivery.
      const res = await postOnce(`${to.replace(/\/+$/, '')}/webhooks/github`, headers, body);
      const text = res.text;
      let parsed: unknown;
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = text;
      }
      return { status: res.status, body: parsed, deliveryId };
    },
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      rmSync(root, { recursive: true, force: true });
    },
  };
}

/** One POST on a new connection (no keep-alive). */
function postOnce(url: string, headers: Record<string, string>, body: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = (url.startsWith('https:') ? httpsRequest : httpRequest)(url, { method: 'POST', headers: { ...headers, 'content-length': String(Buffer.byteLength(body)) }, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

function randomUUIDish(): string {
  const h = randomBytes(16).toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  const text = Buffer.concat(chunks).toString('utf8');
  return text ? JSON.parse(text) : undefined;
}

/** A JWT signed by the app: RS256 with its key, `iss` its id, issued and expiring as GitHub allows (at most 10 minutes). */
function checkJwt(token: string, key: KeyObject, appId: number): boolean {
  const [h, p, s] = token.split('.');
  try {
    const header = JSON.parse(Buffer.from(h, 'base64url').toString('utf8')) as { alg?: string };
    const payload = JSON.parse(Buffer.from(p, 'base64url').toString('utf8')) as { iss?: unknown; iat?: number; exp?: number };
    if (header.alg !== 'RS256') return false;
    if (!verifySignature('RSA-SHA256', Buffer.from(`${h}.${p}`), key, Buffer.from(s, 'base64url'))) return false;
    const now = Math.floor(Date.now() / 1000);
    if (String(payload.iss) !== String(appId)) return false;
    if (typeof payload.iat !== 'number' || typeof payload.exp !== 'number' || payload.iat > now + 60 || payload.exp < now || payload.exp - payload.iat > 660) return false;
    return true;
  } catch {
    return false;
  }
}

const nodeId = (kind: string, id: string | number) => Buffer.from(`0:${kind}${id}`).toString('base64');


/** GitHub's own example of an answer, from its description, to fill in. */
function example(name: string): Record<string, any> {
  return structuredClone((githubDescription().components.examples as Record<string, { value: Record<string, any> }>)[name].value);
}

/** Every `…url` of an example that names the example's repository, moved onto this one. */
function rehome(value: unknown, from: string[], to: string[]): any {
  if (typeof value === 'string') {
    let s = value;
    for (let i = 0; i < from.length; i++) s = s.split(from[i]).join(to[i]);
    return s;
  }
  if (Array.isArray(value)) return value.map((v) => rehome(v, from, to));
  if (value && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, rehome(v, from, to)]));
  return value;
}

function fullRepositoryBody(r: StandInRepository, base: string, apiUrl: string) {
  const body = rehome(example('full-repository-default-response'), ['https://api.github.com', 'https://github.com', 'git:github.com', 'git@github.com:', 'octocat/Hello-World'], [apiUrl, base, `git:${new URL(base).host}`, `git@${new URL(base).hostname}:`, r.fullName]);
  const owner = githubSimpleUser({ login: r.owner, id: 9001, type: 'Organization' }, apiUrl, base);
  Object.assign(body, {
    id: r.id,
    node_id: nodeId('Repository', r.id),
    name: r.name,
    full_name: r.fullName,
    owner,
    organization: owner,
    private: r.private,
    visibility: r.private ? 'private' : 'public',
    default_branch: r.defaultBranch,
    clone_url: r.cloneUrl,
    fork: false,
    // Where GitHub's example lags its schema: a language is required (null for none), and the
    // template is a repository of another shape.
    language: null,
    template_repository: null,
  });
  delete body.parent;
  delete body.source;
  return body;
}

interface CommitFacts {
  sha: string;
  tree: string;
  parents: string[];
  author: { name: string; email: string; date: string };
  committer: { name: string; email: string; date: string };
  message: string;
}

function commitOf(git: (...args: string[]) => string, sha: string): CommitFacts {
  const raw = git('cat-file', 'commit', sha);
  const header = raw.slice(0, raw.indexOf('\n\n'));
  const person = (name: string) => {
    const m = new RegExp(`^${name} (.*) <(.*)> (\\d+) [+-]\\d{4}$`, 'm').exec(header);
    return { name: m?.[1] ?? '', email: m?.[2] ?? '', date: new Date(Number(m?.[3] ?? 0) * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z') };
  };
  return {
    sha: git('rev-parse', sha).trim(),
    tree: /^tree (\w+)$/m.exec(header)?.[1] ?? '',
    parents: [...header.matchAll(/^parent (\w+)$/gm)].map((m) => m[1]),
    author: person('author'),
    committer: person('committer'),
    message: raw.slice(raw.indexOf('\n\n') + 2).replace(/\n$/, ''),
  };
}

function gitCommitBody(r: StandInRepository, c: CommitFacts, apiUrl: string, base: string) {
  return {
    sha: c.sha,
    node_id: nodeId('Commit', c.sha),
    url: `${apiUrl}/repos/${r.fullName}/git/commits/${c.sha}`,
    html_url: `${base}/${r.fullName}/commit/${c.sha}`,
    author: c.author,
    committer: c.committer,
    message: c.message,
    tree: { sha: c.tree, url: `${apiUrl}/repos/${r.fullName}/git/trees/${c.tree}` },
    parents: c.parents.map((p) => ({ sha: p, url: `${apiUrl}/repos/${r.fullName}/git/commits/${p}`, html_url: `${base}/${r.fullName}/commit/${p}` })),
    verification: { verified: false, reason: 'unsigned', signature: null, payload: null, verified_at: null },
  };
}

function branchBody(r: StandInRepository, branch: string, c: CommitFacts, apiUrl: string, base: string) {
  const commitUrl = `${apiUrl}/repos/${r.fullName}/commits/${c.sha}`;
  return {
    name: branch,
    commit: {
      url: commitUrl,
      sha: c.sha,
      node_id: nodeId('Commit', c.sha),
      html_url: `${base}/${r.fullName}/commit/${c.sha}`,
      comments_url: `${commitUrl}/comments`,
      commit: {
        url: `${apiUrl}/repos/${r.fullName}/git/commits/${c.sha}`,
        author: c.author,
        committer: c.committer,
        message: c.message,
        comment_count: 0,
        tree: { sha: c.tree, url: `${apiUrl}/repos/${r.fullName}/git/trees/${c.tree}` },
        verification: { verified: false, reason: 'unsigned', signature: null, payload: null, verified_at: null },
      },
      author: null,
      committer: null,
      parents: c.parents.map((p) => ({ sha: p, url: `${apiUrl}/repos/${r.fullName}/commits/${p}`, html_url: `${base}/${r.fullName}/commit/${p}` })),
    },
    _links: { html: `${base}/${r.fullName}/tree/${branch}`, self: `${apiUrl}/repos/${r.fullName}/branches/${branch}` },
    protected: false,
    protection: { enabled: false, required_status_checks: { enforcement_level: 'off', contexts: [], checks: [] } },
    protection_url: `${apiUrl}/repos/${r.fullName}/branches/${branch}/protection`,
  };
}

// --- webhook payloads ----------------------------------------------------------------------------

export interface Sender {
  readonly login: string;
  readonly id: number;
}

export interface WebhookPayloads {
  push(r: StandInRepository, options: { ref: string; after: string; before?: string; message?: string; sender: Sender; deleted?: boolean; headCommit?: string; installationId: number }): unknown;
  pullRequest(
    base: StandInRepository,
    options: { action: 'opened' | 'synchronize' | 'reopened' | 'closed'; number: number; head: StandInRepository; headRef: string; headSha: string; baseSha: string; sender: Sender; installationId: number },
  ): unknown;
  createTag(r: StandInRepository, options: { tag: string; sender: Sender; installationId: number }): unknown;
  installationCreated(installationId: number, account: Sender, repositories: readonly StandInRepository[], sender: Sender): unknown;
  repositoriesAdded(installationId: number, account: Sender, repositories: readonly StandInRepository[], sender: Sender): unknown;
  ping(): unknown;
  /** Errors of a payload against GitHub's schema for that event and action; empty when it conforms. */
  check(definition: string, payload: unknown): string[];
}

function createWebhookPayloads(base: string, apiUrl: string): WebhookPayloads {
  const examples = JSON.parse(readFileSync(require.resolve('@octokit/webhooks-examples/api.github.com/index.json'), 'utf8')) as { name: string; examples: Record<string, any>[] }[];
  const exampleOf = (name: string, pick: (e: Record<string, any>) => boolean) => {
    const found = examples.find((e) => e.name === name)?.examples.find(pick);
    if (!found) throw new Error(`@octokit/webhooks-examples has no ${name} example of that kind`);
    return structuredClone(found);
  };
  const schema = JSON.parse(readFileSync(require.resolve('@octokit/webhooks-schemas/schema.json'), 'utf8')) as { definitions: Record<string, unknown> };
  const ajv = new Ajv({ allErrors: true, strict: false });
  addFormats(ajv);
  ajv.addSchema({ $id: 'webhooks', definitions: schema.definitions });
  const validators = new Map<string, ValidateFunction>();
  const check = (definition: string, payload: unknown) => {
    let validate = validators.get(definition);
    if (!validate) {
      validate = ajv.compile({ $ref: `webhooks#/definitions/${definition}` });
      validators.set(definition, validate);
    }
    return validate(payload) ? [] : (validate.errors ?? []).map((e) => `${e.instancePath || '/'} ${e.message}`);
  };
  const checked = (definition: string, payload: Record<string, any>) => {
    const errors = check(definition, payload);
    if (errors.length) throw new Error(`the stand-in's ${definition} payload does not match GitHub's schema: ${errors.slice(0, 5).join('; ')}`);
    return payload;
  };
  const user = (s: Sender) => ({ ...githubSimpleUser({ login: s.login, id: s.id, type: 'User' }, apiUrl, base) });
  /** An example's repository, moved onto this one (ids, names, addresses). */
  const repo = (template: Record<string, any>, r: StandInRepository) => {
    const moved = rehome(template, ['https://api.github.com', 'https://github.com', 'git://github.com/', 'git@github.com:', 'Codertocat/Hello-World', 'Codertocat'], [apiUrl, base, `git://${new URL(base).host}/`, `git@${new URL(base).hostname}:`, r.fullName, r.owner]);
    return {
      ...moved,
      id: r.id,
      node_id: nodeId('Repository', r.id),
      name: r.name,
      full_name: r.fullName,
      private: r.private,
      ...('visibility' in moved ? { visibility: r.private ? 'private' : 'public' } : {}),
      default_branch: r.defaultBranch,
      ...('master_branch' in moved ? { master_branch: r.defaultBranch } : {}),
      clone_url: r.cloneUrl,
      owner: { ...moved.owner, login: r.owner, ...('name' in moved.owner ? { name: r.owner } : {}) },
    };
  };
  const installation = (id: number) => ({ id, node_id: nodeId('Installation', id) });

  return {
    check,
    push(r, o) {
      const p = exampleOf('push', (e) => e.ref === 'refs/heads/master' && Boolean(e.installation));
      const branch = o.ref.replace(/^refs\/(heads|tags)\//, '');
      const headId = o.headCommit ?? o.after;
      const commit = {
        ...p.head_commit,
        id: headId,
        tree_id: '0'.repeat(40),
        message: o.message ?? 'change',
        url: `${base}/${r.fullName}/commit/${headId}`,
        author: { name: 'Octo Cat', email: 'octocat@example.com', username: o.sender.login },
        committer: { name: 'Octo Cat', email: 'octocat@example.com', username: o.sender.login },
      };
      return checked('push$event', {
        ...p,
        ref: o.ref,
        before: o.before ?? '0'.repeat(40),
        after: o.deleted ? '0'.repeat(40) : o.after,
        created: !o.deleted && !o.before,
        deleted: o.deleted === true,
        forced: false,
        base_ref: null,
        compare: `${base}/${r.fullName}/compare/${branch}`,
        commits: o.deleted ? [] : [commit],
        head_commit: o.deleted ? null : commit,
        repository: repo(p.repository, r),
        pusher: { name: o.sender.login, email: `${o.sender.login}@example.com` },
        sender: user(o.sender),
        installation: installation(o.installationId),
      });
    },
    pullRequest(b, o) {
      const p = exampleOf('pull_request', (e) => e.action === o.action && Boolean(e.installation)) ?? exampleOf('pull_request', (e) => e.action === 'opened');
      const pr = p.pull_request;
      const prUrl = `${apiUrl}/repos/${b.fullName}/pulls/${o.number}`;
      const side = (template: Record<string, any>, r: StandInRepository, ref: string, sha: string) => ({ ...template, label: `${r.owner}:${ref}`, ref, sha, user: user({ login: r.owner, id: 9001 }), repo: repo(template.repo, r) });
      return checked(`pull_request$${o.action}`, {
        ...p,
        action: o.action,
        number: o.number,
        pull_request: {
          ...rehome(pr, [`${'https://api.github.com'}/repos/Codertocat/Hello-World/pulls/2`, 'https://github.com/Codertocat/Hello-World/pull/2'], [prUrl, `${base}/${b.fullName}/pull/${o.number}`]),
          number: o.number,
          id: 5_000_000 + o.number,
          node_id: nodeId('PullRequest', o.number),
          html_url: `${base}/${b.fullName}/pull/${o.number}`,
          url: prUrl,
          state: o.action === 'closed' ? 'closed' : 'open',
          user: user(o.sender),
          updated_at: new Date().toISOString().replace(/\.\d{3}Z$/, 'Z'),
          head: side(pr.head, o.head, o.headRef, o.headSha),
          base: side(pr.base, b, b.defaultBranch, o.baseSha),
        },
        repository: repo(p.repository, b),
        sender: user(o.sender),
        installation: installation(o.installationId),
      });
    },
    createTag(r, o) {
      const p = exampleOf('create', (e) => e.ref_type === 'tag' && Boolean(e.installation));
      return checked('create$event', { ...p, ref: o.tag, ref_type: 'tag', master_branch: r.defaultBranch, repository: repo(p.repository, r), sender: user(o.sender), installation: installation(o.installationId) });
    },
    installationCreated(id, account, repositories, sender) {
      const p = exampleOf('installation', (e) => e.action === 'created');
      return checked('installation$created', {
        ...p,
        installation: { ...p.installation, id, app_id: p.installation.app_id, account: user(account), target_id: account.id, target_type: 'Organization', html_url: `${base}/organizations/${account.login}/settings/installations/${id}`, access_tokens_url: `${apiUrl}/app/installations/${id}/access_tokens`, repositories_url: `${apiUrl}/installation/repositories` },
        repositories: repositories.map((r) => ({ id: r.id, node_id: nodeId('Repository', r.id), name: r.name, full_name: r.fullName, private: r.private })),
        sender: user(sender),
      });
    },
    repositoriesAdded(id, account, repositories, sender) {
      const p = exampleOf('installation_repositories', (e) => e.action === 'added');
      return checked('installation_repositories$added', {
        ...p,
        // Fields GitHub's example predates and its schema requires.
        requester: null,
        installation: { ...p.installation, id, account: user(account), target_id: account.id, target_type: 'Organization', suspended_at: null, suspended_by: null },
        repositories_added: repositories.map((r) => ({ id: r.id, node_id: nodeId('Repository', r.id), name: r.name, full_name: r.fullName, private: r.private })),
        repositories_removed: [],
        sender: user(sender),
      });
    },
    ping() {
      // GitHub's examples of ping predate some of its schema's required fields: the first that conforms.
      return checked('ping$event', exampleOf('ping', (e) => check('ping$event', e).length === 0));
    },
  };
}
