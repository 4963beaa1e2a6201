import { chmodSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startGroupKeeper, startUidKeeper, type Keeper } from '../../runtime/agent/sandbox/keepers';

/**
 * A task's keeper removes the task's directories after its sweep, in its own process: what a user
 * would notice if that were wrong is a work directory that fills up with finished tasks, or (the
 * attack) a link the build left that leads the removal (as root) into a directory outside.
 */
describe("a keeper removing a task's directories after its sweep", () => {
  let work: string;
  let outside: string;
  beforeEach(() => {
    work = mkdtempSync(join(tmpdir(), 'gyre-keeper-work-'));
    outside = mkdtempSync(join(tmpdir(), 'gyre-keeper-outside-'));
    writeFileSync(join(outside, 'keep'), 'kept');
  });
  afterEach(() => {
    rmSync(work, { recursive: true, force: true });
    rmSync(outside, { recursive: true, force: true });
  });

  /** A task's tree as a build leaves it: files, a nested directory, links to outside (file and directory). */
  const plant = (dir: string) => {
    mkdirSync(join(dir, 'project', 'a', 'b'), { recursive: true });
    for (let i = 0; i < 50; i++) writeFileSync(join(dir, 'project', 'a', 'b', `f${i}`), 'x');
    symlinkSync(outside, join(dir, 'project', 'to-outside'));
    symlinkSync(join(outside, 'keep'), join(dir, 'keep-link'));
    // A directory its owner closed: root removes it all the same.
    if (process.getuid?.() === 0) chmodSync(join(dir, 'project', 'a'), 0o500);
  };

  const removes = async (keeper: Keeper) => {
    const task = join(work, 'task-1');
    plant(task);
    mkdirSync(`${task}.ctl`);
    writeFileSync(join(`${task}.ctl`, 'owner'), 'x');
    const other = join(work, 'not-named');
    mkdirSync(other);
    try {
      // A relative path and a missing one are passed over; the rest is removed before the answer.
      await keeper.sweep([task, `${task}.tmp`, `${task}.ctl`, 'relative/path']);
      expect(existsSync(task)).toBe(false);
      expect(existsSync(`${task}.ctl`)).toBe(false);
      expect(readdirSync(outside)).toEqual(['keep']);
      expect(lstatSync(other).isDirectory()).toBe(true);
      // It goes on answering: a plain sweep still works, with nothing to remove.
      await keeper.sweep();
      expect(keeper.alive()).toBe(true);
    } finally {
      await keeper.close();
    }
  };

  it('the group keeper (builds without isolation), as this user', async () => {
    await removes(await startGroupKeeper());
  });

  (process.getuid?.() === 0 ? it : it.skip)('the uid keeper, as root, a link left by the build not followed', async () => {
    const lockDir = mkdtempSync(join(tmpdir(), 'gyre-keeper-locks-'));
    try {
      const keeper = await startUidKeeper(912400, join(lockDir, '912400.lock'));
      if (keeper === 'busy') throw new Error('uid 912400 is held by another test');
      await removes(keeper);
    } finally {
      rmSync(lockDir, { recursive: true, force: true });
    }
  });
});
