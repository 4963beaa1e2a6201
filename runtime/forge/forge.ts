/**
 * The `Forge` seam: where project source lives. The embedded default reads git repositories
 * (local paths or any URL git can fetch, runtime/forge/git-forge.ts); with a GitHub App, the
 * repositories on its GitHub (github.com or GitHub Enterprise Server) that it is installed on are
 * read through GitHub's API as the installation (runtime/github/forge.ts), the others as before.
 */
export interface Revision {
  /** Full commit SHA. */
  readonly sha: string;
  /** First line of the commit message. */
  readonly subject: string;
}

export interface Forge {
  /** The repository's default branch (the remote's HEAD). */
  defaultBranch(repoUrl: string): Promise<string>;
  /** The commit a branch or tag points at now. Throws NotFoundError for an unknown ref. */
  resolve(repoUrl: string, ref: { branch?: string; tag?: string }): Promise<Revision>;
  /** A file's content at a revision, or undefined when the file does not exist there. */
  readFile(repoUrl: string, sha: string, path: string): Promise<string | undefined>;
  /**
   * The clone URL of the repository `<org>/<name>`, when the forge can find it by name (a GitHub
   * App installed on it): `gyre project add <org>/<repo>` without a path or URL. Undefined when it
   * cannot. Optional: a forge of plain git repositories finds nothing by name.
   */
  locate?(org: string, name: string): Promise<string | undefined>;
}
