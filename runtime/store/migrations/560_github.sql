-- The GitHub App integration (runtime/github/): webhook deliveries, the app's installations and
-- the repositories they cover, pull requests as GitHub last described them, and what a pipeline
-- knows of the pull request it builds.
--
-- Expand only: new tables, and nullable columns on pipelines that the previous release neither
-- reads nor writes (null says what was true of every pipeline before: no pull request, no base).

-- One row per delivery GitHub sent (`X-GitHub-Delivery`), written before the delivery is acted on:
-- a redelivery finds it and changes nothing. `received` until its effects are written (a pipeline's
-- delivery is marked `done` in the transaction that creates the pipeline); a `received` row left
-- by a process that died is taken up again by a redelivery after a while.
CREATE TABLE github_deliveries (
  delivery_id text PRIMARY KEY,
  event text NOT NULL,
  action text,
  state text NOT NULL CHECK (state IN ('received', 'done')),
  outcome text,
  pipeline_id uuid REFERENCES pipelines(id) ON DELETE SET NULL,
  received_at timestamptz NOT NULL DEFAULT now(),
  finished_at timestamptz
);
CREATE INDEX github_deliveries_received ON github_deliveries (received_at);

-- Where the app is installed (an organisation or user account), from `installation` events or
-- from asking GitHub (`GET /repos/{owner}/{repo}/installation`).
CREATE TABLE github_installations (
  id bigint PRIMARY KEY,
  account_login text NOT NULL,
  account_type text,
  suspended_at timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- The repositories an installation covers, by GitHub's repository id (stable across renames).
CREATE TABLE github_repositories (
  id bigint PRIMARY KEY,
  installation_id bigint NOT NULL REFERENCES github_installations(id) ON DELETE CASCADE,
  full_name text NOT NULL,
  private boolean,
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX github_repositories_full_name ON github_repositories (lower(full_name));
CREATE INDEX github_repositories_installation ON github_repositories (installation_id);

-- Pull requests as their latest `pull_request` event described them: a push to a branch with an
-- open pull request builds it as that pull request (and "only build pull requests" lets it build).
CREATE TABLE github_pull_requests (
  repository_id bigint NOT NULL,
  number integer NOT NULL,
  state text NOT NULL,
  head_ref text NOT NULL,
  head_sha text NOT NULL,
  head_repo_full_name text,
  base_ref text NOT NULL,
  base_sha text NOT NULL,
  html_url text NOT NULL,
  author_login text,
  github_updated_at timestamptz,
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (repository_id, number)
);
CREATE INDEX github_pull_requests_open_head ON github_pull_requests (repository_id, head_ref) WHERE state = 'open';

-- What a webhook already started, per project: `branch:<name>:<sha>` or `tag:<name>:<sha>`. The
-- push and the pull_request event of one commit on one branch, or the push and the create event of
-- one tag, start one pipeline: whichever arrives first; the key is written in its transaction.
CREATE TABLE github_triggered (
  project_id uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
  trigger_key text NOT NULL,
  pipeline_id uuid NOT NULL REFERENCES pipelines(id) ON DELETE CASCADE,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (project_id, trigger_key)
);
CREATE INDEX github_triggered_pipeline ON github_triggered (pipeline_id);

-- A pull request's pipeline: the revision it is compared with (`pipeline.git.base_revision`), the
-- ref its checkout fetches (`refs/pull/<n>/head`: a fork's commits are on no branch of the
-- repository), and the pull request (`CIRCLE_PULL_REQUEST`, `CIRCLE_PR_*`).
ALTER TABLE pipelines ADD COLUMN base_revision text;
ALTER TABLE pipelines ADD COLUMN checkout_ref text;
ALTER TABLE pipelines ADD COLUMN pull_request jsonb;
