import { closeSync, openSync, readFileSync, readSync, writeSync } from 'node:fs';

/**
 * Keeping secrets out of reach of builds that run as the same user (no isolation) or of anything
 * that reads `/proc/<pid>/environ` and `/proc/<pid>/cmdline`: secrets the process has read are
 * dropped from its environment (so no child inherits them), and the environment block the process
 * was started with, which the kernel shows in /proc whatever the process deleted since, is
 * overwritten. The variables that stay are copied first, so the process still sees them.
 */

/** What `gyre server`, `gyre runner` and `gyre agent` read once and keep no longer in their environment. */
export const SECRET_VARIABLES = ['GYRE_ADMIN_TOKEN', 'DATABASE_URL', 'GYRE_AGENT_SECRET', 'NOMAD_TOKEN', 'GYRE_RUNNER_TOKEN', 'GYRE_TASK_TOKEN', 'GYRE_TOKEN'] as const;

/**
 * Drops `names` from this process's environment and blanks the environment block it started
 * with. Returns false when the block could not be blanked (a kernel that refuses writes to
 * /proc/self/mem): the variables are still gone from what children inherit.
 */
export function forgetSecrets(names: readonly string[] = SECRET_VARIABLES): boolean {
  for (const name of names) delete process.env[name];
  // Every variable left is set again: the C library copies it to the heap, so the start block is
  // no longer where anyone reads it from, and it can be blanked.
  for (const [name, value] of Object.entries(process.env)) if (value !== undefined) process.env[name] = value;
  try {
    const stat = readFileSync('/proc/self/stat', 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // env_start and env_end are fields 50 and 51 of /proc/<pid>/stat (proc(5)); 48 and 49 after the name.
    const start = Number(fields[47]);
    const end = Number(fields[48]);
    if (!(start > 0 && end > start && end - start < 16 * 1024 * 1024)) return false;
    const fd = openSync('/proc/self/mem', 'r+');
    try {
      const block = Buffer.alloc(end - start);
      readSync(fd, block, 0, block.length, start);
      writeSync(fd, Buffer.alloc(block.length), 0, block.length, start);
    } finally {
      closeSync(fd);
    }
    return !readFileSync('/proc/self/environ').some((byte) => byte !== 0);
  } catch {
    return false;
  }
}

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
