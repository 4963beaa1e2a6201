-- Organisations, roles and API tokens (docs/security.md, "Roles and permissions"). Additive only:
-- the previous release reads users and api_tokens as before and never sees a project token (its
-- user_id is NULL, so the previous release's token lookup, a join on users, refuses it).

-- An organisation is `gh/<name>`; projects belong to one by their `org` column (the name). Made
-- with its first project or explicitly; the projects that exist now get theirs here.
CREATE TABLE organizations (
  id uuid PRIMARY KEY,
  name text NOT NULL UNIQUE,
  created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO organizations (id, name) SELECT gen_random_uuid(), org FROM projects GROUP BY org;

ALTER TABLE users ADD COLUMN disabled_at timestamptz;
ALTER TABLE users ADD COLUMN email text;

-- `source` says who keeps a role: `gyre` (set through Gyre) or a provider that sets and refreshes
-- roles from outside (the GitHub sign-in's repository permissions); a refresh replaces only its own.
CREATE TABLE organization_members (
  organization_id uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
  user_id uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  role text NOT NULL CHECK (role IN ('admin', 'member', 'viewer')),
  source text NOT NULL DEFAULT 'gyre',
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (organization_id, user_id)
);
CREATE INDEX organization_members_user ON organization_members (user_id);

CREATE TABLE project_members (
  project_id uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
  user_id uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  role text NOT NULL CHECK (role IN ('admin', 'write', 'read')),
  source text NOT NULL DEFAULT 'gyre',
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (project_id, user_id)
);
CREATE INDEX project_members_user ON project_members (user_id);

-- Accounts at identity providers linked to a user (a GitHub account, an OIDC subject, an LDAP DN):
-- sign-in finds the user by (provider, subject). Filled by the sign-in work; empty until then.
CREATE TABLE user_identities (
  provider text NOT NULL,
  subject text NOT NULL,
  user_id uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  login text,
  created_at timestamptz NOT NULL DEFAULT now(),
  last_seen_at timestamptz,
  PRIMARY KEY (provider, subject)
);
CREATE INDEX user_identities_user ON user_identities (user_id);

-- Tokens get an id (to list and revoke them by), a kind, an optional expiry, when they were last
-- used (written at most once a minute per token), and for project tokens the project and scope.
-- `hint` is the token's first characters, to tell tokens apart in a list; never enough to use one.
ALTER TABLE api_tokens ADD COLUMN id uuid NOT NULL DEFAULT gen_random_uuid();
CREATE UNIQUE INDEX api_tokens_id ON api_tokens (id);
ALTER TABLE api_tokens ADD COLUMN kind text NOT NULL DEFAULT 'personal' CHECK (kind IN ('personal', 'bootstrap', 'project'));
ALTER TABLE api_tokens ADD COLUMN hint text NOT NULL DEFAULT '';
ALTER TABLE api_tokens ADD COLUMN expires_at timestamptz;
ALTER TABLE api_tokens ADD COLUMN last_used_at timestamptz;
ALTER TABLE api_tokens ADD COLUMN project_id uuid REFERENCES projects(id) ON DELETE CASCADE;
ALTER TABLE api_tokens ADD COLUMN scope text CHECK (scope IS NULL OR scope IN ('read', 'trigger'));
ALTER TABLE api_tokens ADD COLUMN created_by uuid REFERENCES users(id) ON DELETE CASCADE;
ALTER TABLE api_tokens ALTER COLUMN user_id DROP NOT NULL;
-- A project token has a project, a scope and a maker, and no user; any other token has a user only.
ALTER TABLE api_tokens ADD CONSTRAINT api_tokens_owner CHECK (CASE WHEN kind = 'project'
  THEN num_nonnulls(project_id, scope, created_by) = 3 AND user_id IS NULL
  ELSE num_nonnulls(user_id) = 1 AND num_nonnulls(project_id, scope) = 0 END);
CREATE INDEX api_tokens_user ON api_tokens (user_id);
CREATE INDEX api_tokens_project ON api_tokens (project_id);
CREATE INDEX api_tokens_expires ON api_tokens (expires_at) WHERE expires_at IS NOT NULL;

-- The first admin's token (printed at first start, or GYRE_ADMIN_TOKEN): the one a new
-- GYRE_ADMIN_TOKEN replaces.
UPDATE api_tokens SET kind = 'bootstrap' WHERE label IN ('first admin', 'GYRE_ADMIN_TOKEN');
