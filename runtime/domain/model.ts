/**
 * Statuses and value types of the model. Names and values follow the CircleCI API v2 where the API
 * exposes them (see ../shared/reference/circleci-api-v2.openapi.json).
 */

/** Pipeline.state in API v2. */
export type PipelineState = 'created' | 'errored' | 'setup-pending' | 'setup' | 'pending';

/** Workflow.status in API v2. */
export type WorkflowStatus =
  | 'success'
  | 'running'
  | 'not_run'
  | 'failed'
  | 'error'
  | 'failing'
  | 'on_hold'
  | 'canceled'
  | 'unauthorized';

/** Job.status in API v2. */
export type JobStatus =
  | 'success'
  | 'running'
  | 'not_run'
  | 'failed'
  | 'retried'
  | 'queued'
  | 'not_running'
  | 'infrastructure_fail'
  | 'timedout'
  | 'on_hold'
  | 'terminated-unknown'
  | 'blocked'
  | 'canceled'
  | 'unauthorized';

/** Terminal job statuses: the conductor advances the workflow when a job reaches one of these. */
export const TERMINAL_JOB_STATUSES: readonly JobStatus[] = [
  'success',
  'failed',
  'not_run',
  'infrastructure_fail',
  'timedout',
  'canceled',
  'unauthorized',
  'terminated-unknown',
];

export function isTerminalJobStatus(status: JobStatus): boolean {
  return TERMINAL_JOB_STATUSES.includes(status);
}

/** A task is one parallel node of a job, as the dispatcher queues it. */
export type TaskStatus = 'queued' | 'running' | 'success' | 'failed' | 'infrastructure_fail' | 'canceled' | 'timedout';

export const TERMINAL_TASK_STATUSES: readonly TaskStatus[] = ['success', 'failed', 'infrastructure_fail', 'canceled', 'timedout'];

/** A step's outcome within one task. */
export type StepStatus = 'running' | 'success' | 'failed' | 'canceled' | 'skipped' | 'timedout';

/**
 * What kind of run a pipeline was started by (API v2's `trigger.type`, and `pipeline.trigger_source`
 * in config): `scheduled_pipeline` by a schedule of the v2 API, `schedule` by a workflow's legacy
 * `triggers: schedule` (only those workflows run).
 */
export type TriggerType = 'api' | 'webhook' | 'schedule' | 'scheduled_pipeline' | 'explicit';

/**
 * The pull request a pipeline builds (a GitHub webhook's), as its jobs see it: `CIRCLE_PULL_REQUEST`,
 * `CIRCLE_PULL_REQUESTS`, and for a fork's `CIRCLE_PR_NUMBER`, `CIRCLE_PR_REPONAME`,
 * `CIRCLE_PR_USERNAME`. Stored with the pipeline (`pipelines.pull_request`).
 */
export interface PipelinePullRequest {
  readonly number: number;
  /** The pull request's page on GitHub. */
  readonly url: string;
  /** Its head is another repository (a fork). */
  readonly fork: boolean;
  /** The head repository's owner and name (the fork's), unless the fork was deleted. */
  readonly headOwner?: string;
  readonly headRepo?: string;
  /** The head branch's name (in the head repository). */
  readonly headRef: string;
  /** Who opened it (their GitHub login). */
  readonly author?: string;
}
