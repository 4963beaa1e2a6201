import { spawnSync } from 'node:child_process';

/**
 * Marks a work root as the top of directory hierarchies (`chattr +T`) where the filesystem has
 * that flag (ext2/3/4), so that each task's directory is placed in a block group of its own
 * choosing (ext4's Orlov allocator spreads the subdirectories of such a directory, as it does
 * those of `/` and `/home`) instead of all of them in the work root's group.
 *
 * Why: a task makes and removes a dozen inodes (its three directories, the control files, its job
 * directory, its scripts), and on ext4 without a journal (the virtual machines of docs/speed.md)
 * the inode allocator skips, one at a time, every inode of a group freed in the last one to six
 * minutes (`recently_deleted`), looking each one's inode table block up: with every task in one
 * group, each new inode walked past the thousands that the tasks before it had freed, a walk that
 * grew with the rate of tasks (a third of the keepers' samples back to back in `perf`; about a
 * fifth in the twenty-second sitting's). With a journal the walk does not happen and the flag
 * only spreads the directories.
 *
 * `chattr` (e2fsprogs, part of every Debian-based system) sets it: Node has no ioctl, and a
 * native module for one flag set once at start-up is not worth a build step. Where it cannot be
 * set (another filesystem, no `chattr`, a user not allowed) nothing changes and nothing fails.
 */
export function spreadTaskDirectories(workRoot: string): void {
  spawnSync('chattr', ['+T', workRoot], {
    env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' },
    stdio: 'ignore',
    timeout: 5_000,
  });
}
