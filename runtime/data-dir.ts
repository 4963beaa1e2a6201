import { chmod, lstat, mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from './logger';

/**
 * Files at rest. Nothing Gyre keeps in its data directory (GYRE_DATA_DIR) is for anyone but the
 * user Gyre runs as: the directory is 0700, what Gyre writes in it is 0600 (directories 0700).
 * Writers set these modes themselves; `secureDataDir` also tightens, at start, what an older
 * Gyre (or PGlite, which writes its files 0666) left too open. docs/security.md says it for people.
 */

/** Mode bits for group and others: none of them stay set on anything in the data directory. */
const OPEN_BITS = 0o077;

/**
 * What Gyre keeps in the data directory and tightens at start. Anything else there is left as
 * it is: a data directory pointed at a folder with other things in it loses nobody's modes.
 * `tasks` holds the build's own directories (their owner sets their modes): only it is tightened.
 */
export const DATA_DIR_ENTRIES = ['pgdata', 'blobs', 'git-mirrors', 'spools', 'example-repo', 'secrets'] as const;
const NOT_DESCENDED = ['tasks'] as const;

/** Where the server's spools (log spools, uploads on their way to the blob store) live. */
export function spoolDirOf(dataDir: string): string {
  return join(dataDir, 'spools');
}

/**
 * Removes group and other bits from `path` and, when `descend`, everything under it (links are
 * not followed, nor changed: a link's own mode means nothing). Gives the paths it changed.
 */
export async function tightenTree(path: string, options: { descend?: boolean; notOwned?: string[] } = {}): Promise<string[]> {
  const changed: string[] = [];
  const notOwned = options.notOwned ?? [];
  const visit = async (at: string, depth: number): Promise<void> => {
    const info = await lstat(at).catch(() => undefined);
    if (!info || info.isSymbolicLink()) return;
    if (info.mode & OPEN_BITS) {
      try {
        await chmod(at, info.mode & 0o7700 & ~OPEN_BITS);
        changed.push(at);
      } catch (error) {
        // Not ours to change (a volume mounted for us, owned by root): what is in it still is.
        if ((error as NodeJS.ErrnoException).code !== 'EPERM') throw error;
        notOwned.push(at);
      }
    }
    if (info.isDirectory() && (options.descend ?? true) && depth < 64) {
      for (const name of await readdir(at).catch(() => [] as string[])) await visit(join(at, name), depth + 1);
    }
  };
  await visit(path, 0);
  return changed;
}

/**
 * Makes the data directory (0700) if it is missing, and tightens it and Gyre's own entries in it
 * (DATA_DIR_ENTRIES) where group or others could read, write or enter them, saying in the log
 * what it changed. Call it before anything is written there.
 */
export async function secureDataDir(dataDir: string, log: Logger): Promise<{ readonly tightened: readonly string[] }> {
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const notOwned: string[] = [];
  const tightened = await tightenTree(dataDir, { descend: false, notOwned });
  for (const name of DATA_DIR_ENTRIES) tightened.push(...(await tightenTree(join(dataDir, name), { notOwned })));
  for (const name of NOT_DESCENDED) tightened.push(...(await tightenTree(join(dataDir, name), { descend: false, notOwned })));
  if (notOwned.length > 0) {
    // A data directory mounted for Gyre (a Kubernetes volume, a tmpfs) may belong to root: it stays
    // as it is, and what Gyre writes in it is still its own (umask 077, explicit modes).
    log.warn('the data directory (or something in it) is open to others and not Gyre\'s to tighten; keep it on a volume only Gyre uses', {
      dataDir,
      first: notOwned.slice(0, 5).join(', '),
    });
  }
  if (tightened.length > 0) {
    log.warn('tightened files in the data directory that group or others could reach (now 0600, directories 0700)', {
      dataDir,
      count: tightened.length,
      first: tightened.slice(0, 5).join(', '),
    });
  }
  return { tightened };
}
