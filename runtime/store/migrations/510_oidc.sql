-- OpenID Connect tokens for jobs (CIRCLE_OIDC_TOKEN, CIRCLE_OIDC_TOKEN_V2; runtime/secrets/oidc-tokens.ts).
-- Additive only: new tables the previous release never reads.

-- Each organisation's signing keys. `public_jwk` is what `/org/<id>/.well-known/jwks-pub.json`
-- publishes; the private key is kept only sealed (runtime/secrets/secret-box.ts: the five Sealed
-- columns, bound to `oidc-signing-key:<organization id>:<kid>`), never in clear. One key per
-- organisation is `active` (it signs); at rotation it becomes `retired` and stays published until
-- every token it signed has expired. `retires_at`: for the active key, when it is due to be
-- replaced; for a retired one, when it was.
CREATE TABLE oidc_signing_keys (
  kid text PRIMARY KEY,
  organization_id uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
  alg text NOT NULL CHECK (alg IN ('RS256')),
  public_jwk jsonb NOT NULL,
  ciphertext bytea NOT NULL,
  iv bytea NOT NULL,
  tag bytea NOT NULL,
  wrapped_key bytea NOT NULL,
  key_id text NOT NULL,
  state text NOT NULL CHECK (state IN ('active', 'retired')),
  created_at timestamptz NOT NULL DEFAULT now(),
  retires_at timestamptz NOT NULL
);
CREATE UNIQUE INDEX oidc_signing_keys_active ON oidc_signing_keys (organization_id) WHERE state = 'active';
CREATE INDEX oidc_signing_keys_org ON oidc_signing_keys (organization_id, created_at);

-- Custom claims of an organisation's tokens (CircleCI's `/org/{orgID}/oidc-custom-claims`) and of
-- one project's (`/org/{orgID}/project/{projectID}/oidc-custom-claims`, which win over the
-- organisation's, claim by claim). `audience` replaces the default `aud` (the organisation id);
-- `ttl` the default lifetime of one hour (a Go-style duration, `30m`, `2h`). NULL: not set here.
CREATE TABLE oidc_custom_claims (
  organization_id uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
  project_id uuid REFERENCES projects(id) ON DELETE CASCADE,
  audience text[],
  audience_updated_at timestamptz,
  ttl text,
  ttl_updated_at timestamptz,
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX oidc_custom_claims_org ON oidc_custom_claims (organization_id) WHERE project_id IS NULL;
CREATE UNIQUE INDEX oidc_custom_claims_project ON oidc_custom_claims (project_id) WHERE project_id IS NOT NULL;
