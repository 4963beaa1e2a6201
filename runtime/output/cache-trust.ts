import { InputError } from '../domain/errors';
import type { Queryable } from '../store/store';

/**
 * Caches across trust levels. A job runs on a protected ref when its pipeline's branch is the
 * project's default branch or matches one of the project's protected branch patterns; tags and
 * every other branch are unprotected. With the `protected` rule (the default) a job on a protected
 * ref restores only caches saved by jobs on protected refs, so a feature branch cannot plant files
 * into the default branch's jobs through a cache; `shared` lets every job restore every cache of
 * its project, as before.
 *
 * Forks are apart whatever the rule and the project's settings: a job of a pipeline of a forked
 * pull request (`pipelines.from_fork`) is never on a protected ref (even where a pattern such as
 * `pull/**` would match its branch), and what it saves goes in `fork_caches` under its pull
 * request (the branch `pull/<n>`), restored only by jobs of that pull request's pipelines. It
 * restores its own pull request's caches, and the project's others only when the project passes
 * secrets to forks (`forks_receive_secret_env_vars`: such a fork's author may read what the
 * project's jobs can, as CircleCI shares caches with forks then). docs/security.md says it for people.
 */
export type CacheTrust = 'protected' | 'shared';

export const CACHE_TRUST_VALUES: readonly CacheTrust[] = ['protected', 'shared'];

/** The most patterns a project may protect, and the longest one. */
const MAX_PATTERNS = 100;
const MAX_PATTERN_LENGTH = 255;

/**
 * A protected branch pattern as a regular expression: `*` matches within one path segment (no
 * `/`), `**` across segments, anything else itself (`release/*` protects `release/1.2`, not
 * `release/1.2/hotfix`; `release/**` protects both).
 */
export function branchPatternToRegExp(pattern: string): RegExp {
  let re = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === '*' && pattern[i + 1] === '*') {
      re += '.*';
      i++;
    } else if (c === '*') re += '[^/]*';
    else re += c.replace(/[.+?^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

/** Checks a project's protected branch patterns; the error names the pattern and what is allowed. */
export function checkBranchPatterns(patterns: readonly unknown[]): string[] {
  if (patterns.length > MAX_PATTERNS) throw new InputError(`at most ${MAX_PATTERNS} protected branch patterns are allowed (got ${patterns.length})`, 'protected_branches');
  const out: string[] = [];
  for (const pattern of patterns) {
    if (typeof pattern !== 'string' || pattern.trim() === '' || pattern.length > MAX_PATTERN_LENGTH || /[\s\0~^:?[\\]/.test(pattern) || pattern.startsWith('/') || pattern.endsWith('/')) {
      throw new InputError(
        `protected branch pattern ${JSON.stringify(pattern)} is not allowed: give a branch name of up to ${MAX_PATTERN_LENGTH} characters, with '*' for any part of one segment and '**' for any number of segments (no spaces, '~', '^', ':', '?', '[', '\\', or leading or trailing '/')`,
        'protected_branches',
      );
    }
    if (!out.includes(pattern)) out.push(pattern);
  }
  return out;
}

/** Whether `branch` is protected in a project with this default branch and these patterns. */
export function isProtectedBranch(branch: string | null | undefined, defaultBranch: string, patterns: readonly string[]): boolean {
  if (!branch) return false;
  return branch === defaultBranch || patterns.some((p) => branchPatternToRegExp(p).test(branch));
}

/** Where a job's caches come from and go to. */
export interface JobCacheTrust {
  /** `branch main`, `tag v1`, for messages. */
  readonly ref: string;
  /** The job runs on a protected ref: what it saves counts as saved on one. Never for a fork's. */
  readonly protected: boolean;
  readonly defaultBranch: string;
  /** The fork's pull request (`pull/<n>`) whose caches the job saves and restores; null unless its pipeline is a fork's. */
  readonly forkScope: string | null;
  /** The job may restore the project's caches that no fork saved (every job but a fork's, unless the project passes secrets to forks). */
  readonly readsProjectCaches: boolean;
}

/** The ref a job runs on, whether it is protected, and whether it is a fork's, from its pipeline and project. */
export async function jobRefTrust(db: Queryable, jobId: string): Promise<JobCacheTrust> {
  const [row] = await db.query<{ pipeline_id: string; branch: string | null; tag: string | null; from_fork: boolean; default_branch: string; protected_branches: string[]; forks_receive_secret_env_vars: boolean }>(
    `SELECT p.id AS pipeline_id, p.branch, p.tag, p.from_fork, pr.default_branch, pr.protected_branches, pr.forks_receive_secret_env_vars
       FROM jobs j JOIN workflows w ON w.id = j.workflow_id JOIN pipelines p ON p.id = w.pipeline_id JOIN projects pr ON pr.id = j.project_id
      WHERE j.id = $1`,
    [jobId],
  );
  if (!row) throw new InputError(`job ${jobId} is not known`, 'job');
  const ref = row.branch ? `branch ${row.branch}` : row.tag ? `tag ${row.tag}` : 'no branch';
  if (row.from_fork) {
    // A fork's pipeline builds as `pull/<n>`; one without a branch (none is made) keeps to itself.
    return { ref, protected: false, defaultBranch: row.default_branch, forkScope: row.branch ?? `pipeline ${row.pipeline_id}`, readsProjectCaches: row.forks_receive_secret_env_vars === true };
  }
  return { ref, protected: isProtectedBranch(row.branch, row.default_branch, row.protected_branches ?? []), defaultBranch: row.default_branch, forkScope: null, readsProjectCaches: true };
}

/**
 * The SQL condition under which a cache row (alias `c`, with `protected` and `scope`, null unless
 * a fork saved it) may be restored by a job, its parameters numbered from `$first`: the job's
 * `protectedOnly`, `readsProjectCaches` and `forkScope`, in that order (`cacheVisibilityParams`).
 */
export function cacheVisibleSql(first: number): string {
  const [protectedOnly, readsProject, scope] = [first, first + 1, first + 2].map((n) => `$${n}`);
  return `(CASE WHEN c.scope IS NULL THEN (c.protected OR NOT ${protectedOnly}::boolean) AND ${readsProject}::boolean ELSE c.scope = ${scope}::text END)`;
}

/** The parameters `cacheVisibleSql` names, in its order. */
export function cacheVisibilityParams(trust: JobCacheTrust & { readonly protectedOnly: boolean }): [boolean, boolean, string | null] {
  return [trust.protectedOnly, trust.readsProjectCaches, trust.forkScope];
}
