-- Who holds a running task's lease: 'builtin' (a server's own built-in runner), 'runner' (a
-- self-hosted runner, by HTTP) or 'nomad' (the Nomad driver, then the agent it started). A server
-- on the embedded database that starts again ends only the attempts its own built-in runner held:
-- a remote runner's lease may still be current.
ALTER TABLE tasks ADD COLUMN lease_holder text;
