-- Contexts and project environment variables (runtime/secrets/contexts.ts). Additive only: new
-- tables the previous release never reads.
--
-- A value is stored sealed (runtime/secrets/secret-box.ts): `ciphertext`, `iv` and `tag` are its
-- AES-256-GCM encryption under a data key of its own, `wrapped_key` is that data key wrapped by the
-- key named `key_id` (a local key file or a KMS key). A copy of the database holds no plaintext and
-- no key that opens one. The sealed value is bound to its row (`context-variable:<context id>:<name>`,
-- `project-variable:<project id>:<name>` as additional data), so a value copied to another row does
-- not open. `last4` is what a list shows after `xxxx`: the value's last four characters, or '' for a
-- value of four characters or fewer (a list never shows a whole value); nothing else of a value is
-- kept in clear.

-- A context: named variables an organisation's pipelines use by naming it (`context: deploy`).
CREATE TABLE contexts (
  id uuid PRIMARY KEY,
  organization_id uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
  name text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (organization_id, name)
);

CREATE TABLE context_variables (
  context_id uuid NOT NULL REFERENCES contexts(id) ON DELETE CASCADE,
  name text NOT NULL,
  ciphertext bytea NOT NULL,
  iv bytea NOT NULL,
  tag bytea NOT NULL,
  wrapped_key bytea NOT NULL,
  key_id text NOT NULL,
  last4 text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (context_id, name)
);

-- Who may use a context: `project` (restriction_value is a project id of the context's
-- organisation; `name` its slug), `expression` (a CircleCI context expression over pipeline values,
-- runtime/secrets/expressions.ts) or `group` (a group name from sign-in, as given). A context with
-- restrictions is usable only when each kind it has lets the task through.
CREATE TABLE context_restrictions (
  id uuid PRIMARY KEY,
  context_id uuid NOT NULL REFERENCES contexts(id) ON DELETE CASCADE,
  restriction_type text NOT NULL CHECK (restriction_type IN ('project', 'expression', 'group')),
  restriction_value text NOT NULL,
  name text,
  created_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (context_id, restriction_type, restriction_value)
);

-- A project's own environment variables (Project Settings → Environment Variables); a context's
-- variable of the same name wins over one of these.
CREATE TABLE project_variables (
  project_id uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
  name text NOT NULL,
  ciphertext bytea NOT NULL,
  iv bytea NOT NULL,
  tag bytea NOT NULL,
  wrapped_key bytea NOT NULL,
  key_id text NOT NULL,
  last4 text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (project_id, name)
);
