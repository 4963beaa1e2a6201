-- API v1.1's recent builds (runtime/api/v1-read-model.ts) list the jobs that have a number, most
-- recently queued first, across the projects a caller can see. Expand only: an index.
CREATE INDEX jobs_recent_builds ON jobs (queued_at DESC) WHERE number IS NOT NULL;
