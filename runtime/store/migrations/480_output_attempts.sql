-- File steps' rows carry the attempt that wrote them (written under that attempt's lease), so the
-- API shows the latest attempt's artifacts and test results, and a retried job's downstream jobs
-- attach only the workspace its successful attempt persisted. Expand only: nullable columns.
ALTER TABLE artifacts ADD COLUMN attempt integer;
ALTER TABLE workspace_layers ADD COLUMN attempt integer;
ALTER TABLE test_results ADD COLUMN attempt integer;
ALTER TABLE caches ADD COLUMN attempt integer;
ALTER TABLE protected_caches ADD COLUMN attempt integer;
