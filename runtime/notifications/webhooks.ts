import { randomUUID } from 'node:crypto';
import type { Audit } from '../audit/audit-log';
import { ConflictError, InputError, NotFoundError } from '../domain/errors';
import { decodePageToken, encodePageToken, isUuid, type Page } from '../api/read-model';
import type { SealedTable } from '../secrets/rewrap';
import type { SecretBox } from '../secrets/secret-box';
import type { Store } from '../store/store';
import { checkDestinationUrl, DestinationRefused } from './destination';
import { WEBHOOK_EVENTS, type WebhookEvent } from './payloads';
import type { DestinationPolicy } from './settings';
import * as sql from './sql/notifications';

/**
 * A project's outbound webhooks (CircleCI's API v2 `/webhook`) and its email and Slack
 * notifications (Gyre's `/project/{slug}/notifications`), with their delivery logs. The routes
 * (./api-routes.ts) decide who may; this service checks what is asked and makes the change with
 * its audit record in one transaction.
 *
 * Secrets (a webhook's signing secret, the Slack incoming webhook URL) are sealed with the
 * SecretBox as they arrive, bound to their row, and opened only by the notifier's senders. No
 * answer, error or audit record holds one: the API shows `xxxx` (and the last four characters of
 * a secret of 16 or more) for a secret, the host for a Slack URL.
 */

/** The tables whose secrets `rewrapAll` (runtime/secrets/rewrap.ts) moves to a new wrapping key. */
export const NOTIFICATION_TABLES: readonly SealedTable[] = [
  { table: 'webhooks', keyColumns: ['id'] },
  { table: 'project_notifications', keyColumns: ['project_id'] },
];

/** The additional data a signing secret is sealed with: it opens only in its own webhook's row. */
export const webhookSecretAad = (webhookId: string) => `webhook-secret:${webhookId}`;
export const slackAad = (projectId: string) => `slack-url:${projectId}`;

/** Webhooks a project may have (CircleCI's limit). */
export const MAX_WEBHOOKS_PER_PROJECT = 5;
/** Email recipients a project may have. */
export const MAX_EMAIL_RECIPIENTS = 50;
const MAX_SECRET = 1024;
const MAX_NAME = 256;

/** CircleCI's `Webhook`. */
export interface WebhookView {
  readonly id: string;
  readonly scope: { readonly id: string; readonly type: 'project' };
  readonly name: string;
  readonly events: string[];
  readonly url: string;
  readonly 'verify-tls': boolean;
  /** Masked: `xxxx`, with the last four characters of a secret of 16 or more. */
  readonly 'signing-secret': string;
  readonly 'created-at': string;
  readonly 'updated-at': string;
}

export interface WebhookInput {
  readonly name?: string;
  readonly events?: readonly string[];
  readonly url?: string;
  readonly 'verify-tls'?: boolean;
  readonly 'signing-secret'?: string;
}

/** A project's email and Slack notifications, as the API shows them. */
export interface NotificationSettingsView {
  readonly emails: string[];
  readonly on_failed: boolean;
  readonly on_fixed: boolean;
  /** The Slack-compatible incoming webhook, masked to its host (`xxxx@hooks.slack.com`), or null. */
  readonly slack_webhook_url: string | null;
}

export interface NotificationSettingsInput {
  readonly emails?: readonly string[];
  readonly on_failed?: boolean;
  readonly on_fixed?: boolean;
  /** A new URL, or null to remove it; absent keeps it. */
  readonly slack_webhook_url?: string | null;
}

/** One delivery in the log (Gyre's own shape). */
export interface DeliveryView {
  readonly id: string;
  readonly channel: sql.Channel;
  readonly event: string;
  /** The workflow or job the event is about. */
  readonly subject_id: string;
  readonly state: string;
  readonly attempts: number;
  readonly next_attempt_at: string | null;
  readonly last_error: string | null;
  readonly created_at: string;
  readonly finished_at: string | null;
  readonly answers: { attempt: number; at: string; duration_ms: number; status_code: number | null; response: string | null; error: string | null }[];
}

export interface ProjectRef {
  readonly id: string;
  readonly slug: string;
}

export interface Webhooks {
  /** A project by its id (a webhook's scope); NotFoundError('project', id) when there is none. */
  project(id: string): Promise<ProjectRef>;
  create(project: ProjectRef, input: WebhookInput, audit?: Audit): Promise<WebhookView>;
  list(projectId: string, options?: { pageToken?: string }): Promise<Page<WebhookView>>;
  get(id: string): Promise<WebhookView>;
  update(id: string, input: WebhookInput, audit?: Audit): Promise<WebhookView>;
  delete(id: string, audit?: Audit): Promise<void>;
  deliveries(webhookId: string, options?: { pageToken?: string }): Promise<Page<DeliveryView>>;
  /** A project's email and Slack notification settings. */
  settings(projectId: string): Promise<NotificationSettingsView>;
  putSettings(project: ProjectRef, input: NotificationSettingsInput, audit?: Audit): Promise<NotificationSettingsView>;
  /** A project's email and Slack deliveries. */
  notificationDeliveries(projectId: string, options?: { pageToken?: string }): Promise<Page<DeliveryView>>;
}

const iso = (d: Date | string | null) => (d === null ? null : new Date(d).toISOString());

function secretHint(secret: string): string {
  const chars = Array.from(secret);
  return chars.length >= 16 ? `xxxx${chars.slice(-4).join('')}` : 'xxxx';
}

function view(row: sql.WebhookRow): WebhookView {
  return {
    id: row.id,
    scope: { id: row.project_id, type: 'project' },
    name: row.name,
    events: row.events,
    url: row.url,
    'verify-tls': row.verify_tls,
    'signing-secret': row.secret_hint,
    'created-at': iso(row.created_at)!,
    'updated-at': iso(row.updated_at)!,
  };
}

function deliveryView(row: sql.DeliveryLogRow): DeliveryView {
  const answers = (typeof row.attempts === 'string' ? JSON.parse(row.attempts) : row.attempts) as DeliveryView['answers'];
  return {
    id: row.id,
    channel: row.channel,
    event: row.event,
    subject_id: row.subject_id,
    state: row.state,
    attempts: answers.length,
    next_attempt_at: iso(row.next_attempt_at),
    last_error: row.last_error,
    created_at: iso(row.created_at)!,
    finished_at: iso(row.finished_at),
    answers: answers.map((a) => ({ ...a, at: iso(a.at)! })),
  };
}

/** A URL checked against the SSRF rule, as a 400 naming the field. */
function checkUrl(url: string, policy: DestinationPolicy, field: string): URL {
  try {
    return checkDestinationUrl(url, policy, field);
  } catch (error) {
    if (error instanceof DestinationRefused) throw new InputError(error.message, field);
    throw error;
  }
}

function checkName(name: unknown): string {
  if (typeof name !== 'string' || name.trim() === '' || name.length > MAX_NAME) throw new InputError(`name must be 1 to ${MAX_NAME} characters`, 'name');
  return name;
}

function checkEvents(events: unknown): WebhookEvent[] {
  const allowed = WEBHOOK_EVENTS as readonly string[];
  if (!Array.isArray(events) || events.length === 0) throw new InputError(`events must name at least one of ${WEBHOOK_EVENTS.join(', ')}`, 'events');
  for (const e of events) if (!allowed.includes(e)) throw new InputError(`events: '${String(e).slice(0, 100)}' is not an event (allowed: ${WEBHOOK_EVENTS.join(', ')})`, 'events');
  return [...new Set(events as WebhookEvent[])];
}

function checkSecret(secret: unknown): string {
  if (typeof secret !== 'string' || secret.length === 0 || secret.length > MAX_SECRET) {
    throw new InputError(`signing-secret must be 1 to ${MAX_SECRET} characters (deliveries are signed with it; receivers check circleci-signature)`, 'signing-secret');
  }
  return secret;
}

/** An address an email may go to: one mailbox, no display name, nothing that could add a header or another recipient. */
const EMAIL = /^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$/;

function checkEmails(emails: unknown): string[] {
  if (!Array.isArray(emails)) throw new InputError('emails must be a list of addresses', 'emails');
  if (emails.length > MAX_EMAIL_RECIPIENTS) throw new InputError(`emails may hold at most ${MAX_EMAIL_RECIPIENTS} addresses (it holds ${emails.length})`, 'emails');
  for (const e of emails) {
    if (typeof e !== 'string' || e.length > 254 || !EMAIL.test(e)) throw new InputError(`emails: '${String(e).slice(0, 100)}' is not an email address (allowed: one address, name@example.com)`, 'emails');
  }
  return [...new Set(emails as string[])];
}

export function createWebhooks({ store, box, policy }: { store: Store; box: SecretBox; policy: DestinationPolicy }): Webhooks {
  const found = async (id: string, lock = false, db: Pick<Store, 'query'> = store) => {
    const row = isUuid(id) ? await sql.webhookById(db, id, { lock }) : undefined;
    if (!row) throw new NotFoundError('webhook', id);
    return row;
  };
  const sealSecret = async (webhookId: string, secret: string) => {
    const sealed = await box.seal(secret, webhookSecretAad(webhookId));
    return { ciphertext: sealed.ciphertext, iv: sealed.iv, tag: sealed.tag, wrapped_key: sealed.wrappedKey, key_id: sealed.keyId, secret_hint: secretHint(secret) };
  };
  const pageOf = <R, V>(rows: R[], limit: number, map: (r: R) => V, cursor: (r: R) => Record<string, unknown>): Page<V> => ({
    items: rows.slice(0, limit).map(map),
    next_page_token: rows.length > limit ? encodePageToken(cursor(rows[limit - 1])) : null,
  });
  const cursorOf = (token?: string) =>
    decodePageToken<{ at: string; id: string }>(token, (c) => typeof c.at === 'string' && c.at.length < 40 && !Number.isNaN(Date.parse(c.at)) && typeof c.id === 'string' && isUuid(c.id));
  const settingsView = (row: sql.NotificationSettingsRow | undefined): NotificationSettingsView => ({
    emails: row?.emails ?? [],
    on_failed: row?.on_failed ?? true,
    on_fixed: row?.on_fixed ?? true,
    slack_webhook_url: row?.slack_hint ? `xxxx@${row.slack_hint}` : null,
  });

  return {
    async project(id) {
      const project = isUuid(id) ? await sql.projectRef(store, id) : undefined;
      if (!project) throw new NotFoundError('project', id);
      return project;
    },

    async create(project, input, audit) {
      const name = checkName(input.name);
      const events = checkEvents(input.events);
      const url = checkUrl(String(input.url ?? ''), policy, 'url');
      const secret = checkSecret(input['signing-secret']);
      const id = randomUUID();
      const sealed = await sealSecret(id, secret);
      return store.transaction(async (tx) => {
        await tx.query('SELECT id FROM projects WHERE id = $1 FOR UPDATE', [project.id]);
        if ((await sql.countWebhooks(tx, project.id)) >= MAX_WEBHOOKS_PER_PROJECT) {
          throw new ConflictError(`project ${project.slug} already has ${MAX_WEBHOOKS_PER_PROJECT} webhooks, the most a project may have; delete one first`);
        }
        const row = await sql.insertWebhook(tx, { id, project_id: project.id, name, url: url.toString(), verify_tls: input['verify-tls'] !== false, events, ...sealed });
        await audit?.record(tx, { target: { type: 'webhook', id }, project: project.slug, detail: { name, events, host: url.host } });
        return view(row);
      });
    },

    async list(projectId, options = {}) {
      const after = cursorOf(options.pageToken);
      const limit = 20;
      return pageOf(await sql.webhooksOfProject(store, projectId, limit + 1, after), limit, view, (r) => ({ at: iso(r.created_at), id: r.id }));
    },

    async get(id) {
      return view(await found(id));
    },

    async update(id, input, audit) {
      const current = await found(id);
      const name = input.name === undefined ? current.name : checkName(input.name);
      const events = input.events === undefined ? current.events : checkEvents(input.events);
      const url = input.url === undefined ? current.url : checkUrl(input.url, policy, 'url').toString();
      const secret = input['signing-secret'] === undefined ? undefined : await sealSecret(id, checkSecret(input['signing-secret']));
      return store.transaction(async (tx) => {
        const held = await found(id, true, tx);
        const row = await sql.updateWebhook(tx, id, { name, url, verify_tls: input['verify-tls'] ?? held.verify_tls, events, secret });
        await audit?.record(tx, { target: { type: 'webhook', id }, detail: { name, events, host: new URL(url).host, secret_changed: secret !== undefined } });
        return view(row);
      });
    },

    async delete(id, audit) {
      await store.transaction(async (tx) => {
        await found(id, true, tx);
        await sql.deleteWebhook(tx, id);
        await audit?.record(tx, { target: { type: 'webhook', id } });
      });
    },

    async deliveries(webhookId, options = {}) {
      await found(webhookId);
      const limit = 50;
      const rows = await sql.deliveryLog(store, { webhookId }, limit + 1, cursorOf(options.pageToken));
      return pageOf(rows, limit, deliveryView, (r) => ({ at: iso(r.created_at), id: r.id }));
    },

    async settings(projectId) {
      return settingsView(await sql.notificationSettingsOf(store, projectId));
    },

    async putSettings(project, input, audit) {
      const emails = input.emails === undefined ? undefined : checkEmails(input.emails);
      let slack: Parameters<typeof sql.putNotificationSettings>[2]['slack'];
      if (input.slack_webhook_url === null || input.slack_webhook_url === '') slack = null;
      else if (input.slack_webhook_url !== undefined) {
        const url = checkUrl(input.slack_webhook_url, policy, 'slack_webhook_url');
        const sealed = await box.seal(url.toString(), slackAad(project.id));
        slack = { ciphertext: sealed.ciphertext, iv: sealed.iv, tag: sealed.tag, wrapped_key: sealed.wrappedKey, key_id: sealed.keyId, slack_hint: url.host };
      }
      return store.transaction(async (tx) => {
        await tx.query('SELECT id FROM projects WHERE id = $1 FOR UPDATE', [project.id]);
        const current = await sql.notificationSettingsOf(tx, project.id);
        const row = await sql.putNotificationSettings(tx, project.id, {
          emails: emails ?? current?.emails ?? [],
          on_failed: input.on_failed ?? current?.on_failed ?? true,
          on_fixed: input.on_fixed ?? current?.on_fixed ?? true,
          slack,
        });
        await audit?.record(tx, {
          target: { type: 'project', id: project.id },
          project: project.slug,
          detail: { emails: row.emails.length, on_failed: row.on_failed, on_fixed: row.on_fixed, slack: slack === undefined ? 'kept' : slack === null ? 'removed' : `set (${slack.slack_hint})` },
        });
        return settingsView(row);
      });
    },

    async notificationDeliveries(projectId, options = {}) {
      const limit = 50;
      const rows = await sql.deliveryLog(store, { projectId }, limit + 1, cursorOf(options.pageToken));
      return pageOf(rows, limit, deliveryView, (r) => ({ at: iso(r.created_at), id: r.id }));
    },
  };
}
