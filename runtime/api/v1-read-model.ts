import type { JobStatus } from '../domain/model';
import type { Requirement } from '../config/plan';
import { visibleProjectCondition, visibleProjectParams, type Visibility } from '../identity/sql/members';
import type { Queryable } from '../store/store';
import type { StepRecord } from './read-model';

/**
 * Reads for CircleCI's API v1.1, the shapes its clients (the `circleci-api` npm package, scripts
 * written against `circleci.com/api/v1.1`, the circleci CLI's `project list`) read: a job is a
 * "build", numbered per project. Plain SQL, one statement per function; shaping beside it.
 * Only jobs that have a number (build jobs that were queued) are builds: approval jobs and jobs
 * still blocked are not, as on CircleCI.
 */

const iso = (d: unknown): string | null => (d ? new Date(d as string).toISOString() : null);
const millis = (from: unknown, to: unknown): number | null => (from && to ? new Date(to as string).getTime() - new Date(from as string).getTime() : null);

/** What `filter=` of the recent-builds routes keeps. */
export const BUILD_FILTERS = ['completed', 'successful', 'failed', 'running'] as const;
export type BuildFilter = (typeof BUILD_FILTERS)[number];

const FILTER_STATUSES: Record<BuildFilter, JobStatus[]> = {
  completed: ['success', 'failed', 'canceled', 'infrastructure_fail', 'timedout', 'terminated-unknown', 'retried'],
  successful: ['success'],
  failed: ['failed', 'infrastructure_fail', 'timedout', 'terminated-unknown'],
  running: ['running', 'queued'],
};

/** A job's status as v1.1's `lifecycle`, `outcome` and `status`. */
export function v1Status(status: JobStatus): { lifecycle: string; outcome: string | null; status: string } {
  switch (status) {
    case 'queued':
      return { lifecycle: 'queued', outcome: null, status: 'queued' };
    case 'running':
      return { lifecycle: 'running', outcome: null, status: 'running' };
    case 'success':
      return { lifecycle: 'finished', outcome: 'success', status: 'success' };
    case 'failed':
      return { lifecycle: 'finished', outcome: 'failed', status: 'failed' };
    case 'canceled':
      return { lifecycle: 'finished', outcome: 'canceled', status: 'canceled' };
    case 'timedout':
      return { lifecycle: 'finished', outcome: 'timedout', status: 'timedout' };
    case 'infrastructure_fail':
    case 'terminated-unknown':
      return { lifecycle: 'finished', outcome: 'infrastructure_fail', status: 'infrastructure_fail' };
    case 'retried':
      return { lifecycle: 'finished', outcome: null, status: 'retried' };
    case 'not_run':
    case 'unauthorized':
      return { lifecycle: 'not_run', outcome: null, status: 'not_run' };
    default:
      return { lifecycle: 'not_running', outcome: null, status: 'not_running' };
  }
}

export interface BuildRow {
  id: string;
  number: number;
  name: string;
  status: JobStatus;
  requires: Requirement[];
  spec: { parallelism?: number } | null;
  messages: { type: string; message: string; reason?: string }[] | null;
  queued_at: unknown;
  started_at: unknown;
  stopped_at: unknown;
  workflow_id: string;
  workflow_name: string;
  pipeline_id: string;
  pipeline_number: number;
  branch: string | null;
  tag: string | null;
  revision: string | null;
  commit_subject: string | null;
  trigger_type: string;
  slug: string;
  org: string;
  repo: string;
  repo_url: string;
  actor_login: string | null;
  /** Ids of the jobs of the workflow this one requires. */
  upstream_job_ids: string[];
}

const BUILD_SELECT = `SELECT j.id, j.number, j.name, j.status, j.requires, j.spec, j.messages, j.queued_at, j.started_at, j.stopped_at,
    j.workflow_id, w.name AS workflow_name, p.id AS pipeline_id, p.number AS pipeline_number, p.branch, p.tag, p.revision,
    p.commit_subject, p.trigger_type, pr.slug, pr.org, pr.name AS repo, pr.repo_url, u.login AS actor_login,
    COALESCE((SELECT array_agg(up.id) FROM jobs up WHERE up.workflow_id = j.workflow_id
               AND up.name IN (SELECT r->>'job' FROM jsonb_array_elements(j.requires) r)), '{}') AS upstream_job_ids
  FROM jobs j JOIN workflows w ON w.id = j.workflow_id JOIN pipelines p ON p.id = w.pipeline_id
  JOIN projects pr ON pr.id = j.project_id LEFT JOIN users u ON u.id = p.actor_id`;

/** One build of a project by number (a job with that number), or undefined. */
export async function buildByNumber(db: Queryable, projectId: string, number: number): Promise<BuildRow | undefined> {
  const [row] = await db.query<BuildRow>(`${BUILD_SELECT} WHERE j.project_id = $1 AND j.number = $2`, [projectId, number]);
  return row;
}

/** A page of a project's builds, newest number first, optionally of one branch and filtered by status. */
export async function projectBuilds(db: Queryable, projectId: string, options: { branch?: string; filter?: BuildFilter; limit: number; offset: number }): Promise<BuildRow[]> {
  return db.query<BuildRow>(
    `${BUILD_SELECT}
      WHERE j.project_id = $1 AND j.number IS NOT NULL AND ($2::text IS NULL OR p.branch = $2) AND ($3::text[] IS NULL OR j.status = ANY($3))
      ORDER BY j.number DESC LIMIT $4 OFFSET $5`,
    [projectId, options.branch ?? null, options.filter ? FILTER_STATUSES[options.filter] : null, options.limit, options.offset],
  );
}

/** A page of the builds of every project the caller can see, most recently queued first. */
export async function recentBuilds(db: Queryable, who: Visibility, options: { limit: number; offset: number }): Promise<BuildRow[]> {
  return db.query<BuildRow>(
    `${BUILD_SELECT}
      WHERE j.number IS NOT NULL AND j.queued_at IS NOT NULL AND ${visibleProjectCondition(1)}
      ORDER BY j.queued_at DESC, j.id LIMIT $4 OFFSET $5`,
    [...visibleProjectParams(who), options.limit, options.offset],
  );
}

/** Where a client reaches Gyre's pages and API, for `build_url` and `output_url`. */
export interface V1Urls {
  readonly web: string;
}

/** A build summary, as v1.1's recent-builds answers list them. */
export function buildSummary(row: BuildRow, urls: V1Urls) {
  const state = v1Status(row.status);
  const [vcs, username, reponame] = row.slug.split('/');
  const parallel = row.spec?.parallelism ?? 1;
  return {
    vcs_url: row.repo_url,
    build_url: `${urls.web}/#/job/${row.slug}/${row.number}`,
    build_num: row.number,
    branch: row.branch,
    vcs_revision: row.revision,
    vcs_tag: row.tag,
    committer_name: null,
    committer_email: null,
    author_name: null,
    author_email: null,
    subject: row.commit_subject ?? '',
    body: '',
    why: row.trigger_type,
    dont_build: row.status === 'unauthorized' ? 'unauthorized' : null,
    queued_at: iso(row.queued_at),
    usage_queued_at: iso(row.queued_at),
    start_time: iso(row.started_at),
    stop_time: iso(row.stopped_at),
    build_time_millis: millis(row.started_at, row.stopped_at),
    username,
    reponame,
    vcs_type: vcs === 'gh' ? 'github' : vcs,
    lifecycle: state.lifecycle,
    outcome: state.outcome,
    status: state.status,
    failed: state.outcome === 'failed' ? true : null,
    timedout: row.status === 'timedout',
    infrastructure_fail: state.outcome === 'infrastructure_fail',
    canceled: row.status === 'canceled',
    retry_of: null,
    previous: null,
    parallel,
    platform: '2.0',
    job_name: row.name,
    user: { is_user: true, login: row.actor_login ?? 'gyre', name: row.actor_login ?? 'gyre', vcs_type: 'github', avatar_url: null },
    workflows: {
      job_name: row.name,
      job_id: row.id,
      workflow_id: row.workflow_id,
      workspace_id: row.workflow_id,
      workflow_name: row.workflow_name,
      upstream_job_ids: row.upstream_job_ids,
      upstream_concurrency_map: {},
    },
    pipeline: { id: row.pipeline_id, number: row.pipeline_number },
  };
}

/** A step of a job (the v2 read model's record), with whether it has output. */
export interface ActionRow extends StepRecord {
  has_output: boolean;
}

/** The steps of the latest attempt of each parallel node of a job, with whether each has output (in the database or archived). */
export async function buildActions(db: Queryable, jobId: string): Promise<ActionRow[]> {
  return db.query<ActionRow>(
    `SELECT s.task_id, t.node_index, s.attempt, s.index, s.name, s.type, s.status, s.exit_code, s.started_at, s.stopped_at,
            (EXISTS (SELECT 1 FROM log_chunks c WHERE c.task_id = s.task_id AND c.attempt = s.attempt AND c.step_index = s.index)
             OR EXISTS (SELECT 1 FROM step_logs l WHERE l.task_id = s.task_id AND l.attempt = s.attempt AND l.step_index = s.index AND l.bytes > 0)) AS has_output
       FROM steps s JOIN tasks t ON t.id = s.task_id
      WHERE t.job_id = $1 AND s.attempt = (SELECT max(s2.attempt) FROM steps s2 WHERE s2.task_id = t.id)
      ORDER BY s.index, t.node_index`,
    [jobId],
  );
}

/** The URL of one action's output (step `step` on parallel node `index`): an API route that needs the caller's token. */
export function outputUrl(apiBase: string, row: Pick<BuildRow, 'slug' | 'number'>, step: number, index: number): string {
  const [vcs, org, repo] = row.slug.split('/');
  return `${apiBase}/api/v1.1/project/${vcs === 'gh' ? 'github' : vcs}/${encodeURIComponent(org)}/${encodeURIComponent(repo)}/${row.number}/output/${step}/${index}`;
}

/** A step type of Gyre's as one of v1.1's action types. */
function actionType(type: string): string {
  if (type === 'checkout') return 'checkout';
  if (type.includes('cache') || type.includes('workspace')) return 'dependencies';
  if (type === 'store_test_results' || type === 'store_artifacts') return 'teardown';
  return 'test';
}

/** The full details of a build: its summary, and `steps[].actions[]` with each action's `output_url`. */
export function buildDetails(row: BuildRow, actions: ActionRow[], urls: V1Urls & { readonly api: string }) {
  const parallel = row.spec?.parallelism ?? 1;
  const steps: { name: string; actions: unknown[] }[] = [];
  const byIndex = new Map<number, { name: string; actions: unknown[] }>();
  for (const a of actions) {
    let step = byIndex.get(a.index);
    if (!step) {
      step = { name: a.name, actions: [] };
      byIndex.set(a.index, step);
      steps.push(step);
    }
    const failed = a.status === 'failed' || a.status === 'timedout';
    step.actions.push({
      name: a.name,
      type: actionType(a.type),
      status: a.status,
      index: a.node_index,
      step: a.index,
      parallel: parallel > 1,
      start_time: iso(a.started_at),
      end_time: iso(a.stopped_at),
      run_time_millis: millis(a.started_at, a.stopped_at),
      exit_code: a.exit_code,
      failed: failed ? true : null,
      timedout: a.status === 'timedout' ? true : null,
      canceled: a.status === 'canceled' ? true : null,
      infrastructure_fail: null,
      continue: null,
      bash_command: null,
      background: false,
      insignificant: false,
      truncated: false,
      messages: [],
      has_output: a.has_output,
      output_url: a.has_output ? outputUrl(urls.api, row, a.index, a.node_index) : undefined,
      attempt: a.attempt,
    });
  }
  return {
    ...buildSummary(row, urls),
    steps,
    messages: (row.messages ?? []).map((m) => ({ type: m.type, message: m.message, ...(m.reason ? { reason: m.reason } : {}) })),
    all_commit_details: row.revision ? [{ commit: row.revision, subject: row.commit_subject ?? '', body: '', branch: row.branch }] : [],
    node: null,
    circle_yml: null,
    ssh_users: [],
    oss: false,
  };
}

/** One action's step record: the latest attempt of step `step` on parallel node `index` of a job. */
export async function actionOf(db: Queryable, jobId: string, step: number, index: number): Promise<{ task_id: string; attempt: number; status: string; started_at: unknown; stopped_at: unknown } | undefined> {
  const [row] = await db.query<{ task_id: string; attempt: number; status: string; started_at: unknown; stopped_at: unknown }>(
    `SELECT s.task_id, s.attempt, s.status, s.started_at, s.stopped_at FROM steps s JOIN tasks t ON t.id = s.task_id
      WHERE t.job_id = $1 AND t.node_index = $2 AND s.index = $3
        AND s.attempt = (SELECT max(s2.attempt) FROM steps s2 WHERE s2.task_id = t.id)`,
    [jobId, index, step],
  );
  return row;
}

export interface FollowedProjectRow {
  id: string;
  slug: string;
  org: string;
  name: string;
  repo_url: string;
  default_branch: string;
  /** Per branch: its newest builds (at most 5), newest first. */
  branches: { branch: string; builds: { number: number; status: JobStatus; revision: string | null; queued_at: unknown }[] }[] | null;
}

/**
 * The projects the caller can see (on Gyre, every project a caller may read counts as followed),
 * after `after` by slug, each with its branches' five newest builds (of the project's 500 newest,
 * so a project with a long history costs a bounded read).
 */
export async function followedProjects(db: Queryable, who: Visibility, options: { after?: string; limit: number }): Promise<FollowedProjectRow[]> {
  return db.query<FollowedProjectRow>(
    `SELECT pr.id, pr.slug, pr.org, pr.name, pr.repo_url, pr.default_branch,
            (SELECT json_agg(json_build_object('branch', b.branch, 'builds', b.builds) ORDER BY b.branch)
               FROM (SELECT x.branch, json_agg(json_build_object('number', x.number, 'status', x.status, 'revision', x.revision, 'queued_at', x.queued_at) ORDER BY x.number DESC) AS builds
                       FROM (SELECT recent.*, row_number() OVER (PARTITION BY recent.branch ORDER BY recent.number DESC) AS n
                               FROM (SELECT j.number, j.status, j.queued_at, p.branch, p.revision
                                       FROM jobs j JOIN workflows w ON w.id = j.workflow_id JOIN pipelines p ON p.id = w.pipeline_id
                                      WHERE j.project_id = pr.id AND j.number IS NOT NULL AND p.branch IS NOT NULL
                                      ORDER BY j.number DESC LIMIT 500) recent) x
                      WHERE x.n <= 5 GROUP BY x.branch) b) AS branches
       FROM projects pr
      WHERE ${visibleProjectCondition(1)} AND ($4::text IS NULL OR pr.slug > $4)
      ORDER BY pr.slug LIMIT $5`,
    [...visibleProjectParams(who), options.after ?? null, options.limit],
  );
}

/** A followed project as v1.1's `GET /projects` lists it. */
export function followedProjectView(row: FollowedProjectRow) {
  const [vcs, username, reponame] = row.slug.split('/');
  const brief = (b: { number: number; status: JobStatus; revision: string | null; queued_at: unknown }) => ({
    build_num: b.number,
    status: v1Status(b.status).status,
    outcome: v1Status(b.status).outcome,
    vcs_revision: b.revision,
    pushed_at: iso(b.queued_at),
    added_at: iso(b.queued_at),
  });
  const branches: Record<string, unknown> = {};
  for (const b of row.branches ?? []) {
    const finished = b.builds.filter((x) => v1Status(x.status).lifecycle === 'finished');
    const lastSuccess = finished.find((x) => x.status === 'success');
    const lastNonSuccess = finished.find((x) => x.status !== 'success');
    branches[b.branch] = {
      pusher_logins: [],
      recent_builds: b.builds.map(brief),
      running_builds: b.builds.filter((x) => x.status === 'running' || x.status === 'queued').map(brief),
      last_success: lastSuccess ? brief(lastSuccess) : null,
      last_non_success: lastNonSuccess ? brief(lastNonSuccess) : null,
    };
  }
  return {
    slug: row.slug,
    vcs_url: row.repo_url,
    vcs_type: vcs === 'gh' ? 'github' : vcs,
    username,
    reponame,
    name: reponame,
    followed: true,
    default_branch: row.default_branch,
    oss: false,
    branches,
  };
}
