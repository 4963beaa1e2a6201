import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';

/**
 * Keepers: small processes, one per running task, that outlive the agent that started them by a
 * moment. A keeper reads its stdin, a pipe from the agent; when that pipe closes, whether the
 * agent ended the task or died (SIGKILL included: the kernel closes the pipe), it kills what the
 * task left running and exits. They run in their own process group, so a signal to the agent's
 * group does not take them first.
 */

/**
 * A task's directories removed by its keeper, after the sweep (nothing of the task runs then), in
 * the keeper's own process with synchronous calls: not on the agent's thread, where each of a
 * tree's few dozen removals was an asynchronous call (about 3 ms of the server's thread a task
 * here, and a round trip through its thread pool each). `rmSync` does not follow links. What it
 * cannot remove is left for the agent, which looks after the answer and removes what is still
 * there itself.
 */
const REMOVE = `
const remove = (list) => {
  let dirs;
  try { dirs = list ? JSON.parse(list) : []; } catch { return; }
  if (!Array.isArray(dirs)) return;
  for (const dir of dirs) {
    if (typeof dir !== 'string' || !dir.startsWith('/')) continue;
    try { require('node:fs').rmSync(dir, { recursive: true, force: true }); } catch {}
  }
};
`;

/** Keepers yield to the agent: a sweep woken by the agent's line does not take its core from it. */
const NICE = `try { require('node:os').setPriority(10); } catch {}`;

/**
 * The uid keeper, run as root under `flock` on the uid's lock file (so one build uid serves one
 * task on this host at a time, across processes). It kills every process of the uid when it
 * starts (what a task before it may have left) and again when its stdin closes, then exits, which
 * releases the lock. Killing is done by a child with the build uid calling `kill -9 -1`, always:
 * the kernel signals every process that uid may signal, which are exactly its own, whatever
 * process group or session they moved to; then the keeper looks in /proc until none is left.
 * Then what the uid left in the directories every user may write (/tmp, /var/tmp, /dev/shm, …)
 * is handed to root, so the next task of the uid cannot read it. The build cannot kill a keeper
 * (root). A line `sweep` on stdin does all that now and answers `swept`; `sweep` followed by a
 * JSON list of directories then removes those too (the task's, once nothing of the uid runs: see
 * REMOVE).
 */
const UID_KEEPER = `
const uid = Number(process.argv[1]);
${NICE}
const { spawnSync } = require('node:child_process');
const { readdirSync, readFileSync, lstatSync } = require('node:fs');
const options = { uid, gid: uid, stdio: 'ignore', env: { PATH: '/usr/bin:/bin' }, cwd: '/' };
// What the kill has not yet ended: processes of the uid (their /proc entry is the uid's: a
// set-uid program it ran shows as root's, and is ended by the kill all the same) that are not
// zombies. Only waited for, so that nothing of the uid is still exiting while its files are handed
// back and removed; the kill itself (killAll, below) does not depend on it.
const running = () => {
  let n = 0;
  for (const pid of readdirSync('/proc')) {
    if (!/^\\d+$/.test(pid)) continue;
    try {
      if (lstatSync('/proc/' + pid).uid !== uid) continue;
      if (!/\\nState:\\s+Z/.test(readFileSync('/proc/' + pid + '/status', 'utf8'))) n++;
    } catch {}
  }
  return n;
};
// kill(-1) sent as the uid, every time: the kernel signals every process of the uid in one walk
// of its task list (a fork under way either lands in it or fails), so nothing can slip past it.
// A look through /proc first would not do: a build that keeps forking and exiting has each of its
// pids gone by the time the look reaches it, finds nothing and kills nothing (test/agent/keepers).
// The look after the kill only waits for what was killed to be gone, and kills again meanwhile.
const killAll = () => {
  const r = spawnSync('kill', ['-9', '-1'], options);
  if (r.error) spawnSync(process.execPath, ['-e', 'for (let i = 0; i < 100; i++) { try { process.kill(-1, "SIGKILL"); } catch { break; } }'], options);
};
const kill = () => {
  killAll();
  for (let round = 0; round < 20 && running() > 0; round++) killAll();
};
// What the uid left where every user may write is handed to root (and a directory closed), so
// the next task of this uid cannot read it. Nothing is deleted: others may write there too.
const { lchownSync, chmodSync } = require('node:fs');
const handBack = () => {
  let seen = 0;
  const walk = (dir, sticky) => {
    let names;
    try { names = readdirSync(dir); } catch { return; }
    for (const name of names) {
      if (++seen > 20000) return;
      const path = dir + '/' + name;
      let st;
      try { st = lstatSync(path); } catch { continue; }
      if (st.uid === uid || st.gid === uid) {
        try { lchownSync(path, 0, 0); if (sticky && st.isDirectory()) chmodSync(path, 0o700); } catch {}
      } else if (st.isDirectory() && (st.mode & 0o002)) walk(path, (st.mode & 0o1000) !== 0);
    }
  };
  for (const dir of ['/tmp', '/var/tmp', '/dev/shm', '/run/lock', '/dev/mqueue']) {
    try { const st = lstatSync(dir); if (st.isDirectory()) walk(dir, (st.mode & 0o1000) !== 0); } catch {}
  }
};
const sweep = () => { kill(); handBack(); };
${REMOVE}
let ending = false;
const end = () => { if (ending) return; ending = true; sweep(); process.exit(0); };
sweep();
process.stdout.write('ready\\n');
let pending = '';
process.stdin.on('data', (d) => {
  pending += d;
  for (let i; (i = pending.indexOf('\\n')) >= 0; pending = pending.slice(i + 1)) {
    const line = pending.slice(0, i);
    if (line === 'sweep' || line.startsWith('sweep [')) { sweep(); remove(line.slice(6)); process.stdout.write('swept\\n'); }
  }
});
process.stdin.on('end', end);
process.stdin.on('error', end);
`;

/**
 * The group keeper, for builds that run as Gyre's own user (no isolation): it is told each
 * process group a step starts (`group <pgid>` lines) and kills them all when its stdin closes.
 * The build could kill it (same user); that is part of what "no isolation" means.
 */
const GROUP_KEEPER = `
${NICE}
const groups = new Set();
let pending = '';
const kill = () => { for (const g of groups) { try { process.kill(-g, 'SIGKILL'); } catch {} } };
const end = () => { kill(); process.exit(0); };
process.stdin.on('data', (d) => {
  pending += d;
  for (let i; (i = pending.indexOf('\\n')) >= 0; pending = pending.slice(i + 1)) {
    const line = pending.slice(0, i);
    const m = /^group (\\d+)$/.exec(line);
    if (m && Number(m[1]) > 1) groups.add(Number(m[1]));
    if (line === 'sweep' || line.startsWith('sweep [')) { kill(); groups.clear(); remove(line.slice(6)); process.stdout.write('swept\\n'); }
  }
});
process.stdin.on('end', end);
process.stdin.on('error', end);
${REMOVE}
process.stdout.write('ready\\n');
`;

const SYSTEM_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** Exit code `flock` gives when the lock is held by someone else (`--conflict-exit-code`). */
const BUSY = 75;

export interface Keeper {
  /** Tells a group keeper about a process group to kill at the end. */
  track(pgid: number): void;
  /**
   * Kills now what it would kill at the end (the uid's processes, or the groups), then removes
   * `remove` (absolute paths, links not followed); resolves once done. What is still there after
   * is the caller's to remove (a keeper that died or did not answer removed nothing, or not all).
   */
  sweep(remove?: readonly string[]): Promise<void>;
  /** Closes the pipe: the keeper kills what is left and exits. Resolves when it has. */
  close(): Promise<void>;
  /** Whether the keeper still runs. */
  readonly alive: () => boolean;
}

function keeperOf(child: ChildProcess): Keeper {
  // A keeper never keeps the agent's process alive: it outlives the agent by design.
  child.unref();
  for (const stream of [child.stdin, child.stdout, child.stderr]) (stream as unknown as { unref?: () => void } | null)?.unref?.();
  let exited = child.exitCode !== null || child.signalCode !== null;
  const exit = once(child, 'exit').then(() => undefined);
  void exit.then(() => (exited = true));
  let lines: ((line: string) => void)[] = [];
  let pending = '';
  child.stdout!.on('data', (d: Buffer) => {
    pending += d.toString('utf8');
    for (let i; (i = pending.indexOf('\n')) >= 0; pending = pending.slice(i + 1)) {
      const line = pending.slice(0, i);
      const waiting = lines;
      lines = [];
      for (const w of waiting) w(line);
    }
  });
  child.stdin!.on('error', () => undefined);
  return {
    track(pgid) {
      if (!exited) child.stdin!.write(`group ${pgid}\n`);
    },
    async sweep(remove) {
      if (exited) return;
      child.ref();
      const answered = new Promise<void>((resolve) => lines.push(() => resolve()));
      child.stdin!.write(remove?.length ? `sweep ${JSON.stringify(remove)}\n` : 'sweep\n');
      // A keeper that does not answer is not waited for forever: closing it kills all the same.
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([answered, exit, new Promise((r) => (timer = setTimeout(r, 10_000)))]);
      clearTimeout(timer);
      child.unref();
    },
    async close() {
      // Waited for: the keeper is done (its task swept) before this resolves.
      child.ref();
      child.stdin!.end();
      await exit;
    },
    alive: () => !exited,
  };
}

/** Waits for the keeper's `ready` line; undefined when it exited first (with its exit code). */
async function ready(child: ChildProcess): Promise<{ ok: true } | { ok: false; code: number | null; stderr: string }> {
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
  return new Promise((resolve) => {
    let out = '';
    const onData = (d: Buffer) => {
      out += d.toString('utf8');
      if (out.includes('ready\n')) {
        child.stdout!.off('data', onData);
        child.off('exit', onExit);
        resolve({ ok: true });
      }
    };
    const onExit = (code: number | null) => {
      child.stdout!.off('data', onData);
      resolve({ ok: false, code, stderr: stderr.trim() });
    };
    child.stdout!.on('data', onData);
    child.once('exit', onExit);
    child.once('error', (error) => resolve({ ok: false, code: null, stderr: error.message }));
  });
}

/**
 * Starts the uid keeper for `uid` under its lock file. Resolves with the keeper once it has
 * killed whatever the uid had running; `busy` when another task (in this or another process)
 * holds the uid.
 */
export async function startUidKeeper(uid: number, lockFile: string): Promise<Keeper | 'busy'> {
  const child = spawn('flock', ['--nonblock', '--conflict-exit-code', String(BUSY), lockFile, process.execPath, '-e', UID_KEEPER, String(uid)], {
    detached: true,
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { PATH: SYSTEM_PATH },
    cwd: '/',
  });
  const started = await ready(child);
  if (started.ok) return keeperOf(child);
  if (started.code === BUSY) return 'busy';
  throw new Error(`cannot start the keeper of build uid ${uid} (flock from util-linux is needed): ${started.stderr || `exit ${started.code}`}`);
}

/** Starts a group keeper (builds without isolation). */
export async function startGroupKeeper(): Promise<Keeper> {
  const child = spawn(process.execPath, ['-e', GROUP_KEEPER], { detached: true, stdio: ['pipe', 'pipe', 'pipe'], env: {}, cwd: '/' });
  const started = await ready(child);
  if (!started.ok) throw new Error(`cannot start the process keeper: ${started.stderr || `exit ${started.code}`}`);
  return keeperOf(child);
}
