-- Scheduled pipelines (runtime/schedules): CircleCI's v2 schedules, and the `triggers: schedule`
-- of workflows in a project's default-branch config (scheduled workflows). Expand only: new tables
-- the previous release never reads.

-- A schedule (API v2 /project/{slug}/schedule, /schedule/{id}). `timetable` is the API's object
-- (normalised), `parameters` the pipeline parameters with `branch` or `tag`. `actor_id` is the user
-- who created or last updated it: its pipelines' actor when `attribution_actor` is `current`.
-- `next_fire_at` is the first tick not handled yet; the cron role claims the schedule when it is due.
CREATE TABLE schedules (
  id uuid PRIMARY KEY,
  project_id uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
  name text NOT NULL,
  description text,
  timetable jsonb NOT NULL,
  attribution_actor text NOT NULL CHECK (attribution_actor IN ('current', 'system')),
  actor_id uuid REFERENCES users(id) ON DELETE SET NULL,
  parameters jsonb NOT NULL,
  next_fire_at timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (project_id, name)
);
CREATE INDEX schedules_due ON schedules (next_fire_at);
CREATE INDEX schedules_by_project ON schedules (project_id, created_at, id);

-- A workflow's `triggers: - schedule: {cron, filters}` as the latest compiled config of its
-- project's default branch declares it: one row per (cron, branch the filters name), firing a
-- pipeline on that branch that runs the workflows with that cron.
CREATE TABLE scheduled_workflows (
  id uuid PRIMARY KEY,
  project_id uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
  cron text NOT NULL,
  branch text NOT NULL,
  workflows jsonb NOT NULL,
  next_fire_at timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (project_id, cron, branch)
);
CREATE INDEX scheduled_workflows_due ON scheduled_workflows (next_fire_at);

-- Which default-branch pipeline's config the scheduled workflows of a project were read from.
CREATE TABLE scheduled_workflow_sources (
  project_id uuid PRIMARY KEY REFERENCES projects(id) ON DELETE CASCADE,
  pipeline_id uuid NOT NULL,
  pipeline_number integer NOT NULL,
  read_at timestamptz NOT NULL DEFAULT now()
);

-- One tick of a schedule or a scheduled workflow: whoever inserts it fires it, so with several cron
-- processes a tick fires once. `claim` fences the firing: the pipeline is created in a transaction
-- that marks this row fired only while it still holds the claim it was made with, and a claim left
-- by a process that stopped before firing is taken over (a new claim) after a while.
CREATE TABLE schedule_ticks (
  id uuid PRIMARY KEY,
  schedule_id uuid REFERENCES schedules(id) ON DELETE CASCADE,
  scheduled_workflow_id uuid REFERENCES scheduled_workflows(id) ON DELETE CASCADE,
  fire_at timestamptz NOT NULL,
  state text NOT NULL DEFAULT 'claimed' CHECK (state IN ('claimed', 'fired', 'failed', 'missed')),
  claim uuid NOT NULL,
  claimed_at timestamptz NOT NULL,
  pipeline_id uuid REFERENCES pipelines(id) ON DELETE SET NULL,
  error text,
  CHECK ((schedule_id IS NULL) <> (scheduled_workflow_id IS NULL)),
  UNIQUE (schedule_id, fire_at),
  UNIQUE (scheduled_workflow_id, fire_at)
);
CREATE INDEX schedule_ticks_claimed ON schedule_ticks (claimed_at) WHERE state = 'claimed';
CREATE UNIQUE INDEX schedule_ticks_pipeline ON schedule_ticks (pipeline_id) WHERE pipeline_id IS NOT NULL;
CREATE INDEX schedule_ticks_fire_at ON schedule_ticks (fire_at);
