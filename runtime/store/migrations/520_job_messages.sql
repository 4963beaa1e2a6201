-- Why a job ended without running, for people (API v2's job `messages`): a job whose contexts its
-- pipeline may not use ends `unauthorized` with the reason here. Expand only: the previous release
-- neither reads nor writes it.
ALTER TABLE jobs ADD COLUMN messages jsonb NOT NULL DEFAULT '[]'::jsonb;
