-- The orb registry: orbs imported for air-gapped installs (gyre orb import). Versions are immutable:
-- publishing an existing name@version is refused. The packed orb YAML is stored as is.
CREATE TABLE orb_versions (
  name text NOT NULL,
  version text NOT NULL,
  major integer NOT NULL,
  minor integer NOT NULL,
  patch integer NOT NULL,
  source text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (name, version)
);

CREATE INDEX orb_versions_by_semver ON orb_versions (name, major DESC, minor DESC, patch DESC);
