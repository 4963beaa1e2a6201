import { appendAudit, SYSTEM_ACTOR, type Audit } from '../audit/audit-log';
import type { Queryable } from '../store/store';
import { lockRedundantWorkflows } from './sql/auto-cancel';

/** Cancels one workflow in the caller's transaction, exactly as `POST /workflow/{id}/cancel` does. */
export type CancelWorkflowInTx = (tx: Queryable, workflowId: string, actorId: string | undefined, audit: Audit) => Promise<void>;

/**
 * Auto-cancel of redundant workflows (CircleCI's project setting `autocancel_builds`): a new
 * pipeline on a branch other than the project's default one cancels the unfinished workflows of
 * the older pipelines (lower numbers) of that project and branch. Their queued jobs never run and
 * their running ones are stopped, as a cancel through the API stops them; each cancel is in the
 * audit log as `workflow.cancel` by the system, naming the pipeline that made it redundant. Tags,
 * the default branch, other branches and newer pipelines are left alone.
 *
 * Runs in the transaction that creates the new pipeline's workflows, so the pipeline and its
 * cancels commit together (a crash between them cannot lose the cancels). Returns the ids of the
 * workflows it canceled.
 */
export async function cancelRedundantWorkflows(tx: Queryable, pipelineId: string, cancel: CancelWorkflowInTx): Promise<string[]> {
  const redundant = await lockRedundantWorkflows(tx, pipelineId);
  for (const w of redundant) {
    const audit: Audit = {
      record: (t, given = {}) =>
        appendAudit(t, {
          actor: SYSTEM_ACTOR,
          action: 'workflow.cancel',
          result: 'success',
          org: w.org,
          project: w.slug,
          target: given.target,
          detail: { ...given.detail, reason: 'autocancel_builds', branch: w.branch, pipeline_number: w.pipeline_number, canceled_by_pipeline: { id: pipelineId, number: w.by_number } },
        }),
    };
    await cancel(tx, w.workflow_id, undefined, audit);
  }
  return redundant.map((w) => w.workflow_id);
}
