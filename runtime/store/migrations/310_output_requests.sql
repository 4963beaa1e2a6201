-- Writes of the output role that a remote agent may send more than once (it retries a request
-- whose answer it did not get): one row per logical write, named by the agent's Idempotency-Key
-- and stored in the same transaction as what the write stored, so a retry of a write that was
-- stored already stores nothing and answers as the first did (`answer`).
CREATE TABLE output_requests (
  job_id uuid NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
  request_key text NOT NULL,
  answer text NOT NULL DEFAULT '',
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (job_id, request_key)
);
