import type { Queryable } from '../../store/store';
import { splitWindow, type Window } from '../window';

/**
 * The queries the insights API answers from, one statement each. None reads the jobs, workflows or
 * pipelines tables: whole days come from the daily rollup, the edges of a window from the recorded
 * runs, both through their (project, workflow, time) indexes.
 */

/** Which branch: one by name, all of them together (`'*'`, the rollup's key), or each on its own. */
export type BranchScope = { readonly name: string } | 'all' | 'each';

export interface Scope {
  readonly projectIds: readonly string[];
  /** One workflow, or every workflow of the projects. */
  readonly workflowName?: string;
  /** Workflows themselves, or their jobs. */
  readonly level: 'workflow' | 'job';
  readonly branch: BranchScope;
}

/** What a tally is grouped by: the project, workflow, job, branch, or time bucket (a UTC day or hour). */
export type GroupKey = 'project' | 'workflow' | 'job' | 'branch' | 'bucket';

const KEY_COLUMN: Record<GroupKey, string> = { project: 'project_id', workflow: 'workflow_name', job: 'job_name', branch: 'branch', bucket: 'bucket' };

/** Figures of a set of values (durations or queue times, in seconds), as PostgreSQL aggregates them. */
export interface Stats {
  readonly count: number;
  readonly min: number | null;
  readonly max: number | null;
  readonly total: number;
  readonly mean: number | null;
  /** Of the population. */
  readonly stddev: number | null;
  /** percentile_cont(0.5) and (0.95): interpolated linearly between the two nearest values. */
  readonly p50: number | null;
  readonly p95: number | null;
}

/** Runs added up, with the keys of their group (a key absent: added up across it). */
export interface Tally {
  readonly keys: Partial<Record<GroupKey, string>>;
  readonly runs: number;
  readonly successful: number;
  readonly failed: number;
  readonly canceled: number;
  readonly recoveries: number;
  readonly recoverySecs: number;
  readonly firstAt: Date;
  readonly lastAt: Date;
  readonly duration: Stats;
  readonly queued: Stats;
}

export interface TallyOptions {
  /** Grouping sets: each a list of keys; one tally per group of each set. */
  readonly groups: readonly (readonly GroupKey[])[];
  /** The bucket of a single run: its UTC day (default) or hour. The rollup's rows are days. */
  readonly bucket?: 'day' | 'hour';
  /** Read every run one by one (hourly buckets), not the rollup. */
  readonly runsOnly?: boolean;
}

/**
 * Tallies of the scope's runs within the window, added up in the database: whole UTC days from the
 * rollup, the parts of days at the window's edges from the recorded runs, then grouped, with
 * percentiles over every run's duration. One statement; its answer is one row per group.
 */
export async function tallies(db: Queryable, scope: Scope, window: Window, options: TallyOptions): Promise<Tally[]> {
  const split = options.runsOnly ? { edges: [window] } : splitWindow(window);
  const job = scope.level === 'job';
  const named = typeof scope.branch === 'object' ? scope.branch.name : null;
  // '*' is the rollup's key for all branches together: as a branch by name it is none (no git branch is named so).
  if (named === '*') return [];
  const params: unknown[] = [];
  /** A parameter, cast to its type (a part of the statement names only the parameters it uses). */
  const param = (value: unknown, type: string) => {
    params.push(value);
    return `$${params.length}::${type}`;
  };
  const projects = param(scope.projectIds, 'uuid[]');
  const workflow = param(scope.workflowName ?? null, 'text');
  const parts: string[] = [];
  if (split.days) {
    const rollupBranch = param(scope.branch === 'each' ? null : scope.branch === 'all' ? '*' : named, 'text');
    parts.push(`SELECT project_id::text AS project_id, workflow_name, job_name, branch, to_char(day, 'YYYY-MM-DD') || 'T00:00:00.000Z' AS bucket,
        runs, successful_runs, failed_runs, canceled_runs, durations, queued_secs, recoveries, recovery_secs, first_started_at, last_stopped_at
      FROM insights_daily
     WHERE project_id = ANY(${projects}) AND (${workflow} IS NULL OR workflow_name = ${workflow})
       AND ${job ? `job_name <> ''` : `job_name = ''`}
       AND (CASE WHEN ${rollupBranch} IS NULL THEN branch <> '*' ELSE branch = ${rollupBranch} END)
       AND day >= ${param(split.days.from, 'date')} AND day < ${param(split.days.to, 'date')}`);
  }
  if (split.edges.length) {
    const started = job ? 'started_at' : 'created_at';
    const branch = param(named, 'text');
    const time = split.edges.map((w) => `(${started} >= ${param(w.start, 'timestamptz')} AND ${started} < ${param(w.end, 'timestamptz')})`).join(' OR ');
    const bucket = options.bucket === 'hour' ? 'hour' : 'day';
    // Named as the rollup's columns: the first part of the union names them.
    parts.push(`SELECT project_id::text AS project_id, workflow_name, ${job ? 'job_name' : `''`} AS job_name, ${scope.branch === 'all' ? `'*'` : 'branch'} AS branch,
        to_char(date_trunc('${bucket}', ${started} AT TIME ZONE 'UTC'), 'YYYY-MM-DD"T"HH24:MI:SS.000"Z"') AS bucket,
        1 AS runs, (status = 'success')::int AS successful_runs, (status NOT IN ('success', 'canceled'))::int AS failed_runs, (status = 'canceled')::int AS canceled_runs,
        ARRAY[duration_secs] AS durations, ARRAY[queued_secs] AS queued_secs,
        ${job ? '0 AS recoveries, 0::bigint AS recovery_secs' : '(recovery_secs IS NOT NULL)::int AS recoveries, COALESCE(recovery_secs, 0)::bigint AS recovery_secs'},
        ${started} AS first_started_at, stopped_at AS last_stopped_at
      FROM ${job ? 'insights_job_runs' : 'insights_workflow_runs'}
     WHERE project_id = ANY(${projects}) AND (${workflow} IS NULL OR workflow_name = ${workflow}) AND (${branch} IS NULL OR branch = ${branch}) AND (${time})`);
  }
  if (parts.length === 0) return [];
  const all = (Object.keys(KEY_COLUMN) as GroupKey[]).filter((k) => options.groups.some((g) => g.includes(k)));
  const sets = options.groups.map((g) => `(${g.map((k) => KEY_COLUMN[k]).join(', ')})`).join(', ');
  const cols = all.map((k) => KEY_COLUMN[k]);
  // Which grouping set a row is of (the keys it is added up across), to join the parts of one group.
  const grouping = cols.length ? `GROUPING(${cols.join(', ')}) AS g` : '0 AS g';
  const stats = (array: string, as: string) => `
    ${as} AS (
      SELECT ${[...cols, grouping].join(', ')}, count(v)::int AS n, min(v)::float8 AS min, max(v)::float8 AS max, COALESCE(sum(v), 0)::float8 AS total,
             avg(v)::float8 AS mean, stddev_pop(v)::float8 AS sd, percentile_cont(0.5) WITHIN GROUP (ORDER BY v)::float8 AS p50,
             percentile_cont(0.95) WITHIN GROUP (ORDER BY v)::float8 AS p95
        FROM pieces, unnest(${array}) AS v
       GROUP BY GROUPING SETS (${sets}))`;
  // Within one grouping set (g) a key is never null, so '' for the null of a key added up across
  // joins exactly; plain equality lets the database hash the join.
  const on = (other: string) => ['c.g = ' + other + '.g', ...cols.map((c) => `COALESCE(c.${c}, '') = COALESCE(${other}.${c}, '')`)].join(' AND ');
  const rows = await db.query<Record<string, unknown>>(
    `WITH pieces AS (${parts.join(' UNION ALL ')}),
     counts AS (
       SELECT ${[...cols, grouping].join(', ')}, sum(runs)::int AS runs, sum(successful_runs)::int AS successful, sum(failed_runs)::int AS failed,
              sum(canceled_runs)::int AS canceled, sum(recoveries)::int AS recoveries, sum(recovery_secs)::float8 AS recovery_secs,
              min(first_started_at) AS first_at, max(last_stopped_at) AS last_at
         FROM pieces
        GROUP BY GROUPING SETS (${sets})),
     ${stats('durations', 'durs')},
     ${stats('queued_secs', 'queues')}
     SELECT c.*, d.n AS d_n, d.min AS d_min, d.max AS d_max, d.total AS d_total, d.mean AS d_mean, d.sd AS d_sd, d.p50 AS d_p50, d.p95 AS d_p95,
            q.n AS q_n, q.min AS q_min, q.max AS q_max, q.total AS q_total, q.mean AS q_mean, q.sd AS q_sd, q.p50 AS q_p50, q.p95 AS q_p95
       FROM counts c LEFT JOIN durs d ON ${on('d')} LEFT JOIN queues q ON ${on('q')}`,
    params,
  );
  const num = (v: unknown) => (v === null || v === undefined ? null : Number(v));
  const statsOf = (r: Record<string, unknown>, p: string): Stats => ({
    count: Number(r[`${p}_n`] ?? 0),
    min: num(r[`${p}_min`]),
    max: num(r[`${p}_max`]),
    total: Number(r[`${p}_total`] ?? 0),
    mean: num(r[`${p}_mean`]),
    stddev: num(r[`${p}_sd`]),
    p50: num(r[`${p}_p50`]),
    p95: num(r[`${p}_p95`]),
  });
  return rows.map((r) => {
    const keys: Partial<Record<GroupKey, string>> = {};
    for (const k of all) if (r[KEY_COLUMN[k]] !== null && r[KEY_COLUMN[k]] !== undefined) keys[k] = String(r[KEY_COLUMN[k]]);
    return {
      keys,
      runs: Number(r.runs),
      successful: Number(r.successful),
      failed: Number(r.failed),
      canceled: Number(r.canceled),
      recoveries: Number(r.recoveries),
      recoverySecs: Number(r.recovery_secs ?? 0),
      firstAt: new Date(r.first_at as string),
      lastAt: new Date(r.last_at as string),
      duration: statsOf(r, 'd'),
      queued: statsOf(r, 'q'),
    };
  });
}

export interface WorkflowRun {
  readonly workflow_id: string;
  readonly branch: string;
  readonly pipeline_number: number;
  readonly status: string;
  readonly created_at: Date;
  readonly stopped_at: Date;
  readonly duration_secs: number;
  readonly queued_secs: number;
}

/** A page of one workflow's runs within a window, newest first, after the cursor (created_at, id). */
export async function workflowRuns(
  db: Queryable,
  projectId: string,
  workflowName: string,
  branch: string | undefined,
  window: Window,
  before: { at: Date; id: string } | undefined,
  limit: number,
): Promise<WorkflowRun[]> {
  return db.query<WorkflowRun>(
    `SELECT workflow_id, branch, pipeline_number, status, created_at, stopped_at, duration_secs, queued_secs
       FROM insights_workflow_runs
      WHERE project_id = $1 AND workflow_name = $2 AND ($3::text IS NULL OR branch = $3) AND created_at >= $4 AND created_at < $5
        AND ($6::timestamptz IS NULL OR (created_at, workflow_id) < ($6, $7::uuid))
      ORDER BY created_at DESC, workflow_id DESC
      LIMIT $8`,
    [projectId, workflowName, branch ?? null, window.start, window.end, before?.at ?? null, before?.id ?? null, limit],
  );
}

/** The workflow names and branches of runs of the projects since `since` (a day), from the rollup. */
export async function namesSince(db: Queryable, projectIds: readonly string[], since: string, workflowName?: string): Promise<{ workflow_name: string; branch: string }[]> {
  return db.query(
    `SELECT DISTINCT workflow_name, branch FROM insights_daily
      WHERE project_id = ANY($1::uuid[]) AND day >= $2::date AND job_name = '' AND branch <> '*' AND ($3::text IS NULL OR workflow_name = $3)`,
    [projectIds, since, workflowName ?? null],
  );
}

/** The id of an organisation by name. */
export async function orgIdOf(db: Queryable, name: string): Promise<string | undefined> {
  return (await db.query<{ id: string }>('SELECT id FROM organizations WHERE name = $1', [name]))[0]?.id;
}

/** The projects of an organisation (id and name), by name. */
export async function projectsOfOrg(db: Queryable, org: string): Promise<{ id: string; name: string }[]> {
  return db.query('SELECT id, name FROM projects WHERE org = $1 ORDER BY name', [org]);
}
