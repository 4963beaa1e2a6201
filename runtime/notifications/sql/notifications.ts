import type { Queryable } from '../../store/store';
import type { JobFacts, WorkflowFacts } from '../payloads';

/** The notifier's statements (610_notifications.sql), each one statement on the caller's connection or transaction. */

/** The five sealed columns of a row, as selected. */
export interface SealedColumns {
  ciphertext: Buffer;
  iv: Buffer;
  tag: Buffer;
  wrapped_key: Buffer;
  key_id: string;
}

export interface WebhookRow extends SealedColumns {
  id: string;
  project_id: string;
  name: string;
  url: string;
  verify_tls: boolean;
  events: string[];
  secret_hint: string;
  created_at: Date;
  updated_at: Date;
}

const WEBHOOK_COLUMNS = 'id, project_id, name, url, verify_tls, events, secret_hint, ciphertext, iv, tag, wrapped_key, key_id, created_at, updated_at';

export async function insertWebhook(tx: Queryable, row: Omit<WebhookRow, 'created_at' | 'updated_at'>): Promise<WebhookRow> {
  const [made] = await tx.query<WebhookRow>(
    `INSERT INTO webhooks (id, project_id, name, url, verify_tls, events, secret_hint, ciphertext, iv, tag, wrapped_key, key_id)
     VALUES ($1, $2, $3, $4, $5, $6::text[], $7, $8, $9, $10, $11, $12) RETURNING ${WEBHOOK_COLUMNS}`,
    [row.id, row.project_id, row.name, row.url, row.verify_tls, row.events, row.secret_hint, row.ciphertext, row.iv, row.tag, row.wrapped_key, row.key_id],
  );
  return made;
}

export async function webhookById(db: Queryable, id: string, options: { lock?: boolean } = {}): Promise<WebhookRow | undefined> {
  const [row] = await db.query<WebhookRow>(`SELECT ${WEBHOOK_COLUMNS} FROM webhooks WHERE id = $1${options.lock ? ' FOR UPDATE' : ''}`, [id]);
  return row;
}

/** A project's webhooks, oldest first, after `after` (created_at, id) when paging. */
export function webhooksOfProject(db: Queryable, projectId: string, limit: number, after?: { at: string; id: string }): Promise<WebhookRow[]> {
  return db.query<WebhookRow>(
    `SELECT ${WEBHOOK_COLUMNS} FROM webhooks WHERE project_id = $1 AND ($2::timestamptz IS NULL OR (created_at, id) > ($2::timestamptz, $3::uuid))
      ORDER BY created_at, id LIMIT $4`,
    [projectId, after?.at ?? null, after?.id ?? null, limit],
  );
}

export async function countWebhooks(db: Queryable, projectId: string): Promise<number> {
  const [{ n }] = await db.query<{ n: number | string }>('SELECT count(*) AS n FROM webhooks WHERE project_id = $1', [projectId]);
  return Number(n);
}

export async function updateWebhook(
  tx: Queryable,
  id: string,
  change: { name: string; url: string; verify_tls: boolean; events: string[]; secret?: SealedColumns & { secret_hint: string } },
): Promise<WebhookRow> {
  const s = change.secret;
  const [row] = await tx.query<WebhookRow>(
    `UPDATE webhooks SET name = $2, url = $3, verify_tls = $4, events = $5::text[], updated_at = now(),
            secret_hint = COALESCE($6, secret_hint), ciphertext = COALESCE($7, ciphertext), iv = COALESCE($8, iv), tag = COALESCE($9, tag),
            wrapped_key = COALESCE($10, wrapped_key), key_id = COALESCE($11, key_id)
      WHERE id = $1 RETURNING ${WEBHOOK_COLUMNS}`,
    [id, change.name, change.url, change.verify_tls, change.events, s?.secret_hint ?? null, s?.ciphertext ?? null, s?.iv ?? null, s?.tag ?? null, s?.wrapped_key ?? null, s?.key_id ?? null],
  );
  return row;
}

export async function deleteWebhook(tx: Queryable, id: string): Promise<boolean> {
  return (await tx.query('DELETE FROM webhooks WHERE id = $1 RETURNING id', [id])).length > 0;
}

// --- Project notification settings ---------------------------------------------------------------

export interface NotificationSettingsRow extends Partial<SealedColumns> {
  project_id: string;
  emails: string[];
  on_failed: boolean;
  on_fixed: boolean;
  slack_hint: string | null;
  updated_at: Date;
}

export async function notificationSettingsOf(db: Queryable, projectId: string): Promise<NotificationSettingsRow | undefined> {
  const [row] = await db.query<NotificationSettingsRow>(
    'SELECT project_id, emails, on_failed, on_fixed, slack_hint, ciphertext, iv, tag, wrapped_key, key_id, updated_at FROM project_notifications WHERE project_id = $1',
    [projectId],
  );
  return row;
}

/** Writes a project's settings; `slack`: undefined keeps the URL, null removes it. */
export async function putNotificationSettings(
  tx: Queryable,
  projectId: string,
  settings: { emails: string[]; on_failed: boolean; on_fixed: boolean; slack?: (SealedColumns & { slack_hint: string }) | null },
): Promise<NotificationSettingsRow> {
  const keep = settings.slack === undefined;
  const s = settings.slack ?? null;
  const [row] = await tx.query<NotificationSettingsRow>(
    `INSERT INTO project_notifications AS n (project_id, emails, on_failed, on_fixed, slack_hint, ciphertext, iv, tag, wrapped_key, key_id)
     VALUES ($1, $2::text[], $3, $4, $5, $6, $7, $8, $9, $10)
     ON CONFLICT (project_id) DO UPDATE SET emails = $2::text[], on_failed = $3, on_fixed = $4, updated_at = now(),
       slack_hint = CASE WHEN $11 THEN n.slack_hint ELSE $5 END, ciphertext = CASE WHEN $11 THEN n.ciphertext ELSE $6 END,
       iv = CASE WHEN $11 THEN n.iv ELSE $7 END, tag = CASE WHEN $11 THEN n.tag ELSE $8 END,
       wrapped_key = CASE WHEN $11 THEN n.wrapped_key ELSE $9 END, key_id = CASE WHEN $11 THEN n.key_id ELSE $10 END
     RETURNING project_id, emails, on_failed, on_fixed, slack_hint, ciphertext, iv, tag, wrapped_key, key_id, updated_at`,
    [projectId, settings.emails, settings.on_failed, settings.on_fixed, s?.slack_hint ?? null, s?.ciphertext ?? null, s?.iv ?? null, s?.tag ?? null, s?.wrapped_key ?? null, s?.key_id ?? null, keep],
  );
  return row;
}

// --- Facts of ended workflows and jobs ------------------------------------------------------------

interface FactsRow {
  workflow_id: string;
  workflow_name: string;
  workflow_status: string;
  workflow_created_at: Date;
  workflow_stopped_at: Date | null;
  pipeline_id: string;
  pipeline_number: number;
  pipeline_created_at: Date;
  trigger_type: string;
  branch: string | null;
  tag: string | null;
  revision: string | null;
  commit_subject: string | null;
  project_id: string;
  slug: string;
  project_name: string;
  repo_url: string;
  org_id: string | null;
  org_name: string;
}

/** What a workflow's notices are made of; undefined for a workflow that is gone. `url` is the UI's page. */
export async function workflowFacts(db: Queryable, workflowId: string, urlOf: (pipelineId: string, workflowId: string) => string): Promise<WorkflowFacts | undefined> {
  const [r] = await db.query<FactsRow>(
    `SELECT w.id AS workflow_id, w.name AS workflow_name, w.status AS workflow_status, w.created_at AS workflow_created_at, w.stopped_at AS workflow_stopped_at,
            p.id AS pipeline_id, p.number AS pipeline_number, p.created_at AS pipeline_created_at, p.trigger_type, p.branch, p.tag, p.revision, p.commit_subject,
            pr.id AS project_id, pr.slug, pr.name AS project_name, pr.repo_url, o.id AS org_id, pr.org AS org_name
       FROM workflows w JOIN pipelines p ON p.id = w.pipeline_id JOIN projects pr ON pr.id = p.project_id
       LEFT JOIN organizations o ON o.name = pr.org
      WHERE w.id = $1`,
    [workflowId],
  );
  if (!r) return undefined;
  const iso = (d: Date | null) => (d ? new Date(d).toISOString() : null);
  return {
    workflow: { id: r.workflow_id, name: r.workflow_name, status: r.workflow_status, created_at: iso(r.workflow_created_at)!, stopped_at: iso(r.workflow_stopped_at) },
    pipeline: {
      id: r.pipeline_id,
      number: r.pipeline_number,
      created_at: iso(r.pipeline_created_at)!,
      trigger_type: r.trigger_type,
      branch: r.branch,
      tag: r.tag,
      revision: r.revision,
      commit_subject: r.commit_subject,
    },
    project: { id: r.project_id, slug: r.slug, name: r.project_name, repo_url: r.repo_url },
    // Every organisation has its row since 450_identity; the project's id stands in should one not.
    organization: { id: r.org_id ?? r.project_id, name: r.org_name },
    url: urlOf(r.pipeline_id, r.workflow_id),
  };
}

/** What a project wants to hear when one of its workflows advances or ends (workflowListenersOf). */
export interface WorkflowListeners {
  readonly projectId: string;
  /** The project's webhooks on any of the events asked about, oldest first, each with those of the events it is on. */
  readonly webhooks: { id: string; name: string; events: string[] }[];
  /** The project's email and Slack settings, when it has any: what decides whether they are sent. */
  readonly settings?: { emails: string[]; on_failed: boolean; on_fixed: boolean; key_id: string | null };
}

/**
 * A workflow's project, its webhooks on any of `events` and its notification settings, in one
 * query (the conductor asks on every advance of every workflow, and when one ends; nearly always
 * the answer is none).
 */
export async function workflowListenersOf(db: Queryable, workflowId: string, events: readonly string[]): Promise<WorkflowListeners | undefined> {
  const [row] = await db.query<{ project_id: string; webhooks: { id: string; name: string; events: string[] }[]; has_settings: boolean; emails: string[] | null; on_failed: boolean | null; on_fixed: boolean | null; key_id: string | null }>(
    `SELECT p.project_id,
            coalesce((SELECT json_agg(json_build_object('id', wh.id, 'name', wh.name,
                                      'events', (SELECT array_agg(e) FROM unnest(wh.events) e WHERE e = ANY($2::text[]))) ORDER BY wh.created_at, wh.id)
                        FROM webhooks wh WHERE wh.project_id = p.project_id AND wh.events && $2::text[]), '[]'::json) AS webhooks,
            n.project_id IS NOT NULL AS has_settings, n.emails, n.on_failed, n.on_fixed, n.key_id
       FROM workflows w JOIN pipelines p ON p.id = w.pipeline_id
       LEFT JOIN project_notifications n ON n.project_id = p.project_id
      WHERE w.id = $1`,
    [workflowId, events],
  );
  if (!row) return undefined;
  return {
    projectId: row.project_id,
    webhooks: row.webhooks,
    ...(row.has_settings ? { settings: { emails: row.emails ?? [], on_failed: row.on_failed === true, on_fixed: row.on_fixed === true, key_id: row.key_id } } : {}),
  };
}

/**
 * The jobs of a workflow that ran and have ended: not the ones that never started (left behind
 * by a failed requirement, canceled while waiting), approvals, or jobs a rerun copied with their
 * result (they were announced when they ran).
 */
export function endedJobs(db: Queryable, workflowId: string, terminal: readonly string[]): Promise<JobFacts[]> {
  return db.query<JobFacts>(
    `SELECT id, number, name, status, started_at, stopped_at FROM jobs
      WHERE workflow_id = $1 AND status = ANY($2::text[]) AND started_at IS NOT NULL AND copied_from IS NULL AND type <> 'approval'
      ORDER BY position`,
    [workflowId, [...terminal]],
  );
}

/** The names of a workflow's failed jobs (for the notification's text). */
export async function failedJobNames(db: Queryable, workflowId: string): Promise<string[]> {
  const rows = await db.query<{ name: string }>(
    `SELECT name FROM jobs WHERE workflow_id = $1 AND status IN ('failed', 'infrastructure_fail', 'timedout', 'terminated-unknown', 'unauthorized') ORDER BY position LIMIT 20`,
    [workflowId],
  );
  return rows.map((r) => r.name);
}

/**
 * The status of the workflow of the same name that ended last before this one on the same branch
 * of the project (success, failed or error; canceled and not-run workflows say nothing about the
 * code), or undefined when there is none.
 */
export async function previousOutcome(db: Queryable, f: WorkflowFacts): Promise<string | undefined> {
  if (!f.pipeline.branch) return undefined;
  const [row] = await db.query<{ status: string }>(
    `SELECT w.status FROM workflows w JOIN pipelines p ON p.id = w.pipeline_id
      WHERE p.project_id = $1 AND p.branch = $2 AND w.name = $3 AND w.id <> $4 AND w.status IN ('success', 'failed', 'error') AND w.stopped_at IS NOT NULL
      ORDER BY w.stopped_at DESC, w.created_at DESC LIMIT 1`,
    [f.project.id, f.pipeline.branch, f.workflow.name, f.workflow.id],
  );
  return row?.status;
}

// --- Deliveries and their attempts ----------------------------------------------------------------

export type Channel = 'webhook' | 'email' | 'slack';

/** Which deliveries of these subjects a receiver already has (a job's end is announced once). */
export async function deliveredSubjects(db: Queryable, channel: Channel, targetIds: readonly string[], event: string, subjectIds: readonly string[]): Promise<Set<string>> {
  if (targetIds.length === 0 || subjectIds.length === 0) return new Set();
  const rows = await db.query<{ target_id: string; subject_id: string }>(
    'SELECT target_id, subject_id FROM notification_deliveries WHERE channel = $1 AND target_id = ANY($2::uuid[]) AND event = $3 AND subject_id = ANY($4::uuid[])',
    [channel, [...targetIds], event, [...subjectIds]],
  );
  return new Set(rows.map((r) => `${r.target_id}/${r.subject_id}`));
}

/** A new delivery; false when the receiver already has one for this event and subject. */
export async function insertDelivery(
  tx: Queryable,
  row: { id: string; project_id: string; webhook_id: string | null; channel: Channel; target_id: string; event: string; subject_id: string; body: string },
): Promise<boolean> {
  const made = await tx.query(
    `INSERT INTO notification_deliveries (id, project_id, webhook_id, channel, target_id, event, subject_id, body)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (channel, target_id, event, subject_id) DO NOTHING RETURNING id`,
    [row.id, row.project_id, row.webhook_id, row.channel, row.target_id, row.event, row.subject_id, row.body],
  );
  return made.length > 0;
}

export async function setOutboxOf(tx: Queryable, deliveryId: string, outboxId: string): Promise<void> {
  await tx.query('UPDATE notification_deliveries SET outbox_id = $2 WHERE id = $1', [deliveryId, outboxId]);
}

export interface DeliveryRow {
  id: string;
  project_id: string;
  webhook_id: string | null;
  channel: Channel;
  event: string;
  subject_id: string;
  body: string;
  state: string;
}

export async function deliveryById(db: Queryable, id: string): Promise<DeliveryRow | undefined> {
  const [row] = await db.query<DeliveryRow>('SELECT id, project_id, webhook_id, channel, event, subject_id, body, state FROM notification_deliveries WHERE id = $1', [id]);
  return row;
}

export async function recordAttempt(
  db: Queryable,
  attempt: { delivery_id: string; attempt: number; duration_ms: number; status_code?: number; response?: string; error?: string },
): Promise<void> {
  await db.query(
    `INSERT INTO notification_attempts (delivery_id, attempt, duration_ms, status_code, response, error) VALUES ($1, $2, $3, $4, $5, $6)
     ON CONFLICT (delivery_id, attempt) DO UPDATE SET at = now(), duration_ms = $3, status_code = $4, response = $5, error = $6`,
    [attempt.delivery_id, attempt.attempt, attempt.duration_ms, attempt.status_code ?? null, attempt.response?.slice(0, 500) ?? null, attempt.error?.slice(0, 1000) ?? null],
  );
}

/** Ends a delivery as the outbox ended it. */
export async function finishDeliveryRow(db: Queryable, id: string, state: 'delivered' | 'skipped' | 'failed', error?: string): Promise<void> {
  await db.query(`UPDATE notification_deliveries SET state = $2, last_error = $3, finished_at = now() WHERE id = $1 AND state = 'pending'`, [id, state, error?.slice(0, 1000) ?? null]);
}

export interface DeliveryLogRow {
  id: string;
  channel: Channel;
  event: string;
  subject_id: string;
  webhook_id: string | null;
  state: string;
  last_error: string | null;
  created_at: Date;
  finished_at: Date | null;
  next_attempt_at: Date | null;
  attempts: { attempt: number; at: string; duration_ms: number; status_code: number | null; response: string | null; error: string | null }[];
}

/**
 * A page of the delivery log, newest first: a webhook's deliveries or a project's email and
 * Slack ones, each with its attempts and, while pending, when the next is due (from the outbox).
 */
export function deliveryLog(db: Queryable, of: { webhookId: string } | { projectId: string }, limit: number, before?: { at: string; id: string }): Promise<DeliveryLogRow[]> {
  const byWebhook = 'webhookId' in of;
  return db.query<DeliveryLogRow>(
    `SELECT d.id, d.channel, d.event, d.subject_id, d.webhook_id, d.state, d.last_error, d.created_at, d.finished_at,
            CASE WHEN d.state = 'pending' AND o.state = 'pending' THEN o.next_attempt_at END AS next_attempt_at,
            COALESCE((SELECT json_agg(json_build_object('attempt', a.attempt, 'at', a.at, 'duration_ms', a.duration_ms, 'status_code', a.status_code, 'response', a.response, 'error', a.error) ORDER BY a.attempt)
                        FROM notification_attempts a WHERE a.delivery_id = d.id), '[]'::json) AS attempts
       FROM notification_deliveries d LEFT JOIN outbox o ON o.id = d.outbox_id
      WHERE ${byWebhook ? 'd.webhook_id = $1' : "d.project_id = $1 AND d.channel IN ('email', 'slack')"}
        AND ($2::timestamptz IS NULL OR (d.created_at, d.id) < ($2::timestamptz, $3::uuid))
      ORDER BY d.created_at DESC, d.id DESC LIMIT $4`,
    [byWebhook ? of.webhookId : of.projectId, before?.at ?? null, before?.id ?? null, limit],
  );
}

/** Deletes finished deliveries (and their attempts) older than `days`; answers how many. */
export async function sweepDeliveries(db: Queryable, days: number): Promise<number> {
  const rows = await db.query(`DELETE FROM notification_deliveries WHERE state <> 'pending' AND finished_at < now() - make_interval(days => $1) RETURNING id`, [days]);
  return rows.length;
}

/** A project's id and slug by its id. */
export async function projectRef(db: Queryable, id: string): Promise<{ id: string; slug: string } | undefined> {
  const [row] = await db.query<{ id: string; slug: string }>('SELECT id, slug FROM projects WHERE id = $1', [id]);
  return row;
}
