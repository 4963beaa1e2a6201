import type { JobStatus } from '../../domain/model';
import type { Queryable } from '../../store/store';

/** The statements of a job cancel (`Conductor.cancelJob`), each in the caller's transaction. */

export interface JobToCancel {
  readonly workflow_id: string;
  readonly name: string;
  readonly number: number | null;
  readonly status: JobStatus;
}

/**
 * The job to cancel, after its workflow's row is locked: locks are taken workflow first, then
 * tasks, then job, the order workflow cancel and the dispatcher take them in, so a cancel and a
 * claim or a completion cannot deadlock. Holding the workflow keeps the conductor from queueing the
 * job meanwhile; the dispatcher may still start or finish it, which `dispatcher.cancelJob` handles.
 */
export async function lockJobToCancel(tx: Queryable, jobId: string): Promise<JobToCancel | undefined> {
  const [found] = await tx.query<{ workflow_id: string }>('SELECT workflow_id FROM jobs WHERE id = $1', [jobId]);
  if (!found) return undefined;
  await tx.query('SELECT 1 FROM workflows WHERE id = $1 FOR UPDATE', [found.workflow_id]);
  const [job] = await tx.query<JobToCancel>('SELECT workflow_id, name, number, status FROM jobs WHERE id = $1', [jobId]);
  return job;
}

/** A job that has not been queued (blocked, or an approval on hold) ends canceled; it never runs. */
export async function cancelWaitingJob(tx: Queryable, jobId: string, actorId: string | null): Promise<void> {
  await tx.query(
    `UPDATE jobs SET status = 'canceled', stopped_at = now(), canceled_by = $2 WHERE id = $1 AND status IN ('blocked', 'on_hold')`,
    [jobId, actorId],
  );
}

/** Who canceled a queued or running job; the dispatcher stops its tasks and settles its status. */
export async function recordCanceledBy(tx: Queryable, jobId: string, actorId: string | null): Promise<void> {
  await tx.query('UPDATE jobs SET canceled_by = $2 WHERE id = $1', [jobId, actorId]);
}
