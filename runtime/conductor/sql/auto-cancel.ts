import type { Queryable } from '../../store/store';

/** An unfinished workflow a newer pipeline on its branch makes redundant. */
export interface RedundantWorkflow {
  readonly workflow_id: string;
  /** The number of the older pipeline the workflow belongs to. */
  readonly pipeline_number: number;
  /** The newer pipeline's number, branch, and project. */
  readonly by_number: number;
  readonly branch: string;
  readonly slug: string;
  readonly org: string;
}

/**
 * When auto-cancel applies to the pipeline `p` of the project `pr` (their aliases in the statement
 * it is put in): the project has `autocancel_builds` on, and `p` is a branch pipeline of a branch
 * other than the project's default one.
 */
export const AUTO_CANCEL_APPLIES = 'pr.autocancel_builds AND p.tag IS NULL AND p.branch <> pr.default_branch';

/**
 * The unfinished workflows (running, failing or on hold, and not already being canceled) of the
 * pipelines of the same project and branch with a lower number than `pipelineId`'s, when its
 * project has `autocancel_builds` on and it is a branch pipeline of a branch other than the
 * project's default one; none otherwise. A tag pipeline has no branch, so it neither cancels nor is
 * canceled.
 *
 * The workflows are locked (the order a workflow cancel takes locks in: workflow, then its tasks
 * and jobs), and a workflow that finished while this waited for its lock is not returned.
 */
export function lockRedundantWorkflows(tx: Queryable, pipelineId: string): Promise<RedundantWorkflow[]> {
  return tx.query<RedundantWorkflow>(
    `SELECT w.id AS workflow_id, older.number AS pipeline_number, p.number AS by_number, p.branch, pr.slug, pr.org
       FROM pipelines p
       JOIN projects pr ON pr.id = p.project_id
       JOIN pipelines older ON older.project_id = p.project_id AND older.branch = p.branch AND older.tag IS NULL AND older.number < p.number
       JOIN workflows w ON w.pipeline_id = older.id
      WHERE p.id = $1 AND ${AUTO_CANCEL_APPLIES}
        AND w.status IN ('running', 'on_hold', 'failing') AND NOT w.cancel_requested
      ORDER BY older.number, w.position
        FOR UPDATE OF w`,
    [pipelineId],
  );
}
