import { request } from '@octokit/request';
import { appendAudit, SYSTEM_ACTOR } from '../audit/audit-log';
import { ConfigurationError } from '../domain/errors';
import type { ProjectRole } from '../domain/permissions';
import type { Queryable, Store } from '../store/store';
import type { RoleSource } from './role-sources';
import { checkGitHubUrl, describeGitHubError, GITHUB_API_VERSION, GITHUB_LOGIN } from './sign-in/github';
import * as sql from './sql/github-roles';

/**
 * Project roles from GitHub repository permissions, as CircleCI Server keeps them: for every
 * project named like a repository (`gh/<owner>/<repo>`) and every user who signed in with GitHub,
 * Gyre asks GitHub the user's permission on the repository
 * (`GET /repos/{owner}/{repo}/collaborators/{username}/permission`) and keeps a project role to
 * match: admin → admin, maintain or write → write, triage or read → read, none (or no such
 * repository or user) → no role. A custom repository role counts as its base permission.
 *
 * These memberships have `source` `github`: a refresh changes and removes only those. A role set
 * in Gyre (source `gyre`, or another provider's) is never touched, even where GitHub says more or
 * less. Each change is written with its audit record (`project.member.sync`, by `gyre`) in one
 * transaction. Where GitHub fails to answer for a project and user, that role stays as it was and
 * the refresh rejects, naming the failures, once it has done the rest; where GitHub cannot be
 * reached at all (or refuses the token), it stops at once.
 *
 * Gyre asks as itself, with `token`: a GitHub App installation token or a machine user's
 * token that can read the repositories' collaborators. Users' own OAuth tokens are never kept.
 */
export interface GitHubRoleSourceDeps {
  readonly store: Store;
  /** GitHub's REST API: `https://api.github.com`, or `https://ghe.example.com/api/v3` (GYRE_GITHUB_API_URL). */
  readonly apiUrl: string;
  /** The server-side token Gyre asks GitHub with, an installation or machine user's (GYRE_GITHUB_TOKEN). */
  readonly token: string;
  /** How long one question to GitHub may take, in ms (1 to 120000). @default 10000 */
  readonly timeoutMs?: number;
  /** How often the identity role refreshes every user's roles, in ms (at least 1000). */
  readonly intervalMs: number;
}

export interface GitHubRoleSource extends RoleSource {
  /**
   * Refreshes one user's GitHub-kept roles on every project: run right after they sign in with
   * GitHub, so a permission given or taken away there counts from this sign-in on.
   */
  refreshUser(userId: string): Promise<void>;
}

/** The `source` of the memberships this keeps, and the sign-in provider whose accounts it reads. */
export const GITHUB_SOURCE = 'github';

/** The audit action of each change. */
export const SYNC_ACTION = 'project.member.sync';

const ROLE_OF = new Map<string, ProjectRole | null>([
  ['admin', 'admin'],
  ['maintain', 'write'],
  ['write', 'write'],
  ['triage', 'read'],
  ['read', 'read'],
  ['none', null],
]);
const RANK: Record<ProjectRole, number> = { read: 1, write: 2, admin: 3 };
const REPO = /^[A-Za-z0-9._-]{1,100}$/;

/**
 * The project role GitHub's permission answer gives the account `subject` (GitHub's numeric user
 * id); undefined for none. `role_name` decides when it is one of GitHub's five roles, else (a custom
 * role) `permission`, the base permission. An answer about another account than `subject` (the
 * login now names someone else) gives nothing, and so does anything GitHub does not document.
 */
export function projectRoleOf(answer: unknown, subject: string): ProjectRole | undefined {
  if (!answer || typeof answer !== 'object') return undefined;
  const { role_name: roleName, permission, user } = answer as { role_name?: unknown; permission?: unknown; user?: { id?: unknown } | null };
  if (!user || typeof user.id !== 'number' || String(user.id) !== subject) return undefined;
  if (typeof roleName === 'string' && ROLE_OF.has(roleName)) return ROLE_OF.get(roleName) ?? undefined;
  return typeof permission === 'string' ? ROLE_OF.get(permission) ?? undefined : undefined;
}

/** The repository a project is about: `gh/<owner>/<repo>`, each part a name GitHub could have. */
export function repositoryOf(slug: string): { owner: string; repo: string } | undefined {
  const parts = slug.split('/');
  if (parts.length !== 3 || parts[0] !== 'gh') return undefined;
  const [, owner, repo] = parts;
  if (!GITHUB_LOGIN.test(owner) || !REPO.test(repo) || repo === '.' || repo === '..') return undefined;
  return { owner, repo };
}

/** GitHub failed for the whole run (unreachable, or refused Gyre's token): no point asking on. */
class GitHubUnavailable extends Error {}

export function createGitHubRoleSource(deps: GitHubRoleSourceDeps): GitHubRoleSource {
  const { store, intervalMs } = deps;
  const apiUrl = checkGitHubUrl('GYRE_GITHUB_API_URL', deps.apiUrl);
  if (!deps.token?.trim()) throw new ConfigurationError('GYRE_GITHUB_TOKEN', 'must be a GitHub App installation token or a machine user token that can read repository collaborators');
  const timeoutMs = deps.timeoutMs ?? 10_000;
  if (!Number.isInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > 120_000) throw new ConfigurationError('GitHub role timeoutMs', `${timeoutMs} must be a whole number of milliseconds from 1 to 120000`);
  if (!Number.isInteger(intervalMs) || intervalMs < 1000) throw new ConfigurationError('GitHub role intervalMs', `${intervalMs} must be a whole number of milliseconds, at least 1000`);
  const api = request.defaults({
    baseUrl: apiUrl,
    headers: { authorization: `token ${deps.token.trim()}`, 'user-agent': 'Gyre', 'x-github-api-version': GITHUB_API_VERSION },
  });

  /** The account's role on the repository; throws when GitHub did not answer yes or no. */
  const askGitHub = async (owner: string, repo: string, account: sql.LinkedAccount): Promise<ProjectRole | undefined> => {
    if (!GITHUB_LOGIN.test(account.login)) return undefined;
    try {
      const { data } = await api('GET /repos/{owner}/{repo}/collaborators/{username}/permission', { owner, repo, username: account.login, request: { signal: AbortSignal.timeout(timeoutMs) } });
      return projectRoleOf(data, account.subject);
    } catch (error) {
      const e = error as { status?: number; response?: { headers?: Record<string, string> } };
      if (e.response && e.status === 404) return undefined; // no such repository or user: no role
      const why = describeGitHubError(error, timeoutMs);
      if (!e.response || e.status === 401 || (e.status === 403 && e.response.headers?.['x-ratelimit-remaining'] === '0')) throw new GitHubUnavailable(why);
      throw new Error(why);
    }
  };

  const record = (tx: Queryable, project: sql.ProjectRow, userLogin: string, detail: Record<string, unknown>) =>
    appendAudit(tx, { actor: SYSTEM_ACTOR, action: SYNC_ACTION, target: { type: 'user', id: userLogin }, org: project.org, project: project.slug, result: 'success', detail: { source: GITHUB_SOURCE, ...detail } });

  /** Brings one membership in line with `wanted`, in one transaction with its audit record. */
  const apply = async (project: sql.ProjectRow, user: { id: string; login: string; github: string }, wanted: ProjectRole | undefined) => {
    await store.transaction(async (tx) => {
      const current = await sql.lockMembership(tx, project.id, user.id);
      if (current && current.source !== GITHUB_SOURCE) return; // set in Gyre: stays
      if (wanted) {
        if (current?.role === wanted) return;
        if (!(await sql.keepSourcedRole(tx, project.id, user.id, wanted, GITHUB_SOURCE))) return;
        await record(tx, project, user.login, { role: wanted, ...(current ? { was: current.role } : {}), github_login: user.github });
      } else if (current) {
        const was = await sql.dropSourcedRole(tx, project.id, user.id, GITHUB_SOURCE);
        if (was) await record(tx, project, user.login, { role: null, was, github_login: user.github });
      }
    });
  };

  const sync = async (userId?: string) => {
    const projects = (await sql.githubProjects(store)).flatMap((p) => {
      const repository = repositoryOf(p.slug);
      return repository ? [{ ...p, ...repository }] : [];
    });
    const accounts = await sql.linkedAccounts(store, GITHUB_SOURCE, userId);
    const users = new Map<string, sql.LinkedAccount[]>();
    for (const a of accounts) users.set(a.user_id, [...(users.get(a.user_id) ?? []), a]);
    const held = new Map((await sql.membershipsOf(store, [...users.keys()])).map((m) => [`${m.project_id} ${m.user_id}`, m]));

    const failures: string[] = [];
    let asked = 0;
    for (const project of projects) {
      for (const [id, linked] of users) {
        const current = held.get(`${project.id} ${id}`);
        if (current && current.source !== GITHUB_SOURCE) continue; // set in Gyre: GitHub is not asked
        let wanted: ProjectRole | undefined;
        let asking = linked[0];
        try {
          // A user linked to several GitHub accounts gets the highest role any of them has.
          for (const account of linked) {
            asking = account;
            asked += 1;
            const role = await askGitHub(project.owner, project.repo, account);
            if (role && (!wanted || RANK[role] > RANK[wanted])) wanted = role;
          }
        } catch (error) {
          const what = `${project.slug} for ${asking.login}: ${(error as Error).message}`;
          if (error instanceof GitHubUnavailable) {
            throw new Error(`GitHub role refresh stopped at ${what}; roles not yet refreshed were left as they were${failures.length ? ` (also failed: ${failures.length})` : ''}`);
          }
          failures.push(what);
          continue;
        }
        if (wanted !== current?.role) await apply(project, { id, login: linked[0].user_login, github: linked.map((a) => a.login).join(',') }, wanted);
      }
    }
    // Users no longer linked to GitHub keep no role GitHub gave them.
    for (const orphan of await sql.unlinkedSourcedRoles(store, GITHUB_SOURCE, GITHUB_SOURCE, userId)) {
      const project = { id: orphan.project_id, slug: orphan.slug, org: orphan.org };
      await store.transaction(async (tx) => {
        const was = await sql.dropSourcedRole(tx, project.id, orphan.user_id, GITHUB_SOURCE);
        if (was) await record(tx, project, orphan.user_login, { role: null, was, reason: 'no GitHub account linked' });
      });
    }
    if (failures.length > 0) {
      throw new Error(`GitHub role refresh: ${failures.length} of ${asked} permission checks failed, those roles were left as they were: ${failures.slice(0, 3).join('; ')}${failures.length > 3 ? '; …' : ''}`);
    }
  };

  // One refresh of everyone at a time: the interval may come round while a slow one still runs.
  let running: Promise<void> | undefined;
  return {
    name: GITHUB_SOURCE,
    intervalMs,
    refresh() {
      running ??= sync().finally(() => (running = undefined));
      return running;
    },
    async refreshUser(userId) {
      if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(userId)) return;
      await sync(userId);
    },
  };
}
