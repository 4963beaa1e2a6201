-- Caches across trust levels (docs/security.md, "Caches across trust levels"). A job on a
-- protected ref (the project's default branch, or a branch matching one of its protected_branches
-- patterns) restores only caches saved by protected refs (unless the server runs with
-- GYRE_CACHE_TRUST=shared), so a key saved first by a feature branch must not stop the default
-- branch from saving its own: one cache per key and trust level.
--
-- Expand only, so the previous release keeps working during a rolling upgrade: caches saved on
-- protected refs go in a table of their own; `caches` keeps its shape and its UNIQUE (project_id,
-- key), which the previous release's saves name in ON CONFLICT, and holds every other cache
-- (caches saved before this migration, or by the previous release, are not known to be
-- protected: they stay there).
CREATE TABLE protected_caches (
  id uuid PRIMARY KEY,
  project_id uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
  key text NOT NULL,
  blob_key text NOT NULL,
  bytes bigint NOT NULL,
  created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  UNIQUE (project_id, key)
);
CREATE INDEX protected_caches_recent ON protected_caches (project_id, created_at DESC);

-- Branch patterns a project protects besides its default branch (`release/*`, `hotfix/**`).
ALTER TABLE projects ADD COLUMN protected_branches text[] NOT NULL DEFAULT '{}';
