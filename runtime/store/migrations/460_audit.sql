-- The audit log (docs/security.md, "Audit log"): one row per mutating API action, written in the
-- transaction of the change it records (so a change and its record commit or vanish together), and
-- one per refused or failed attempt. Kept GYRE_AUDIT_RETENTION_DAYS, swept by the audit role.
-- Actor and target are copied in, not referenced: a record outlives the user, token or project.
CREATE TABLE audit_events (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  at timestamptz NOT NULL DEFAULT now(),
  actor_id text,
  actor_login text NOT NULL,
  token_id uuid,
  token_kind text,
  action text NOT NULL,
  target_type text,
  target_id text,
  org text,
  project text,
  address text,
  result text NOT NULL CHECK (result IN ('success', 'denied', 'failed')),
  status integer,
  detail jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_events_at ON audit_events (at, id);
CREATE INDEX audit_events_org_at ON audit_events (org, at, id) WHERE org IS NOT NULL;
