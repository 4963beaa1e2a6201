// What `ps` shows of this process. (Secrets in its environment are taken out before anything
// runs, by bin/secrets.js, in plain JavaScript ahead of the TypeScript loader.)

/**
 * Replaces what /proc/<pid>/cmdline shows with `title` (a token given with `--token` is then no
 * longer listed by `ps`, though it was for a moment at start).
 */
export function hideArguments(title: string): void {
  try {
    process.title = title;
  } catch {
    // Not every platform can; the warning about --token stands.
  }
}
