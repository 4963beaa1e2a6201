-- What started a pipeline, and where forks' caches go. Expand only: a nullable column and a new
-- table, which the previous release neither reads nor writes.

-- The event that started a pipeline (runtime/triggers/pipeline-event.ts), as CircleCI's pipeline
-- values `pipeline.event.name`, `pipeline.event.action` and, for a pull request,
-- `pipeline.event.github.pull_request.*` say it: `{"name": "pull_request", "action": "opened",
-- "prUrl": …, "pullRequest": {…}}`. Null for pipelines made before this migration: their values
-- are read from trigger_type (a webhook's as `push`).
ALTER TABLE pipelines ADD COLUMN event jsonb;

-- Caches saved by jobs of pipelines of forked pull requests (pipelines.from_fork), whatever the
-- project's settings: they are restored only by jobs of pipelines of the same pull request
-- (`scope`, the fork pipeline's branch `pull/<n>`), never by the project's other branches, so a
-- fork's author cannot plant files in them (docs/security.md, "Caches across trust levels"). A
-- key is unique per pull request: a fork's cache never stops another scope from saving its own.
CREATE TABLE fork_caches (
  id uuid PRIMARY KEY,
  project_id uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
  scope text NOT NULL,
  key text NOT NULL,
  blob_key text NOT NULL,
  bytes bigint NOT NULL,
  attempt integer,
  created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  UNIQUE (project_id, scope, key)
);
CREATE INDEX fork_caches_recent ON fork_caches (project_id, scope, created_at DESC);
CREATE INDEX fork_caches_created ON fork_caches (created_at);
