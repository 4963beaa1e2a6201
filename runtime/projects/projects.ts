import { randomUUID } from 'node:crypto';
import { ConflictError, InputError, NotFoundError } from '../domain/errors';
import type { Audit } from '../audit/audit-log';
import type { Principal } from '../domain/principal';
import type { Forge } from '../forge/forge';
import { visibilityOf } from '../identity/identity';
import { ensureOrg, visibleProjectCondition, visibleProjectParams } from '../identity/sql/members';
import { checkBranchPatterns } from '../output/cache-trust';
import type { Store } from '../store/store';

export interface Project {
  readonly id: string;
  readonly slug: string;
  readonly org: string;
  /** The id of the organisation `org` (API v2's `organization_id`). */
  readonly organizationId: string;
  readonly name: string;
  readonly repoUrl: string;
  readonly defaultBranch: string;
  /**
   * Branch patterns protected besides the default branch (`release/*`; `*` within a segment, `**`
   * across): jobs on protected branches restore only caches saved on protected branches.
   */
  readonly protectedBranches: readonly string[];
  /**
   * Whether pipelines of pull requests from forks get the project's variables and the contexts
   * their jobs name (CircleCI's `forks_receive_secret_env_vars`). Off, they get neither, and a job
   * naming a context ends `unauthorized`.
   */
  readonly forksReceiveSecretEnvVars: boolean;
  /**
   * Whether a new pipeline on a branch other than the default one cancels the unfinished workflows
   * of the older pipelines on that branch (CircleCI's `autocancel_builds`; off by default).
   */
  readonly autocancelBuilds: boolean;
  /** Whether pull requests from forks start pipelines (CircleCI's `build_fork_prs`; off by default). */
  readonly buildForkPrs: boolean;
  /**
   * Whether pushes start pipelines only on branches with an open pull request; the default branch
   * always builds (CircleCI's `build_prs_only`; off by default).
   */
  readonly buildPrsOnly: boolean;
  /** Whether workflows report their status on the commit (CircleCI's `set_github_status`; on by default). */
  readonly setGithubStatus: boolean;
  readonly createdAt: Date;
}

/**
 * The project settings Gyre has (`PATCH /project/{slug}/settings`, `advanced`, where each has
 * CircleCI's snake_case name, as its column does). A setting left out stays as it is.
 */
export interface ProjectSettingsChange {
  readonly forksReceiveSecretEnvVars?: boolean;
  readonly autocancelBuilds?: boolean;
  readonly buildForkPrs?: boolean;
  readonly buildPrsOnly?: boolean;
  readonly setGithubStatus?: boolean;
}

export interface Projects {
  /**
   * Registers a project backed by a git repository; its slug is `gh/<org>/<name>`. The
   * organisation is made with its first project. Without `repoUrl`, the forge finds the repository
   * `<org>/<name>` by name (a GitHub App installed on it), or the project is refused.
   */
  add(input: { org: string; name: string; repoUrl?: string }, audit?: Audit): Promise<Project>;
  get(slug: string): Promise<Project>;
  /** Projects by slug; with `visibleTo`, only those that principal can see (runtime/domain/permissions.ts). */
  list(options?: { after?: string; limit?: number; visibleTo?: Principal }): Promise<Project[]>;
  /**
   * Sets the branch patterns a project protects besides its default branch (replacing the ones it
   * had; an empty list leaves only the default branch). Checked by `checkBranchPatterns`: a bad
   * pattern is an InputError naming it. Returns the project as stored.
   */
  setProtectedBranches(slug: string, patterns: readonly unknown[], audit?: Audit): Promise<Project>;
  /** Changes the settings given (the others stay as they are). Returns the project as stored. */
  updateSettings(slug: string, change: ProjectSettingsChange, audit?: Audit): Promise<Project>;
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;

/** The id of project `pr`'s organisation, as a column (organisations are made with their first project). */
const ORGANIZATION_ID = '(SELECT o.id FROM organizations o WHERE o.name = pr.org) AS organization_id';
/**
 * The columns a Project is made of (fromRow), named rather than `pr.*`: a statement whose columns
 * come from `*` is never kept prepared (runtime/store/statement-names.ts), and this one runs for
 * every trigger.
 */
const PROJECT_COLUMNS = `pr.id, pr.slug, pr.org, pr.name, pr.repo_url, pr.default_branch, pr.protected_branches, pr.forks_receive_secret_env_vars,
  pr.autocancel_builds, pr.build_fork_prs, pr.build_prs_only, pr.set_github_status, pr.created_at, ${ORGANIZATION_ID}`;

/** Accepts `gh/org/repo`, `github/org/repo` and `org/repo`, and gives the canonical `gh/org/repo`. */
export function normaliseSlug(slug: string): string {
  const parts = slug.split('/');
  if (parts.length === 2) return `gh/${parts[0]}/${parts[1]}`;
  if (parts.length === 3 && (parts[0] === 'gh' || parts[0] === 'github')) return `gh/${parts[1]}/${parts[2]}`;
  throw new InputError(`project slug '${slug}' must look like gh/<org>/<repo>`, 'project-slug');
}

export interface ProjectsOptions {
  readonly store: Store;
  readonly forge: Forge;
  /**
   * Told of each project once it is stored (its transaction committed), without being waited for:
   * the composition root makes the organisation's OIDC signing key here, ahead of its first job.
   */
  readonly onAdded?: (project: Project) => void;
}

export function createProjects({ store, forge, onAdded }: ProjectsOptions): Projects {
  const fromRow = (r: Record<string, unknown>): Project => ({
    id: r.id as string,
    slug: r.slug as string,
    org: r.org as string,
    organizationId: r.organization_id as string,
    name: r.name as string,
    repoUrl: r.repo_url as string,
    defaultBranch: r.default_branch as string,
    protectedBranches: (r.protected_branches as string[] | null) ?? [],
    forksReceiveSecretEnvVars: r.forks_receive_secret_env_vars === true,
    autocancelBuilds: r.autocancel_builds === true,
    buildForkPrs: r.build_fork_prs === true,
    buildPrsOnly: r.build_prs_only === true,
    setGithubStatus: r.set_github_status !== false,
    createdAt: new Date(r.created_at as string),
  });
  return {
    async add({ org, name, repoUrl: given }, audit) {
      if (!NAME.test(org)) throw new InputError(`organization '${org}' may use letters, digits, '.', '_' and '-' (up to 100)`, 'org');
      if (!NAME.test(name)) throw new InputError(`repository name '${name}' may use letters, digits, '.', '_' and '-' (up to 100)`, 'repo');
      const repoUrl = given || (await forge.locate?.(org, name));
      // The API's words for a missing field, since it is the body's repo_url that is missing.
      if (!repoUrl) throw new InputError(`body.repo_url is required (a git repository's path or URL)${forge.locate ? `: the GitHub App is not installed on ${org}/${name}` : ''}`, 'repo_url');
      const slug = `gh/${org}/${name}`;
      const existing = await store.query('SELECT 1 FROM projects WHERE slug = $1', [slug]);
      if (existing.length > 0) throw new ConflictError(`project ${slug} already exists`);
      const defaultBranch = await forge.defaultBranch(repoUrl);
      const project = await store.transaction(async (tx) => {
        const made = await ensureOrg(tx, org);
        const [row] = await tx.query(
          `INSERT INTO projects (id, slug, org, name, repo_url, default_branch) VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (slug) DO NOTHING RETURNING id, slug, org, name, repo_url, default_branch, protected_branches, forks_receive_secret_env_vars,
             autocancel_builds, build_fork_prs, build_prs_only, set_github_status, created_at, $7::uuid AS organization_id`,
          [randomUUID(), slug, org, name, repoUrl, defaultBranch, made.org.id],
        );
        if (!row) throw new ConflictError(`project ${slug} already exists`);
        await audit?.record(tx, { target: { type: 'project', id: slug }, org, project: slug, detail: { repo_url: repoUrl, ...(made.created ? { organization_created: true } : {}) } });
        return fromRow(row);
      });
      onAdded?.(project);
      return project;
    },
    async get(slug) {
      const canonical = normaliseSlug(slug);
      const [row] = await store.query(`SELECT ${PROJECT_COLUMNS} FROM projects pr WHERE pr.slug = $1`, [canonical]);
      if (!row) throw new NotFoundError('project', canonical);
      return fromRow(row);
    },
    async setProtectedBranches(slug, patterns, audit) {
      const canonical = normaliseSlug(slug);
      const checked = checkBranchPatterns(patterns);
      return store.transaction(async (tx) => {
        const [row] = await tx.query(`UPDATE projects pr SET protected_branches = $2 WHERE slug = $1 RETURNING ${PROJECT_COLUMNS}`, [canonical, checked]);
        if (!row) throw new NotFoundError('project', canonical);
        await audit?.record(tx, { target: { type: 'project', id: canonical }, detail: { patterns: checked } });
        return fromRow(row);
      });
    },
    async updateSettings(slug, change, audit) {
      const canonical = normaliseSlug(slug);
      return store.transaction(async (tx) => {
        const values = {
          forks_receive_secret_env_vars: change.forksReceiveSecretEnvVars,
          autocancel_builds: change.autocancelBuilds,
          build_fork_prs: change.buildForkPrs,
          build_prs_only: change.buildPrsOnly,
          set_github_status: change.setGithubStatus,
        };
        const [row] = await tx.query(
          `UPDATE projects pr SET forks_receive_secret_env_vars = COALESCE($2, forks_receive_secret_env_vars),
                  autocancel_builds = COALESCE($3, autocancel_builds), build_fork_prs = COALESCE($4, build_fork_prs),
                  build_prs_only = COALESCE($5, build_prs_only), set_github_status = COALESCE($6, set_github_status)
            WHERE slug = $1 RETURNING ${PROJECT_COLUMNS}`,
          [
            canonical,
            values.forks_receive_secret_env_vars ?? null,
            values.autocancel_builds ?? null,
            values.build_fork_prs ?? null,
            values.build_prs_only ?? null,
            values.set_github_status ?? null,
          ],
        );
        if (!row) throw new NotFoundError('project', canonical);
        // The record names the settings the change gave, with their new values.
        const detail = Object.fromEntries(Object.entries(values).filter(([, v]) => v !== undefined));
        await audit?.record(tx, { target: { type: 'project', id: canonical }, detail });
        return fromRow(row);
      });
    },
    async list({ after, limit = 50, visibleTo } = {}) {
      const who = visibleProjectParams(visibleTo ? visibilityOf(visibleTo) : { all: true });
      const rows = await store.query(
        `SELECT ${PROJECT_COLUMNS} FROM projects pr WHERE ($1::text IS NULL OR slug > $1) AND ${visibleProjectCondition(3)} ORDER BY slug LIMIT $2`,
        [after ?? null, limit, ...who],
      );
      return rows.map(fromRow);
    },
  };
}
