-- Reruns and job cancels (`POST /workflow/{id}/rerun`, `POST /jobs/{id}/cancel`). A rerun is a new
-- workflow in the same pipeline: `rerun_of` is the workflow it reran, `started_by` who asked for it
-- (the pipeline's actor when null: every workflow before this one). A job the rerun does not run
-- again is copied into it with its result, and `copied_from` is the job that ran (its number,
-- steps and output are that job's). `canceled_by` is who canceled one job.
--
-- Expand only: the previous release neither reads nor writes these columns, and null says what was
-- true of every row before (no reruns, no copies, no job canceled on its own).
ALTER TABLE workflows
  ADD COLUMN rerun_of uuid REFERENCES workflows(id) ON DELETE SET NULL,
  ADD COLUMN started_by uuid REFERENCES users(id);
ALTER TABLE jobs
  ADD COLUMN copied_from uuid REFERENCES jobs(id) ON DELETE SET NULL,
  ADD COLUMN canceled_by uuid REFERENCES users(id);
