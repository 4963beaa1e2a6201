/**
 * Whether a project's repository URL is read over SSH: `ssh://[user@]host[:port]/path`, or git's
 * scp-like `user@host:path` (`git@github.com:acme/app.git`). Over SSH the checkout step reads it with
 * the project's checkout key (runtime/secrets/ssh-keys.ts); over HTTPS with a token, if any.
 */
export function isSshRepositoryUrl(url: string): boolean {
  if (/^ssh:\/\//i.test(url) || /^git\+ssh:\/\//i.test(url)) return true;
  // scp-like: no scheme, a host before the first ':', which comes before any '/'.
  return !url.includes('://') && /^(?:[A-Za-z0-9._-]+@)?[A-Za-z0-9.-]+:(?!\/\/)[^\s]+$/.test(url) && !/^[A-Za-z]:[\\/]/.test(url);
}

/** The host of an SSH repository URL (`github.com` of `git@github.com:acme/app.git`), lower case; undefined for others. */
export function sshHostOf(url: string): string | undefined {
  if (!isSshRepositoryUrl(url)) return undefined;
  const scheme = /^(?:git\+)?ssh:\/\/(?:[^@/]+@)?(\[[^\]]+\]|[^:/]+)/i.exec(url);
  if (scheme) return scheme[1].toLowerCase();
  return /^(?:[^@]+@)?([^:]+):/.exec(url)?.[1].toLowerCase();
}
