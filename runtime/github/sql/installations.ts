import type { Queryable } from '../../store/store';

/** Where the app is installed, and the repositories each installation covers (560_github.sql). */

export interface RepositoryRow {
  readonly id: number;
  readonly fullName: string;
  readonly private?: boolean;
}

export async function upsertInstallation(tx: Queryable, installation: { id: number; accountLogin: string; accountType?: string; suspended?: boolean }): Promise<void> {
  await tx.query(
    `INSERT INTO github_installations (id, account_login, account_type, suspended_at) VALUES ($1, $2, $3, CASE WHEN $4 THEN now() END)
     ON CONFLICT (id) DO UPDATE SET account_login = EXCLUDED.account_login, account_type = COALESCE(EXCLUDED.account_type, github_installations.account_type),
       suspended_at = CASE WHEN $4 THEN COALESCE(github_installations.suspended_at, now()) END, updated_at = now()`,
    [installation.id, installation.accountLogin, installation.accountType ?? null, installation.suspended === true],
  );
}

export async function setInstallationSuspended(tx: Queryable, id: number, suspended: boolean): Promise<void> {
  await tx.query(`UPDATE github_installations SET suspended_at = CASE WHEN $2 THEN COALESCE(suspended_at, now()) END, updated_at = now() WHERE id = $1`, [id, suspended]);
}

/** Forgets an installation and (by cascade) its repositories. */
export async function deleteInstallation(tx: Queryable, id: number): Promise<void> {
  await tx.query('DELETE FROM github_installations WHERE id = $1', [id]);
}

/**
 * Records repositories as covered by an installation. A repository renamed, or moved to another
 * installation (transferred), takes its new name and installation: GitHub's id stays.
 */
export async function upsertRepositories(tx: Queryable, installationId: number, repositories: readonly RepositoryRow[]): Promise<void> {
  for (const repo of repositories) {
    // A name is unique: another id holding it is a repository deleted and made again under that name.
    await tx.query('DELETE FROM github_repositories WHERE lower(full_name) = lower($1) AND id <> $2', [repo.fullName, repo.id]);
    await tx.query(
      `INSERT INTO github_repositories (id, installation_id, full_name, private) VALUES ($1, $2, $3, $4)
       ON CONFLICT (id) DO UPDATE SET installation_id = EXCLUDED.installation_id, full_name = EXCLUDED.full_name,
         private = COALESCE(EXCLUDED.private, github_repositories.private), updated_at = now()`,
      [repo.id, installationId, repo.fullName, repo.private ?? null],
    );
  }
}

export async function removeRepositories(tx: Queryable, installationId: number, ids: readonly number[]): Promise<void> {
  if (ids.length === 0) return;
  await tx.query('DELETE FROM github_repositories WHERE installation_id = $1 AND id = ANY($2::bigint[])', [installationId, ids]);
}

/** The installation that covers `owner/repo`, as webhooks last said; undefined when none (or it is suspended). */
export async function installationOfRepository(db: Queryable, fullName: string): Promise<{ installationId: number; repositoryId: number; private: boolean | null } | undefined> {
  const [row] = await db.query<{ installation_id: string; id: string; private: boolean | null }>(
    `SELECT r.installation_id, r.id, r.private FROM github_repositories r JOIN github_installations i ON i.id = r.installation_id
      WHERE lower(r.full_name) = lower($1) AND i.suspended_at IS NULL`,
    [fullName],
  );
  return row ? { installationId: Number(row.installation_id), repositoryId: Number(row.id), private: row.private } : undefined;
}
