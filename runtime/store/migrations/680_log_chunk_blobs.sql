-- A running step's chunks may be held in the blob store when it is on local disk: the output role
-- writes the gzip members to the blob `blob_key` names, and the row keeps the index only (sequence
-- number, `raw_bytes`) with an empty `gzip`, so every row still has exactly one of `data` and
-- `gzip` (log_chunks_one_form) and the migration only adds.
ALTER TABLE log_chunks ADD COLUMN blob_key text;
