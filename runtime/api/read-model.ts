import { InputError, NotFoundError } from '../domain/errors';
import { SYSTEM_ACTOR_ID } from '../domain/principal';
import type { JobStatus } from '../domain/model';
import type { Requirement } from '../config/plan';
import { visibleOrgs, visibleProjectCondition, visibleProjectParams, type Visibility } from '../identity/sql/members';
import type { Project } from '../projects/projects';
import type { Queryable } from '../store/store';
import { UNSERVED_REASON } from '../scheduler/unserved-classes';

/**
 * Reads for the API, shaped as CircleCI API v2 answers them. Plain SQL, one function per view.
 */

const iso = (d: unknown): string | null => (d ? new Date(d as string).toISOString() : null);

export interface Page<T> {
  readonly items: T[];
  readonly next_page_token: string | null;
}

/** Page tokens are opaque to clients: base64url JSON of the cursor. */
export function encodePageToken(cursor: Record<string, unknown>): string {
  return Buffer.from(JSON.stringify(cursor)).toString('base64url');
}

/**
 * The cursor a page token holds, or undefined without one. A token that is not one this API gave
 * out (not base64url JSON, or not of the shape `valid` accepts) is a 400, never a query error.
 */
export function decodePageToken<T>(token: string | null | undefined, valid: (cursor: Record<string, unknown>) => boolean): T | undefined {
  if (!token) return undefined;
  try {
    if (token.length <= 1000) {
      const parsed = JSON.parse(Buffer.from(token, 'base64url').toString('utf8'));
      if (parsed && typeof parsed === 'object' && !Array.isArray(parsed) && valid(parsed)) return parsed as T;
    }
  } catch {
    /* fall through */
  }
  throw new InputError(`page-token '${token.slice(0, 100)}' is not a token this API gave out`, 'page-token');
}

/** A cursor field that is absent or a whole number a query can take. */
export const cursorInt = (v: unknown): boolean => v === undefined || (typeof v === 'number' && Number.isSafeInteger(v) && v >= -1 && v <= 2 ** 31 - 1);
/** A cursor field that is absent or a short string. */
export const cursorText = (v: unknown): boolean => v === undefined || (typeof v === 'string' && v.length <= 400);

export function projectView(r: Record<string, unknown>) {
  return {
    id: r.id,
    slug: r.slug,
    name: r.name,
    organization_name: r.org,
    organization_slug: `gh/${r.org}`,
    organization_id: r.organization_id,
    vcs_info: { vcs_url: r.repo_url, default_branch: r.default_branch, provider: 'GitHub' },
  };
}

/** A project's settings as CircleCI's project_settings (`advanced`), those Gyre has. */
export function settingsOf(p: Project) {
  return {
    advanced: {
      autocancel_builds: p.autocancelBuilds,
      build_fork_prs: p.buildForkPrs,
      build_prs_only: p.buildPrsOnly,
      forks_receive_secret_env_vars: p.forksReceiveSecretEnvVars,
      set_github_status: p.setGithubStatus,
    },
  };
}

const PIPELINE_COLUMNS = `p.id, p.number, p.state, p.trigger_type, p.branch, p.tag, p.revision, p.commit_subject, p.parameters,
  p.errors, p.created_at, p.updated_at, pr.slug, pr.repo_url, u.login AS actor_login`;
const PIPELINE_FROM = `pipelines p JOIN projects pr ON pr.id = p.project_id LEFT JOIN users u ON u.id = p.actor_id`;

function pipelineView(r: Record<string, unknown>) {
  return {
    id: r.id,
    errors: r.errors ?? [],
    project_slug: r.slug,
    updated_at: iso(r.updated_at),
    number: r.number,
    trigger_parameters: r.parameters ?? {},
    state: r.state,
    created_at: iso(r.created_at),
    // Gyre's `schedule` (a workflow's `triggers: schedule`) is CircleCI's scheduled_pipeline to clients.
    trigger: { type: r.trigger_type === 'schedule' ? 'scheduled_pipeline' : r.trigger_type, received_at: iso(r.created_at), actor: { login: r.actor_login ?? 'gyre', avatar_url: null } },
    vcs: {
      provider_name: 'GitHub',
      target_repository_url: r.repo_url,
      origin_repository_url: r.repo_url,
      revision: r.revision,
      ...(r.branch ? { branch: r.branch } : {}),
      ...(r.tag ? { tag: r.tag } : {}),
      commit: { subject: r.commit_subject ?? '', body: '' },
    },
  };
}

export async function getPipeline(db: Queryable, id: string) {
  if (!isUuid(id)) throw new NotFoundError('pipeline', id);
  const [row] = await db.query(`SELECT ${PIPELINE_COLUMNS} FROM ${PIPELINE_FROM} WHERE p.id = $1`, [id]);
  if (!row) throw new NotFoundError('pipeline', id);
  return pipelineView(row);
}

/** A pipeline of a project by its number (`/project/{slug}/pipeline/{number}`). */
export async function getPipelineByNumber(db: Queryable, projectId: string, number: string) {
  if (!/^\d{1,9}$/.test(number)) throw new NotFoundError('pipeline', number);
  const [row] = await db.query(`SELECT ${PIPELINE_COLUMNS} FROM ${PIPELINE_FROM} WHERE p.project_id = $1 AND p.number = $2`, [projectId, Number(number)]);
  if (!row) throw new NotFoundError('pipeline', number);
  return pipelineView(row);
}

/**
 * A project's pipelines, newest first; with `actorId`, only those that user triggered
 * (`/pipeline/mine`).
 */
export async function listPipelines(
  db: Queryable,
  projectId: string,
  options: { branch?: string; actorId?: string; pageToken?: string | null; limit?: number },
): Promise<Page<ReturnType<typeof pipelineView>>> {
  const limit = options.limit ?? 20;
  const cursor = decodePageToken<{ before?: number }>(options.pageToken, (c) => cursorInt(c.before));
  const rows = await db.query(
    `SELECT ${PIPELINE_COLUMNS} FROM ${PIPELINE_FROM}
      WHERE p.project_id = $1 AND ($2::text IS NULL OR p.branch = $2) AND ($3::int IS NULL OR p.number < $3)
        AND ($5::uuid IS NULL OR p.actor_id = $5)
      ORDER BY p.number DESC LIMIT $4`,
    [projectId, options.branch ?? null, cursor?.before ?? null, limit + 1, options.actorId ?? null],
  );
  const more = rows.length > limit;
  const items = rows.slice(0, limit).map(pipelineView);
  return { items, next_page_token: more ? encodePageToken({ before: items[items.length - 1].number }) : null };
}

/**
 * Pipelines of every project a caller can see (`GET /pipeline`), newest first: of one organisation
 * (`orgName`), and with `actorId` only those that user triggered.
 */
export async function listVisiblePipelines(
  db: Queryable,
  options: { who: Visibility; orgName?: string; actorId?: string; pageToken?: string | null; limit?: number },
): Promise<Page<ReturnType<typeof pipelineView>>> {
  // An organisation the caller cannot see answers as one that does not exist.
  if (options.orgName !== undefined && !(await visibleOrgs(db, options.who)).some((o) => o.name === options.orgName)) throw new NotFoundError('organization', `gh/${options.orgName}`);
  const limit = options.limit ?? 20;
  // Newest first across projects: by creation time, the id breaking ties.
  // The cursor is the last item's creation time in whole microseconds (as PostgreSQL keeps it: a
  // millisecond ISO time would skip rows at a page's edge) and its id; a token holding anything
  // else is refused as not ours.
  const cursor = decodePageToken<{ at: string; id: string }>(options.pageToken, (c) => typeof c.at === 'string' && /^\d{1,18}$/.test(c.at) && typeof c.id === 'string' && isUuid(c.id));
  const rows = await db.query(
    `SELECT ${PIPELINE_COLUMNS}, (extract(epoch FROM p.created_at) * 1000000)::bigint::text AS at_us FROM ${PIPELINE_FROM}
      WHERE ($1::text IS NULL OR pr.org = $1) AND ($2::uuid IS NULL OR p.actor_id = $2)
        AND ($3::bigint IS NULL OR (p.created_at, p.id) < ('epoch'::timestamptz + $3::bigint * interval '1 microsecond', $4::uuid))
        AND ${visibleProjectCondition(6)}
      ORDER BY p.created_at DESC, p.id DESC LIMIT $5`,
    [options.orgName ?? null, options.actorId ?? null, cursor?.at ?? null, cursor?.id ?? null, limit + 1, ...visibleProjectParams(options.who)],
  );
  const more = rows.length > limit;
  const page = rows.slice(0, limit);
  const last = page[page.length - 1];
  return { items: page.map(pipelineView), next_page_token: more ? encodePageToken({ at: String(last.at_us), id: last.id }) : null };
}

/**
 * A pipeline's values (`GET /pipeline/{id}/values`): the `pipeline.*` values its config was
 * compiled with, as runtime/config/compile/parameters.ts gives them, from what the pipeline keeps.
 */
export async function pipelineValues(db: Queryable, id: string): Promise<Record<string, string | number | boolean>> {
  if (!isUuid(id)) throw new NotFoundError('pipeline', id);
  const [row] = await db.query<{
    id: string;
    number: number;
    state: string;
    branch: string | null;
    tag: string | null;
    revision: string | null;
    base_revision: string | null;
    trigger_type: string;
    slug: string;
    repo_url: string;
    default_branch: string;
  }>(
    `SELECT p.id, p.number, p.state, p.branch, p.tag, p.revision, p.base_revision, p.trigger_type, pr.slug, pr.repo_url, pr.default_branch
       FROM pipelines p JOIN projects pr ON pr.id = p.project_id WHERE p.id = $1`,
    [id],
  );
  if (!row) throw new NotFoundError('pipeline', id);
  const branch = row.branch ?? '';
  return {
    'pipeline.id': row.id,
    'pipeline.number': row.number,
    'pipeline.project.git_url': row.repo_url,
    'pipeline.project.type': 'github',
    'pipeline.project.slug': row.slug,
    'pipeline.git.tag': row.tag ?? '',
    'pipeline.git.branch': branch,
    'pipeline.git.revision': row.revision ?? '',
    'pipeline.git.base_revision': row.base_revision ?? '',
    'pipeline.git.default_branch': row.default_branch,
    'pipeline.git.branch.is_default': branch !== '' && branch === row.default_branch,
    'pipeline.trigger_source': row.trigger_type,
    'pipeline.in_setup': row.state === 'setup' || row.state === 'setup-pending',
  };
}

function workflowView(r: Record<string, unknown>) {
  return {
    pipeline_id: r.pipeline_id,
    canceled_by: r.canceled_by ?? undefined,
    id: r.id,
    name: r.name,
    project_slug: r.slug,
    status: r.status,
    // A rerun is started by whoever asked for it; other workflows by the pipeline's actor, and
    // those no user started (schedules as the system, unlinked GitHub senders) by the system actor.
    started_by: r.started_by ?? r.actor_id ?? SYSTEM_ACTOR_ID,
    pipeline_number: r.pipeline_number,
    created_at: iso(r.created_at),
    stopped_at: iso(r.stopped_at),
    ...(r.tag ? { tag: r.tag } : {}),
    // Gyre's: the workflow this one reran (CircleCI's Workflow has no field for the link).
    ...(r.rerun_of ? { rerun_of: r.rerun_of } : {}),
  };
}

/**
 * A workflow's `tag` is CircleCI's: `setup` for the workflows of a setup configuration (those made
 * before the pipeline was continued; the continued ones are made in the continuing transaction,
 * at its `continued_at`), else none. Not the pipeline's git tag.
 */
const WORKFLOW_SELECT = `SELECT w.*, p.number AS pipeline_number, p.actor_id, pr.slug,
       CASE WHEN p.continuation_key IS NOT NULL AND (p.continued_at IS NULL OR w.created_at < p.continued_at) THEN 'setup' END AS tag
  FROM workflows w JOIN pipelines p ON p.id = w.pipeline_id JOIN projects pr ON pr.id = p.project_id`;

export async function getWorkflow(db: Queryable, id: string) {
  if (!isUuid(id)) throw new NotFoundError('workflow', id);
  const [row] = await db.query(`${WORKFLOW_SELECT} WHERE w.id = $1`, [id]);
  if (!row) throw new NotFoundError('workflow', id);
  return workflowView(row);
}

export async function listWorkflows(db: Queryable, pipelineId: string) {
  await getPipeline(db, pipelineId);
  const rows = await db.query(`${WORKFLOW_SELECT} WHERE w.pipeline_id = $1 ORDER BY w.position`, [pipelineId]);
  return { items: rows.map(workflowView), next_page_token: null };
}

export async function listWorkflowJobs(db: Queryable, workflowId: string) {
  await getWorkflow(db, workflowId);
  // A job a rerun copied rather than ran shows the number of the job that ran, as CircleCI shows it.
  const rows = await db.query<Record<string, unknown> & { name: string; id: string; requires: Requirement[] }>(
    `SELECT j.*, COALESCE(j.number, ran.number) AS shown_number, pr.slug
       FROM jobs j JOIN projects pr ON pr.id = j.project_id LEFT JOIN jobs ran ON ran.id = j.copied_from
      WHERE j.workflow_id = $1 ORDER BY j.position`,
    [workflowId],
  );
  const idByName = new Map(rows.map((r) => [r.name, r.id]));
  const items = rows.map((r) => ({
    canceled_by: r.canceled_by ?? undefined,
    dependencies: r.requires.map((req) => idByName.get(req.job)).filter((id): id is string => Boolean(id)),
    job_number: r.shown_number ?? undefined,
    id: r.id,
    started_at: iso(r.started_at),
    name: r.name,
    approved_by: r.approved_by ?? undefined,
    project_slug: r.slug,
    status: shownJobStatus(r.status as JobStatus, r.messages as JobRecord['messages']),
    type: r.type === 'approval' ? 'approval' : 'build',
    stopped_at: iso(r.stopped_at),
    ...(r.type === 'approval' ? { approval_request_id: r.id } : {}),
  }));
  return { items, next_page_token: null };
}

/**
 * A queued job that waits for a class no driver serves (its message says which runner to
 * register; runtime/scheduler/unserved-classes.ts) is shown `not_running`, as CircleCI shows a job
 * that waits for a self-hosted runner; it is `queued` in the store, and claimable.
 */
export function shownJobStatus(status: JobStatus, messages: JobRecord['messages']): JobStatus {
  return status === 'queued' && (messages ?? []).some((m) => m.reason === UNSERVED_REASON) ? 'not_running' : status;
}

export interface JobRecord {
  id: string;
  name: string;
  number: number;
  status: JobStatus;
  type: string;
  spec: { parallelism?: number; executor?: { kind: string }; resourceClass?: string } | null;
  contexts: string[];
  /** Why the job ended without running (a context it may not use), as API v2's `messages`. */
  messages: { type: string; message: string; reason?: string }[] | null;
  workflow_id: string;
  workflow_name: string;
  pipeline_id: string;
  queued_at: unknown;
  started_at: unknown;
  stopped_at: unknown;
  slug: string;
  project_id: string;
  project_name: string;
  org: string;
  repo_url: string;
}

export async function findJob(db: Queryable, projectId: string, number: string): Promise<JobRecord> {
  if (!/^\d{1,9}$/.test(number)) throw new NotFoundError('job', number);
  const [row] = await db.query<JobRecord>(
    `SELECT j.id, j.name, j.number, j.status, j.type, j.spec, j.contexts, j.messages, j.workflow_id, w.name AS workflow_name, w.pipeline_id,
            j.queued_at, j.started_at, j.stopped_at, pr.slug, pr.id AS project_id, pr.name AS project_name, pr.org, pr.repo_url
       FROM jobs j JOIN workflows w ON w.id = j.workflow_id JOIN projects pr ON pr.id = j.project_id
      WHERE j.project_id = $1 AND j.number = $2`,
    [projectId, Number(number)],
  );
  if (!row) throw new NotFoundError('job', number);
  return row;
}

export async function jobDetails(db: Queryable, job: JobRecord, webUrl: string) {
  const tasks = await db.query<{ node_index: number; status: string }>('SELECT node_index, status FROM tasks WHERE job_id = $1 ORDER BY node_index', [job.id]);
  const started = job.started_at ? new Date(job.started_at as string).getTime() : undefined;
  const stopped = job.stopped_at ? new Date(job.stopped_at as string).getTime() : undefined;
  return {
    web_url: `${webUrl}/#/job/${job.slug}/${job.number}`,
    project: { id: job.project_id, slug: job.slug, name: job.project_name, external_url: job.repo_url },
    parallel_runs: tasks.map((t) => ({ index: t.node_index, status: t.status === 'queued' ? 'queued' : t.status })),
    started_at: iso(job.started_at),
    latest_workflow: { id: job.workflow_id, name: job.workflow_name },
    name: job.name,
    executor: { type: job.spec?.executor?.kind ?? 'docker', resource_class: job.spec?.resourceClass ?? 'medium' },
    parallelism: job.spec?.parallelism ?? 1,
    status: shownJobStatus(job.status, job.messages),
    number: job.number,
    pipeline: { id: job.pipeline_id },
    duration: started !== undefined && stopped !== undefined ? stopped - started : null,
    created_at: iso(job.queued_at),
    messages: job.messages ?? [],
    contexts: (job.contexts ?? []).map((name) => ({ name })),
    organization: { name: job.org },
    queued_at: iso(job.queued_at),
    stopped_at: iso(job.stopped_at),
  };
}

export interface StepRecord {
  task_id: string;
  node_index: number;
  attempt: number;
  index: number;
  name: string;
  type: string;
  status: string;
  exit_code: number | null;
  started_at: unknown;
  stopped_at: unknown;
}

/** The steps of the latest attempt of each parallel node of a job. */
export async function jobSteps(db: Queryable, jobId: string, nodeIndex?: number): Promise<StepRecord[]> {
  return db.query<StepRecord>(
    `SELECT s.task_id, t.node_index, s.attempt, s.index, s.name, s.type, s.status, s.exit_code, s.started_at, s.stopped_at
       FROM steps s JOIN tasks t ON t.id = s.task_id
      WHERE t.job_id = $1 AND ($2::int IS NULL OR t.node_index = $2)
        AND s.attempt = (SELECT max(s2.attempt) FROM steps s2 WHERE s2.task_id = t.id)
      ORDER BY t.node_index, s.index`,
    [jobId, nodeIndex ?? null],
  );
}

export function stepView(s: StepRecord) {
  const started = s.started_at ? new Date(s.started_at as string).getTime() : undefined;
  const stopped = s.stopped_at ? new Date(s.stopped_at as string).getTime() : undefined;
  return {
    node_index: s.node_index,
    index: s.index,
    name: s.name,
    type: s.type,
    status: s.status,
    exit_code: s.exit_code,
    attempt: s.attempt,
    started_at: iso(s.started_at),
    stopped_at: iso(s.stopped_at),
    duration_ms: started !== undefined && stopped !== undefined ? stopped - started : null,
  };
}

export async function stepOutput(db: Queryable, taskId: string, attempt: number, step: number, afterSeq = -1) {
  return db.query<{ seq: number; data: Uint8Array }>(
    'SELECT seq, data FROM log_chunks WHERE task_id = $1 AND attempt = $2 AND step_index = $3 AND seq > $4 ORDER BY seq',
    [taskId, attempt, step, afterSeq],
  );
}

export function isUuid(id: string): boolean {
  return /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(id);
}

/** The config texts of a pipeline, as `GET /pipeline/{id}/config` answers them. */
export async function pipelineConfig(db: Queryable, id: string) {
  if (!isUuid(id)) throw new NotFoundError('pipeline', id);
  const [row] = await db.query<{ config_source: string | null; config_compiled: string | null; setup_config_source: string | null; setup_config_compiled: string | null }>(
    'SELECT config_source, config_compiled, setup_config_source, setup_config_compiled FROM pipelines WHERE id = $1',
    [id],
  );
  if (!row) throw new NotFoundError('pipeline', id);
  return {
    source: row.config_source ?? '',
    compiled: row.config_compiled ?? '',
    'setup-config': row.setup_config_source ?? '',
    'compiled-setup-config': row.setup_config_compiled ?? '',
  };
}

/** The task of one parallel node of a job, if the job has that node. */
export async function taskOfNode(db: Queryable, jobId: string, nodeIndex: number): Promise<{ id: string } | undefined> {
  const [task] = await db.query<{ id: string }>('SELECT id FROM tasks WHERE job_id = $1 AND node_index = $2', [jobId, nodeIndex]);
  return task;
}

/** A job's status. */
export async function jobStatus(db: Queryable, jobId: string): Promise<JobStatus | undefined> {
  const [row] = await db.query<{ status: JobStatus }>('SELECT status FROM jobs WHERE id = $1', [jobId]);
  return row?.status;
}

/** A user as `GET /me` shows them (CircleCI's fields, and whether they are an instance admin). */
export async function userView(db: Queryable, userId: string) {
  const [user] = await db.query<{ id: string; login: string; name: string; is_admin: boolean }>('SELECT id, login, name, is_admin FROM users WHERE id = $1', [userId]);
  if (!user) throw new NotFoundError('user', userId);
  return { id: user.id, login: user.login, name: user.name, admin: user.is_admin };
}
