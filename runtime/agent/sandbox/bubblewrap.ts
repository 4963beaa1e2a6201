import { spawnSync } from 'node:child_process';
import { existsSync, lstatSync, readdirSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';

/**
 * Bubblewrap (`bwrap`) sandboxes for builds of a Gyre that runs as an ordinary user: a user
 * namespace with the same uid, a pid namespace of its own (a fresh /proc, so no other process of
 * the host is visible, the server's environment included), and a filesystem that holds only the
 * host's system directories, read-only, the task's own directories and nothing of Gyre's (its
 * data directory, its user's home). Whatever the host keeps from other users (a file in /etc only
 * its owner may read) is hidden from the build too, although the build runs as that owner.
 * `--die-with-parent` ends the sandbox, and with its pid namespace everything in it, when the
 * process that started it dies.
 */

/** System directories bound read-only (symlinks, as on merged-/usr systems, are made as symlinks). */
const SYSTEM_DIRS = ['/usr', '/bin', '/sbin', '/lib', '/lib32', '/lib64', '/libx32', '/etc', '/opt'];
/** Directories scanned for entries other users may not read (hidden from builds). */
const SCANNED = ['/etc', '/opt'];
/** Gives up scanning past this many entries (a huge /opt): what is left is bound as it is. */
const MAX_SCANNED = 50_000;

export interface BubblewrapBase {
  /** The path of `bwrap`. */
  readonly command: string;
  /** Namespaces, system directories, masks, /proc and /dev: what every sandbox starts from. */
  readonly args: readonly string[];
}

export interface SandboxView {
  /** Host paths bound into the sandbox, at `target` (default: the same path). */
  readonly mounts: readonly { readonly source: string; readonly target?: string; readonly readOnly?: boolean }[];
  /** Bound read-write at /tmp and /var/tmp. */
  readonly tmp: string;
  /** Where the command starts (a path in the sandbox). */
  readonly cwd: string;
}

/** The full argument list for one command in a sandbox. */
export function sandboxArgs(base: BubblewrapBase, view: SandboxView, command: readonly string[]): string[] {
  // /tmp first: a task directory that lies under the host's /tmp is then bound over it, not hidden by it.
  const args = [...base.args, '--bind', view.tmp, '/tmp', '--bind', view.tmp, '/var/tmp'];
  for (const m of view.mounts) args.push(m.readOnly ? '--ro-bind' : '--bind', m.source, m.target ?? m.source);
  args.push('--chdir', view.cwd, '--', ...command);
  return args;
}

/**
 * What every sandbox starts from, and a probe that it works here (bubblewrap installed, user
 * namespaces allowed). Returns the reason when it does not.
 */
export function prepareBubblewrap(path?: string): { ok: true; base: BubblewrapBase } | { ok: false; reason: string } {
  const command = (path ? [path] : ['/usr/bin/bwrap', '/bin/bwrap', '/usr/local/bin/bwrap']).find((p) => existsSync(p));
  if (!command) return { ok: false, reason: `bubblewrap (bwrap) is not installed${path ? ` at ${path}` : ''}` };
  const args = [
    '--unshare-user',
    '--unshare-pid',
    '--unshare-ipc',
    '--unshare-uts',
    '--unshare-cgroup-try',
    '--die-with-parent',
  ];
  for (const dir of SYSTEM_DIRS) {
    const info = lstatSync(dir, { throwIfNoEntry: false });
    if (!info) continue;
    if (info.isSymbolicLink()) args.push('--symlink', readlinkSync(dir), dir);
    else if (info.isDirectory()) args.push('--ro-bind', dir, dir);
  }
  // /etc/resolv.conf often points into /run (systemd-resolved): name resolution needs it.
  args.push('--ro-bind-try', '/run/systemd/resolve', '/run/systemd/resolve');
  args.push(...hiddenFromOthers(SCANNED));
  args.push('--proc', '/proc', '--dev', '/dev');
  const base = { command, args };
  const probe = spawnSync(command, sandboxArgs(base, { mounts: [], tmp: '/tmp', cwd: '/' }, ['/bin/sh', '-c', 'test -r /proc/self/status']), {
    encoding: 'utf8',
    env: { PATH: '/usr/bin:/bin' },
    timeout: 10_000,
  });
  if (probe.status !== 0) {
    const why = (probe.stderr || probe.error?.message || `exit ${probe.status}`).trim();
    return { ok: false, reason: `bubblewrap cannot make a sandbox here (are unprivileged user namespaces disabled?): ${why}` };
  }
  return { ok: true, base };
}

/**
 * Masks for what under `roots` other users may not read: a directory becomes an empty read-only
 * one, a file an empty file. The build runs as the same uid as Gyre in the sandbox, so without the
 * masks it could read what the host gave Gyre's user alone (a credentials file in /etc).
 */
function hiddenFromOthers(roots: readonly string[]): string[] {
  const masks: string[] = [];
  let seen = 0;
  const walk = (dir: string) => {
    let entries: string[];
    try {
      entries = readdirSync(dir);
    } catch {
      return;
    }
    for (const name of entries) {
      if (++seen > MAX_SCANNED) return;
      const path = join(dir, name);
      const info = lstatSync(path, { throwIfNoEntry: false });
      if (!info || info.isSymbolicLink()) continue;
      if (info.isDirectory()) {
        if ((info.mode & 0o005) !== 0o005) masks.push('--tmpfs', path, '--remount-ro', path);
        else walk(path);
      } else if (info.isFile() && (info.mode & 0o004) === 0) {
        masks.push('--ro-bind', '/dev/null', path);
      }
    }
  };
  for (const root of roots) if (existsSync(root)) walk(root);
  return masks;
}
