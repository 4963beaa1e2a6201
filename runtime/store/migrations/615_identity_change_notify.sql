-- Every process that caches credentials and roles (runtime/identity/credential-cache.ts) hears of a
-- change to them at once, whichever process or path made it: a statement that changes a token, a
-- user, an organisation, a project or a membership sends NOTIFY gyre_identity_changed (once per
-- statement, with the table's name). Expand only: a function and triggers; the previous release
-- neither reads them nor is slowed by them (a notification nobody listens for costs nothing).
--
-- Noting a token's use (api_tokens.last_used_at) changes nothing a cache holds, so it sends nothing.

CREATE OR REPLACE FUNCTION gyre_identity_changed() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_notify('gyre_identity_changed', TG_TABLE_NAME); RETURN NULL; END $$;

CREATE TRIGGER api_tokens_identity_changed AFTER INSERT OR DELETE OR TRUNCATE ON api_tokens FOR EACH STATEMENT EXECUTE FUNCTION gyre_identity_changed();
CREATE TRIGGER api_tokens_identity_updated AFTER UPDATE OF token_hash, kind, user_id, project_id, scope, expires_at, created_by ON api_tokens FOR EACH STATEMENT EXECUTE FUNCTION gyre_identity_changed();
CREATE TRIGGER users_identity_changed AFTER INSERT OR DELETE OR TRUNCATE ON users FOR EACH STATEMENT EXECUTE FUNCTION gyre_identity_changed();
CREATE TRIGGER users_identity_updated AFTER UPDATE OF login, is_admin, disabled_at ON users FOR EACH STATEMENT EXECUTE FUNCTION gyre_identity_changed();
CREATE TRIGGER organizations_identity_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON organizations FOR EACH STATEMENT EXECUTE FUNCTION gyre_identity_changed();
CREATE TRIGGER organization_members_identity_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON organization_members FOR EACH STATEMENT EXECUTE FUNCTION gyre_identity_changed();
CREATE TRIGGER project_members_identity_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON project_members FOR EACH STATEMENT EXECUTE FUNCTION gyre_identity_changed();
CREATE TRIGGER projects_identity_changed AFTER INSERT OR DELETE OR TRUNCATE ON projects FOR EACH STATEMENT EXECUTE FUNCTION gyre_identity_changed();
CREATE TRIGGER projects_identity_updated AFTER UPDATE OF slug, org ON projects FOR EACH STATEMENT EXECUTE FUNCTION gyre_identity_changed();
