import { readdirSync, readFileSync } from 'node:fs';

/**
 * The uid keepers running on this host for uids `first`-`last` (`node -e <keeper> <uid>` under
 * flock; runtime/agent/sandbox/keepers.ts), zombies left out: what tests of build uids look for.
 */
export function uidKeepers(first: number, last = first): { pid: number; uid: number }[] {
  const found: { pid: number; uid: number }[] = [];
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
      if (argv[0] !== process.execPath || argv[1] !== '-e') continue;
      const uid = Number(argv[argv.length - 1]);
      if (uid >= first && uid <= last && !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'))) found.push({ pid: Number(pid), uid });
    } catch {
      // Gone while it was looked at.
    }
  }
  return found;
}
