-- Insights (runtime/insights/, the `insights` role; docs/insights.md): what the insights API answers
-- from, kept by the role from completed workflows so that no answer reads the jobs table.
--
--   insights_workflow_runs  one row per completed workflow (a run): its project, name, branch,
--                           status, when it started and stopped, how long its jobs queued, and for a
--                           success that ended a run of failures on its branch, the time it took
--                           to recover (`recovery_secs`, from the first of those failures' stop)
--   insights_job_runs       one row per job that ran in such a workflow (copies a rerun made and
--                           approvals are not runs)
--   insights_daily          the daily rollup of both (job_name '' is the workflow itself), per
--                           branch and once more for all branches together (branch '*', which no
--                           git branch can be named): counts, and every run's duration and queue
--                           time, so that percentiles over any set of days are exact
--   insights_cursor         how far the role has read: workflows that stopped at or before
--                           `stopped_at` have been rolled up (the role reads a few minutes back
--                           from it each pass; a run already recorded is never counted twice)
--
-- A run's day is the UTC date it started on (a workflow's created_at, a job's started_at). The rows
-- do not follow the pipelines' retention: they are kept for 400 days (the role deletes older ones).
--
-- Expand only: new tables and an index the previous release never reads.
CREATE TABLE insights_cursor (
  name text PRIMARY KEY,
  stopped_at timestamptz NOT NULL
);
INSERT INTO insights_cursor (name, stopped_at) VALUES ('workflows', '1970-01-01T00:00:00Z');

CREATE TABLE insights_workflow_runs (
  workflow_id uuid PRIMARY KEY,
  project_id uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
  workflow_name text NOT NULL,
  branch text NOT NULL,
  pipeline_number integer NOT NULL,
  status text NOT NULL,
  created_at timestamptz NOT NULL,
  stopped_at timestamptz NOT NULL,
  duration_secs integer NOT NULL,
  queued_secs integer NOT NULL,
  failing_since timestamptz,
  recovery_secs integer
);
CREATE INDEX insights_workflow_runs_by_name ON insights_workflow_runs (project_id, workflow_name, created_at);
CREATE INDEX insights_workflow_runs_by_time ON insights_workflow_runs (project_id, created_at);
-- The run before a new one on its branch (mean time to recovery).
CREATE INDEX insights_workflow_runs_latest ON insights_workflow_runs (project_id, workflow_name, branch, stopped_at);

CREATE TABLE insights_job_runs (
  job_id uuid PRIMARY KEY,
  project_id uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
  workflow_id uuid NOT NULL,
  workflow_name text NOT NULL,
  job_name text NOT NULL,
  branch text NOT NULL,
  status text NOT NULL,
  started_at timestamptz NOT NULL,
  stopped_at timestamptz NOT NULL,
  duration_secs integer NOT NULL,
  queued_secs integer NOT NULL
);
CREATE INDEX insights_job_runs_by_name ON insights_job_runs (project_id, workflow_name, started_at);
-- A workflow's jobs (its queue time, and the rollup of a batch).
CREATE INDEX insights_job_runs_workflow ON insights_job_runs (workflow_id);

CREATE TABLE insights_daily (
  project_id uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
  day date NOT NULL,
  workflow_name text NOT NULL,
  job_name text NOT NULL,
  branch text NOT NULL,
  runs integer NOT NULL,
  successful_runs integer NOT NULL,
  failed_runs integer NOT NULL,
  canceled_runs integer NOT NULL,
  durations integer[] NOT NULL,
  queued_secs integer[] NOT NULL,
  recoveries integer NOT NULL,
  recovery_secs bigint NOT NULL,
  first_started_at timestamptz NOT NULL,
  last_stopped_at timestamptz NOT NULL,
  PRIMARY KEY (project_id, day, workflow_name, job_name, branch)
);
CREATE INDEX insights_daily_by_name ON insights_daily (project_id, workflow_name, day);

-- The role reads workflows in the order they stopped, from its cursor.
CREATE INDEX workflows_stopped ON workflows (stopped_at, id) WHERE stopped_at IS NOT NULL;
