import { LATEST_ATTEMPT } from '../../output/output-service';
import type { Queryable } from '../../store/store';

/**
 * The queries of the test-metrics operation (runtime/insights/insights.ts), one statement each: a
 * workflow's latest recorded runs, then the test results their jobs stored (store_test_results,
 * runtime/output/), each job's latest attempt only. Both read through indexes (migrations 620 and
 * 630: a workflow's runs by branch and time, a run's jobs, a job's test results), so the answer
 * costs the same on a year of history as on a week.
 */

export interface RecentRun {
  readonly workflow_id: string;
  readonly pipeline_number: number;
}

/** The workflow's `limit` latest runs (by when they started), newest first, on one branch or on all (`branch` undefined). */
export async function latestRuns(db: Queryable, projectId: string, workflowName: string, branch: string | undefined, limit: number): Promise<RecentRun[]> {
  // Two statements rather than `$3 IS NULL OR branch = $3`, so each is planned on its own index.
  return branch === undefined
    ? db.query<RecentRun>(
        `SELECT workflow_id, pipeline_number FROM insights_workflow_runs
          WHERE project_id = $1 AND workflow_name = $2 ORDER BY created_at DESC, workflow_id DESC LIMIT $3`,
        [projectId, workflowName, limit],
      )
    : db.query<RecentRun>(
        `SELECT workflow_id, pipeline_number FROM insights_workflow_runs
          WHERE project_id = $1 AND workflow_name = $2 AND branch = $3 ORDER BY created_at DESC, workflow_id DESC LIMIT $4`,
        [projectId, workflowName, branch, limit],
      );
}

/** One test (a job's test by file, class and name) over the runs. */
export interface TestFigures {
  readonly job_name: string;
  readonly file: string;
  readonly classname: string;
  readonly name: string;
  /** Times it ran (passed or failed; skipped is not a run). */
  readonly total_runs: number;
  readonly failed_runs: number;
  /** Seconds; percentile_cont(0.95) over the runs' times. */
  readonly p95: number | null;
  /** It both passed and failed on one revision within these runs. */
  readonly flaky: boolean;
}

export interface TestTotals {
  /** Per run that stored results: its counts by result. */
  readonly runs: { workflow_id: string; success: number; failure: number; skipped: number; total: number }[];
  /** The tests that failed, most failures first (then the larger share of failures), at most `top`. */
  readonly mostFailed: TestFigures[];
  /** Tests left out of mostFailed with as many failures as the last one in it. */
  readonly mostFailedExtra: number;
  /** The tests by their p95 time, slowest first, at most `top`. */
  readonly slowest: TestFigures[];
  /** Tests left out of slowest with the same p95 time as the last one in it. */
  readonly slowestExtra: number;
}

/**
 * The test results of these workflows' jobs, counted per run and per test, with the `top` most
 * failed and slowest tests, in one statement: the database ranks, Node reads at most 2 × top tests.
 */
export async function testTotals(db: Queryable, workflowIds: readonly string[], top: number): Promise<TestTotals> {
  if (workflowIds.length === 0) return { runs: [], mostFailed: [], mostFailedExtra: 0, slowest: [], slowestExtra: 0 };
  const figures = `job_name, file, classname, name, total_runs, failed_runs, p95, flaky`;
  const [row] = await db.query<{ runs: TestTotals['runs'] | null; most_failed: TestFigures[] | null; failed_extra: number; slowest: TestFigures[] | null; slowest_extra: number }>(
    `WITH results AS (
       SELECT j.workflow_id, r.job_name, r.file, r.classname, r.name, r.result, r.run_time, r.revision
         FROM insights_job_runs j JOIN test_results r ON r.job_id = j.job_id
        WHERE j.workflow_id = ANY($1::uuid[]) AND ${LATEST_ATTEMPT('r')}),
     per_run AS (
       SELECT workflow_id, count(*) FILTER (WHERE result = 'success')::int AS success, count(*) FILTER (WHERE result = 'failure')::int AS failure,
              count(*) FILTER (WHERE result = 'skipped')::int AS skipped, count(*)::int AS total
         FROM results GROUP BY workflow_id),
     flaked AS (
       SELECT job_name, file, classname, name, bool_or(passed AND failed) AS flaky
         FROM (SELECT job_name, file, classname, name, bool_or(result = 'success') AS passed, bool_or(result = 'failure') AS failed
                 FROM results GROUP BY job_name, file, classname, name, revision) per_revision
        GROUP BY job_name, file, classname, name),
     tests AS (
       SELECT t.job_name, t.file, t.classname, t.name, count(*)::int AS total_runs, count(*) FILTER (WHERE t.result = 'failure')::int AS failed_runs,
              percentile_cont(0.95) WITHIN GROUP (ORDER BY t.run_time)::float8 AS p95, f.flaky
         FROM results t JOIN flaked f USING (job_name, file, classname, name)
        WHERE t.result <> 'skipped'
        GROUP BY t.job_name, t.file, t.classname, t.name, f.flaky),
     failing AS (
       SELECT *, row_number() OVER (ORDER BY failed_runs DESC, failed_runs::float8 / total_runs DESC, job_name, classname, name, file) AS n
         FROM tests WHERE failed_runs > 0),
     slow AS (
       SELECT *, row_number() OVER (ORDER BY p95 DESC, job_name, classname, name, file) AS n FROM tests)
     SELECT (SELECT jsonb_agg(to_jsonb(p)) FROM per_run p) AS runs,
            (SELECT jsonb_agg(jsonb_build_object(${jsonFields(figures)}) ORDER BY n) FROM failing WHERE n <= $2) AS most_failed,
            (SELECT count(*)::int FROM failing WHERE n > $2 AND failed_runs = (SELECT failed_runs FROM failing WHERE n = $2)) AS failed_extra,
            (SELECT jsonb_agg(jsonb_build_object(${jsonFields(figures)}) ORDER BY n) FROM slow WHERE n <= $2) AS slowest,
            (SELECT count(*)::int FROM slow WHERE n > $2 AND p95 = (SELECT p95 FROM slow WHERE n = $2)) AS slowest_extra`,
    [workflowIds, top],
  );
  const json = <T>(v: T | string | null): T | null => (typeof v === 'string' ? (JSON.parse(v) as T) : v);
  return {
    runs: json(row.runs) ?? [],
    mostFailed: json(row.most_failed) ?? [],
    mostFailedExtra: Number(row.failed_extra),
    slowest: json(row.slowest) ?? [],
    slowestExtra: Number(row.slowest_extra),
  };
}

/** `'a', a, 'b', b` for jsonb_build_object from a list of columns. */
function jsonFields(columns: string): string {
  return columns
    .split(',')
    .map((c) => c.trim())
    .map((c) => `'${c}', ${c}`)
    .join(', ');
}
