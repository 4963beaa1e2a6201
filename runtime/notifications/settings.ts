import { ConfigurationError } from '../domain/errors';

type Env = Readonly<Record<string, string | undefined>>;

/**
 * How the notifier role reaches the outside world (docs/notifications.md): the SMTP server emails
 * go through, and the rule for where webhooks and Slack-compatible messages may be posted.
 */
export interface NotificationSettings {
  /** GYRE_SMTP_URL and GYRE_SMTP_FROM; unset: no email is sent (deliveries end `skipped`). */
  readonly smtp?: SmtpSettings;
  /** Where webhook and chat posts may go. */
  readonly destinations: DestinationPolicy;
  /** GYRE_NOTIFICATION_KEEP_DAYS: days the delivery log keeps a finished delivery. @default 14 */
  readonly keepDays: number;
}

export interface SmtpSettings {
  /**
   * GYRE_SMTP_URL: `smtp://[user:password@]host[:port]` (STARTTLS when the server offers it;
   * `?requireTLS=true` insists) or `smtps://…` (TLS from the start, port 465).
   */
  readonly url: string;
  /** GYRE_SMTP_FROM: the sender, `Name <address>` or an address. @default 'Gyre <gyre@localhost>' */
  readonly from: string;
}

/**
 * The SSRF rule (docs/notifications.md, "Where deliveries may go"). Builds are hostile and a
 * project admin may point a webhook anywhere, so by default a delivery goes only to a public
 * address over https.
 */
export interface DestinationPolicy {
  /**
   * GYRE_WEBHOOKS_ALLOW_PRIVATE: also deliver to loopback, private (RFC 1918, fc00::/7), shared
   * (100.64.0.0/10) addresses: receivers inside the organisation's network. Link-local addresses
   * (169.254.0.0/16 with the clouds' metadata service, fe80::/10) stay refused. @default false
   */
  readonly allowPrivate: boolean;
  /** GYRE_WEBHOOKS_ALLOW_HTTP: accept plain http:// URLs as well as https://. @default false */
  readonly allowHttp: boolean;
  /** GYRE_WEBHOOK_TIMEOUT_MS: how long one post may take, connect to answer. @default 10000 (as CircleCI) */
  readonly timeoutMs: number;
}

export const DEFAULT_DESTINATION_POLICY: DestinationPolicy = { allowPrivate: false, allowHttp: false, timeoutMs: 10_000 };

function boolean(env: Env, name: string, fallback: boolean): boolean {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  if (/^(true|1|yes|on)$/i.test(raw)) return true;
  if (/^(false|0|no|off)$/i.test(raw)) return false;
  throw new ConfigurationError(name, `'${raw}' is not a boolean (allowed: true or false)`);
}

function integer(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  if (!/^\d+$/.test(raw.trim())) throw new ConfigurationError(name, `'${raw}' is not a whole number (allowed: ${min} to ${max})`);
  const value = Number(raw.trim());
  if (value < min || value > max) throw new ConfigurationError(name, `${value} is out of range (allowed: ${min} to ${max})`);
  return value;
}

/** The SMTP URL with its password replaced, for messages. */
export function redactSmtpUrl(url: string): string {
  return url.replace(/\/\/([^:@/]*):[^@/]*@/, '//$1:***@');
}

/** Reads the notifier's settings; a bad one throws a ConfigurationError naming it. */
export function readNotificationSettings(env: Env): NotificationSettings {
  let smtp: SmtpSettings | undefined;
  const url = env.GYRE_SMTP_URL || undefined;
  if (url) {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new ConfigurationError('GYRE_SMTP_URL', `'${redactSmtpUrl(url)}' is not a URL (allowed: smtp://[user:password@]host[:port] or smtps://…)`);
    }
    if (parsed.protocol !== 'smtp:' && parsed.protocol !== 'smtps:') throw new ConfigurationError('GYRE_SMTP_URL', `'${redactSmtpUrl(url)}' must start with smtp:// or smtps://`);
    if (!parsed.hostname) throw new ConfigurationError('GYRE_SMTP_URL', `'${redactSmtpUrl(url)}' names no host`);
    const from = env.GYRE_SMTP_FROM || 'Gyre <gyre@localhost>';
    if (/[\r\n]/.test(from) || !/@/.test(from) || from.length > 320) throw new ConfigurationError('GYRE_SMTP_FROM', `'${from.slice(0, 100)}' is not a sender (an address, or Name <address>, on one line)`);
    smtp = { url, from };
  } else if (env.GYRE_SMTP_FROM) {
    throw new ConfigurationError('GYRE_SMTP_FROM', 'is set but GYRE_SMTP_URL is not (the SMTP server emails are sent through)');
  }
  return {
    smtp,
    destinations: {
      allowPrivate: boolean(env, 'GYRE_WEBHOOKS_ALLOW_PRIVATE', false),
      allowHttp: boolean(env, 'GYRE_WEBHOOKS_ALLOW_HTTP', false),
      timeoutMs: integer(env, 'GYRE_WEBHOOK_TIMEOUT_MS', 10_000, 100, 120_000),
    },
    keepDays: integer(env, 'GYRE_NOTIFICATION_KEEP_DAYS', 14, 1, 3650),
  };
}
