import type { Lease } from '../agent-contract/task-context';
import { LEASE_IS_CURRENT } from '../dispatcher/sql/leases';
import { StaleLeaseError } from '../domain/errors';
import type { Queryable } from '../store/store';

/** At most this many tests go to a job for splitting (a bound on the answer, not a real suite's size). */
export const MAX_PREVIOUS_TEST_RESULTS = 200_000;

/**
 * The job of the last successful run of a task's job that stored test results (`$1`: the task).
 * Asked for every task: when the job never stored a test result (most jobs), the first EXISTS,
 * one index probe evaluated once, ends it; the jobs of that name are not read (they were, one
 * by one, with a probe each: time growing with the project's history).
 */
export const PREVIOUS_RUN = `WITH me AS (SELECT j.id, j.project_id, j.name, j.queued_at FROM tasks t JOIN jobs j ON j.id = t.job_id WHERE t.id = $1)
     SELECT j.id, j.number FROM me, jobs j
      WHERE EXISTS (SELECT 1 FROM test_results r, me m WHERE r.project_id = m.project_id AND r.job_name = m.name AND r.created_at <= m.queued_at)
        AND j.project_id = me.project_id AND j.name = me.name AND j.id <> me.id
        AND j.status = 'success' AND j.stopped_at <= me.queued_at
        AND EXISTS (SELECT 1 FROM test_results r WHERE r.job_id = j.id AND r.project_id = me.project_id AND r.job_name = me.name AND r.created_at <= me.queued_at)
      ORDER BY j.stopped_at DESC, j.number DESC
      LIMIT 1`;

/** PREVIOUS_RUN (`$1`: the task) and whether `$2`, `$3` are its current lease (LEASE_IS_CURRENT), as one row. */
const PREVIOUS_RUN_UNDER_LEASE = `WITH previous AS (${PREVIOUS_RUN})
  SELECT EXISTS (SELECT 1 FROM tasks t WHERE ${LEASE_IS_CURRENT}) AS current, (SELECT id FROM previous) AS id, (SELECT number FROM previous) AS number`;

/**
 * The test results of the last successful run of a task's job: the most recent job of the same
 * name in the task's own project (never another's) that ended `success` before this job was
 * queued, each node's latest attempt. Every node of a job gets the same run, so every node
 * computes the same split. `run_time` is in seconds. Empty when there was no such run. With
 * `lease`: only while it is the task's current lease (StaleLeaseError otherwise).
 */
export async function previousTestResults(db: Queryable, taskId: string, lease?: Lease): Promise<{ jobNumber: number | null; items: { file: string; classname: string; name: string; run_time: number }[] }> {
  let previous: { id: string | null; number: number | null } | undefined;
  if (lease) {
    // Only the lease's holder reads them, and the check is the same statement: on the way to a
    // task's first command (the built-in runner's agent asks in the server's process).
    if (lease.taskId !== taskId) throw new StaleLeaseError(lease.taskId, lease.leaseId);
    const [row] = await db.query<{ current: boolean; id: string | null; number: number | null }>(PREVIOUS_RUN_UNDER_LEASE, [lease.taskId, lease.leaseId, lease.attempt]);
    if (!row?.current) throw new StaleLeaseError(lease.taskId, lease.leaseId);
    previous = row;
  } else {
    [previous] = await db.query<{ id: string; number: number }>(PREVIOUS_RUN, [taskId]);
  }
  if (!previous?.id) return { jobNumber: null, items: [] };
  const items = await db.query<{ file: string; classname: string; name: string; run_time: number }>(
    `SELECT r.file, r.classname, r.name, r.run_time FROM test_results r
      WHERE r.job_id = $1
        AND (r.attempt IS NULL OR r.attempt = (SELECT t.attempt FROM tasks t WHERE t.job_id = r.job_id AND t.node_index = r.node_index))
      ORDER BY r.id
      LIMIT $2`,
    [previous.id, MAX_PREVIOUS_TEST_RESULTS],
  );
  return { jobNumber: Number(previous.number), items: items.map((r) => ({ ...r, run_time: Number(r.run_time) })) };
}
