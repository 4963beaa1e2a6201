import type { Queryable } from '../../store/store';

/** Scheduled workflows (`triggers: schedule` in a default-branch config): plain SQL, one function per statement. */

export interface ConfigToRead {
  project_id: string;
  default_branch: string;
  pipeline_id: string;
  pipeline_number: number;
  /** The compiled config, only when it may hold `triggers` (otherwise there is nothing to parse). */
  config: string | null;
}

/**
 * Projects whose latest compiled default-branch pipeline is newer than the one their scheduled
 * workflows were read from.
 */
export async function configsToRead(db: Queryable, limit: number): Promise<ConfigToRead[]> {
  return db.query<ConfigToRead>(
    `SELECT pr.id AS project_id, pr.default_branch, p.id AS pipeline_id, p.number AS pipeline_number,
            CASE WHEN position('triggers' in p.config_compiled) > 0 THEN p.config_compiled END AS config
       FROM projects pr
       JOIN LATERAL (SELECT id, number, config_compiled FROM pipelines
                      WHERE project_id = pr.id AND branch = pr.default_branch AND config_compiled IS NOT NULL
                      ORDER BY number DESC LIMIT 1) p ON true
       LEFT JOIN scheduled_workflow_sources src ON src.project_id = pr.id
      WHERE src.project_id IS NULL OR src.pipeline_number < p.number
      LIMIT $1`,
    [limit],
  );
}

/**
 * Records that a project's scheduled workflows are read from this pipeline; false when they were
 * read from this one or a newer one already (another process got there first).
 */
export async function claimSource(tx: Queryable, projectId: string, pipelineId: string, pipelineNumber: number, now: Date): Promise<boolean> {
  const rows = await tx.query(
    `INSERT INTO scheduled_workflow_sources (project_id, pipeline_id, pipeline_number, read_at) VALUES ($1, $2, $3, $4)
     ON CONFLICT (project_id) DO UPDATE SET pipeline_id = EXCLUDED.pipeline_id, pipeline_number = EXCLUDED.pipeline_number, read_at = EXCLUDED.read_at
      WHERE scheduled_workflow_sources.pipeline_number < EXCLUDED.pipeline_number
     RETURNING project_id`,
    [projectId, pipelineId, pipelineNumber, now],
  );
  return rows.length === 1;
}

/** Adds a scheduled workflow, or updates the workflows of one with the same cron and branch (its next tick stays). */
export async function upsertScheduledWorkflow(tx: Queryable, row: { id: string; projectId: string; cron: string; branch: string; workflows: readonly string[]; nextFireAt: Date | undefined; now: Date }): Promise<void> {
  await tx.query(
    `INSERT INTO scheduled_workflows (id, project_id, cron, branch, workflows, next_fire_at, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
     ON CONFLICT (project_id, cron, branch) DO UPDATE SET workflows = EXCLUDED.workflows, updated_at = EXCLUDED.updated_at`,
    [row.id, row.projectId, row.cron, row.branch, JSON.stringify(row.workflows), row.nextFireAt ?? null, row.now],
  );
}

/** Deletes a project's scheduled workflows other than these (cron, branch) pairs. */
export async function deleteOtherScheduledWorkflows(tx: Queryable, projectId: string, keep: readonly { cron: string; branch: string }[]): Promise<number> {
  const rows = await tx.query(
    `DELETE FROM scheduled_workflows WHERE project_id = $1
        AND jsonb_build_array(cron, branch) NOT IN (SELECT value FROM jsonb_array_elements($2::jsonb))
      RETURNING id`,
    [projectId, JSON.stringify(keep.map((k) => [k.cron, k.branch]))],
  );
  return rows.length;
}

export interface ScheduledWorkflowRow {
  cron: string;
  branch: string;
  workflows: string[];
  next_fire_at: Date | null;
}

export async function scheduledWorkflowsOfProject(db: Queryable, projectId: string): Promise<ScheduledWorkflowRow[]> {
  return db.query<ScheduledWorkflowRow>('SELECT cron, branch, workflows, next_fire_at FROM scheduled_workflows WHERE project_id = $1 ORDER BY cron, branch', [projectId]);
}
