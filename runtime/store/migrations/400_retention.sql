-- Retention (README, "Retention"): pipelines older than their project's retention_days (NULL: the
-- server's GYRE_RETENTION_DAYS; 0: kept for ever) are deleted with everything of theirs, rows and
-- blobs. Additive only: the previous release neither reads nor writes these.
ALTER TABLE projects ADD COLUMN retention_days integer CHECK (retention_days IS NULL OR retention_days BETWEEN 0 AND 36500);

-- The sweep finds expired pipelines by age.
CREATE INDEX pipelines_created ON pipelines (created_at);

-- Blobs whose rows a sweep deleted, to delete from the bucket: written in the transaction that
-- deletes the rows, removed once the objects are gone, so a crash in between leaves work for the
-- next sweep rather than objects nothing points at, and no row ever points at a deleted object.
CREATE TABLE retention_blobs (
  blob_key text PRIMARY KEY,
  queued_at timestamptz NOT NULL DEFAULT now()
);
