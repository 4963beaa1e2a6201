-- CircleCI's project settings (`PATCH /api/v2/project/{slug}/settings`, `advanced`), beside
-- `forks_receive_secret_env_vars` (530), under CircleCI's names and with its defaults:
--   autocancel_builds  a new pipeline on a branch other than the default one cancels the unfinished
--                      workflows of older pipelines on that branch (runtime/conductor/auto-cancel.ts)
--   build_fork_prs     pull requests from forks start pipelines
--   build_prs_only     pushes start pipelines only on branches with an open pull request (and the
--                      default branch)
--   set_github_status  workflows report their status on the commit
--
-- Expand only: the previous release neither reads nor writes these columns, and their defaults are
-- what every project had before (nothing canceled; GitHub's settings take effect with the GitHub work).
ALTER TABLE projects ADD COLUMN autocancel_builds boolean NOT NULL DEFAULT false;
ALTER TABLE projects ADD COLUMN build_fork_prs boolean NOT NULL DEFAULT false;
ALTER TABLE projects ADD COLUMN build_prs_only boolean NOT NULL DEFAULT false;
ALTER TABLE projects ADD COLUMN set_github_status boolean NOT NULL DEFAULT true;

-- Auto-cancel looks for the unfinished workflows of a project's older pipelines on a branch: start
-- from the few unfinished workflows rather than every pipeline the project ever ran.
CREATE INDEX workflows_unfinished ON workflows (pipeline_id) WHERE status IN ('running', 'on_hold', 'failing');
