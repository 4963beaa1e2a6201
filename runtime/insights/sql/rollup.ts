import type { Queryable } from '../../store/store';

/** The queries of the rollup pass (runtime/insights/rollup.ts), one statement each. */

/** Workflow statuses that are runs: ended, and in the API's `status` enum of a run. */
export const RUN_STATUSES = ['success', 'failed', 'error', 'canceled', 'unauthorized'] as const;

/**
 * The cursor, locked for this transaction; undefined while another process holds it (that one is
 * rolling up, this one has nothing to do).
 */
export async function lockCursor(tx: Queryable): Promise<Date | undefined> {
  const rows = await tx.query<{ stopped_at: Date }>(`SELECT stopped_at FROM insights_cursor WHERE name = 'workflows' FOR UPDATE SKIP LOCKED`);
  return rows[0] ? new Date(rows[0].stopped_at) : undefined;
}

export async function advanceCursor(tx: Queryable, stoppedAt: Date): Promise<void> {
  await tx.query(`UPDATE insights_cursor SET stopped_at = GREATEST(stopped_at, $1) WHERE name = 'workflows'`, [stoppedAt]);
}

export interface CompletedWorkflow {
  readonly id: string;
  readonly project_id: string;
  readonly name: string;
  readonly status: string;
  readonly branch: string;
  readonly number: number;
  readonly created_at: Date;
  readonly stopped_at: Date;
}

/** Workflows that ended after `since` and are not recorded yet, in the order they stopped. */
export async function completedWorkflows(tx: Queryable, since: Date, limit: number): Promise<CompletedWorkflow[]> {
  return tx.query<CompletedWorkflow>(
    `SELECT w.id, p.project_id, w.name, w.status, COALESCE(p.branch, '') AS branch, p.number, w.created_at, w.stopped_at
       FROM workflows w JOIN pipelines p ON p.id = w.pipeline_id
      WHERE w.stopped_at IS NOT NULL AND w.stopped_at > $1 AND w.status = ANY($2::text[])
        AND NOT EXISTS (SELECT 1 FROM insights_workflow_runs r WHERE r.workflow_id = w.id)
      ORDER BY w.stopped_at, w.id
      LIMIT $3`,
    [since, RUN_STATUSES, limit],
  );
}

export interface SeriesState {
  readonly project_id: string;
  readonly workflow_name: string;
  readonly branch: string;
  readonly failing_since: Date | null;
}

/** For each (project, workflow, branch), whether its latest recorded run left it failing, and since when. */
export async function latestStates(tx: Queryable, series: readonly { projectId: string; workflowName: string; branch: string }[]): Promise<SeriesState[]> {
  if (series.length === 0) return [];
  return tx.query<SeriesState>(
    `SELECT s.project_id, s.workflow_name, s.branch, r.failing_since
       FROM unnest($1::uuid[], $2::text[], $3::text[]) AS s(project_id, workflow_name, branch)
       CROSS JOIN LATERAL (
         SELECT failing_since FROM insights_workflow_runs
          WHERE project_id = s.project_id AND workflow_name = s.workflow_name AND branch = s.branch
          ORDER BY stopped_at DESC LIMIT 1) r`,
    [series.map((s) => s.projectId), series.map((s) => s.workflowName), series.map((s) => s.branch)],
  );
}

/**
 * Records the jobs that ran in these workflows: not approvals, not copies a rerun made of earlier
 * jobs, started and stopped. A job's queue time is from when it was queued to when it started.
 */
export async function recordJobRuns(tx: Queryable, workflowIds: readonly string[]): Promise<void> {
  await tx.query(
    `INSERT INTO insights_job_runs (job_id, project_id, workflow_id, workflow_name, job_name, branch, status, started_at, stopped_at, duration_secs, queued_secs)
     SELECT j.id, p.project_id, w.id, w.name, j.name, COALESCE(p.branch, ''), j.status, j.started_at, j.stopped_at,
            GREATEST(0, round(EXTRACT(EPOCH FROM j.stopped_at - j.started_at)))::int,
            CASE WHEN j.queued_at IS NULL THEN 0 ELSE GREATEST(0, round(EXTRACT(EPOCH FROM j.started_at - j.queued_at)))::int END
       FROM unnest($1::uuid[]) AS b(id)
       JOIN workflows w ON w.id = b.id
       JOIN pipelines p ON p.id = w.pipeline_id
       JOIN jobs j ON j.workflow_id = w.id
      WHERE j.type <> 'approval' AND j.copied_from IS NULL AND j.started_at IS NOT NULL AND j.stopped_at IS NOT NULL AND j.status <> 'not_run'
     ON CONFLICT (job_id) DO NOTHING`,
    [workflowIds],
  );
}

/** How each workflow's branch stood after it (runtime/insights/rollup.ts works it out): failing since when, and the recovery it made. */
export interface Recovery {
  readonly workflowId: string;
  readonly failingSince: Date | null;
  readonly recoverySecs: number | null;
}

/**
 * Records these workflows as runs (after their jobs: a run's queue time is its jobs' together).
 * A workflow's duration is from its creation to its end.
 */
export async function recordWorkflowRuns(tx: Queryable, runs: readonly Recovery[]): Promise<void> {
  await tx.query(
    `INSERT INTO insights_workflow_runs (workflow_id, project_id, workflow_name, branch, pipeline_number, status, created_at, stopped_at, duration_secs, queued_secs, failing_since, recovery_secs)
     SELECT w.id, p.project_id, w.name, COALESCE(p.branch, ''), p.number, w.status, w.created_at, w.stopped_at,
            GREATEST(0, round(EXTRACT(EPOCH FROM w.stopped_at - w.created_at)))::int,
            COALESCE((SELECT sum(queued_secs) FROM insights_job_runs r WHERE r.workflow_id = w.id), 0)::int,
            b.failing_since, b.recovery_secs
       FROM unnest($1::uuid[], $2::timestamptz[], $3::int[]) AS b(id, failing_since, recovery_secs)
       JOIN workflows w ON w.id = b.id
       JOIN pipelines p ON p.id = w.pipeline_id
     ON CONFLICT (workflow_id) DO NOTHING`,
    [runs.map((r) => r.workflowId), runs.map((r) => r.failingSince), runs.map((r) => r.recoverySecs)],
  );
}

/**
 * Adds the runs of these workflows (the workflows and their jobs, recorded just before) into the
 * daily rollup, per branch and once more for all branches ('*'). Written in key order, so two
 * writers never deadlock.
 */
export async function addToDaily(tx: Queryable, workflowIds: readonly string[]): Promise<void> {
  await tx.query(
    `WITH runs AS (
       SELECT project_id, workflow_name, '' AS job_name, branch, status, created_at AS started_at, stopped_at, duration_secs, queued_secs, recovery_secs
         FROM insights_workflow_runs WHERE workflow_id = ANY($1::uuid[])
       UNION ALL
       SELECT project_id, workflow_name, job_name, branch, status, started_at, stopped_at, duration_secs, queued_secs, NULL
         FROM insights_job_runs WHERE workflow_id = ANY($1::uuid[])),
     both_ways AS (
       SELECT *, (started_at AT TIME ZONE 'UTC')::date AS day FROM runs
       UNION ALL
       SELECT project_id, workflow_name, job_name, '*', status, started_at, stopped_at, duration_secs, queued_secs, recovery_secs, (started_at AT TIME ZONE 'UTC')::date FROM runs)
     INSERT INTO insights_daily AS d (project_id, day, workflow_name, job_name, branch, runs, successful_runs, failed_runs, canceled_runs,
        durations, queued_secs, recoveries, recovery_secs, first_started_at, last_stopped_at)
     SELECT project_id, day, workflow_name, job_name, branch, count(*), count(*) FILTER (WHERE status = 'success'),
            count(*) FILTER (WHERE status NOT IN ('success', 'canceled')), count(*) FILTER (WHERE status = 'canceled'),
            array_agg(duration_secs ORDER BY started_at), array_agg(queued_secs ORDER BY started_at),
            count(recovery_secs), COALESCE(sum(recovery_secs), 0), min(started_at), max(stopped_at)
       FROM both_ways
      GROUP BY project_id, day, workflow_name, job_name, branch
      ORDER BY project_id, day, workflow_name, job_name, branch
     ON CONFLICT (project_id, day, workflow_name, job_name, branch) DO UPDATE SET
       runs = d.runs + excluded.runs,
       successful_runs = d.successful_runs + excluded.successful_runs,
       failed_runs = d.failed_runs + excluded.failed_runs,
       canceled_runs = d.canceled_runs + excluded.canceled_runs,
       durations = d.durations || excluded.durations,
       queued_secs = d.queued_secs || excluded.queued_secs,
       recoveries = d.recoveries + excluded.recoveries,
       recovery_secs = d.recovery_secs + excluded.recovery_secs,
       first_started_at = LEAST(d.first_started_at, excluded.first_started_at),
       last_stopped_at = GREATEST(d.last_stopped_at, excluded.last_stopped_at)`,
    [workflowIds],
  );
}

/** Deletes runs and rollup days older than `days`; answers how many rows went. */
export async function forgetOlderThan(db: Queryable, days: number): Promise<number> {
  const rows = await db.query<{ n: number }>(
    `WITH w AS (DELETE FROM insights_workflow_runs WHERE created_at < now() - make_interval(days => $1) RETURNING 1),
          j AS (DELETE FROM insights_job_runs WHERE started_at < now() - make_interval(days => $1) RETURNING 1),
          d AS (DELETE FROM insights_daily WHERE day < (now() - make_interval(days => $1))::date RETURNING 1)
     SELECT ((SELECT count(*) FROM w) + (SELECT count(*) FROM j) + (SELECT count(*) FROM d))::int AS n`,
    [days],
  );
  return rows[0]?.n ?? 0;
}
