import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
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
 * here, and a round trip through its thread pool each). No link is followed: a directory's entries
 * are taken by their type as the directory lists them (a link is removed as a link). Not `rmSync`:
 * it tries `rmdir` on each directory before emptying it and lstats every entry, an error thrown and
 * caught for each directory and about a third more system calls, which on this kind of machine
 * was 0.6 ms of the keeper's CPU a task against 0.4. What it cannot remove is left for the agent,
 * which looks after the answer and removes what is still there itself.
 */
const REMOVE = `
const removeTree = (path) => {
  const fs = require('node:fs');
  const info = fs.lstatSync(path, { throwIfNoEntry: false });
  if (!info) return;
  if (!info.isDirectory()) { fs.unlinkSync(path); return; }
  const emptied = (dir) => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      const child = dir + '/' + entry.name;
      if (entry.isDirectory()) emptied(child);
      else fs.unlinkSync(child);
    }
    fs.rmdirSync(dir);
  };
  emptied(path);
};
const remove = (list) => {
  let dirs;
  try { dirs = list ? JSON.parse(list) : []; } catch { return; }
  if (!Array.isArray(dirs)) return;
  for (const dir of dirs) {
    if (typeof dir !== 'string' || !dir.startsWith('/')) continue;
    try { removeTree(dir); } catch {}
  }
};
`;

/** How many contents a keeper keeps (MAKE's `keep`), and the size from which one is kept. */
const KEPT = 8;
const KEPT_FROM = 4096;

/**
 * A task's directories and files made by its keeper before anything of the build runs (the uid
 * keeper: root, beside the agent's process): the same system calls the agent made on its own thread
 * before, where on a disk such as this machine's (ext4 on a virtual disk: 0.14 ms a `mkdir`, 0.15 a
 * file created) the two dozen of a task's start held that thread 2–2.5 ms while the task's secrets
 * were being read, on the way to its first command (docs/speed.md: moved, not removed; no gain in
 * latency showed above this machine's spread). Operations in order, stopped at the first that fails:
 * `mkdir` (not recursive: a path already there fails), `write` (created, never opened if there),
 * each then given its mode again (the umask cuts what they set); `chmod`; `own` (`lchown`); `rm`
 * (recursive). None follows a link: a mode is set through the file opened with O_NOFOLLOW.
 * Absolute paths only. Answered `made`, or `failed` and the reason. A task waits for it: the uid
 * keeper does it at the agent's priority (NICE).
 *
 * A `write` may carry `keep` (a key): its bytes are kept, before any operation is done, and a later
 * `write` names them by `kept` instead of carrying them (at most KEPT contents, each of KEPT_FROM
 * bytes or more; the agent's side decides, and sends them again after any failure). Every task's job directory has the
 * same 12 kB `circleci` script twice: sent as base64 in each task's line, it was a 33 kB line to
 * encode, write, read and decode a task.
 */
const MAKE = `
const kept = new Map();
const make = (list) => {
  const fs = require('node:fs');
  let ops;
  try { ops = JSON.parse(list); } catch { return 'failed the operations are not JSON'; }
  if (!Array.isArray(ops)) return 'failed the operations are not a list';
  for (const o of ops) {
    if (o && o.op === 'write' && typeof o.keep === 'string' && typeof o.data === 'string' && (kept.size < ${KEPT} || kept.has(o.keep))) kept.set(o.keep, Buffer.from(o.data, 'base64'));
  }
  const bytesOf = (o) => {
    if (o.kept === undefined) return (typeof o.keep === 'string' && kept.get(o.keep)) || Buffer.from(String(o.data), 'base64');
    const bytes = kept.get(o.kept);
    if (!bytes) throw new Error('no bytes are kept as ' + JSON.stringify(o.kept));
    return bytes;
  };
  // A mode is set through the file opened without following a link (there is no lchmod here).
  const { O_RDONLY, O_NOFOLLOW, O_NONBLOCK } = fs.constants;
  const chmod = (path, mode) => {
    const fd = fs.openSync(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK);
    try { fs.fchmodSync(fd, mode); } finally { fs.closeSync(fd); }
  };
  try {
    for (const o of ops) {
      if (!o || typeof o.path !== 'string' || !o.path.startsWith('/')) throw new Error('not an absolute path: ' + JSON.stringify(o && o.path));
      if (o.op === 'mkdir') { fs.mkdirSync(o.path, { mode: o.mode }); chmod(o.path, o.mode); }
      else if (o.op === 'write') { fs.writeFileSync(o.path, bytesOf(o), { mode: o.mode, flag: 'wx' }); chmod(o.path, o.mode); }
      else if (o.op === 'chmod') chmod(o.path, o.mode);
      else if (o.op === 'own') fs.lchownSync(o.path, o.uid, o.gid);
      else if (o.op === 'rm') removeTree(o.path);
      else throw new Error('unknown operation ' + JSON.stringify(o.op));
    }
    return 'made';
  } catch (error) {
    return 'failed ' + String((error && error.message) || error).replace(/\\s+/g, ' ');
  }
};
`;

/** The key of a content a keeper keeps: its SHA-256, computed once per buffer. */
const keys = new WeakMap<Uint8Array, string>();
function keyOf(bytes: Uint8Array): string {
  let key = keys.get(bytes);
  if (key === undefined) {
    key = createHash('sha256').update(bytes).digest('base64url');
    keys.set(bytes, key);
  }
  return key;
}

/** One of the operations a keeper's `make` does (MAKE). */
export type FileOp =
  | { readonly op: 'mkdir'; readonly path: string; readonly mode: number }
  | { readonly op: 'write'; readonly path: string; readonly mode: number; readonly data: Uint8Array | string }
  | { readonly op: 'chmod'; readonly path: string; readonly mode: number }
  | { readonly op: 'own'; readonly path: string; readonly uid: number; readonly gid: number }
  | { readonly op: 'rm'; readonly path: string };

/**
 * Keepers yield to the agent: a sweep woken by the agent's line does not take its core from it.
 * The group keeper (Gyre's own user) is lowered for good: only root may raise a priority again.
 * The uid keeper (root) is lowered for its sweeps only, and makes a task's files at the agent's
 * priority: the task waits for those. One pair of latency runs here (too noisy to say more): the
 * first `make` of a task reached a lowered keeper 0.49 ms after it was sent (p90 3.4), one at the
 * agent's priority 0.31 ms (p90 1.9).
 */
const NICE = `try { require('node:os').setPriority(10); } catch {}`;
const YIELDING = `const yielding = async (work) => { const os = require('node:os'); try { os.setPriority(10); } catch {} try { await work(); } finally { try { os.setPriority(0); } catch {} } };`;

/** The signaller's first line, in its command line (`node … -e <source> <uid>`): how a look at the host's processes tells it. */
export const SIGNALLER_MARK = '// gyre uid signaller';

/**
 * The uid's signaller: a process of the build uid, kept by its uid keeper, that sends the sweep's
 * `kill(-1)`. A process started for each kill (a `kill` child, as before) cost about 5.5 ms of CPU
 * a task on this kind of machine, where creating and ending any process costs 3.5–4 ms: the largest
 * part of a keeper's work. The signaller is started as root and gives up root in its own process
 * (`setgroups`, `setgid`, `setuid`, with no exec after), which is what makes the kernel mark it not
 * dumpable: the build, the same uid, cannot trace it, read or write its memory, or reach its pipes
 * through /proc (the keeper checks that its /proc files are root's before using it, so a host whose
 * `fs.suid_dumpable` is 1 keeps the `kill` child). `kill(-1)` signals every process the uid may
 * signal but the caller, so it outlives the sweep. The build may still signal it: killed, it is
 * simply not there and the sweep starts a `kill` child; stopped, its answer does not come within
 * SIGNALLER_MS and the keeper kills it (root) and does the same. It checks that it is not root
 * before each kill, which as root would signal every process on the host.
 */
const SIGNALLER = `${SIGNALLER_MARK}
const uid = Number(process.argv[1]);
if (!Number.isInteger(uid) || uid <= 0) process.exit(2);
process.setgroups([]);
process.setgid(uid);
process.setuid(uid);
const mine = () => process.getuid() === uid && process.geteuid() === uid && process.getgid() === uid && process.getegid() === uid;
if (!mine()) process.exit(2);
process.stdin.setEncoding('utf8');
process.stdin.on('data', (d) => {
  for (const line of d.split('\\n')) {
    if (line !== 'kill') continue;
    if (!mine()) process.exit(2);
    // One kill(-1), as the kill command sends: the kernel walks every process once for it (see killAll
    // in the keeper). It fails only where no other process is there at all.
    try { process.kill(-1, 'SIGKILL'); } catch {}
    process.stdout.write('killed\\n');
  }
});
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdout.write('ready\\n');
`;

/** How long a keeper waits for its signaller's answer before it kills the signaller and sends the kill itself. */
const SIGNALLER_MS = 2000;

/**
 * How long a sweep keeps killing and looking for the uid's processes until none is left, at most:
 * within the agent's 10 s for a sweep's answer, with SIGNALLER_MS twice before it.
 */
const KILL_WAIT_MS = 4000;

/**
 * The uid keeper, run as root under `flock` on the uid's lock file (so one build uid serves one
 * task on this host at a time, across processes). It kills every process of the uid when it
 * starts (what a task before it may have left) and again when its stdin closes, then exits, which
 * releases the lock. Killing is `kill(-1)` sent with the build uid, always: the kernel signals
 * every process that uid may signal, which are exactly its own, whatever process group or session
 * they moved to; it is sent by the uid's signaller (SIGNALLER) or, when there is none that answers,
 * by a child started with the uid; then the keeper looks in /proc until none is left.
 * Then what the uid left in the directories every user may write (/tmp, /var/tmp, /dev/shm, …)
 * is handed to root, so the next task of the uid cannot read it. The build cannot kill a keeper
 * (root). A line `sweep` on stdin does all that now and answers `swept`; `sweep` followed by a
 * JSON list of directories then removes those too (the task's, once nothing of the uid runs: see
 * REMOVE). Lines are done one at a time, in order.
 */
const UID_KEEPER = `
const uid = Number(process.argv[1]);
${YIELDING}
const { spawn, spawnSync } = require('node:child_process');
const { readdirSync, readFileSync, lstatSync } = require('node:fs');
const options = { uid, gid: uid, stdio: 'ignore', env: { PATH: '/usr/bin:/bin' }, cwd: '/' };
const SIGNALLER = ${JSON.stringify(SIGNALLER)};
// The signaller (see SIGNALLER in keepers.ts): started once nothing of the uid runs, used once its
// /proc files are root's (it is not dumpable) and its uids are the build's.
let signaller;
let signallers = true;
const notDumpable = (pid) => {
  try {
    if (lstatSync('/proc/' + pid + '/environ').uid !== 0) return false;
    const ids = /\\nUid:\\s+(\\d+)\\s+(\\d+)\\s+(\\d+)\\s+(\\d+)/.exec(readFileSync('/proc/' + pid + '/status', 'utf8'));
    return !!ids && ids.slice(1).every((id) => Number(id) === uid);
  } catch { return false; }
};
const startSignaller = () => {
  if (!signallers || ending || (signaller && !signaller.gone)) return;
  const child = spawn(process.execPath, ['--max-old-space-size=8', '-e', SIGNALLER, String(uid)], { stdio: ['pipe', 'pipe', 'ignore'], env: {}, cwd: '/' });
  const s = { child, usable: false, gone: false, answer: undefined };
  // Settles once it says it is ready (with whether it is usable), or false when it exits first.
  s.ready = new Promise((resolve) => { s.settle = resolve; });
  const gone = () => { s.gone = true; s.usable = false; s.settle(false); const a = s.answer; s.answer = undefined; if (a) a(false); };
  child.on('exit', gone);
  child.on('error', gone);
  child.stdin.on('error', () => {});
  let out = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (d) => {
    out += d;
    for (let i; (i = out.indexOf('\\n')) >= 0; ) {
      const line = out.slice(0, i);
      out = out.slice(i + 1);
      if (line === 'ready' && !s.gone) {
        s.usable = notDumpable(child.pid);
        // A host where a process that gave up root stays dumpable: the build could trace it.
        if (!s.usable) { signallers = false; try { child.kill('SIGKILL'); } catch {} }
        s.settle(s.usable);
      } else if (line === 'killed') { const a = s.answer; s.answer = undefined; if (a) a(true); }
    }
  });
  signaller = s;
};
// Whether the signaller sent the kill: false when there is none that is usable, or it did not
// answer in time. One still starting is waited for (a kill sent by a child would end it too); one
// not ready in time is killed (a new one is started after the sweep).
const signalled = async () => {
  const s = signaller;
  if (!s || s.gone || s.answer) return false;
  let waited;
  const inTime = await Promise.race([s.ready, new Promise((r) => { waited = setTimeout(() => r(false), ${SIGNALLER_MS}); })]);
  clearTimeout(waited);
  if (!inTime || !s.usable || s.gone) { if (!s.gone) { try { s.child.kill('SIGKILL'); } catch {} } return false; }
  return answered(s);
};
const answered = (s) => new Promise((resolve) => {
  const timer = setTimeout(() => { s.answer = undefined; s.usable = false; try { s.child.kill('SIGKILL'); } catch {} resolve(false); }, ${SIGNALLER_MS});
  s.answer = (ok) => { clearTimeout(timer); resolve(ok); };
  // A build may have stopped it (the same uid may): it is continued first (root may).
  try { process.kill(s.child.pid, 'SIGCONT'); } catch {}
  s.child.stdin.write('kill\\n');
});
// What the kill has not yet ended: processes of the uid (their /proc entry is the uid's: a
// set-uid program it ran shows as root's, and is ended by the kill all the same) that are not
// zombies, the signaller aside. Only waited for, so that nothing of the uid is still exiting while
// its files are handed back and removed; the kill itself (killAll, below) does not depend on it.
const running = () => {
  const spared = signaller && !signaller.gone ? String(signaller.child.pid) : '';
  let n = 0;
  for (const pid of readdirSync('/proc')) {
    if (!/^\\d+$/.test(pid) || pid === spared) continue;
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
const killAll = async () => {
  if (await signalled()) return;
  const r = spawnSync('kill', ['-9', '-1'], options);
  if (r.error) spawnSync(process.execPath, ['-e', 'try { process.kill(-1, "SIGKILL"); } catch {}'], options);
};
// Waited for by time, not by a count of kills: a killed process is not gone until it has freed its
// memory (3 GiB took 180 ms on a busy machine here) or, in an uninterruptible wait (an exec paging
// its program in from a busy disk, a write), until the wait ends, where twenty kills back to back
// may take a few milliseconds. Pauses grow from 1 ms to 50, each followed by a kill again.
const kill = async () => {
  await killAll();
  const deadline = Date.now() + ${KILL_WAIT_MS};
  for (let pause = 1; running() > 0 && Date.now() < deadline; pause = Math.min(pause * 2, 50)) {
    await new Promise((r) => setTimeout(r, pause));
    await killAll();
  }
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
const sweep = async () => { await kill(); handBack(); };
${REMOVE}
${MAKE}
// One line at a time, in the order they came: each answer is the oldest line's.
let queue = Promise.resolve();
const later = (work) => { queue = queue.then(work).catch(() => {}); };
let ending = false;
const end = () => { if (ending) return; ending = true; later(async () => { await yielding(sweep); process.exit(0); }); };
// Once swept nothing of the uid runs: the signaller is started then (again, when the build killed it).
later(async () => { await yielding(sweep); process.stdout.write('ready\\n'); startSignaller(); });
let pending = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (d) => {
  // A make line carries its files (a megabyte or more of test timings): only the new part is searched.
  let from = pending.length;
  pending += d;
  for (let i; (i = pending.indexOf('\\n', from)) >= 0; from = 0) {
    const line = pending.slice(0, i);
    pending = pending.slice(i + 1);
    if (line === 'sweep' || line.startsWith('sweep [')) later(async () => { await yielding(async () => { await sweep(); remove(line.slice(6)); }); process.stdout.write('swept\\n'); startSignaller(); });
    else if (line.startsWith('make [')) later(() => { process.stdout.write(make(line.slice(5)) + '\\n'); });
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
process.stdin.setEncoding('utf8');
process.stdin.on('data', (d) => {
  let from = pending.length;
  pending += d;
  for (let i; (i = pending.indexOf('\\n', from)) >= 0; from = 0) {
    const line = pending.slice(0, i);
    pending = pending.slice(i + 1);
    const m = /^group (\\d+)$/.exec(line);
    if (m && Number(m[1]) > 1) groups.add(Number(m[1]));
    if (line === 'sweep' || line.startsWith('sweep [')) { kill(); groups.clear(); remove(line.slice(6)); process.stdout.write('swept\\n'); }
    else if (line.startsWith('make [')) process.stdout.write(make(line.slice(5)) + '\\n');
  }
});
process.stdin.on('end', end);
process.stdin.on('error', end);
${REMOVE}
${MAKE}
process.stdout.write('ready\\n');
`;

const SYSTEM_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** Exit code `flock` gives when the lock is held by someone else (`--conflict-exit-code`). */
const BUSY = 75;

export interface Keeper {
  /** Tells a group keeper about a process group to kill at the end (a uid keeper kills all of its uid's and is told nothing). */
  track(pgid: number): void;
  /**
   * Kills now what it would kill at the end (the uid's processes, or the groups), then removes
   * `remove` (absolute paths, links not followed); resolves once done. What is still there after
   * is the caller's to remove (a keeper that died or did not answer removed nothing, or not all).
   */
  sweep(remove?: readonly string[]): Promise<void>;
  /**
   * Does `ops` in the keeper's process, in order (MAKE); resolves once all are done, rejects with
   * the reason of the first that failed (the ones before it stay done), or when the keeper is gone.
   */
  make(ops: readonly FileOp[]): Promise<void>;
  /** Closes the pipe: the keeper kills what is left and exits. Resolves when it has. */
  close(): Promise<void>;
  /** Whether the keeper still runs. */
  readonly alive: () => boolean;
}

/** `groups`: whether it kills the process groups it is told of (the group keeper), not its uid's processes. */
function keeperOf(child: ChildProcess, groups: boolean): Keeper {
  // A keeper never keeps the agent's process alive: it outlives the agent by design.
  child.unref();
  for (const stream of [child.stdin, child.stdout, child.stderr]) (stream as unknown as { unref?: () => void } | null)?.unref?.();
  let exited = child.exitCode !== null || child.signalCode !== null;
  /** The keys of the contents this keeper keeps (MAKE's `keep`). */
  const keeps = new Set<string>();
  /** A keeper that did not answer a sweep in time is not given more work: a late answer would be taken for the next one's. */
  let broken = false;
  // Referenced while a line of the agent's waits for its answer, not otherwise.
  let holds = 0;
  const hold = () => {
    if (holds++ === 0) child.ref();
  };
  const release = () => {
    if (--holds === 0) child.unref();
  };
  const exit = once(child, 'exit').then(() => undefined);
  void exit.then(() => (exited = true));
  // The keeper answers its lines in the order it was sent them: each answer is the oldest waiter's.
  const lines: ((line: string) => void)[] = [];
  let pending = '';
  child.stdout!.setEncoding('utf8');
  child.stdout!.on('data', (d: string) => {
    pending += d;
    for (let i; (i = pending.indexOf('\n')) >= 0; pending = pending.slice(i + 1)) {
      const line = pending.slice(0, i);
      lines.shift()?.(line);
    }
  });
  child.stdin!.on('error', () => undefined);
  return {
    track(pgid) {
      // A uid keeper's sweep kills every process of the uid: a line a step would only wake it.
      if (groups && !exited) child.stdin!.write(`group ${pgid}\n`);
    },
    async sweep(remove) {
      if (exited || broken) return;
      hold();
      let answer = false;
      const answered = new Promise<void>((resolve) => lines.push(() => resolve(void (answer = true))));
      child.stdin!.write(remove?.length ? `sweep ${JSON.stringify(remove)}\n` : 'sweep\n');
      // A keeper that does not answer is not waited for forever: closing it kills all the same.
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([answered, exit, new Promise((r) => (timer = setTimeout(r, 10_000)))]);
      clearTimeout(timer);
      if (!answer) broken = true;
      release();
    },
    async make(ops) {
      if (exited || broken) throw new Error(`the keeper of the task ${exited ? 'has exited' : 'did not answer'}`);
      const list = ops.map((o) => {
        if (o.op !== 'write') return o;
        const { data, ...rest } = o;
        if (typeof data !== 'string' && data.byteLength >= KEPT_FROM) {
          const key = keyOf(data);
          if (keeps.has(key)) return { ...rest, kept: key };
          if (keeps.size < KEPT) {
            keeps.add(key);
            return { ...rest, data: Buffer.from(data).toString('base64'), keep: key };
          }
        }
        return { ...rest, data: Buffer.from(data).toString('base64') };
      });
      hold();
      try {
        const answer = await Promise.race([
          new Promise<string>((resolve) => {
            lines.push(resolve);
            child.stdin!.write(`make ${JSON.stringify(list)}\n`);
          }),
          exit.then(() => undefined),
        ]);
        if (answer === 'made') return;
        // What it keeps is not known after a failure: it is sent again.
        keeps.clear();
        throw new Error(answer === undefined ? 'the keeper of the task exited while it made its files' : answer.replace(/^failed /, ''));
      } finally {
        release();
      }
    },
    async close() {
      // Waited for: the keeper is done (its task swept) before this resolves.
      child.ref();
      child.stdin!.end();
      await exit;
    },
    alive: () => !exited && !broken,
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
  if (started.ok) return keeperOf(child, false);
  if (started.code === BUSY) return 'busy';
  throw new Error(`cannot start the keeper of build uid ${uid} (flock from util-linux is needed): ${started.stderr || `exit ${started.code}`}`);
}

/** Starts a group keeper (builds without isolation). */
export async function startGroupKeeper(): Promise<Keeper> {
  const child = spawn(process.execPath, ['-e', GROUP_KEEPER], { detached: true, stdio: ['pipe', 'pipe', 'pipe'], env: {}, cwd: '/' });
  const started = await ready(child);
  if (!started.ok) throw new Error(`cannot start the process keeper: ${started.stderr || `exit ${started.code}`}`);
  return keeperOf(child, true);
}
