-- Runner tokens can be listed and revoked: each has an id to name it by, and when it was last used.
-- Expand only: the previous release's queries on runner_tokens keep working.
ALTER TABLE runner_tokens ADD COLUMN id uuid NOT NULL DEFAULT gen_random_uuid();
ALTER TABLE runner_tokens ADD COLUMN last_used_at timestamptz;
CREATE UNIQUE INDEX runner_tokens_id ON runner_tokens (id);
