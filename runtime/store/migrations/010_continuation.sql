-- Setup workflows: a setup pipeline gets a continuation key its jobs use, once, to supply the
-- real configuration. The setup config is kept beside the continued one.
ALTER TABLE pipelines ADD COLUMN continuation_key text;
ALTER TABLE pipelines ADD COLUMN continuation_expires_at timestamptz;
ALTER TABLE pipelines ADD COLUMN continued_at timestamptz;
ALTER TABLE pipelines ADD COLUMN setup_config_source text;
ALTER TABLE pipelines ADD COLUMN setup_config_compiled text;
CREATE UNIQUE INDEX pipelines_continuation_key ON pipelines (continuation_key) WHERE continuation_key IS NOT NULL;
