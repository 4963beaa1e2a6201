import type { Octokit } from '@octokit/rest';
import { UnavailableError } from '../domain/errors';
import type { Logger } from '../logger';
import type { Store } from '../store/store';
import type { GitHubAppSettings } from './settings';
import { installationOfRepository, upsertInstallation, upsertRepositories } from './sql/installations';

export type { Octokit } from '@octokit/rest';

/** A repository on the GitHub Gyre talks to, by its owner's login and its name. */
export interface RepositoryName {
  readonly owner: string;
  readonly repo: string;
}

/** A short-lived installation token and when it stops working. */
export interface InstallationToken {
  readonly token: string;
  readonly expiresAt: Date;
}

/**
 * The GitHub App Gyre acts as. Everything that talks to GitHub for a repository goes through here:
 * the forge (configs, refs), the checkout (tokens), `gyre project add` (finding a repository), and
 * commit statuses (`octokitFor`: an Octokit authenticated as the installation that covers the
 * repository, its tokens minted and renewed by @octokit/auth-app).
 *
 * @octokit/rest and @octokit/auth-app are loaded on the first call, so a Gyre without a GitHub App
 * never loads them.
 */
export interface GitHubApp {
  /** GYRE_GITHUB_URL: where people and git reach GitHub (no trailing slash). */
  readonly webUrl: string;
  /** GYRE_GITHUB_API_URL. */
  readonly apiUrl: string;
  /** The repository a clone URL names on this GitHub (`<web>/<owner>/<repo>[.git]`), else undefined. */
  repositoryOf(repoUrl: string): RepositoryName | undefined;
  /** The clone URL Gyre keeps for a repository: `<web>/<owner>/<repo>.git`. */
  cloneUrlOf(repo: RepositoryName): string;
  /**
   * The installation that covers a repository: what installation webhooks recorded, else GitHub
   * asked (and the answer recorded). Undefined when the app is not installed there (or suspended).
   */
  installationOf(repo: RepositoryName): Promise<number | undefined>;
  /**
   * An Octokit authenticated as the installation that covers the repository (tokens are minted and
   * renewed as needed); undefined when the app is not installed there. For commit statuses and
   * checks: `octokit.rest.repos.createCommitStatus({ owner, repo, sha, state, … })`.
   */
  octokitFor(repo: RepositoryName): Promise<Octokit | undefined>;
  /**
   * A token that reads this one repository's contents (git over HTTPS as `x-access-token`), valid
   * for up to an hour; undefined when the app is not installed there. Never stored by Gyre.
   */
  checkoutToken(repo: RepositoryName): Promise<InstallationToken | undefined>;
  /** The repository's description as the installation sees it; undefined when not installed there. */
  repository(repo: RepositoryName): Promise<{ id: number; fullName: string; cloneUrl: string; defaultBranch: string; private: boolean } | undefined>;
}

/** The statuses' hook: a project's repository and its installation's Octokit, when the project is on the app's GitHub. */
export async function octokitForProject(app: GitHubApp, project: { readonly repoUrl: string }): Promise<{ repo: RepositoryName; octokit: Octokit } | undefined> {
  const repo = app.repositoryOf(project.repoUrl);
  if (!repo) return undefined;
  const octokit = await app.octokitFor(repo);
  return octokit ? { repo, octokit } : undefined;
}

/**
 * Where jobs' checkout tokens come from (runtime/secrets/task-secrets.ts): a token for a repository
 * on the app's GitHub that the app is installed on; none for any other repository.
 */
export function gitTokenOf(app: GitHubApp): (repoUrl: string) => Promise<string | undefined> {
  return async (repoUrl) => {
    const repo = app.repositoryOf(repoUrl);
    return repo ? (await app.checkoutToken(repo))?.token : undefined;
  };
}

const NAME = /^[A-Za-z0-9_.-]{1,100}$/;
/** How long "not installed there" is believed (installation webhooks say sooner when it changes). */
const NOT_INSTALLED_TTL_MS = 60_000;

/** GitHub's 404 (and 403 on some Enterprise versions for an app not installed): "not there". */
function isNotFound(error: unknown): boolean {
  const status = (error as { status?: number }).status;
  return status === 404;
}

export interface GitHubAppDeps {
  readonly store: Store;
  readonly log: Logger;
}

type Modules = { Octokit: typeof import('@octokit/rest').Octokit; createAppAuth: typeof import('@octokit/auth-app').createAppAuth };

export function createGitHubApp(settings: GitHubAppSettings, deps: GitHubAppDeps): GitHubApp {
  const { store, log } = deps;
  const web = new URL(settings.webUrl);
  const webPath = web.pathname.replace(/\/+$/, '');
  let modules: Promise<Modules> | undefined;
  const load = () =>
    (modules ??= Promise.all([import('@octokit/rest'), import('@octokit/auth-app')]).then(([rest, auth]) => ({ Octokit: rest.Octokit, createAppAuth: auth.createAppAuth })));

  const octokitLog = {
    debug: () => undefined,
    info: () => undefined,
    warn: (message: string) => log.warn('GitHub client', { message: String(message).slice(0, 300) }),
    error: (message: string) => log.error('GitHub client', { message: String(message).slice(0, 300) }),
  };

  /** An Octokit as the app itself (JWT), or as one installation; every call bounded by the timeout. */
  const make = async (installationId?: number): Promise<Octokit> => {
    const { Octokit, createAppAuth } = await load();
    const octokit = new Octokit({
      baseUrl: settings.apiUrl,
      userAgent: 'Gyre',
      authStrategy: createAppAuth,
      auth: { appId: settings.appId, privateKey: settings.privateKey, ...(installationId ? { installationId } : {}) },
      log: octokitLog,
    });
    octokit.hook.wrap('request', (request, options) => {
      const own = options.request ?? {};
      return request({ ...options, headers: { 'x-github-api-version': '2022-11-28', ...options.headers }, request: { ...own, signal: own.signal ?? AbortSignal.timeout(settings.timeoutMs) } });
    });
    return octokit;
  };

  let asApp: Promise<Octokit> | undefined;
  /** Repositories GitHub said the app is not installed on, until when to believe it. */
  const notInstalled = new Map<string, number>();
  // One client per installation: their tokens are cached inside (a handful of installations per Gyre).
  const installations = new Map<number, Promise<Octokit>>();
  const asInstallation = (id: number) => {
    let octokit = installations.get(id);
    if (!octokit) {
      octokit = make(id);
      octokit.catch(() => installations.delete(id));
      installations.set(id, octokit);
    }
    return octokit;
  };

  const unavailable = (what: string, error: unknown) => {
    const e = error as { status?: number; message?: string };
    return new UnavailableError(`GitHub did not answer ${what}: ${e.status ? `HTTP ${e.status}` : String(e.message ?? error).slice(0, 200)}`, 30);
  };

  /** A repository as one installation sees it; undefined when GitHub says it is not there. */
  const describe = async (installationId: number, { owner, repo }: RepositoryName) => {
    let data: { id: number; full_name: string; default_branch: string; private: boolean };
    try {
      data = (await (await asInstallation(installationId)).rest.repos.get({ owner, repo })).data;
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw unavailable(`about ${owner}/${repo}`, error);
    }
    const [o, r] = data.full_name.split('/');
    return { id: data.id, fullName: data.full_name, cloneUrl: app.cloneUrlOf({ owner: o, repo: r }), defaultBranch: data.default_branch, private: data.private };
  };

  const app: GitHubApp = {
    webUrl: settings.webUrl,
    apiUrl: settings.apiUrl,

    repositoryOf(repoUrl) {
      let url: URL;
      try {
        url = new URL(repoUrl);
      } catch {
        return undefined;
      }
      if (url.origin !== web.origin || url.username || url.password || url.search || url.hash) return undefined;
      if (webPath && !url.pathname.startsWith(`${webPath}/`)) return undefined;
      const parts = url.pathname.slice(webPath.length).replace(/\/+$/, '').replace(/\.git$/, '').split('/').filter(Boolean);
      if (parts.length !== 2 || !parts.every((p) => NAME.test(p))) return undefined;
      return { owner: parts[0], repo: parts[1] };
    },

    cloneUrlOf: ({ owner, repo }) => `${settings.webUrl}/${owner}/${repo}.git`,

    async installationOf({ owner, repo }) {
      const known = await installationOfRepository(store, `${owner}/${repo}`);
      if (known) return known.installationId;
      // A repository the app is not on is asked about again only after a while (a public
      // repository's tasks would otherwise ask GitHub once each).
      const key = `${owner}/${repo}`.toLowerCase();
      if ((notInstalled.get(key) ?? 0) > Date.now()) return undefined;
      notInstalled.delete(key);
      asApp ??= make();
      let installation: { id: number; account: { login?: string; name?: string | null } | null; target_type?: string; suspended_at?: string | null };
      try {
        installation = (await (await asApp).rest.apps.getRepoInstallation({ owner, repo })).data as typeof installation;
      } catch (error) {
        if (isNotFound(error)) {
          if (notInstalled.size > 10_000) notInstalled.clear();
          notInstalled.set(key, Date.now() + NOT_INSTALLED_TTL_MS);
          return undefined;
        }
        throw unavailable(`which installation covers ${owner}/${repo}`, error);
      }
      if (installation.suspended_at) return undefined;
      const accountLogin = (installation.account && ('login' in installation.account ? installation.account.login : installation.account.name)) || owner;
      await upsertInstallation(store, { id: installation.id, accountLogin, accountType: installation.target_type });
      // The repository's id and name as the installation sees them, so the next look-up is local.
      const described = await describe(installation.id, { owner, repo }).catch(() => undefined);
      if (described) await upsertRepositories(store, installation.id, [{ id: described.id, fullName: described.fullName, private: described.private }]);
      return installation.id;
    },

    async octokitFor(repo) {
      const id = await app.installationOf(repo);
      return id === undefined ? undefined : asInstallation(id);
    },

    async checkoutToken(repo) {
      const id = await app.installationOf(repo);
      if (id === undefined) return undefined;
      const octokit = await asInstallation(id);
      try {
        // Only this repository, only to read it: what a job's checkout needs and nothing more.
        const auth = (await octokit.auth({ type: 'installation', installationId: id, repositoryNames: [repo.repo], permissions: { contents: 'read' } })) as { token: string; expiresAt: string };
        return { token: auth.token, expiresAt: new Date(auth.expiresAt) };
      } catch (error) {
        if (isNotFound(error)) return undefined;
        throw unavailable(`a token for ${repo.owner}/${repo.repo}`, error);
      }
    },

    async repository(repo) {
      const id = await app.installationOf(repo);
      return id === undefined ? undefined : describe(id, repo);
    },
  };
  return app;
}
