import type { Queryable } from '../../store/store';

/** What a workflow's commit status is made from: its pipeline's commit and its project's repository and setting. */
export interface WorkflowStatusFacts {
  name: string;
  pipeline_id: string;
  revision: string;
  repo_url: string;
  set_github_status: boolean;
}

export async function workflowStatusFacts(tx: Queryable, workflowId: string): Promise<WorkflowStatusFacts | undefined> {
  const [row] = await tx.query<WorkflowStatusFacts>(
    `SELECT w.name, w.pipeline_id, p.revision, pr.repo_url, pr.set_github_status
       FROM workflows w JOIN pipelines p ON p.id = w.pipeline_id JOIN projects pr ON pr.id = p.project_id
      WHERE w.id = $1`,
    [workflowId],
  );
  return row;
}

/**
 * Adds an error to a pipeline's `errors` (the API's `{ type, message }`), once: the same error
 * again (the end status refused as the start one was) is not repeated. A deleted pipeline is no error.
 */
export async function addPipelineError(tx: Queryable, pipelineId: string, error: { type: string; message: string }): Promise<void> {
  const entry = JSON.stringify([error]);
  await tx.query(`UPDATE pipelines SET errors = errors || $2::jsonb, updated_at = now() WHERE id = $1 AND NOT errors @> $2::jsonb`, [pipelineId, entry]);
}
