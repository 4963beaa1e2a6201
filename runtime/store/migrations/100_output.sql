-- The output role: logs moved to object storage, artifacts, caches, workspaces, test results.

-- A finished step's output, moved compressed to the blob store. `seqs`/`ends` map each chunk's
-- sequence number to the byte offset where it ends, so a follower can resume mid-log.
CREATE TABLE step_logs (
  task_id uuid NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
  attempt integer NOT NULL,
  step_index integer NOT NULL,
  blob_key text NOT NULL,
  bytes bigint NOT NULL,
  seqs integer[] NOT NULL,
  ends bigint[] NOT NULL,
  PRIMARY KEY (task_id, attempt, step_index)
);

-- Output bytes kept per attempt of a task, for the output cap.
CREATE TABLE task_output (
  task_id uuid NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
  attempt integer NOT NULL,
  bytes bigint NOT NULL DEFAULT 0,
  truncated boolean NOT NULL DEFAULT false,
  PRIMARY KEY (task_id, attempt)
);

CREATE TABLE artifacts (
  id uuid PRIMARY KEY,
  job_id uuid NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
  node_index integer NOT NULL,
  path text NOT NULL,
  blob_key text NOT NULL,
  bytes bigint NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX artifacts_job ON artifacts (job_id, node_index, path);

-- Caches are immutable: the first save of a key in a project wins.
CREATE TABLE caches (
  id uuid PRIMARY KEY,
  project_id uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
  key text NOT NULL,
  blob_key text NOT NULL,
  bytes bigint NOT NULL,
  created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  UNIQUE (project_id, key)
);
CREATE INDEX caches_recent ON caches (project_id, created_at DESC);

-- One layer per persist_to_workspace step; a job attaches the layers of its upstream jobs.
CREATE TABLE workspace_layers (
  id uuid PRIMARY KEY,
  workflow_id uuid NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
  job_id uuid NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
  node_index integer NOT NULL,
  blob_key text NOT NULL,
  bytes bigint NOT NULL,
  created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX workspace_layers_workflow ON workspace_layers (workflow_id, created_at);

CREATE TABLE test_results (
  id bigserial PRIMARY KEY,
  job_id uuid NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
  project_id uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
  job_name text NOT NULL,
  revision text NOT NULL,
  node_index integer NOT NULL,
  name text NOT NULL,
  classname text NOT NULL,
  file text NOT NULL,
  result text NOT NULL,
  message text NOT NULL,
  run_time double precision NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX test_results_job ON test_results (job_id, id);
CREATE INDEX test_results_project ON test_results (project_id, job_name, created_at);

-- Secrets the output role signs download URLs with, shared by every API process.
CREATE TABLE output_keys (
  name text PRIMARY KEY,
  secret bytea NOT NULL
);
