-- Caches across trust levels (docs/security.md, "Caches across trust levels"). Each cache records
-- whether the job that saved it ran on a protected ref: the project's default branch or a branch
-- matching one of its protected_branches patterns. A job on a protected ref restores only caches
-- saved by protected refs (unless the server runs with GYRE_CACHE_TRUST=shared), so a key saved
-- first by a feature branch must not stop the default branch from saving its own: one cache per
-- key and trust level. Caches saved before this migration are not known to be protected.
ALTER TABLE caches ADD COLUMN protected boolean NOT NULL DEFAULT false;
ALTER TABLE caches DROP CONSTRAINT caches_project_id_key_key;
ALTER TABLE caches ADD CONSTRAINT caches_project_key_trust UNIQUE (project_id, key, protected);

-- Branch patterns a project protects besides its default branch (`release/*`, `hotfix/**`).
ALTER TABLE projects ADD COLUMN protected_branches text[] NOT NULL DEFAULT '{}';
