-- Every process that caches pipeline answers (runtime/api/pipeline-view-cache.ts) hears of a change
-- to one at once: an update of a pipeline row sends NOTIFY gyre_pipeline_changed with its id, and a
-- change of a project's repository URL (which every pipeline answer of the project shows) sends '*'.
-- Expand only: a function and triggers that the previous release neither reads nor is slowed by.

CREATE OR REPLACE FUNCTION gyre_pipeline_changed() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_notify('gyre_pipeline_changed', NEW.id::text); RETURN NULL; END $$;
CREATE OR REPLACE FUNCTION gyre_pipelines_changed() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_notify('gyre_pipeline_changed', '*'); RETURN NULL; END $$;

CREATE TRIGGER pipelines_changed AFTER UPDATE ON pipelines FOR EACH ROW EXECUTE FUNCTION gyre_pipeline_changed();
CREATE TRIGGER pipelines_removed AFTER DELETE OR TRUNCATE ON pipelines FOR EACH STATEMENT EXECUTE FUNCTION gyre_pipelines_changed();
CREATE TRIGGER projects_pipeline_view_changed AFTER UPDATE OF repo_url, slug ON projects FOR EACH STATEMENT EXECUTE FUNCTION gyre_pipelines_changed();
