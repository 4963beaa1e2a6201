/** Where the compiler finds orbs named `ns/orb@version`: Gyre's orb registry, or a local directory. */
export interface OrbSource {
  /**
   * The orb `name` ("ns/orb") at `versionRef` (`x.y.z`, `x.y`, `x` or `volatile`: the newest match),
   * as packed orb YAML; undefined when there is no such orb or version.
   */
  resolve(name: string, versionRef: string): Promise<{ version: string; source: string } | undefined>;
}
