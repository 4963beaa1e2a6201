import type { JobStatus, WorkflowStatus } from '../../domain/model';
import type { Requirement } from '../../config/plan';
import type { Queryable } from '../../store/store';

/**
 * The statements of a workflow rerun (`Conductor.rerunWorkflow`), each in the caller's
 * transaction: the new workflow, its jobs (rerun ones fresh, the others copied with their result),
 * and the workspace its copied jobs had persisted.
 */

/** The workflow to rerun, locked: nothing advances it while its jobs are read and copied. */
export async function lockWorkflowToRerun(tx: Queryable, workflowId: string): Promise<{ status: WorkflowStatus; pipeline_id: string; name: string } | undefined> {
  const [row] = await tx.query<{ status: WorkflowStatus; pipeline_id: string; name: string }>(
    'SELECT status, pipeline_id, name FROM workflows WHERE id = $1 FOR UPDATE',
    [workflowId],
  );
  return row;
}

/** A workflow's jobs in their order, as the rerun decision needs them. */
export function jobsOfWorkflow(tx: Queryable, workflowId: string): Promise<{ id: string; name: string; status: JobStatus; requires: Requirement[] }[]> {
  return tx.query('SELECT id, name, status, requires FROM jobs WHERE workflow_id = $1 ORDER BY position', [workflowId]);
}

/** The rerun: a workflow of the same name, after the pipeline's others, linked to the one it reruns. */
export async function insertRerunWorkflow(tx: Queryable, rerun: { id: string; of: string; startedBy: string | null }): Promise<void> {
  await tx.query(
    `INSERT INTO workflows (id, pipeline_id, name, status, position, rerun_of, started_by)
     SELECT $1, w.pipeline_id, w.name, 'running', (SELECT max(o.position) + 1 FROM workflows o WHERE o.pipeline_id = w.pipeline_id), w.id, $3
       FROM workflows w WHERE w.id = $2`,
    [rerun.id, rerun.of, rerun.startedBy],
  );
}

/** A job that runs again: as the config made it, blocked until the conductor decides it. */
export async function insertRerunJob(tx: Queryable, workflowId: string, jobId: string, from: string): Promise<void> {
  await tx.query(
    `INSERT INTO jobs (id, workflow_id, project_id, name, type, status, position, requires, contexts, spec)
     SELECT $1, $2, project_id, name, type, 'blocked', position, requires, contexts, spec FROM jobs WHERE id = $3`,
    [jobId, workflowId, from],
  );
}

/**
 * A job that does not run again: its result, times and messages, and the job that ran (a copy of
 * a copy names the job that ran, not the copy). It has no number of its own: numbers belong to
 * jobs that ran.
 */
export async function insertCopiedJob(tx: Queryable, workflowId: string, jobId: string, from: string): Promise<void> {
  await tx.query(
    `INSERT INTO jobs (id, workflow_id, project_id, name, type, status, position, requires, contexts, spec,
                       approved_by, queued_at, started_at, stopped_at, messages, canceled_by, copied_from)
     SELECT $1, $2, project_id, name, type, status, position, requires, contexts, spec,
            approved_by, queued_at, started_at, stopped_at, messages, canceled_by, COALESCE(copied_from, id)
       FROM jobs WHERE id = $3`,
    [jobId, workflowId, from],
  );
}

/**
 * The workspace layers the copied jobs had in the workflow being rerun, as layers of their copies:
 * a rerun job attaches what its copied upstream jobs persisted, as in CircleCI. The blobs are
 * shared, not copied; both workflows are in one pipeline, which retention deletes whole. Only a
 * task's latest attempt's layers count (the rule of `workspaceLayers` in runtime/output).
 */
export async function copyWorkspaceLayers(tx: Queryable, from: string, to: string): Promise<void> {
  await tx.query(
    `INSERT INTO workspace_layers (id, workflow_id, job_id, node_index, blob_key, bytes, attempt, created_at)
     SELECT gen_random_uuid(), $2, copy.id, l.node_index, l.blob_key, l.bytes, NULL, l.created_at
       FROM workspace_layers l
       JOIN jobs original ON original.id = l.job_id
       JOIN jobs copy ON copy.workflow_id = $2 AND copy.name = original.name AND copy.copied_from IS NOT NULL
      WHERE l.workflow_id = $1
        AND (l.attempt IS NULL OR l.attempt = (SELECT t.attempt FROM tasks t WHERE t.job_id = l.job_id AND t.node_index = l.node_index))`,
    [from, to],
  );
}
