-- Pull requests from forks (docs/security.md, "Forked pull requests"). A pipeline records whether
-- its trigger was a pull request from a fork (the GitHub webhook says so; API triggers never are),
-- and a project whether such pipelines get its secrets anyway (CircleCI's project setting
-- `forks_receive_secret_env_vars`, off unless turned on). A task of a fork pipeline of a project
-- that does not allow it gets no project variables and no context; a job naming a context ends
-- `unauthorized`.
--
-- Expand only: the previous release neither reads nor writes these columns, and their defaults say
-- what was true of every pipeline and project before (none from a fork; secrets not for forks).
ALTER TABLE pipelines ADD COLUMN from_fork boolean NOT NULL DEFAULT false;
ALTER TABLE projects ADD COLUMN forks_receive_secret_env_vars boolean NOT NULL DEFAULT false;
