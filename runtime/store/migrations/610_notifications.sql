-- Outbound webhooks and notifications (runtime/notifications/; docs/notifications.md). Additive
-- only: new tables the previous release never reads.
--
-- webhooks: a project's outbound webhooks in CircleCI's API v2 shape (`/webhook`). The signing
-- secret is stored only sealed (runtime/secrets/secret-box.ts: the five Sealed columns, bound to
-- the row as `webhook-secret:<id>`), so a copy of the database holds no secret; `secret_hint` is
-- what the API shows of it (`xxxx` and, for a secret of 16 characters or more, its last four).
CREATE TABLE webhooks (
  id uuid PRIMARY KEY,
  project_id uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
  name text NOT NULL,
  url text NOT NULL,
  verify_tls boolean NOT NULL DEFAULT true,
  events text[] NOT NULL,
  secret_hint text NOT NULL,
  ciphertext bytea NOT NULL,
  iv bytea NOT NULL,
  tag bytea NOT NULL,
  wrapped_key bytea NOT NULL,
  key_id text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhooks_project ON webhooks (project_id, created_at);

-- project_notifications: a project's email and chat notifications (Gyre's own settings route).
-- `emails`: who gets an email; the Slack-compatible incoming webhook URL is a secret (anyone who
-- has it may post to the channel), so it is sealed like the signing secrets (`slack-url:<project
-- id>`); all five sealed columns are null when there is none. `slack_hint` is its host, shown.
CREATE TABLE project_notifications (
  project_id uuid PRIMARY KEY REFERENCES projects(id) ON DELETE CASCADE,
  emails text[] NOT NULL DEFAULT '{}',
  on_failed boolean NOT NULL DEFAULT true,
  on_fixed boolean NOT NULL DEFAULT true,
  slack_hint text,
  ciphertext bytea,
  iv bytea,
  tag bytea,
  wrapped_key bytea,
  key_id text,
  updated_at timestamptz NOT NULL DEFAULT now(),
  CHECK ((ciphertext IS NULL) = (key_id IS NULL) AND (iv IS NULL) = (key_id IS NULL) AND (tag IS NULL) = (key_id IS NULL) AND (wrapped_key IS NULL) = (key_id IS NULL))
);

-- notification_deliveries: one notice to one receiver (a webhook's event, an email, a Slack
-- message), written in the transaction that ended the workflow or job, with the outbox row
-- (runtime/outbox) that sends it. `body` is the exact text sent (a webhook's signature is over
-- these bytes, so every retry sends the same ones). Unique per receiver, event and subject (the
-- workflow or job), so a job's end is announced once however often its workflow is advanced.
--   channel     `webhook`, `email` or `slack`
--   target_id   the webhook's id, or the project's for email and Slack
--   state       pending until delivered; `delivered`, `skipped` (nothing to send: the webhook was
--               deleted, no SMTP server) or `failed` (refused, or out of attempts) for good
CREATE TABLE notification_deliveries (
  id uuid PRIMARY KEY,
  project_id uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
  webhook_id uuid REFERENCES webhooks(id) ON DELETE CASCADE,
  channel text NOT NULL CHECK (channel IN ('webhook', 'email', 'slack')),
  target_id uuid NOT NULL,
  event text NOT NULL,
  subject_id uuid NOT NULL,
  body text NOT NULL,
  outbox_id uuid,
  state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'skipped', 'failed')),
  last_error text,
  created_at timestamptz NOT NULL DEFAULT now(),
  finished_at timestamptz,
  UNIQUE (channel, target_id, event, subject_id)
);
CREATE INDEX notification_deliveries_webhook ON notification_deliveries (webhook_id, created_at) WHERE webhook_id IS NOT NULL;
CREATE INDEX notification_deliveries_project ON notification_deliveries (project_id, created_at);
CREATE INDEX notification_deliveries_finished ON notification_deliveries (finished_at) WHERE state <> 'pending';

-- notification_attempts: each attempt at a delivery and the receiver's answer: the HTTP status and
-- the first characters of its body, or what went wrong (no answer, refused address, SMTP error).
CREATE TABLE notification_attempts (
  delivery_id uuid NOT NULL REFERENCES notification_deliveries(id) ON DELETE CASCADE,
  attempt integer NOT NULL,
  at timestamptz NOT NULL DEFAULT now(),
  duration_ms integer NOT NULL,
  status_code integer,
  response text,
  error text,
  PRIMARY KEY (delivery_id, attempt)
);
