/**
 * What a task's secrets are decided by, as one JSON value (TaskFacts) of the rows of its job `j`,
 * workflow `w`, pipeline `p` and project `pr`: read by forLease, or with the built-in runner's
 * claim (runtime/dispatcher/dispatcher.ts), which joins the same rows, so that the secrets' reads
 * start as soon as the task is claimed (one round trip fewer on the way to every task's first
 * command). The job's steps are not in it: both readers have the job's spec.
 */
export const TASK_FACTS = `json_build_object('job_id', j.id, 'contexts', j.contexts, 'project_id', j.project_id,
  'org_id', (SELECT o.id FROM organizations o WHERE o.name = pr.org), 'repo_url', pr.repo_url, 'pipeline_id', w.pipeline_id,
  'workflow_id', j.workflow_id, 'branch', p.branch, 'tag', p.tag, 'actor_id', COALESCE(w.started_by, p.actor_id),
  'number', p.number, 'from_fork', p.from_fork, 'trigger_type', p.trigger_type, 'event', p.event,
  'project_slug', pr.slug, 'project_org', pr.org, 'forks_receive_secret_env_vars', pr.forks_receive_secret_env_vars)`;

/** TASK_FACTS as read. */
export interface TaskFacts {
  job_id: string;
  contexts: string[];
  project_id: string;
  org_id: string | null;
  repo_url: string;
  pipeline_id: string;
  workflow_id: string;
  branch: string | null;
  tag: string | null;
  /** Who started the workflow: a rerun's is who asked for it (never the original actor), else the pipeline's actor. */
  actor_id: string | null;
  number: number;
  from_fork: boolean;
  /** What started the pipeline: `pipeline.trigger_source` and `pipeline.event.*` for expressions. */
  trigger_type: string;
  event: unknown;
  /** The project's row as the contexts' checks need it (with `project_id` and `org_id`): not read again for the task's secrets. */
  project_slug?: string;
  project_org?: string;
  forks_receive_secret_env_vars?: boolean;
}
