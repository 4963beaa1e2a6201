-- A task's job directory gets the test timings of its job's last successful run that stored test
-- results (runtime/output/previous-test-results.ts), asked on the way to every task's first
-- command: the newest successful jobs of that name in the project, walked newest first.
CREATE INDEX jobs_last_success ON jobs (project_id, name, stopped_at DESC, number DESC) WHERE status = 'success';
