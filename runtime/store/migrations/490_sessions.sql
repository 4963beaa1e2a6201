-- Browser sessions (sign-in with a token, GitHub, OpenID Connect or LDAP). The cookie holds a random
-- session id; only its SHA-256 is stored, so a copy of the database signs nobody in. `csrf_token`
-- is what the UI must echo in X-Gyre-CSRF on every write it makes with the cookie. A session ends
-- at `expires_at`, after `idle` without a request (checked against `last_seen_at`, written at most
-- once a minute), at sign-out, or when its user is disabled. `id` names a session in the audit log.
CREATE TABLE sessions (
  id_hash text PRIMARY KEY,
  id uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
  user_id uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  csrf_token text NOT NULL,
  provider text NOT NULL,
  address text,
  created_at timestamptz NOT NULL DEFAULT now(),
  last_seen_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_expires ON sessions (expires_at);

-- A redirect sign-in under way (GitHub, OpenID Connect): what was sent to the provider, found again
-- by the hash of its `state` when the browser returns, used once, gone after ten minutes.
CREATE TABLE sign_in_attempts (
  state_hash text PRIMARY KEY,
  provider text NOT NULL,
  code_verifier text NOT NULL,
  nonce text,
  return_to text,
  created_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz NOT NULL
);
CREATE INDEX sign_in_attempts_expires ON sign_in_attempts (expires_at);
