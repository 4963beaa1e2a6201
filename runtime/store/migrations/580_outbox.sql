-- The outbox (runtime/outbox/): what Gyre tells the outside world about a state change, written in
-- the transaction that makes the change and delivered afterwards by a sender loop (the conductor
-- role's) with retries and exponential backoff. Generic: a row names its `kind` (`github-status`
-- first; outbound webhooks and notifications later) and carries the handler's payload.
--
--   state            pending until delivered; `delivered`, `skipped` (the handler had nothing to
--                    send), or `failed` (refused by the receiver, or out of attempts) for good
--   ordering_key     deliveries with the same key go out in the order they were written (a commit
--                    status's `pending` never lands after its `success`); null: no order
--   attempts         sends tried so far (counted at the claim)
--   next_attempt_at  when the row is next due; a claim pushes it past the sender's lease, so a
--                    sender that dies mid-send leaves the row to be claimed again after that
--   claim_id         the current claim: a sender records the outcome only while it still holds it
--   last_error       why the last attempt did not deliver
--
-- Expand only: a new table the previous release never reads.
CREATE TABLE outbox (
  id uuid PRIMARY KEY,
  seq bigserial NOT NULL UNIQUE,
  kind text NOT NULL,
  payload jsonb NOT NULL,
  ordering_key text,
  state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'skipped', 'failed')),
  attempts integer NOT NULL DEFAULT 0,
  next_attempt_at timestamptz NOT NULL DEFAULT now(),
  claim_id uuid,
  last_error text,
  created_at timestamptz NOT NULL DEFAULT now(),
  finished_at timestamptz
);

-- The sender looks for due rows among the pending few, never the delivered many.
CREATE INDEX outbox_pending ON outbox (next_attempt_at) WHERE state = 'pending';
CREATE INDEX outbox_pending_key ON outbox (ordering_key, seq) WHERE state = 'pending';
-- The sweep deletes finished rows by age.
CREATE INDEX outbox_finished ON outbox (finished_at) WHERE state <> 'pending';
