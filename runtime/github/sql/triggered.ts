import type { Queryable } from '../../store/store';

/**
 * What webhooks started, per project and key (`branch:<name>:<sha>`, `tag:<name>:<sha>`): the push
 * and the pull_request event of one commit on one branch, or the push and the create event of one
 * tag, start one pipeline (560_github.sql).
 */

/** The pipeline a key already started, if any. */
export async function triggeredBy(db: Queryable, projectId: string, key: string): Promise<{ pipelineId: string; number: number } | undefined> {
  const [row] = await db.query<{ pipeline_id: string; number: number }>(
    'SELECT t.pipeline_id, p.number FROM github_triggered t JOIN pipelines p ON p.id = t.pipeline_id WHERE t.project_id = $1 AND t.trigger_key = $2',
    [projectId, key],
  );
  return row ? { pipelineId: row.pipeline_id, number: row.number } : undefined;
}

/** Claims a key for a pipeline in the transaction that creates it; false when another pipeline holds it. */
export async function claimTrigger(tx: Queryable, projectId: string, key: string, pipelineId: string): Promise<boolean> {
  const rows = await tx.query('INSERT INTO github_triggered (project_id, trigger_key, pipeline_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING pipeline_id', [projectId, key, pipelineId]);
  return rows.length > 0;
}

/** What a pipeline builds of a pull request: the base, the ref its checkout fetches, the pull request. */
export async function setPullRequestOfPipeline(
  tx: Queryable,
  pipelineId: string,
  values: { baseRevision?: string; checkoutRef?: string; pullRequest?: Record<string, unknown> },
): Promise<void> {
  await tx.query('UPDATE pipelines SET base_revision = $2, checkout_ref = $3, pull_request = $4 WHERE id = $1', [
    pipelineId,
    values.baseRevision ?? null,
    values.checkoutRef ?? null,
    values.pullRequest ? JSON.stringify(values.pullRequest) : null,
  ]);
}
