-- Insights test metrics (runtime/insights/sql/tests.ts; docs/insights.md): the test-metrics
-- operation reads a workflow's latest runs on one branch, newest first, then their jobs' stored
-- test results (through insights_job_runs_workflow and test_results_job). This index finds those
-- runs on a branch without walking the workflow's runs on every other branch.
--
-- Expand only: a new index the previous release never reads.
CREATE INDEX insights_workflow_runs_by_branch ON insights_workflow_runs (project_id, workflow_name, branch, created_at);
