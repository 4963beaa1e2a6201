import { InputError } from '../domain/errors';
import type { Queryable } from '../store/store';

/**
 * Caches across trust levels. A job runs on a protected ref when its pipeline's branch is the
 * project's default branch or matches one of the project's protected branch patterns; tags and
 * every other branch are unprotected. With the `protected` rule (the default) a job on a protected
 * ref restores only caches saved by jobs on protected refs, so a feature branch cannot plant files
 * into the default branch's jobs through a cache; `shared` lets every job restore every cache of
 * its project, as before. docs/security.md says it for people.
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

/** The ref a job runs on and whether it is protected, from its pipeline and project. */
export async function jobRefTrust(db: Queryable, jobId: string): Promise<{ readonly ref: string; readonly protected: boolean; readonly defaultBranch: string }> {
  const [row] = await db.query<{ branch: string | null; tag: string | null; default_branch: string; protected_branches: string[] }>(
    `SELECT p.branch, p.tag, pr.default_branch, pr.protected_branches
       FROM jobs j JOIN workflows w ON w.id = j.workflow_id JOIN pipelines p ON p.id = w.pipeline_id JOIN projects pr ON pr.id = j.project_id
      WHERE j.id = $1`,
    [jobId],
  );
  if (!row) throw new InputError(`job ${jobId} is not known`, 'job');
  const ref = row.branch ? `branch ${row.branch}` : row.tag ? `tag ${row.tag}` : 'no branch';
  return { ref, protected: isProtectedBranch(row.branch, row.default_branch, row.protected_branches ?? []), defaultBranch: row.default_branch };
}
