import type { WorkflowListener } from '../conductor/conductor';
import type { WorkflowStatus } from '../domain/model';
import { DeliveryRefused, enqueue, RetryLater, type OutboxHandler } from '../outbox/outbox';
import type { GitHubApp } from './app';
import { addPipelineError, workflowStatusFacts } from './sql/statuses';

/**
 * Commit statuses on GitHub, one per workflow (README: "Statuses on GitHub"). When a workflow
 * starts, a `pending` status is written to the outbox in the conductor's transaction; when it
 * ends, its result. The sender (runtime/outbox/sender.ts, in the conductor role) posts them as the
 * app's installation on the repository, in order per commit and context.
 *
 * Per workflow, not per job as CircleCI's `ci/circleci: <job>`: the context is
 * `ci/gyre: <workflow name>`, so a branch protection rule names a workflow, and a workflow's
 * jobs added or renamed in the config do not change which checks are required.
 *
 * Only for projects with `set_github_status` on (the default) whose repository is on the app's
 * GitHub; a repository the app is not installed on is skipped when the status is sent. A refusal
 * (a 4xx other than 429) is final and added to the pipeline's `errors`, where the API and the UI
 * show it; anything else (5xx, 429, no answer) is retried with backoff.
 */

export const GITHUB_STATUS = 'github-status';

/** GitHub's commit status states. */
export type CommitState = 'pending' | 'success' | 'failure' | 'error';

/** One commit status to post: `POST /repos/{owner}/{repo}/statuses/{sha}` and where it came from. */
export interface CommitStatusPayload {
  readonly owner: string;
  readonly repo: string;
  readonly sha: string;
  readonly state: CommitState;
  readonly context: string;
  readonly description: string;
  readonly target_url: string;
  readonly pipeline_id: string;
  readonly workflow_id: string;
}

/**
 * A finished workflow's state on GitHub, as CircleCI reports its own: failed → failure, and every
 * other way of not succeeding (error, canceled, not authorized for a context, nothing run) → error.
 */
export function commitStateOf(status: WorkflowStatus): CommitState {
  switch (status) {
    case 'success':
      return 'success';
    case 'failed':
      return 'failure';
    case 'error':
    case 'canceled':
    case 'unauthorized':
    case 'not_run':
      return 'error';
    default:
      return 'pending';
  }
}

const DESCRIPTIONS: Partial<Record<WorkflowStatus, string>> = {
  success: 'The workflow passed on Gyre',
  failed: 'The workflow failed on Gyre',
  error: 'The workflow errored on Gyre',
  canceled: 'The workflow was canceled',
  unauthorized: 'The workflow was not authorized to use a context',
  not_run: 'The workflow did not run',
};

/** The UI's page of a workflow (runtime/ui/app.js: `#/pipeline/<id>/workflows/<id>`). */
export function workflowWebUrl(webUrl: string, pipelineId: string, workflowId: string): string {
  return `${webUrl.replace(/\/+$/, '')}/#/pipeline/${pipelineId}/workflows/${workflowId}`;
}

export interface GitHubStatusesDeps {
  readonly app: GitHubApp;
  /** Where users reach Gyre (GYRE_PUBLIC_URL in a cluster): the statuses link there. */
  readonly webUrl: () => string;
}

export interface GitHubStatuses {
  /** The conductor's listener: writes the status of a workflow that started or ended to the outbox. */
  readonly onWorkflow: WorkflowListener;
  /** The outbox handler of `github-status` deliveries. */
  readonly handler: OutboxHandler<CommitStatusPayload>;
}

export function createGitHubStatuses({ app, webUrl }: GitHubStatusesDeps): GitHubStatuses {
  const onWorkflow: WorkflowListener = async (tx, { workflowId, status, ended }) => {
    const facts = await workflowStatusFacts(tx, workflowId);
    if (!facts || !facts.set_github_status) return;
    const repo = app.repositoryOf(facts.repo_url);
    if (!repo) return; // not on the app's GitHub: a local path, another host
    const context = `ci/gyre: ${facts.name}`.slice(0, 255);
    const payload: CommitStatusPayload = {
      owner: repo.owner,
      repo: repo.repo,
      sha: facts.revision,
      state: ended ? commitStateOf(status) : 'pending',
      context,
      description: (ended ? DESCRIPTIONS[status] : undefined) ?? 'The workflow is running on Gyre',
      target_url: workflowWebUrl(webUrl(), facts.pipeline_id, workflowId),
      pipeline_id: facts.pipeline_id,
      workflow_id: workflowId,
    };
    // One order per commit and context: a rerun's pending never lands after the original's end.
    await enqueue(tx, GITHUB_STATUS, payload, { orderingKey: `${GITHUB_STATUS}:${repo.owner}/${repo.repo}@${facts.revision}:${context}`.toLowerCase() });
  };

  const handler: OutboxHandler<CommitStatusPayload> = {
    async deliver({ payload: p }) {
      // The installation's client: an UnavailableError (GitHub did not answer) is retried.
      const octokit = await app.octokitFor({ owner: p.owner, repo: p.repo });
      if (!octokit) return { skipped: `the GitHub App is not installed on ${p.owner}/${p.repo}` };
      try {
        await octokit.rest.repos.createCommitStatus({ owner: p.owner, repo: p.repo, sha: p.sha, state: p.state, context: p.context, description: p.description, target_url: p.target_url });
      } catch (error) {
        const e = error as { status?: number; message?: string; response?: { headers?: Record<string, string | undefined>; data?: { message?: string } } };
        const status = e.status;
        const headers = e.response?.headers ?? {};
        const said = String(e.response?.data?.message ?? e.message ?? error).slice(0, 300);
        if (status === 429 || (status === 403 && (headers['retry-after'] !== undefined || headers['x-ratelimit-remaining'] === '0'))) {
          // Rate limited: GitHub says when to come back (Retry-After, or the limit's reset).
          const retryAfter = Number(headers['retry-after']);
          const reset = Number(headers['x-ratelimit-reset']);
          const afterMs = Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter * 1000 : Number.isFinite(reset) && reset > 0 ? Math.max(0, reset * 1000 - Date.now()) : 60_000;
          throw new RetryLater(`GitHub's rate limit (HTTP ${status}): ${said}`, Math.min(afterMs, 3600_000));
        }
        if (status !== undefined && status >= 400 && status < 500) {
          const hint = status === 403 || status === 404 ? ` (the GitHub App needs the "Commit statuses: read and write" permission, accepted on the installation for ${p.owner}/${p.repo})` : '';
          throw new StatusRefused(`GitHub refused the commit status "${p.context}" (${p.state}) on ${p.owner}/${p.repo}@${p.sha.slice(0, 12)}: HTTP ${status}: ${said}${hint}`, status);
        }
        throw error;
      }
      return undefined;
    },
    async failed(tx, { payload: p }, reason, error) {
      // 401/403/404: the app may not write statuses there (its `statuses` permission, the installation's repositories).
      const status = error instanceof StatusRefused ? error.status : undefined;
      const type = status === 401 || status === 403 || status === 404 ? 'permission' : 'other';
      const message = error instanceof StatusRefused ? reason : `The commit status "${p.context}" (${p.state}) could not be posted on ${p.owner}/${p.repo}@${p.sha.slice(0, 12)}: ${reason}`;
      await addPipelineError(tx, p.pipeline_id, { type, message });
    },
  };

  return { onWorkflow, handler };
}

/** GitHub's refusal of a status, with its HTTP status. */
class StatusRefused extends DeliveryRefused {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}
