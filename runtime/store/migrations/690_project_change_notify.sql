-- Every process that keeps projects in memory (runtime/projects/project-cache.ts: the project a
-- trigger is for) hears of a change to one at once, whichever process or path made it: a statement
-- that adds, removes or changes a project in anything a Project is made of sends NOTIFY
-- gyre_project_changed. Counting a project's pipelines and jobs (pipeline_seq, job_seq, on every
-- trigger and job) and its retention (not part of a Project) send nothing: a trigger must not
-- empty the cache the next trigger reads.
-- Expand only: a function and a trigger that the previous release neither reads nor is slowed by.

CREATE OR REPLACE FUNCTION gyre_project_changed() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_notify('gyre_project_changed', ''); RETURN NULL; END $$;

CREATE TRIGGER projects_changed AFTER INSERT OR DELETE OR TRUNCATE ON projects FOR EACH STATEMENT EXECUTE FUNCTION gyre_project_changed();
CREATE TRIGGER projects_settings_changed AFTER UPDATE OF id, slug, org, name, repo_url, default_branch, protected_branches, forks_receive_secret_env_vars,
  autocancel_builds, build_fork_prs, build_prs_only, set_github_status, created_at ON projects FOR EACH STATEMENT EXECUTE FUNCTION gyre_project_changed();
