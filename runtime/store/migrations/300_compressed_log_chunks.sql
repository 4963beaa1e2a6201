-- Running output is kept compressed: the output role stores each chunk as its own gzip member in
-- `gzip`, with its length before compression in `raw_bytes`. Gzip members concatenate into one
-- gzip stream, so moving a finished step to the blob store copies them without recompressing.
-- `data` keeps chunks stored as they came (rows from before this migration, and a dispatcher that
-- runs without the output role); every row has exactly one of the two.
ALTER TABLE log_chunks ALTER COLUMN data DROP NOT NULL;
ALTER TABLE log_chunks ADD COLUMN gzip bytea;
ALTER TABLE log_chunks ADD COLUMN raw_bytes integer;
ALTER TABLE log_chunks ADD CONSTRAINT log_chunks_one_form
  CHECK ((data IS NULL) <> (gzip IS NULL) AND (gzip IS NULL OR raw_bytes IS NOT NULL));

-- Already compressed: TOAST keeps it out of line as it is instead of running pglz over it again.
ALTER TABLE log_chunks ALTER COLUMN gzip SET STORAGE EXTERNAL;
