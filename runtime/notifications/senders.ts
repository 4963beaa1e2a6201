import type { Transporter } from 'nodemailer';
import type { Logger } from '../logger';
import { DeliveryRefused, type OutboxHandler } from '../outbox/outbox';
import type { SecretBox } from '../secrets/secret-box';
import type { Store } from '../store/store';
import { excerptOf, postToDestination, type PostOptions } from './destination';
import { EMAIL_KIND, SLACK_KIND, WEBHOOK_KIND, type NotifierPayload } from './events';
import { signatureOf } from './payloads';
import type { NotificationSettings } from './settings';
import * as sql from './sql/notifications';
import { slackAad, webhookSecretAad } from './webhooks';

/**
 * The send side of the notifier (the `notifier` role's outbox sender runs these handlers): each
 * reads its delivery row, opens the secret it needs (a webhook's signing secret, the Slack URL) at
 * the moment of sending, sends, and records the attempt and the receiver's answer in the delivery
 * log. Any answer but a 2xx is tried again with the outbox's backoff (as CircleCI retries); a
 * destination the SSRF rule refuses and an SMTP 5xx are final.
 */

const USER_AGENT = 'Gyre-Webhook/1.0 (+CircleCI-compatible)';

/** A receiver's answer other than 2xx: tried again later. */
class NotAccepted extends Error {}

export interface SenderDeps {
  readonly store: Store;
  readonly box: SecretBox;
  readonly settings: NotificationSettings;
  readonly log: Logger;
  /** For tests: the DNS used to resolve receivers. */
  readonly resolve?: PostOptions['resolve'];
}

export interface NotifierSenders {
  readonly handlers: Readonly<Record<string, OutboxHandler<NotifierPayload>>>;
  close(): void;
}

const sealedOf = (row: sql.SealedColumns) => ({ ciphertext: row.ciphertext, iv: row.iv, tag: row.tag, wrappedKey: row.wrapped_key, keyId: row.key_id });

export function createNotifierSenders({ store, box, settings, resolve }: SenderDeps): NotifierSenders {
  let mailer: Transporter | undefined;
  // nodemailer is loaded with the first mail: most installs send none.
  const mailerOf = () => (mailer ??= (require('nodemailer') as typeof import('nodemailer')).createTransport(settings.smtp!.url));

  /** Records what a failed attempt met, then throws it on for the outbox to retry or give up. */
  async function attemptFailed(deliveryId: string, attempt: number, started: number, error: unknown, answer?: { status?: number; response?: string }): Promise<never> {
    const message = String((error as Error)?.message ?? error);
    await sql.recordAttempt(store, { delivery_id: deliveryId, attempt, duration_ms: Date.now() - started, status_code: answer?.status, response: answer?.response, error: message });
    throw error;
  }

  /** Posts JSON to a destination and records the answer; a non-2xx throws NotAccepted. */
  async function post(delivery: sql.DeliveryRow, attempt: number, url: string, headers: Record<string, string>, verifyTls: boolean): Promise<void> {
    const started = Date.now();
    let answer;
    try {
      answer = await postToDestination(url, { body: delivery.body, headers: { 'User-Agent': USER_AGENT, ...headers }, policy: settings.destinations, verifyTls, resolve });
    } catch (error) {
      return attemptFailed(delivery.id, attempt, started, error);
    }
    if (answer.status < 200 || answer.status >= 300) {
      return attemptFailed(delivery.id, attempt, started, new NotAccepted(`the receiver answered HTTP ${answer.status}`), { status: answer.status, response: answer.excerpt });
    }
    await sql.recordAttempt(store, { delivery_id: delivery.id, attempt, duration_ms: answer.durationMs, status_code: answer.status, response: answer.excerpt });
    await sql.finishDeliveryRow(store, delivery.id, 'delivered');
  }

  /** The delivery a payload names; undefined when it is gone (its webhook or project was deleted). */
  const deliveryOf = (payload: NotifierPayload) => sql.deliveryById(store, payload.delivery_id);

  /** Shared by every kind: a delivery that fails for good says so in the log. */
  const failed: OutboxHandler<NotifierPayload>['failed'] = async (tx, { payload }, reason) => {
    await sql.finishDeliveryRow(tx, payload.delivery_id, 'failed', reason);
  };
  const skipped = async (deliveryId: string, why: string) => {
    await sql.finishDeliveryRow(store, deliveryId, 'skipped', why);
    return { skipped: why };
  };

  const webhook: OutboxHandler<NotifierPayload> = {
    async deliver({ payload, attempt }) {
      const delivery = await deliveryOf(payload);
      if (!delivery) return { skipped: 'the delivery is gone (its webhook or project was deleted)' };
      const row = delivery.webhook_id ? await sql.webhookById(store, delivery.webhook_id) : undefined;
      if (!row) return skipped(delivery.id, 'the webhook was deleted');
      const secret = await box.open(sealedOf(row), webhookSecretAad(row.id));
      await post(delivery, attempt, row.url, { 'circleci-event-type': delivery.event, 'circleci-signature': signatureOf(delivery.body, secret) }, row.verify_tls);
      return undefined;
    },
    failed,
  };

  const slack: OutboxHandler<NotifierPayload> = {
    async deliver({ payload, attempt }) {
      const delivery = await deliveryOf(payload);
      if (!delivery) return { skipped: 'the delivery is gone (its project was deleted)' };
      const row = await sql.notificationSettingsOf(store, delivery.project_id);
      if (!row?.key_id) return skipped(delivery.id, 'the project no longer has a Slack webhook');
      const url = await box.open(sealedOf(row as sql.SealedColumns), slackAad(delivery.project_id));
      await post(delivery, attempt, url, {}, true);
      return undefined;
    },
    failed,
  };

  const email: OutboxHandler<NotifierPayload> = {
    async deliver({ payload, attempt }) {
      const delivery = await deliveryOf(payload);
      if (!delivery) return { skipped: 'the delivery is gone (its project was deleted)' };
      if (!settings.smtp) return skipped(delivery.id, 'no SMTP server is configured (GYRE_SMTP_URL)');
      const message = JSON.parse(delivery.body) as { to: string[]; subject: string; text: string };
      const started = Date.now();
      let info: { response?: string };
      try {
        info = await mailerOf().sendMail({ from: settings.smtp.from, to: message.to, subject: message.subject, text: message.text, headers: { 'X-Gyre-Delivery': delivery.id } });
      } catch (error) {
        const code = (error as { responseCode?: number }).responseCode;
        const response = (error as { response?: string }).response;
        // A permanent SMTP refusal (5xx: no such mailbox, relaying denied) is not tried again.
        const final = code !== undefined && code >= 500 ? new DeliveryRefused(`the SMTP server refused the email: ${excerptOf(String(response ?? (error as Error).message))}`) : error;
        return attemptFailed(delivery.id, attempt, started, final, { status: code, response: response ? excerptOf(response) : undefined });
      }
      const code = Number(/^(\d{3})/.exec(info.response ?? '')?.[1]);
      await sql.recordAttempt(store, { delivery_id: delivery.id, attempt, duration_ms: Date.now() - started, status_code: Number.isFinite(code) ? code : undefined, response: excerptOf(info.response ?? '') });
      await sql.finishDeliveryRow(store, delivery.id, 'delivered');
      return undefined;
    },
    failed,
  };

  return {
    handlers: { [WEBHOOK_KIND]: webhook, [EMAIL_KIND]: email, [SLACK_KIND]: slack },
    close() {
      mailer?.close();
    },
  };
}
