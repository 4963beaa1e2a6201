import { randomUUID } from 'node:crypto';
import type { JobsListener, WorkflowListener } from '../conductor/conductor';
import { TERMINAL_JOB_STATUSES } from '../domain/model';
import { enqueue } from '../outbox/outbox';
import type { Queryable } from '../store/store';
import { emailOf, jobCompletedBody, slackMessageOf, workflowCompletedBody, type NotificationKind, type WorkflowFacts } from './payloads';
import * as sql from './sql/notifications';

/**
 * The enqueue side of the notifier: told by the conductor, in the transaction that ends a workflow
 * or a job, it writes what is to be sent (a `notification_deliveries` row with the exact body, and
 * the outbox row that sends it) in that same transaction (DESIGN.md, "Effects leave through an
 * outbox"). A rolled-back end sends nothing; a committed one is never lost. It calls nothing
 * outside the process: the notifier role's sender (./senders.ts) does that.
 */

/** Outbox kinds, one per channel. */
export const WEBHOOK_KIND = 'webhook';
export const EMAIL_KIND = 'notification-email';
export const SLACK_KIND = 'notification-slack';

/** An outbox payload of the notifier's kinds: the delivery row holds the rest. */
export interface NotifierPayload {
  readonly delivery_id: string;
}

const KIND_OF: Record<sql.Channel, string> = { webhook: WEBHOOK_KIND, email: EMAIL_KIND, slack: SLACK_KIND };

async function enqueueDelivery(tx: Queryable, row: Parameters<typeof sql.insertDelivery>[1]): Promise<void> {
  // The unique (channel, target, event, subject) makes a second announcement of the same end a no-op.
  if (!(await sql.insertDelivery(tx, row))) return;
  const outboxId = await enqueue(tx, KIND_OF[row.channel], { delivery_id: row.id } satisfies NotifierPayload);
  await sql.setOutboxOf(tx, row.id, outboxId);
}

/** Which notification an ended workflow calls for, if any. */
export function notificationKindOf(status: string, previous: string | undefined, settings: { on_failed: boolean; on_fixed: boolean }): NotificationKind | undefined {
  if ((status === 'failed' || status === 'error') && settings.on_failed) return 'failed';
  if (status === 'success' && settings.on_fixed && (previous === 'failed' || previous === 'error')) return 'fixed';
  return undefined;
}

export interface NotifierEvents {
  /** The conductor's workflow listener: `workflow-completed` webhooks, and email and Slack on failed and fixed. */
  readonly onWorkflow: WorkflowListener;
  /** The conductor's jobs listener: `job-completed` webhooks for the jobs of a workflow that have ended. */
  readonly onJobsEnded: JobsListener;
}

/** The events the conductor's listeners below look up webhooks for. */
const WORKFLOW_EVENTS = ['job-completed', 'workflow-completed'] as const;

export function createNotifierEvents({ webUrl }: { webUrl: (pipelineId: string, workflowId: string) => string }): NotifierEvents {
  /**
   * The listeners of a workflow, looked up once per transaction: the conductor tells both
   * listeners below in the one transaction that advances a workflow and ends it (jobs ended, then
   * the workflow), and each look-up is a statement on the way of every pipeline. Keyed by the
   * transaction (each store hands out a new one per transaction: the entry goes with it).
   */
  const looked = new WeakMap<Queryable, Map<string, Promise<sql.WorkflowListeners | undefined>>>();
  const listenersOf = async (tx: Queryable, workflowId: string, event: (typeof WORKFLOW_EVENTS)[number]): Promise<sql.WorkflowListeners | undefined> => {
    let ofTx = looked.get(tx);
    if (!ofTx) looked.set(tx, (ofTx = new Map()));
    let found = ofTx.get(workflowId);
    if (!found) ofTx.set(workflowId, (found = sql.workflowListenersOf(tx, workflowId, WORKFLOW_EVENTS)));
    const listeners = await found;
    return listeners && { ...listeners, webhooks: listeners.webhooks.filter((webhook) => webhook.events.includes(event)) };
  };

  const onWorkflow: WorkflowListener = async (tx, { workflowId, ended }) => {
    if (!ended) return;
    // One query when nothing is wanted (no webhook on the event, no email or Slack set up).
    const listeners = await listenersOf(tx, workflowId, 'workflow-completed');
    const settings = listeners?.settings && (listeners.settings.emails.length > 0 || listeners.settings.key_id) ? listeners.settings : undefined;
    if (!listeners || (listeners.webhooks.length === 0 && !settings)) return;
    const facts = await sql.workflowFacts(tx, workflowId, webUrl);
    if (!facts) return;
    for (const webhook of listeners.webhooks) {
      const id = randomUUID();
      await enqueueDelivery(tx, {
        id,
        project_id: facts.project.id,
        webhook_id: webhook.id,
        channel: 'webhook',
        target_id: webhook.id,
        event: 'workflow-completed',
        subject_id: workflowId,
        body: workflowCompletedBody(facts, webhook, id),
      });
    }
    if (settings) await notify(tx, facts, settings);
  };

  /** Email and Slack, when the project has them and the workflow failed or is fixed. */
  async function notify(tx: Queryable, facts: WorkflowFacts, settings: NonNullable<sql.WorkflowListeners['settings']>): Promise<void> {
    const previous = facts.workflow.status === 'success' ? await sql.previousOutcome(tx, facts) : undefined;
    const kind = notificationKindOf(facts.workflow.status, previous, settings);
    if (!kind) return;
    const failedJobs = kind === 'failed' ? await sql.failedJobNames(tx, facts.workflow.id) : [];
    const base = { project_id: facts.project.id, webhook_id: null, target_id: facts.project.id, event: `workflow-${kind}`, subject_id: facts.workflow.id };
    if (settings.emails.length > 0) {
      const message = emailOf(kind, facts, failedJobs);
      await enqueueDelivery(tx, { ...base, id: randomUUID(), channel: 'email', body: JSON.stringify({ to: settings.emails, ...message }) });
    }
    if (settings.key_id) {
      await enqueueDelivery(tx, { ...base, id: randomUUID(), channel: 'slack', body: JSON.stringify(slackMessageOf(kind, facts, failedJobs)) });
    }
  }

  const onJobsEnded: JobsListener = async (tx, { workflowId }) => {
    // Cheap when no webhook wants jobs: one indexed look-up per advance of the workflow.
    const found = await listenersOf(tx, workflowId, 'job-completed');
    if (!found || found.webhooks.length === 0) return;
    const { projectId, webhooks } = found;
    const jobs = await sql.endedJobs(tx, workflowId, TERMINAL_JOB_STATUSES);
    if (jobs.length === 0) return;
    const have = await sql.deliveredSubjects(
      tx,
      'webhook',
      webhooks.map((w) => w.id),
      'job-completed',
      jobs.map((j) => j.id),
    );
    const due = webhooks.flatMap((webhook) => jobs.filter((job) => !have.has(`${webhook.id}/${job.id}`)).map((job) => ({ webhook, job })));
    if (due.length === 0) return;
    const facts = await sql.workflowFacts(tx, workflowId, webUrl);
    if (!facts) return;
    for (const { webhook, job } of due) {
      const id = randomUUID();
      await enqueueDelivery(tx, { id, project_id: projectId, webhook_id: webhook.id, channel: 'webhook', target_id: webhook.id, event: 'job-completed', subject_id: job.id, body: jobCompletedBody(facts, job, webhook, id) });
    }
  };

  return { onWorkflow, onJobsEnded };
}
