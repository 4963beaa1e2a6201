import { lstatSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { processExists } from '../../process-exists';

/**
 * A private temporary directory (mkdtemp: 0700, this process's user) named for this process,
 * `<prefix><pid>-XXXXXX`, for its maker to remove when the process exits. Before it is made, the
 * directories of that prefix left by this user's processes that are gone (killed before their exit
 * handler ran) are removed: every uid keeper's sweep lists the shared temporary directories entry
 * by entry, so what is left there costs every task after it (docs/speed.md, "what a full /tmp
 * costs every task"). A process is taken for gone when no process of its pid is seen: processes
 * sharing this temporary directory from another pid namespace must not use the same prefix.
 */
export function makeProcessTempDir(prefix: string): string {
  removeLeftovers(prefix);
  return mkdtempSync(join(tmpdir(), `${prefix}${process.pid}-`));
}

function removeLeftovers(prefix: string): void {
  let names: string[];
  try {
    names = readdirSync(tmpdir());
  } catch {
    return;
  }
  const named = new RegExp(`^${prefix.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}(\\d+)-`);
  for (const name of names) {
    const pid = Number(named.exec(name)?.[1]);
    if (!pid || pid === process.pid || processExists(pid)) continue;
    const dir = join(tmpdir(), name);
    try {
      const info = lstatSync(dir);
      if (info.isDirectory() && info.uid === process.getuid?.()) rmSync(dir, { recursive: true, force: true });
    } catch {
      // Removed meanwhile by another process, or not ours to remove.
    }
  }
}
