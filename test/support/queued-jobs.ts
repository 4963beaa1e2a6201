import { randomUUID } from 'node:crypto';
import type { JobSpec } from '../../runtime/config/plan';
import type { Dispatcher } from '../../runtime/dispatcher/dispatcher';
import type { Store } from '../../runtime/store/store';

/**
 * The rows jobs hang from (a project, a pipeline, a workflow), a job of that workflow for each of
 * `specs` (the first named `j`, then `j1`, `j2`…), all queued in one transaction, as a conductor
 * queues a workflow's first jobs; their ids. For tests of what is below the conductor: the
 * dispatcher, the output role, the drivers.
 */
export async function queueJobs(store: Store, dispatcher: Dispatcher, specs: readonly JobSpec[]): Promise<string[]> {
  const [projectId, pipelineId, workflowId] = [randomUUID(), randomUUID(), randomUUID()];
  await store.query(`INSERT INTO projects (id, slug, org, name, repo_url) VALUES ($1, $2, 'o', 'r', '/nowhere')`, [projectId, `gh/o/${projectId}`]);
  await store.query(`INSERT INTO pipelines (id, project_id, number, state, trigger_type, revision) VALUES ($1, $2, 1, 'created', 'api', 'abc')`, [pipelineId, projectId]);
  await store.query(`INSERT INTO workflows (id, pipeline_id, name, status) VALUES ($1, $2, 'w', 'running')`, [workflowId, pipelineId]);
  const ids = specs.map(() => randomUUID());
  for (const [n, id] of ids.entries()) {
    await store.query(`INSERT INTO jobs (id, workflow_id, project_id, name, type, number, status, spec) VALUES ($1, $2, $3, $4, 'build', $5, 'blocked', $6)`, [
      id,
      workflowId,
      projectId,
      n === 0 ? 'j' : `j${n}`,
      n + 1,
      JSON.stringify(specs[n]),
    ]);
  }
  await store.transaction(async (tx) => {
    for (const [n, id] of ids.entries()) await dispatcher.enqueueJob(tx, { id, spec: specs[n] });
  });
  return ids;
}
