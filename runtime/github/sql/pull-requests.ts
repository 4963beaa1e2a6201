import type { Queryable } from '../../store/store';

/** Pull requests as their latest `pull_request` event described them (560_github.sql). */
export interface PullRequestRow {
  readonly repositoryId: number;
  readonly number: number;
  readonly state: string;
  readonly headRef: string;
  readonly headSha: string;
  /** `owner/repo` of the head; null when the fork was deleted. */
  readonly headRepoFullName: string | null;
  readonly baseRef: string;
  readonly baseSha: string;
  readonly htmlUrl: string;
  readonly authorLogin: string | null;
  readonly githubUpdatedAt?: string;
}

/** Records a pull request; an event older than what is recorded (deliveries arrive in any order) changes nothing. */
export async function upsertPullRequest(db: Queryable, pr: PullRequestRow): Promise<void> {
  await db.query(
    `INSERT INTO github_pull_requests (repository_id, number, state, head_ref, head_sha, head_repo_full_name, base_ref, base_sha, html_url, author_login, github_updated_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
     ON CONFLICT (repository_id, number) DO UPDATE SET state = EXCLUDED.state, head_ref = EXCLUDED.head_ref, head_sha = EXCLUDED.head_sha,
       head_repo_full_name = EXCLUDED.head_repo_full_name, base_ref = EXCLUDED.base_ref, base_sha = EXCLUDED.base_sha, html_url = EXCLUDED.html_url,
       author_login = EXCLUDED.author_login, github_updated_at = EXCLUDED.github_updated_at, updated_at = now()
     WHERE github_pull_requests.github_updated_at IS NULL OR EXCLUDED.github_updated_at IS NULL OR github_pull_requests.github_updated_at <= EXCLUDED.github_updated_at`,
    [pr.repositoryId, pr.number, pr.state, pr.headRef, pr.headSha, pr.headRepoFullName, pr.baseRef, pr.baseSha, pr.htmlUrl, pr.authorLogin, pr.githubUpdatedAt ?? null],
  );
}

/** The open pull requests whose head is this branch of this repository (not a fork's branch of the same name), lowest number first. */
export async function openPullRequestsOfBranch(db: Queryable, repositoryId: number, fullName: string, branch: string): Promise<PullRequestRow[]> {
  const rows = await db.query<Record<string, unknown>>(
    `SELECT * FROM github_pull_requests WHERE repository_id = $1 AND head_ref = $2 AND state = 'open' AND lower(head_repo_full_name) = lower($3) ORDER BY number`,
    [repositoryId, branch, fullName],
  );
  return rows.map((r) => ({
    repositoryId: Number(r.repository_id),
    number: Number(r.number),
    state: r.state as string,
    headRef: r.head_ref as string,
    headSha: r.head_sha as string,
    headRepoFullName: (r.head_repo_full_name as string | null) ?? null,
    baseRef: r.base_ref as string,
    baseSha: r.base_sha as string,
    htmlUrl: r.html_url as string,
    authorLogin: (r.author_login as string | null) ?? null,
  }));
}
