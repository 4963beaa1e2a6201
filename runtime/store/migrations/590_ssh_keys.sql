-- A project's SSH keys (runtime/secrets/ssh-keys.ts; docs/security.md, "SSH keys"). Additive only:
-- new tables the previous release never reads.
--
-- Checkout keys (CircleCI's `/project/{slug}/checkout-key`): key pairs Gyre makes itself (Ed25519);
-- the checkout step reads an ssh:// or git@host: repository with the preferred one (a user key before
-- a deploy key, the newest first). Additional SSH keys (CircleCI's v1.1 `/project/…/ssh-key`):
-- private keys a project admin gives, each for a host name or for every host ('' here), written into
-- the job by `add_ssh_keys`.
--
-- The private half is stored only sealed (runtime/secrets/secret-box.ts: the five Sealed columns),
-- bound to its row (`checkout-key:<project id>:<fingerprint>`, `ssh-key:<project id>:<fingerprint>:<hostname>`
-- as additional data), so a copy of the database holds no private key and a sealed one copied to
-- another row does not open. The public half and its fingerprints are kept in clear: `fingerprint`
-- as `ssh-keygen -l -E md5` prints it, without its `MD5:` (c9:0b:…), `fingerprint_sha256` as
-- `ssh-keygen -l` prints it (SHA256:…).
CREATE TABLE project_checkout_keys (
  project_id uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
  fingerprint text NOT NULL,
  fingerprint_sha256 text NOT NULL,
  type text NOT NULL CHECK (type IN ('deploy-key', 'github-user-key')),
  public_key text NOT NULL,
  ciphertext bytea NOT NULL,
  iv bytea NOT NULL,
  tag bytea NOT NULL,
  wrapped_key bytea NOT NULL,
  key_id text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (project_id, fingerprint)
);
CREATE INDEX project_checkout_keys_sha256 ON project_checkout_keys (project_id, fingerprint_sha256);

CREATE TABLE project_ssh_keys (
  project_id uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
  fingerprint text NOT NULL,
  hostname text NOT NULL DEFAULT '',
  fingerprint_sha256 text NOT NULL,
  public_key text NOT NULL,
  ciphertext bytea NOT NULL,
  iv bytea NOT NULL,
  tag bytea NOT NULL,
  wrapped_key bytea NOT NULL,
  key_id text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (project_id, fingerprint, hostname)
);
