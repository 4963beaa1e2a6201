import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SIGNALLER_MARK, startGroupKeeper, startUidKeeper, type Keeper } from '../../runtime/agent/sandbox/keepers';
import { until } from '../support/processes';

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

/**
 * A uid task's directories and its job directory are made by its keeper (root), off the agent's
 * thread. What a user would notice if that were wrong: a job whose home or files have the wrong
 * owner or mode, a task start that goes on after a step failed to be made (and says nothing), or
 * (the attack) a path a build planted as a link that leads the keeper, as root, to change a file
 * elsewhere.
 */
describe("a keeper making a task's files", () => {
  let work: string;
  let outside: string;
  beforeEach(() => {
    work = mkdtempSync(join(tmpdir(), 'gyre-keeper-make-'));
    chmodSync(work, 0o755);
    outside = mkdtempSync(join(tmpdir(), 'gyre-keeper-outside-'));
    writeFileSync(join(outside, 'keep'), 'kept');
    chmodSync(join(outside, 'keep'), 0o600);
  });
  afterEach(() => {
    rmSync(work, { recursive: true, force: true });
    rmSync(outside, { recursive: true, force: true });
  });

  const makes = async (keeper: Keeper, owner: number) => {
    try {
      const dir = join(work, 'task');
      // Two megabytes in one line (a large test timings file), besides the usual few.
      const big = Buffer.alloc(2 << 20, 'timing\n');
      await keeper.make([
        { op: 'rm', path: dir },
        { op: 'mkdir', path: dir, mode: 0o750 },
        { op: 'mkdir', path: join(dir, 'bin'), mode: 0o755 },
        { op: 'write', path: join(dir, 'bin', 'tool'), mode: 0o755, data: '#!/bin/sh\necho made\n' },
        { op: 'write', path: join(dir, 'timings'), mode: 0o644, data: big },
        { op: 'own', path: join(dir, 'timings'), uid: owner, gid: owner },
      ]);
      // Modes as asked, whatever the keeper's umask (077 under `gyre server`).
      expect(statSync(dir).mode & 0o777).toBe(0o750);
      expect(statSync(join(dir, 'bin', 'tool')).mode & 0o777).toBe(0o755);
      expect(readFileSync(join(dir, 'bin', 'tool'), 'utf8')).toBe('#!/bin/sh\necho made\n');
      expect(readFileSync(join(dir, 'timings')).equals(big)).toBe(true);
      expect([statSync(join(dir, 'timings')).uid, statSync(join(dir, 'timings')).mode & 0o777]).toEqual([owner, 0o644]);

      // Stopped at the first that fails, with the reason; the ones before it stay done.
      await expect(
        keeper.make([
          { op: 'mkdir', path: join(dir, 'new'), mode: 0o700 },
          { op: 'mkdir', path: join(dir, 'bin'), mode: 0o700 },
          { op: 'mkdir', path: join(dir, 'never'), mode: 0o700 },
        ]),
      ).rejects.toThrow(/EEXIST.*bin/);
      expect([existsSync(join(dir, 'new')), existsSync(join(dir, 'never'))]).toEqual([true, false]);
      await expect(keeper.make([{ op: 'mkdir', path: 'relative/dir', mode: 0o700 }])).rejects.toThrow(/not an absolute path: "relative\/dir"/);

      // Links a build could have planted are never followed: not written through, not given a
      // mode, not given an owner (the link itself is).
      symlinkSync(join(outside, 'keep'), join(dir, 'planted'));
      await expect(keeper.make([{ op: 'write', path: join(dir, 'planted'), mode: 0o666, data: 'overwritten' }])).rejects.toThrow(/EEXIST/);
      await expect(keeper.make([{ op: 'chmod', path: join(dir, 'planted'), mode: 0o666 }])).rejects.toThrow(/ELOOP/);
      await keeper.make([{ op: 'own', path: join(dir, 'planted'), uid: owner, gid: owner }]);
      expect(readFileSync(join(outside, 'keep'), 'utf8')).toBe('kept');
      expect(statSync(join(outside, 'keep')).mode & 0o777).toBe(0o600);
      expect(statSync(join(outside, 'keep')).uid).toBe(process.getuid!());
      expect(lstatSync(join(dir, 'planted')).uid).toBe(owner);

      // Large contents are sent once and kept by the keeper: the same bytes written again, in the
      // same line or a later one, are the same; other bytes of the same size are their own; after
      // a make that failed, they are still right.
      const shared = Buffer.alloc(64 << 10, 'shared\n');
      const other = Buffer.alloc(64 << 10, 'other!\n');
      await keeper.make([
        { op: 'write', path: join(dir, 'kept-1'), mode: 0o755, data: shared },
        { op: 'write', path: join(dir, 'kept-2'), mode: 0o755, data: shared },
      ]);
      await keeper.make([
        { op: 'write', path: join(dir, 'kept-3'), mode: 0o644, data: shared },
        { op: 'write', path: join(dir, 'other'), mode: 0o644, data: other },
      ]);
      await expect(keeper.make([{ op: 'write', path: join(dir, 'kept-1'), mode: 0o644, data: Buffer.from(other) }])).rejects.toThrow(/EEXIST/);
      await keeper.make([{ op: 'write', path: join(dir, 'kept-4'), mode: 0o600, data: Buffer.from(shared) }]);
      for (const name of ['kept-1', 'kept-2', 'kept-3', 'kept-4']) expect(readFileSync(join(dir, name)).equals(shared)).toBe(true);
      expect(readFileSync(join(dir, 'other')).equals(other)).toBe(true);
      expect([statSync(join(dir, 'kept-3')).mode & 0o777, statSync(join(dir, 'kept-4')).mode & 0o777]).toEqual([0o644, 0o600]);

      // It still answers, in order: a make, then a sweep that removes what was made.
      await keeper.make([{ op: 'write', path: join(dir, 'last'), mode: 0o600, data: 'x' }]);
      await keeper.sweep([dir]);
      expect(existsSync(dir)).toBe(false);
      expect(keeper.alive()).toBe(true);
    } finally {
      await keeper.close();
    }
    // A keeper that is gone is not waited for.
    await expect(keeper.make([{ op: 'mkdir', path: join(work, 'after'), mode: 0o700 }])).rejects.toThrow(/has exited/);
  };

  it('the group keeper (builds without isolation), as this user', async () => {
    await makes(await startGroupKeeper(), process.getuid!());
  });

  (process.getuid?.() === 0 ? it : it.skip)('the uid keeper, as root, handing files to the build uid', async () => {
    const lockDir = mkdtempSync(join(tmpdir(), 'gyre-keeper-locks-'));
    try {
      const keeper = await startUidKeeper(912401, join(lockDir, '912401.lock'));
      if (keeper === 'busy') throw new Error('uid 912401 is held by another test');
      await makes(keeper, 912401);
    } finally {
      rmSync(lockDir, { recursive: true, force: true });
    }
  });
});

/**
 * The attack on a uid keeper's sweep: a build process that keeps starting its next generation and
 * exiting, each living well under a millisecond, so that a look through /proc finds every pid it
 * listed already gone. If it outlived the sweep it would run as the uid the next task gets, able
 * to read that task's files and its processes' environments (secrets).
 */
describe("a uid keeper's sweep against a build that keeps forking and exiting", () => {
  const perl = spawnSync('perl', ['-e', '1']).status === 0;
  (process.getuid?.() === 0 && perl ? it : it.skip)('leaves no generation alive after the sweep', async () => {
    const uid = 912401;
    const dir = mkdtempSync(join(tmpdir(), 'gyre-keeper-hop-'));
    // Outside what the sweep hands back (it walks only world-writable directories): a directory
    // the uid can write its heartbeat in, under one the uid can pass through.
    chmodSync(dir, 0o711);
    const beats = join(dir, 'beats');
    mkdirSync(beats);
    chownSync(beats, uid, uid);
    const beat = join(beats, 'beat');
    const keeper = await startUidKeeper(uid, join(dir, `${uid}.lock`));
    if (keeper === 'busy') throw new Error(`uid ${uid} is held by another test`);
    // Each generation forks the next, writes the time and exits; the first leaves the session.
    const hopper = `use POSIX; POSIX::setsid(); while (1) { my $p = fork; POSIX::_exit(0) if !defined($p) || $p; open(my $f, '>', '${beat}') or next; print $f time; close $f; select(undef, undef, undef, 0.0005) }`;
    const beating = async () => {
      const before = readFileSync(beat, 'utf8');
      const at = statSync(beat).mtimeMs;
      await new Promise((r) => setTimeout(r, 300));
      return statSync(beat).mtimeMs !== at || readFileSync(beat, 'utf8') !== before;
    };
    try {
      spawn('perl', ['-e', hopper], { uid, gid: uid, cwd: '/', stdio: 'ignore', detached: true }).unref();
      await until('the first beat', async () => existsSync(beat), 10_000, 20);
      expect(await beating()).toBe(true); // it runs, as the uid
      await keeper.sweep();
      expect(await beating()).toBe(false);
    } finally {
      await keeper.close();
      // kill(-1) as the uid (pkill, which reads /proc, could miss it as the old sweep did).
      spawnSync('kill', ['-9', '-1'], { uid, gid: uid, stdio: 'ignore' });
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

/**
 * A uid keeper sends its sweep's kill through the uid's signaller, a process of the build uid that
 * gave up root in its own process (runtime/agent/sandbox/keepers.ts SIGNALLER). The attacks: the
 * build (the same uid) reads or traces it, to make it lie or to live on in it into the uid's next
 * task; kills it, or stops it, so that the sweep's kill is never sent. What a user would notice if
 * any worked: a build process still running after its task, as the uid the next task gets.
 */
describe("a uid keeper's signaller against the build it sweeps", () => {
  const root = process.getuid?.() === 0;
  const uid = 912402;
  let dir: string;
  let keeper: Keeper;
  beforeEach(async () => {
    if (!root) return;
    dir = mkdtempSync(join(tmpdir(), 'gyre-keeper-signaller-'));
    const started = await startUidKeeper(uid, join(dir, `${uid}.lock`));
    if (started === 'busy') throw new Error(`uid ${uid} is held by another test`);
    keeper = started;
  });
  afterEach(async () => {
    if (!root) return;
    await keeper.close();
    spawnSync('kill', ['-9', '-1'], { uid, gid: uid, stdio: 'ignore' });
    rmSync(dir, { recursive: true, force: true });
  });

  const pids = () => readdirSync('/proc').filter((p) => /^\d+$/.test(p));
  const cmdline = (pid: string) => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    } catch {
      return '';
    }
  };
  const alive = (pid: string) => {
    try {
      return !/\nState:\s+Z/.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
    } catch {
      return false;
    }
  };
  /** The uid's signaller once it runs as the uid (not root any more). */
  const signaller = () =>
    until(
      "the uid's signaller",
      async () =>
        pids().find((pid) => {
          if (!cmdline(pid).includes(`-e\0${SIGNALLER_MARK}`) || !cmdline(pid).endsWith(`\0${uid}\0`)) return false;
          const ids = /\nUid:\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
          return ids?.slice(1).every((id) => Number(id) === uid) ?? false;
        }),
      10_000,
      20,
    );
  /** A process of the build: a sleeper in a session of its own, as a background job that escaped would be. */
  const buildProcess = (script: string) => {
    const child = spawn('setsid', ['sh', '-c', script], { uid, gid: uid, cwd: '/', stdio: 'ignore', detached: true });
    child.unref();
    return child;
  };
  const asBuild = (command: string) => spawnSync('sh', ['-c', command], { uid, gid: uid, cwd: '/', encoding: 'utf8' });
  /**
   * Pids of the build's processes: the uid's, by their /proc status, but for its signaller (a new
   * one is started after a sweep that could not use the last, and may run as the uid already).
   */
  const ofUid = (except: string) =>
    pids().filter((pid) => {
      if (pid === except || !alive(pid) || cmdline(pid).includes(`-e\0${SIGNALLER_MARK}`)) return false;
      try {
        return new RegExp(`\\nUid:\\s+${uid}\\s`).test(readFileSync(`/proc/${pid}/status`, 'utf8'));
      } catch {
        return false;
      }
    });

  /** A process as a failure shows it: its pid, state and command line (what was left, and doing what). */
  const described = (pid: string) => {
    let state = 'gone';
    try {
      state = /\nState:\s+([^\n]+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? '?';
    } catch {
      // gone meanwhile
    }
    return `${pid} (${state}) ${cmdline(pid).split('\0').join(' ').slice(0, 200)}`;
  };

  (root ? it : it.skip)('cannot be read or reached into by the build, and sends the kill that ends it', async () => {
    // Its answer is used once the keeper has seen it ready: a sweep may still start a `kill` child
    // (which ends the signaller too, and a new one is started), so this looks until one sweep ends
    // the build's process with the same signaller alive after it. Every sweep must end the build.
    let kept = false;
    for (let attempt = 0; attempt < 5 && !kept; attempt++) {
      const pid = await signaller();
      await new Promise((r) => setTimeout(r, 100));
      // What a build would read or write to reach into it: denied, though it is the build's uid.
      for (const file of ['environ', 'mem', 'fd']) {
        const read = asBuild(`cat /proc/${pid}/${file} > /dev/null && echo read`);
        expect([read.stdout.trim(), read.stderr]).toEqual(['', expect.stringMatching(/Permission denied/)]);
      }
      buildProcess('sleep 300');
      await until('the build process', async () => ofUid(pid).length > 0, 10_000, 20);
      await keeper.sweep();
      expect(ofUid(pid).map(described)).toEqual([]);
      kept = alive(pid);
    }
    expect(kept).toBe(true);
  });

  (root ? it : it.skip)('killed by the build, the sweep still ends it, and a new signaller is started', async () => {
    const first = await signaller();
    buildProcess(`kill -9 ${first}; sleep 300`);
    await until('the signaller killed', async () => !alive(first), 10_000, 20);
    await until('the build process', async () => ofUid('').length > 0, 10_000, 20);
    await keeper.sweep();
    expect(ofUid('').map(described)).toEqual([]);
    expect(keeper.alive()).toBe(true);
    const second = await signaller();
    expect(second).not.toBe(first);
  });

  (root ? it : it.skip)('stopped again and again by the build, the sweep still ends it in time', async () => {
    const pid = await signaller();
    // The keeper continues it before each kill it asks for: stopping it once is not enough.
    buildProcess(`while kill -STOP ${pid} 2>/dev/null; do :; done; sleep 300`);
    await until('the signaller stopped', async () => /\nState:\s+T/.test(readFileSync(`/proc/${pid}/status`, 'utf8')), 10_000, 20);
    await keeper.sweep();
    // Answered within the keeper's time (a sweep not answered in 10 s leaves the keeper broken).
    expect(keeper.alive()).toBe(true);
    expect(ofUid('').map(described)).toEqual([]);
  });
});
