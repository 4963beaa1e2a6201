import { createHmac } from 'node:crypto';

/**
 * What Gyre sends, built from the facts of a workflow or job that ended (pure functions: no I/O).
 *
 * Webhook bodies follow CircleCI's outbound webhook reference: the common top-level keys `type`,
 * `id` (unique per event and webhook: receivers dedupe by it, and every retry sends the same),
 * `happened_at` (when the workflow or job stopped) and `webhook`, with the `project`,
 * `organization`, `pipeline` (with `trigger` and `vcs`), `workflow` and, for `job-completed`, `job`
 * sub-entities. Signed as CircleCI signs: `circleci-signature: v1=<hex HMAC-SHA256 of the body
 * with the webhook's signing secret>`.
 */

export const WEBHOOK_EVENTS = ['workflow-completed', 'job-completed'] as const;
export type WebhookEvent = (typeof WEBHOOK_EVENTS)[number];

/** The facts of an ended workflow (and its pipeline, project, organisation) a notice is made of. */
export interface WorkflowFacts {
  readonly workflow: { readonly id: string; readonly name: string; readonly status: string; readonly created_at: string; readonly stopped_at: string | null };
  readonly pipeline: {
    readonly id: string;
    readonly number: number;
    readonly created_at: string;
    readonly trigger_type: string;
    readonly branch: string | null;
    readonly tag: string | null;
    readonly revision: string | null;
    readonly commit_subject: string | null;
  };
  readonly project: { readonly id: string; readonly slug: string; readonly name: string; readonly repo_url: string };
  readonly organization: { readonly id: string; readonly name: string };
  /** The workflow's page in Gyre's UI. */
  readonly url: string;
}

export interface JobFacts {
  readonly id: string;
  readonly number: number | null;
  readonly name: string;
  readonly status: string;
  readonly started_at: string | null;
  readonly stopped_at: string | null;
}

const iso = (value: string | Date | null | undefined): string | null => (value === null || value === undefined ? null : new Date(value).toISOString());

/** CircleCI's trigger types are `webhook`, `explicit`, `api` and `schedule`; Gyre's pass as they are. */
function pipelineEntity(f: WorkflowFacts) {
  const p = f.pipeline;
  return {
    id: p.id,
    number: p.number,
    created_at: iso(p.created_at),
    trigger: { type: p.trigger_type },
    vcs: {
      provider_name: 'github',
      origin_repository_url: f.project.repo_url,
      target_repository_url: f.project.repo_url,
      revision: p.revision ?? '',
      commit: { subject: p.commit_subject ?? '', body: '' },
      ...(p.branch ? { branch: p.branch } : {}),
      ...(p.tag ? { tag: p.tag } : {}),
    },
  };
}

function workflowEntity(f: WorkflowFacts) {
  return { id: f.workflow.id, name: f.workflow.name, status: f.workflow.status, created_at: iso(f.workflow.created_at), stopped_at: iso(f.workflow.stopped_at), url: f.url };
}

function common(f: WorkflowFacts, webhook: { id: string; name: string }, eventId: string, type: WebhookEvent, happenedAt: string | null) {
  return {
    type,
    id: eventId,
    happened_at: happenedAt ?? new Date().toISOString(),
    webhook: { id: webhook.id, name: webhook.name },
    project: { id: f.project.id, name: f.project.name, slug: f.project.slug },
    organization: { id: f.organization.id, name: f.organization.name },
  };
}

/** The body of a `workflow-completed` event, as sent (its bytes are what is signed). */
export function workflowCompletedBody(f: WorkflowFacts, webhook: { id: string; name: string }, eventId: string): string {
  return JSON.stringify({ ...common(f, webhook, eventId, 'workflow-completed', iso(f.workflow.stopped_at)), workflow: workflowEntity(f), pipeline: pipelineEntity(f) });
}

/** The body of a `job-completed` event, as sent. */
export function jobCompletedBody(f: WorkflowFacts, job: JobFacts, webhook: { id: string; name: string }, eventId: string): string {
  return JSON.stringify({
    ...common(f, webhook, eventId, 'job-completed', iso(job.stopped_at)),
    workflow: workflowEntity(f),
    pipeline: pipelineEntity(f),
    job: { id: job.id, number: job.number, name: job.name, status: job.status, started_at: iso(job.started_at), stopped_at: iso(job.stopped_at) },
  });
}

/** The `circleci-signature` header's value: `v1=` and the hex HMAC-SHA256 of the body with the secret. */
export function signatureOf(body: string, secret: string): string {
  return `v1=${createHmac('sha256', secret).update(body, 'utf8').digest('hex')}`;
}

// --- Email and chat ------------------------------------------------------------------------------

/** Why a notification is sent: the workflow failed, or it passed after the last one on its branch failed. */
export type NotificationKind = 'failed' | 'fixed';

/** An email, as sent: text only (nothing a commit message says can become markup). */
export interface EmailMessage {
  readonly subject: string;
  readonly text: string;
}

/** One line, without control characters: a commit subject or branch name may hold anything. */
const oneLine = (text: string, max = 200) => text.replace(/[\u0000-\u001f\u007f\u2028\u2029]+/g, ' ').slice(0, max);

const refOf = (f: WorkflowFacts) => (f.pipeline.branch ? `branch ${f.pipeline.branch}` : f.pipeline.tag ? `tag ${f.pipeline.tag}` : 'no branch');

export function emailOf(kind: NotificationKind, f: WorkflowFacts, failedJobs: readonly string[]): EmailMessage {
  const ref = oneLine(refOf(f));
  const verb = kind === 'failed' ? (f.workflow.status === 'error' ? 'errored' : 'failed') : 'is fixed';
  const subject = oneLine(`[${f.project.slug}] ${kind === 'fixed' ? 'Fixed' : 'Failed'}: workflow ${f.workflow.name} on ${ref} (pipeline ${f.pipeline.number})`, 300);
  const lines = [
    `The workflow ${oneLine(f.workflow.name)} of ${f.project.slug} ${verb} on ${ref}.`,
    kind === 'fixed' ? 'It passed after the previous run of this workflow on the same branch failed.' : '',
    '',
    `Project:  ${f.project.slug}`,
    `Branch:   ${f.pipeline.branch ? oneLine(f.pipeline.branch) : '-'}${f.pipeline.tag ? ` (tag ${oneLine(f.pipeline.tag)})` : ''}`,
    `Workflow: ${oneLine(f.workflow.name)} (${f.workflow.status})`,
    `Pipeline: ${f.pipeline.number}`,
    `Commit:   ${(f.pipeline.revision ?? '').slice(0, 12)} ${oneLine(f.pipeline.commit_subject ?? '')}`,
    ...(failedJobs.length > 0 ? [`Failed jobs: ${failedJobs.map((j) => oneLine(j, 100)).join(', ')}`] : []),
    '',
    f.url,
  ];
  return { subject, text: `${lines.filter((l, i) => l !== '' || i !== 1).join('\n')}\n` };
}

/**
 * Text for Slack's mrkdwn: `&`, `<` and `>` escaped as Slack asks, so a branch or commit subject
 * cannot make a link, a mention (`<!channel>`) or a user ping.
 */
export function slackEscape(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** A Slack-compatible incoming webhook message (Slack, Mattermost, Rocket.Chat take `text`). */
export function slackMessageOf(kind: NotificationKind, f: WorkflowFacts, failedJobs: readonly string[]): { text: string } {
  const e = (s: string) => slackEscape(oneLine(s));
  const icon = kind === 'failed' ? ':red_circle:' : ':large_green_circle:';
  const what = kind === 'failed' ? (f.workflow.status === 'error' ? 'errored' : 'failed') : 'is fixed';
  const ref = f.pipeline.branch ? `branch \`${e(f.pipeline.branch)}\`` : f.pipeline.tag ? `tag \`${e(f.pipeline.tag)}\`` : 'no branch';
  const lines = [
    `${icon} Workflow *${e(f.workflow.name)}* of *${e(f.project.slug)}* ${what} on ${ref} (pipeline ${f.pipeline.number}): <${f.url}|open in Gyre>`,
    `Commit \`${e((f.pipeline.revision ?? '').slice(0, 12))}\` ${e(f.pipeline.commit_subject ?? '')}`,
    ...(failedJobs.length > 0 ? [`Failed jobs: ${failedJobs.map((j) => e(j)).join(', ')}`] : []),
  ];
  return { text: lines.join('\n') };
}
