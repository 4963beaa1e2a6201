-- Execution: resource classes the admin defines, the tokens runners present, the runners seen,
-- concurrency limits, and the server secret task tokens are signed with.

-- A resource class names where and how big a job runs; `driver` says which driver starts its agents.
CREATE TABLE resource_classes (
  name text PRIMARY KEY,
  cpu numeric NOT NULL,
  memory_mb integer NOT NULL,
  driver text NOT NULL CHECK (driver IN ('builtin', 'runner', 'nomad')),
  created_at timestamptz NOT NULL DEFAULT now()
);

-- A runner presents one of these to claim tasks of its resource class; only the hash is kept.
CREATE TABLE runner_tokens (
  token_hash text PRIMARY KEY,
  resource_class text NOT NULL REFERENCES resource_classes(name) ON DELETE CASCADE,
  label text NOT NULL DEFAULT '',
  created_at timestamptz NOT NULL DEFAULT now()
);

-- Runners as last seen by their claims.
CREATE TABLE runners (
  id text PRIMARY KEY,
  resource_class text NOT NULL,
  last_seen_at timestamptz NOT NULL DEFAULT now()
);

-- At most max_running tasks of one project (key: project slug) or organisation (key: org) run at once.
CREATE TABLE concurrency_limits (
  scope text NOT NULL CHECK (scope IN ('project', 'org')),
  key text NOT NULL,
  max_running integer NOT NULL CHECK (max_running > 0),
  PRIMARY KEY (scope, key)
);

-- Secrets shared by every server process (e.g. the task-token signing key).
CREATE TABLE execution_secrets (
  name text PRIMARY KEY,
  value text NOT NULL
);

-- Tasks carry their project and organisation so claims can be fair and limited without joins.
ALTER TABLE tasks ADD COLUMN project_slug text;
ALTER TABLE tasks ADD COLUMN org text;
CREATE INDEX tasks_running_project ON tasks (project_slug) WHERE status = 'running';
ALTER TABLE tasks ADD COLUMN fair_rank integer NOT NULL DEFAULT 0;
CREATE INDEX tasks_running_org ON tasks (org) WHERE status = 'running';
CREATE INDEX tasks_fair_queue ON tasks (fair_rank, queued_at, id) WHERE status = 'queued';
