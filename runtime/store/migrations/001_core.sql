-- Identity: users and their API tokens (stored as SHA-256 hashes, never in clear).
CREATE TABLE users (
  id uuid PRIMARY KEY,
  login text NOT NULL UNIQUE,
  name text NOT NULL,
  is_admin boolean NOT NULL DEFAULT false,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_tokens (
  token_hash text PRIMARY KEY,
  user_id uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  label text NOT NULL DEFAULT '',
  created_at timestamptz NOT NULL DEFAULT now()
);

-- Projects: a git repository, named by its slug gh/<org>/<repo>.
CREATE TABLE projects (
  id uuid PRIMARY KEY,
  slug text NOT NULL UNIQUE,
  org text NOT NULL,
  name text NOT NULL,
  repo_url text NOT NULL,
  default_branch text NOT NULL DEFAULT 'main',
  pipeline_seq integer NOT NULL DEFAULT 0,
  job_seq integer NOT NULL DEFAULT 0,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE pipelines (
  id uuid PRIMARY KEY,
  project_id uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
  number integer NOT NULL,
  state text NOT NULL,
  trigger_type text NOT NULL,
  actor_id uuid REFERENCES users(id),
  branch text,
  tag text,
  revision text,
  commit_subject text,
  parameters jsonb NOT NULL DEFAULT '{}'::jsonb,
  config_source text,
  config_compiled text,
  errors jsonb NOT NULL DEFAULT '[]'::jsonb,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (project_id, number)
);
CREATE INDEX pipelines_project_number ON pipelines (project_id, number DESC);

CREATE TABLE workflows (
  id uuid PRIMARY KEY,
  pipeline_id uuid NOT NULL REFERENCES pipelines(id) ON DELETE CASCADE,
  name text NOT NULL,
  status text NOT NULL,
  position integer NOT NULL DEFAULT 0,
  cancel_requested boolean NOT NULL DEFAULT false,
  canceled_by uuid REFERENCES users(id),
  created_at timestamptz NOT NULL DEFAULT now(),
  stopped_at timestamptz
);
CREATE INDEX workflows_pipeline ON workflows (pipeline_id, position);

-- A job is a node of a workflow. Build jobs get a number (CIRCLE_BUILD_NUM) when they are queued.
CREATE TABLE jobs (
  id uuid PRIMARY KEY,
  workflow_id uuid NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
  project_id uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
  name text NOT NULL,
  type text NOT NULL,
  number integer,
  status text NOT NULL,
  position integer NOT NULL DEFAULT 0,
  requires jsonb NOT NULL DEFAULT '[]'::jsonb,
  contexts jsonb NOT NULL DEFAULT '[]'::jsonb,
  spec jsonb,
  approved_by uuid REFERENCES users(id),
  queued_at timestamptz,
  started_at timestamptz,
  stopped_at timestamptz,
  UNIQUE (project_id, number),
  UNIQUE (workflow_id, name)
);
CREATE INDEX jobs_workflow ON jobs (workflow_id, position);

-- The dispatcher's queue: one row per parallel node of a build job.
CREATE TABLE tasks (
  id uuid PRIMARY KEY,
  job_id uuid NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
  node_index integer NOT NULL,
  status text NOT NULL,
  resource_class text NOT NULL,
  attempt integer NOT NULL DEFAULT 0,
  max_attempts integer NOT NULL,
  lease_id uuid,
  lease_expires_at timestamptz,
  agent_id text,
  cancel_requested boolean NOT NULL DEFAULT false,
  failure_reason text,
  queued_at timestamptz NOT NULL DEFAULT now(),
  started_at timestamptz,
  stopped_at timestamptz,
  UNIQUE (job_id, node_index)
);
CREATE INDEX tasks_queue ON tasks (resource_class, queued_at) WHERE status = 'queued';
CREATE INDEX tasks_leases ON tasks (lease_expires_at) WHERE status = 'running';

-- One row per step of one attempt of a task.
CREATE TABLE steps (
  task_id uuid NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
  attempt integer NOT NULL,
  index integer NOT NULL,
  name text NOT NULL,
  type text NOT NULL,
  status text NOT NULL,
  exit_code integer,
  started_at timestamptz NOT NULL,
  stopped_at timestamptz,
  PRIMARY KEY (task_id, attempt, index)
);

-- Step output as the agent sent it: chunks numbered per step; appends are idempotent by seq.
CREATE TABLE log_chunks (
  task_id uuid NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
  attempt integer NOT NULL,
  step_index integer NOT NULL,
  seq integer NOT NULL,
  data bytea NOT NULL,
  PRIMARY KEY (task_id, attempt, step_index, seq)
);
