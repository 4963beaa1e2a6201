/**
 * The `Forge` seam: where project source lives. The embedded default reads git repositories
 * (local paths or any URL git can fetch); GitHub / GitHub Enterprise come later behind the same
 * interface.
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
}
