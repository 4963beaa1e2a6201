-- A running step's chunks may be held in the blob store when it is on local disk: the output role
-- writes the gzip members to `blob_key` and the row keeps the index (sequence number, length
-- before compression) only. Every row has exactly one of `data`, `gzip`, `blob_key`; `raw_bytes`
-- comes with the compressed forms.
ALTER TABLE log_chunks ADD COLUMN blob_key text;
ALTER TABLE log_chunks DROP CONSTRAINT log_chunks_one_form;
ALTER TABLE log_chunks ADD CONSTRAINT log_chunks_one_form
  CHECK (num_nonnulls(data, gzip, blob_key) = 1 AND (data IS NOT NULL OR raw_bytes IS NOT NULL));
