import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, lchownSync, lstatSync, mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { chmod, chown, mkdir, readdir, readFile, rm } from 'node:fs/promises';
import { dirname, join, posix, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { ConfigurationError } from '../../domain/errors';
import { archiveLocal, extractLocal } from '../file-transfer';
import { prepareBubblewrap, sandboxArgs, type BubblewrapBase } from './bubblewrap';
import { startGroupKeeper, startUidKeeper, type Keeper } from './keepers';
import { archiveAs, extractAs, type HelperLauncher } from './tree-helper';
import { helperBundle, HELPER_THROUGH_LOADER } from './helper-bundle';
import { ownerAlive, processOwner } from './owner';
import { stepLauncher, type StepProcess } from './step-launcher';
import { spreadTaskDirectories } from './work-root';

/**
 * How a Gyre process keeps the builds it runs in a shell apart from itself and from each other:
 *
 * - `uid` (Gyre runs as root): each running task has a uid of its own from a range
 *   (GYRE_BUILD_UIDS), held through a lock file for as long as the task runs, so no two tasks on
 *   the host share one. A build cannot read another uid's files or /proc/<pid>/environ, cannot
 *   signal other processes, and cannot read Gyre's data directory (0700, root's).
 * - `bubblewrap` (an ordinary user with user namespaces): each step runs in a bubblewrap sandbox
 *   that sees the host's system directories read-only and the task's own directories, in a pid
 *   namespace of its own.
 * - `none` (neither): steps run as Gyre's own user with a clean environment. Gyre says so at start
 *   and in every job's first lines; GYRE_REQUIRE_ISOLATION=true refuses to start instead.
 *
 * Every kind ties a task's processes to the agent: when the agent dies (SIGKILL included) they
 * die too, so a task never runs twice at once after a crash (keepers.ts, bubblewrap.ts).
 */
export type IsolationKind = 'uid' | 'bubblewrap' | 'none';

/** A range of uids for builds, e.g. 900000-900255. */
export interface UidRange {
  readonly first: number;
  readonly last: number;
}

export const DEFAULT_BUILD_UIDS: UidRange = { first: 900_000, last: 900_255 };

/** Parses `first-last`; the error names `setting`. */
export function parseUidRange(text: string, setting: string): UidRange {
  const match = /^\s*(\d{1,10})\s*-\s*(\d{1,10})\s*$/.exec(text);
  const first = Number(match?.[1]);
  const last = Number(match?.[2]);
  if (!match || first < 1000 || last > 4_294_967_294 || last < first) {
    throw new ConfigurationError(setting, `'${text}' is not a range of uids like 900000-900255 (first at least 1000, last at least the first)`);
  }
  return { first, last };
}

export interface IsolationOptions {
  /** `auto`: the best there is; `sandbox`: refuse to start without isolation; `shell`: none, on purpose. */
  readonly mode: 'auto' | 'sandbox' | 'shell';
  readonly buildUids?: UidRange;
  /** Refuse to start (and never fall back to `none`). */
  readonly requireIsolation?: boolean;
  /** Setting names for messages. @default GYRE_EXECUTOR, GYRE_BUILD_UIDS, GYRE_REQUIRE_ISOLATION */
  readonly names?: { readonly executor: string; readonly uids: string; readonly require: string };
  /** Where uid locks live. @default /run/gyre-build-uids (or /var/lib/gyre/build-uids without /run) */
  readonly lockDir?: string;
  /** The uid this process runs as. @default process.getuid() */
  readonly uid?: number;
  /** The bubblewrap program. @default the first of /usr/bin/bwrap, /bin/bwrap, /usr/local/bin/bwrap */
  readonly bubblewrap?: string;
}

/** A step started before its environment was known, held at its gate (BuildBox.runScriptBeforeEnvironment). */
export interface HeldStep {
  readonly process: StepProcess;
  /**
   * Gives it its environment (the box's own variables included), which the shell exports before
   * the script (envGateLine), and lets it run. False, and the process ends having run nothing,
   * when this environment cannot be given that way (`environmentText`): the caller starts the
   * step again with it.
   */
  open(env: Readonly<Record<string, string>>): boolean;
  /** Ends it having run nothing of the script (exit 1). */
  stop(): void;
}

/** What one task gets to run its commands with. */
export interface BuildBox {
  /** $HOME, where the task's files go. */
  readonly home: string;
  /** Whether a path on the host means the same file to the build (no isolation). */
  readonly seesHostPaths: boolean;
  /** Variables the box adds to every command's environment (TMPDIR for uid builds). */
  readonly env: Readonly<Record<string, string>>;
  /**
   * Starts a step's script with its shell (`['/bin/bash', '-eo', 'pipefail']`) in the box, in a
   * process group of its own, in `cwd` (made when missing, as the build); its stdout carries
   * stdout and stderr merged in order. The script is written where only the task can read it and
   * it cannot change it.
   */
  runScript(cwd: string, shell: readonly string[], script: string, env: Readonly<Record<string, string>>, gate?: Promise<void>): StepProcess;
  /**
   * Whether `runScript` with these arguments can take a `gate`: start the process at once and hold
   * it before the script's first command until the gate resolves (a gate that rejects ends it with
   * exit 1, having run nothing of the script). Where it cannot, the caller waits for the gate itself.
   */
  gates(cwd: string, shell: readonly string[], env: Readonly<Record<string, string>>): boolean;
  /**
   * Starts a step's script as `runScript` does, before its environment is known: the process gets
   * none, and is held before the script's first command until `open` or `stop`. Only where
   * `gates(cwd, shell, {})`.
   */
  runScriptBeforeEnvironment(cwd: string, shell: readonly string[], script: string): HeldStep;
  archive(root: string, patterns: readonly string[]): Promise<{ tar: AsyncIterable<Uint8Array>; missing: string[] }>;
  extract(dest: string, tar: AsyncIterable<Uint8Array>, limits?: { maxBytes?: number }): Promise<{ entries: number; bytes: number }>;
  /**
   * Writes Gyre's own files (the job directory) into a new directory `dir` of the home, given
   * relative to it, with the agent's own file calls and then hands them to the build's identity:
   * no helper process. Only while nothing has run in the box yet (no command, no file step): the
   * home is then as the agent made it, so there is no link or file of the build's to be fooled by.
   * False once something has run, or when `dir` exists: the caller writes them as the build
   * (`extract`).
   */
  seed(dir: string, files: readonly SeedFile[]): Promise<boolean>;
  /**
   * Resolves once the task's directories are made, rejects with why they could not be. Until then
   * the box starts only steps held at a gate (`runScript` with one, `runScriptBeforeEnvironment`),
   * which it holds until they are made too; everything else waits for them.
   */
  readonly ready: Promise<void>;
  /** Kills everything, removes the task's directories and gives the identity back. */
  close(): Promise<void>;
}

/** A file `seed` writes: a path relative to the new directory (no `..`), its mode and content. */
export interface SeedFile {
  readonly path: string;
  readonly mode: number;
  readonly content: Uint8Array;
}

export interface Isolation {
  readonly kind: IsolationKind;
  /** How builds are kept apart, in one sentence for the start-up log. */
  readonly summary: string;
  /** Set when builds run without isolation because none was possible: said in every job's first lines. */
  readonly notice?: string;
  /** Makes `workRoot` (where task directories go) fit for this kind; the error names `setting`. */
  prepareWorkRoot(workRoot: string, setting: string): Promise<void>;
  /**
   * Makes the directories of a task and takes a build identity for it. `early`: the box is handed
   * out while its directories are being made (`BuildBox.ready` says when they are), so that the
   * first step's shell can start beside them; else once they are.
   */
  openBox(taskDir: string, options?: { readonly early?: boolean }): Promise<BuildBox>;
  /** Stops what tasks of dead processes left under `workRoot` and removes their directories; returns how many. */
  reapOrphans(workRoot: string): Promise<number>;
  /**
   * Makes ready, ahead of any task, what the first `tasks` tasks running at once would otherwise
   * start on their way: the step launcher, the file helper's bundle, and a keeper for each task
   * (with its build uid, where builds run as uids), waiting as a finished task's does for the
   * next. After `reapOrphans` (a uid held here is not an orphan's to reap). Resolves once they are
   * ready; rejects when one cannot be made (the tasks then try again on their way, as before).
   */
  warm(tasks: number): Promise<void>;
  /** Gives back what it holds between tasks (build uids kept for the next task of a slot). */
  close(): Promise<void>;
}

const ROOT = resolve(__dirname, '../../..');
/** What the file helper needs to see inside a sandbox: its code and its loader, read-only. */
const HELPER_CODE = ['bin', 'runtime', 'node_modules', 'package.json', 'tsconfig.json'].map((p) => join(ROOT, p)).filter((p) => existsSync(p));

/** A step's wrapper: stdout and stderr on one pipe, the working directory made and entered as the build. */
// Steps run with the usual umask (022), whatever the server's own (077: its files are its alone).
// `mkdir` is a program, `[` a builtin: a directory that is there (nearly always) costs no exec,
// which was a tenth of a step's start here (3 of 30 ms from spawn to the command).
const STEP_WRAPPER = 'umask 022; { [ -d "$1" ] || mkdir -p "$1"; } && cd "$1" || exit 1; shift; exec "$@" 2>&1';

/**
 * The first thing a held step's shell does (LaunchOptions.gate in ./step-launcher.ts): it waits for
 * the launcher's line on fd 3, or ends at once when that closes unwritten, then closes fd 3 (the
 * script may use it). POSIX: sh, dash and bash read it alike.
 */
const GATE_LINE = 'IFS= read -r _gyre_go <&3 || exit 1; exec 3<&-; unset _gyre_go; ';

/**
 * The first thing a shell started before its environment was known does (runScriptBeforeEnvironment):
 * it waits for the launcher's line on fd 3 as GATE_LINE does, then reads its environment from
 * `file`, written just before the gate opened (`environmentText`: `export` commands and a last
 * assignment that says they all arrived), and ends at once unless that last one is there. A file,
 * not the gate's pipe: fd 3 is a socket, which a shell cannot open by name, and a `read` of the
 * whole environment from it takes one system call a byte (11 ms for 6 KB here).
 */
function envGateLine(file: string): string {
  return `${GATE_LINE}. '${file.replace(/'/g, `'\\''`)}' && [ "\${_gyre_env-}" = in ] || exit 1; unset _gyre_env; `;
}

/**
 * Variables a POSIX shell sets, resets or reads at its own start, whose value exported after the
 * start would differ from the one it got in its environment (IFS, SHLVL, PWD and the like are
 * reset or derived; ENV and BASH_ENV run files), and the gate's own: a step whose environment has
 * one of these is started with its environment, once it is known.
 */
const SHELL_OWN_VARIABLES = new Set([
  'ENV', 'SHELLOPTS', 'POSIXLY_CORRECT', 'IFS', 'SHLVL', 'PWD', 'OLDPWD', 'PPID', 'UID', 'EUID', 'GROUPS', 'HOSTNAME',
  'HOSTTYPE', 'MACHTYPE', 'OSTYPE', 'OPTIND', 'OPTARG', 'OPTERR', 'PS4', 'RANDOM', 'SRANDOM', 'SECONDS', 'LINENO',
  'HISTCMD', 'FUNCNAME', 'EPOCHSECONDS', 'EPOCHREALTIME', 'DIRSTACK', 'PIPESTATUS', 'COMP_WORDBREAKS', 'COLUMNS',
  'LINES', 'MAILCHECK', 'HISTFILE', '_', '_gyre_go', '_gyre_env',
]);
/** A name an `export` command can set. */
const EXPORTABLE_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * `env` as what a shell started without it reads after its gate (envGateLine): an `export` for each
 * variable (its value in single quotes: nothing in it is expanded), and the
 * assignment that says all of it arrived. Undefined when a variable cannot be given that way (see
 * SHELL_OWN_VARIABLES; names beginning with BASH; a name a shell cannot assign; a NUL in a value).
 */
export function environmentText(env: Readonly<Record<string, string>>): string | undefined {
  let text = '';
  for (const [name, value] of Object.entries(env)) {
    if (!EXPORTABLE_NAME.test(name) || name.startsWith('BASH') || SHELL_OWN_VARIABLES.has(name) || value.includes('\0')) return undefined;
    text += `export ${name}='${value.replace(/'/g, `'\\''`)}'\n`;
  }
  return `${text}_gyre_env=in\n`;
}

/**
 * The wrapper's work for a script whose own shell can do it: the same commands, put before the
 * script's first line (on that line, so the script's line numbers stay as written). One process
 * start less on the way to every step's command (the wrapper's `sh`, which only `exec`s the
 * shell: 1.6 ms of 13.6 from spawn to a command here). The shell's PWD and OLDPWD come out as
 * they did after the wrapper's `cd` (a logical PWD through a link; OLDPWD where it started).
 */
function enteringLine(cwd: string): string {
  const dir = `'${cwd.replace(/'/g, `'\\''`)}'`;
  return `umask 022; { [ -d ${dir} ] || mkdir -p ${dir}; } && cd ${dir} || exit 1; exec 2>&1; `;
}

/** POSIX shells, by name: what the entering line is written in. */
const ENTERING_SHELLS = new Set(['sh', 'bash', 'dash']);
/** A shell's options that print nothing of what it runs (`-x` and `-v` would show the entering line). */
const QUIET_OPTION = /^(-[eu]*o?|-o|pipefail|errexit|nounset)$/;
/** Variables that make a shell run or print something before its script's first line: the wrapper keeps that in the working directory. */
const STARTUP_VARIABLES = ['BASH_ENV', 'ENV', 'SHELLOPTS', 'BASHOPTS'];

/** Whether a step's shell can enter its working directory itself (else the wrapper does it). */
function entersItself(cwd: string, shell: readonly string[], env: Readonly<Record<string, string>>): boolean {
  const [program, ...options] = shell;
  return (
    program !== undefined &&
    program.startsWith('/') &&
    ENTERING_SHELLS.has(posix.basename(program)) &&
    options.every((o) => QUIET_OPTION.test(o) && o !== '-') &&
    !STARTUP_VARIABLES.some((name) => name in env) &&
    !cwd.includes('\n')
  );
}

export const CONTROL_SUFFIX = '.ctl';
export const TMP_SUFFIX = '.tmp';

const OWNER = processOwner();

/**
 * Finds how builds can be kept apart here. `sandbox` (or `requireIsolation`) turns "no way"
 * into a ConfigurationError that says why; `shell` is `none` on purpose.
 */
export function detectIsolation(options: IsolationOptions): Isolation {
  const names = options.names ?? { executor: 'GYRE_EXECUTOR', uids: 'GYRE_BUILD_UIDS', require: 'GYRE_REQUIRE_ISOLATION' };
  if (options.mode === 'shell') {
    if (options.requireIsolation) throw new ConfigurationError(names.executor, `'shell' runs builds without isolation, which ${names.require}=true refuses (allowed: auto, sandbox, docker)`);
    return noIsolation('steps run in a shell as this user, without isolation (the executor setting asks for it): builds can read what this user can');
  }
  if ((options.uid ?? process.getuid?.()) === 0) {
    const uids = options.buildUids ?? DEFAULT_BUILD_UIDS;
    const flock = spawnSync('flock', ['--version'], { encoding: 'utf8', env: { PATH: '/usr/bin:/bin:/usr/sbin:/sbin' } });
    if (flock.status !== 0) throw new ConfigurationError(names.executor, 'running builds as separate uids needs flock (util-linux), which is not installed');
    const lockDir = options.lockDir ?? (existsSync('/run') ? '/run/gyre-build-uids' : '/var/lib/gyre/build-uids');
    return uidIsolation(uids, lockDir, names.uids);
  }
  const bwrap = prepareBubblewrap(options.bubblewrap);
  if (bwrap.ok) return bubblewrapIsolation(bwrap.base);
  const why = `this process is not root (no build uids) and ${bwrap.reason}`;
  if (options.mode === 'sandbox') throw new ConfigurationError(names.executor, `'sandbox' needs isolation, and ${why}`);
  if (options.requireIsolation) throw new ConfigurationError(names.require, `builds cannot be isolated: ${why}`);
  const notice = `WARNING: this build runs without isolation, as the user Gyre runs as (${why}). It can read what that user can read.`;
  return { ...noIsolation(`builds run WITHOUT isolation as this user: ${why}. Set ${names.require}=true to refuse instead, or install bubblewrap or a container engine`), notice };
}

/*
 * A task's own small file operations (its directories, owner file, scripts, job directory) are
 * made with the synchronous calls: each is a system call of some microseconds on a local disk,
 * where the asynchronous form costs a hand-off to libuv's thread pool and back, 4-5 times the CPU
 * and the time (0.1 ms against 0.02 an operation on the 2-core machine of docs/speed.md), and a
 * task's start makes some forty of them one after the other on the server's thread. A task's
 * tree is removed by its keeper (runtime/agent/sandbox/keepers.ts), in a process of its own; what
 * is left (no keeper, as in a sandbox, or one that died) is removed here asynchronously: a task's
 * home may hold a checkout of any size.
 */

async function makeDir(path: string, mode: number): Promise<void> {
  mkdirSync(path, { recursive: true, mode });
  const info = lstatSync(path);
  if (!info.isDirectory() || info.uid !== process.getuid?.()) throw new Error(`${path} must be a directory owned by this user`);
  chmodSync(path, mode);
}

/** Makes the work root (task directories go there) with `mode`, its task directories spread (./work-root.ts). */
async function makeWorkRoot(path: string, mode: number): Promise<void> {
  await makeDir(path, mode);
  spreadTaskDirectories(path);
}

/** A task's directories: its home, its temporary directory and Gyre's control directory. */
function taskDirsOf(taskDir: string): string[] {
  return [taskDir, taskDir + TMP_SUFFIX, taskDir + CONTROL_SUFFIX];
}

/** Removes a task's leftovers, once nothing of the task runs any more (a look first: a new task has none). */
async function removeTaskDirs(taskDir: string): Promise<void> {
  for (const dir of taskDirsOf(taskDir)) {
    if (lstatSync(dir, { throwIfNoEntry: false })) await rm(dir, { recursive: true, force: true });
  }
}

/** Task directories under `workRoot` whose owning process is gone. */
async function orphansIn(workRoot: string): Promise<string[]> {
  let entries: string[];
  try {
    entries = await readdir(workRoot);
  } catch {
    return [];
  }
  const orphans: string[] = [];
  for (const entry of entries) {
    if (!entry.endsWith(CONTROL_SUFFIX)) continue;
    const control = join(workRoot, entry);
    const owner = await readFile(join(control, 'owner'), 'utf8').catch(() => '');
    if (ownerAlive(owner)) continue;
    orphans.push(control.slice(0, -CONTROL_SUFFIX.length));
  }
  return orphans;
}

function noIsolation(summary: string): Isolation {
  /** Keepers whose task ended (its groups killed), for the next task: one per slot, in effect. */
  const idle: Keeper[] = [];
  /** Keepers of tasks running now. */
  let inUse = 0;
  let closing = false;
  /** A `warm` under way: `close` waits for it, so nothing it starts outlives the close. */
  let warming: Promise<void> | undefined;
  return {
    kind: 'none',
    summary,
    async prepareWorkRoot(workRoot) {
      await makeWorkRoot(workRoot, 0o700);
    },
    async openBox(taskDir) {
      const control = taskDir + CONTROL_SUFFIX;
      await removeTaskDirs(taskDir);
      await makeDir(control, 0o700);
      await makeDir(taskDir, 0o700);
      writeFileSync(join(control, 'owner'), OWNER);
      let keeper = idle.pop();
      while (keeper && !keeper.alive()) keeper = idle.pop();
      keeper ??= await startGroupKeeper();
      const kept = keeper;
      inUse++;
      return shellBox({
        home: taskDir,
        control,
        seesHostPaths: true,
        env: {},
        keeper: kept,
        spawnIn: (command, env, gate) => stepLauncher().launch(command[0], command.slice(1), { cwd: taskDir, env: { ...env }, gate }),
        gates: true,
        // Without isolation the agent may as well read the tree itself: the build could read the same.
        archive: (root, patterns) => archiveLocal(root, patterns),
        extract: (dest, tar, limits) => extractLocal(dest, tar, limits),
        scriptMode: 0o600,
        release: async () => {
          inUse--;
          if (!closing && kept.alive()) idle.push(kept);
          else await kept.close();
        },
      });
    },
    async reapOrphans(workRoot) {
      // Each orphan's keeper killed its process groups when its agent died; what is left is files.
      const orphans = await orphansIn(workRoot);
      for (const taskDir of orphans) await removeTaskDirs(taskDir);
      return orphans.length;
    },
    warm(tasks) {
      stepLauncher().warm();
      const work = (async () => {
        // One at a time: a Node start each, beside whatever else is starting on the machine.
        // Counted with the keepers in use: a task taking one meanwhile does not make it one more.
        while (!closing && idle.length + inUse < tasks) {
          const keeper = await startGroupKeeper();
          if (closing) await keeper.close();
          else idle.push(keeper);
        }
      })();
      warming = work.catch(() => undefined);
      return work;
    },
    async close() {
      closing = true;
      await warming;
      for (const keeper of idle.splice(0)) await keeper.close();
    },
  };
}

/** Where a sandbox sees the task's home (as CircleCI's machine images and cimg images have it) and Gyre's control directory. */
const SANDBOX_HOME = '/home/circleci';
const SANDBOX_CONTROL = '/run/gyre-task';

function bubblewrapIsolation(base: BubblewrapBase): Isolation {
  return {
    kind: 'bubblewrap',
    summary: `each step runs in a bubblewrap sandbox (user and pid namespaces; the host's system directories read-only, the task's home at ${SANDBOX_HOME}, nothing of Gyre's)`,
    async prepareWorkRoot(workRoot) {
      await makeWorkRoot(workRoot, 0o700);
    },
    async openBox(taskDir) {
      const control = taskDir + CONTROL_SUFFIX;
      const tmp = taskDir + TMP_SUFFIX;
      await removeTaskDirs(taskDir);
      await makeDir(control, 0o700);
      await makeDir(taskDir, 0o700);
      await makeDir(tmp, 0o700);
      writeFileSync(join(control, 'owner'), OWNER);
      // Inside, the task's directories sit at fixed paths: nothing says where Gyre keeps them.
      const mounts = [
        { source: taskDir, target: SANDBOX_HOME },
        { source: control, target: SANDBOX_CONTROL, readOnly: true },
      ];
      // The bundled helper needs only its own directory; through the loader, Gyre's code and node_modules.
      const bundled = await helperBundle();
      const helperMounts = [...(bundled ? [dirname(bundled)] : HELPER_CODE), ...nodeDirs()].map((source) => ({ source, readOnly: true }));
      const helper: HelperLauncher = (args) =>
        spawn(base.command, sandboxArgs(base, { mounts: [...mounts, ...helperMounts], tmp, cwd: '/' }, [process.execPath, bundled ?? HELPER_THROUGH_LOADER, ...args]), {
          env: { PATH: process.env.PATH ?? '/usr/bin:/bin', TSX_DISABLE_CACHE: '1', HOME: SANDBOX_HOME },
          stdio: ['pipe', 'pipe', 'pipe', 'pipe'],
        });
      return shellBox({
        home: SANDBOX_HOME,
        control,
        controlSeenAs: SANDBOX_CONTROL,
        removes: taskDir,
        seesHostPaths: false,
        env: {},
        // The sandbox dies with the agent (--die-with-parent) and takes its pid namespace along.
        spawnIn: (command, env) => stepLauncher().launch(base.command, sandboxArgs(base, { mounts, tmp, cwd: SANDBOX_HOME }, command), { env: { ...env } }),
        archive: (root, patterns) => archiveAs(helper, { root, patterns }),
        extract: (dest, tar, limits) => extractAs(helper, { dest, maxBytes: limits?.maxBytes }, tar),
        scriptMode: 0o600,
      });
    },
    async reapOrphans(workRoot) {
      const orphans = await orphansIn(workRoot);
      for (const taskDir of orphans) await removeTaskDirs(taskDir);
      return orphans.length;
    },
    async warm() {
      stepLauncher().warm();
      await helperBundle();
    },
    async close() {},
  };
}

/** Where node's own files are (a node installed under a home directory is not in /usr). */
function nodeDirs(): string[] {
  const prefix = dirname(dirname(process.execPath));
  return ['/usr', '/bin', '/usr/local'].some((p) => prefix === p || prefix.startsWith(`${p}/`)) ? [] : [prefix];
}

/** Whether every directory above `path` lets other users pass (o+x). */
function firstClosedAncestor(path: string): string | undefined {
  for (let dir = dirname(path); ; dir = dirname(dir)) {
    const info = statSync(dir, { throwIfNoEntry: false });
    if (info && (info.mode & 0o001) === 0) return dir;
    if (dir === dirname(dir)) return undefined;
  }
}

function uidIsolation(range: UidRange, lockDir: string, uidsSetting: string): Isolation {
  const held = new Set<number>();
  const size = range.last - range.first + 1;
  let next = process.pid % size;
  /**
   * Uids whose task ended, still locked, with nothing of them running and nothing of them left
   * readable: a slot's next task takes one, so a busy runner keeps one uid per slot.
   */
  const idle: { uid: number; keeper: Keeper }[] = [];
  let closing = false;
  /** A `warm` under way: `close` waits for it, so nothing it starts outlives the close. */
  let warming: Promise<void> | undefined;
  /**
   * Where the first step of a task, started before its directories are made, gets its script and
   * environment (ShellBoxParts.heldFiles): a directory per uid, root's, that only the uid may
   * read (as a task's control directory), emptied whenever a uid is taken. Not used where a build
   * uid could not reach it (an ancestor closed to others): such steps wait for the directories.
   */
  const heldRoot = `${lockDir}-held`;
  let heldReachable: boolean | undefined;
  const heldFilesOf = (uid: number): string | undefined => {
    const dir = join(heldRoot, String(uid));
    try {
      mkdirSync(heldRoot, { recursive: true, mode: 0o711 });
      chmodSync(heldRoot, 0o711);
      heldReachable ??= firstClosedAncestor(join(heldRoot, 'x')) === undefined;
      if (!heldReachable) return undefined;
      // What a task of this uid left (a process killed before its task ended) goes first.
      rmSync(dir, { recursive: true, force: true });
      mkdirSync(dir, { mode: 0o750 });
      chownSync(dir, 0, uid);
      chmodSync(dir, 0o750);
      return dir;
    } catch {
      return undefined;
    }
  };
  /** The uids taken here, with their `heldFilesOf` directory (undefined: none). */
  const heldDirs = new Map<number, string | undefined>();

  /** A uid a finished task left, else one no other task on this host holds. */
  async function acquire(): Promise<{ uid: number; keeper: Keeper }> {
    for (let slot = idle.pop(); slot; slot = idle.pop()) {
      if (slot.keeper.alive()) return slot;
      held.delete(slot.uid);
    }
    return take();
  }

  /** Takes a uid no other task on this host holds, and kills whatever it had left running. */
  async function take(): Promise<{ uid: number; keeper: Keeper }> {
    await makeDir(lockDir, 0o700);
    for (let round = 0; round < 50; round++) {
      for (let i = 0; i < size; i++) {
        const uid = range.first + ((next + i) % size);
        if (held.has(uid)) continue;
        held.add(uid);
        let keeper: Keeper | 'busy';
        try {
          keeper = await startUidKeeper(uid, join(lockDir, `${uid}.lock`));
        } catch (error) {
          held.delete(uid);
          throw error;
        }
        if (keeper === 'busy') {
          held.delete(uid);
          continue;
        }
        next = (next + i + 1) % size;
        heldDirs.set(uid, heldFilesOf(uid));
        return { uid, keeper };
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    throw new Error(`every build uid of ${uidsSetting} (${range.first}-${range.last}) is in use on this host; give more uids or run fewer tasks at once`);
  }

  return {
    kind: 'uid',
    summary: `each running task runs as a uid of its own (${uidsSetting}=${range.first}-${range.last}), in a directory only that uid can enter`,
    async prepareWorkRoot(workRoot, setting) {
      // Directories Gyre makes on the way (a first start makes /var/lib/gyre too) must let build
      // uids pass: made one by one and set to 0711, since the server's umask (077) would close them.
      const missing: string[] = [];
      for (let dir = dirname(workRoot); dir !== dirname(dir) && !existsSync(dir); dir = dirname(dir)) missing.unshift(dir);
      for (const dir of missing) {
        await mkdir(dir).catch((error: NodeJS.ErrnoException) => {
          if (error.code !== 'EEXIST') throw error;
        });
        await chmod(dir, 0o711);
      }
      await makeWorkRoot(workRoot, 0o711);
      const closed = firstClosedAncestor(join(workRoot, 'x'));
      if (closed && closed !== workRoot) {
        throw new ConfigurationError(setting, `build uids cannot reach task directories in ${workRoot}: ${closed} does not let other users pass (it needs o+x); choose a directory such as /var/lib/gyre/work`);
      }
    },
    async openBox(taskDir, options) {
      const control = taskDir + CONTROL_SUFFIX;
      const tmp = taskDir + TMP_SUFFIX;
      const { uid, keeper } = await acquire();
      // Made by the uid's keeper (root, a process of its own), not on this thread: see MAKE in
      // ./keepers.ts. What an earlier task of this name left is removed first; every directory
      // is then new (a path already there fails). The control directory is Gyre's (owner file,
      // scripts): the build may read, never write it. The box is handed out meanwhile: the first
      // step's shell starts beside them (held until they are made: ShellBoxParts.made).
      const made = keeper.make([
        ...taskDirsOf(taskDir).map((path) => ({ op: 'rm' as const, path })),
        { op: 'mkdir', path: control, mode: 0o700 },
        { op: 'write', path: join(control, 'owner'), mode: 0o600, data: OWNER },
        { op: 'write', path: join(control, 'uid'), mode: 0o600, data: String(uid) },
        { op: 'own', path: control, uid: 0, gid: uid },
        { op: 'chmod', path: control, mode: 0o750 },
        ...[taskDir, tmp].flatMap((path) => [
          { op: 'mkdir' as const, path, mode: 0o700 },
          { op: 'own' as const, path, uid, gid: uid },
        ]),
      ]);
      made.catch(() => undefined);
      const bundled = await helperBundle();
      const helper: HelperLauncher = (args) =>
        spawn(process.execPath, [bundled ?? HELPER_THROUGH_LOADER, ...args], { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', TSX_DISABLE_CACHE: '1' }, cwd: '/', stdio: ['pipe', 'pipe', 'pipe', 'pipe'] });
      const box = shellBox({
        home: taskDir,
        control,
        seesHostPaths: false,
        env: { TMPDIR: tmp },
        keeper,
        spawnIn: (command, env, gate, outside) => stepLauncher().launch(command[0], command.slice(1), { cwd: outside ? '/' : taskDir, env: { ...env }, uid, gid: uid, gate }),
        gates: true,
        made,
        heldFiles: heldDirs.get(uid),
        archive: (root, patterns) => archiveAs(helper, { uid, root, patterns }),
        extract: (dest, tar, limits) => extractAs(helper, { uid, dest, maxBytes: limits?.maxBytes }, tar),
        scriptMode: 0o640,
        scriptGroup: uid,
        buildUid: uid,
        // Swept and emptied: the uid waits, locked, for the slot's next task (not when its
        // directories could not be made: the keeper is given up, as one that died).
        release: async () => {
          const wasMade = await made.then(
            () => true,
            () => false,
          );
          if (wasMade && !closing && keeper.alive()) {
            idle.push({ uid, keeper });
            return;
          }
          await keeper.close();
          held.delete(uid);
        },
      });
      if (options?.early) return box;
      try {
        await made;
      } catch (error) {
        await box.close().catch(() => undefined);
        throw error;
      }
      return box;
    },
    warm(tasks) {
      stepLauncher().warm();
      const work = (async () => {
        await helperBundle();
        // One at a time: a Node start each (the keeper and its signaller), beside whatever else is
        // starting on the machine. A uid taken here waits in `idle` as a finished task's would.
        // Counted with the uids in use (held): a task taking one meanwhile does not make it one more.
        while (!closing && held.size < Math.min(tasks, size)) {
          const slot = await take();
          if (!closing) {
            idle.push(slot);
            continue;
          }
          await slot.keeper.close();
          held.delete(slot.uid);
        }
      })();
      warming = work.catch(() => undefined);
      return work;
    },
    async close() {
      closing = true;
      await warming;
      for (const slot of idle.splice(0)) {
        await slot.keeper.close();
        held.delete(slot.uid);
      }
    },
    async reapOrphans(workRoot) {
      const orphans = await orphansIn(workRoot);
      let reaped = 0;
      for (const taskDir of orphans) {
        const uid = Number(await readFile(join(taskDir + CONTROL_SUFFIX, 'uid'), 'utf8').catch(() => 'NaN'));
        // Shut the uid out of its old directories at once, whatever happens next.
        for (const dir of [taskDir, taskDir + TMP_SUFFIX]) {
          await chown(dir, 0, 0).catch(() => undefined);
          await chmod(dir, 0o700).catch(() => undefined);
        }
        if (!Number.isInteger(uid)) {
          await removeTaskDirs(taskDir);
          reaped++;
          continue;
        }
        // Removed only while holding the uid with nothing of it running (no race with its files).
        const keeper = await startUidKeeper(uid, join(lockDir, `${uid}.lock`)).catch(() => 'busy' as const);
        if (keeper === 'busy') continue;
        try {
          await removeTaskDirs(taskDir);
          // And what its first step got before its directories were made.
          rmSync(join(heldRoot, String(uid)), { recursive: true, force: true });
          reaped++;
        } finally {
          await keeper.close();
        }
      }
      return reaped;
    },
  };
}

interface ShellBoxParts {
  /** $HOME as the build sees it. */
  readonly home: string;
  /** The task directory on the host, removed at the end. @default home */
  readonly removes?: string;
  readonly control: string;
  /** The control directory as the build sees it. @default control */
  readonly controlSeenAs?: string;
  readonly seesHostPaths: boolean;
  readonly env: Readonly<Record<string, string>>;
  readonly keeper?: Keeper;
  /**
   * Starts a step (through the launcher: ./step-launcher.ts) in its own process group, stdin
   * closed, stdout and stderr piped; in the home, or in `/` when `outside` (its directories are
   * not made yet).
   */
  readonly spawnIn: (command: readonly string[], env: Readonly<Record<string, string>>, gate?: Promise<void>, outside?: boolean) => StepProcess;
  /** The task's directories being made (the box is handed out meanwhile). @default made */
  readonly made?: Promise<void>;
  /**
   * Where a step started before the task's directories are made gets its files (its script and
   * environment): a directory the build may read and not write, as the control directory. Without
   * it such steps wait for the directories.
   */
  readonly heldFiles?: string;
  /** Whether spawnIn passes a gate on to the process it starts (the launcher's fd 3 reaches the shell). */
  readonly gates?: boolean;
  readonly archive: BuildBox['archive'];
  readonly extract: BuildBox['extract'];
  readonly scriptMode: number;
  readonly scriptGroup?: number;
  /** The uid (and group) the build runs as, when it is not this process's: what `seed` hands files to. */
  readonly buildUid?: number;
  /** Once the task is swept and its directories removed: gives the identity back. @default closes the keeper */
  readonly release?: () => Promise<void>;
}

function shellBox(parts: ShellBoxParts): BuildBox {
  const groups = new Set<number>();
  let scripts = 0;
  let closed = false;
  /** Whether anything has run in the box as the build (a command, a file helper): `seed` is over then. */
  let ran = false;
  /** What the seeds sent to the keeper and not yet answered make (see `seed`). */
  const seeding = new Set<string>();
  /** The task's directories (ShellBoxParts.made): whether they are made, and the promise of them. */
  const ready = parts.made ?? Promise.resolve();
  ready.catch(() => undefined);
  let made = parts.made === undefined;
  ready.then(() => (made = true), () => undefined);
  /** Files written in `parts.heldFiles` for this task: removed when it ends. */
  const heldFiles: string[] = [];
  /** Whether a step held at a gate may be started now: made, or its files have a place before. */
  const canHold = () => made || parts.heldFiles !== undefined;
  const asBuild =
    <A extends unknown[], R>(fn: (...args: A) => R) =>
    (...args: A): R => {
      ran = true;
      return fn(...args);
    };
  /**
   * A fresh name for a file of the task's control directory (`outside`: of `parts.heldFiles`, the
   * directories not made yet): where it is here, and as the build sees it.
   */
  const controlFile = (kind: 'script' | 'env', outside = false) => {
    // A fresh name each time, in a directory the build cannot write: nothing can be swapped in.
    const name = `${kind}-${++scripts}-${randomBytes(4).toString('hex')}.sh`;
    if (outside) {
      const path = join(parts.heldFiles!, name);
      heldFiles.push(path);
      return { path, seenAs: path };
    }
    return { path: join(parts.control, name), seenAs: join(parts.controlSeenAs ?? parts.control, name) };
  };
  /** Writes a file only the task can read and it cannot change. */
  const writeControl = (path: string, content: string) => {
    writeFileSync(path, content, { mode: parts.scriptMode, flag: 'wx' });
    // The mode is set again: writeFile's is cut by the process umask (077 in `gyre server`).
    chmodSync(path, parts.scriptMode);
    if (parts.scriptGroup !== undefined) chownSync(path, 0, parts.scriptGroup);
  };
  /** Writes a script only the task can read and it cannot change; returns its path as the build sees it. */
  const writeScript = (content: string, outside = false): string => {
    const file = controlFile('script', outside);
    writeControl(file.path, content);
    return file.seenAs;
  };
  /**
   * A shell started before the task's directories are made starts in `/`: once its gate opens it
   * enters the home first, so that its working directory is entered from there, as one started in
   * the home does (OLDPWD).
   */
  const homeLine = (outside: boolean) => (outside ? `cd '${parts.home.replace(/'/g, `'\\''`)}' || exit 1; ` : '');
  /**
   * `ranAtGate`: nothing of the build runs before `gate` resolves, so the box is as made until then
   * (`seed`). A gated step is held until the task's directories are made too, whatever its gate;
   * `outside`: it starts before they are (in `/`, its files in `parts.heldFiles`).
   */
  const start = (command: readonly string[], env: Readonly<Record<string, string>>, gate?: Promise<void>, ranAtGate = false, outside = false): StepProcess => {
    if (closed) throw new Error('the task has ended');
    if (!ranAtGate) ran = true;
    // Composed with the directories' readiness only while they are being made: once they are, the gate alone.
    const held = gate && !made ? Promise.all([gate, ready]).then(() => undefined) : gate;
    const child = parts.spawnIn(command, env, held, outside);
    // Its pid comes a moment later, from the launcher. A task that ended in that moment kills it
    // at once: nothing started for a task outlives it.
    child.once('spawn', () => {
      const pid = child.pid!;
      groups.add(pid);
      parts.keeper?.track(pid);
      if (closed) killGroups();
    });
    return child;
  };
  const killGroups = () => {
    for (const pgid of groups) {
      try {
        process.kill(-pgid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
  };
  return {
    home: parts.home,
    seesHostPaths: parts.seesHostPaths,
    env: parts.env,
    ready,
    runScript(cwd, shell, script, env, gate) {
      if (closed) throw new Error('the task has ended');
      if (!gate && !made) throw new Error("the task's directories are not made yet: start the step once the box is ready");
      if (gate) {
        if (!parts.gates || !entersItself(cwd, shell, env) || !canHold()) throw new Error('this step cannot be held at a gate: wait for it before starting the step');
        const outside = !made;
        return start([...shell, writeScript(GATE_LINE + homeLine(outside) + enteringLine(cwd) + script, outside)], env, gate, false, outside);
      }
      if (entersItself(cwd, shell, env)) return start([...shell, writeScript(enteringLine(cwd) + script)], env);
      return start(['/bin/sh', '-c', STEP_WRAPPER, 'sh', cwd, ...shell, writeScript(script)], env);
    },
    gates: (cwd, shell, env) => parts.gates === true && entersItself(cwd, shell, env) && canHold(),
    runScriptBeforeEnvironment(cwd, shell, script) {
      if (closed) throw new Error('the task has ended');
      if (!parts.gates || !entersItself(cwd, shell, {}) || !canHold()) throw new Error('this step cannot be started before its environment is known');
      const outside = !made;
      let go!: () => void;
      let stop!: (reason: Error) => void;
      const gate = new Promise<void>((resolve, reject) => ((go = resolve), (stop = reject)));
      // The environment is written, where only the task may read it, just before its gate opens;
      // the shell reads it after the gate's line. It waits there, running nothing of the build:
      // the box counts as run from then (`seed` is over), not from the process's start.
      const file = controlFile('env', outside);
      const child = start([...shell, writeScript(envGateLine(file.seenAs) + homeLine(outside) + enteringLine(cwd) + script, outside)], {}, gate, true, outside);
      // Read by the shell at its start: removed once it has ended (else with the task's directories).
      child.once('close', () => rmSync(file.path, { force: true }));
      return {
        process: child,
        open(env) {
          const text = environmentText(env);
          if (text === undefined || !entersItself(cwd, shell, env) || closed) {
            stop(new Error('this environment cannot be given at the gate'));
            return false;
          }
          writeControl(file.path, text);
          ran = true;
          go();
          return true;
        },
        stop: () => stop(new Error('the step does not run')),
      };
    },
    archive: asBuild(async (root: string, patterns: readonly string[]) => {
      await ready;
      return parts.archive(root, patterns);
    }),
    extract: asBuild(async (dest: string, tar: AsyncIterable<Uint8Array>, limits?: { maxBytes?: number }) => {
      await ready;
      return parts.extract(dest, tar, limits);
    }),
    async seed(dir, files) {
      await ready;
      if (ran || closed) return false;
      const root = parts.removes ?? parts.home;
      if (!isSeedPath(dir) || files.some((f) => !isSeedPath(f.path))) throw new Error(`seed: '${dir}' or one of its files is not a plain relative path`);
      if (lstatSync(join(root, dir), { throwIfNoEntry: false }) || seeding.has(join(root, dir))) return false;
      // Directories on the way that are not there yet are made too (a working directory such as
      // ~/go/src/app); those that are were made by the agent (nothing of the build has run), or
      // are being made by a seed sent to the keeper before this one (it does them in order).
      const missing: string[] = [];
      const segments = dir.split('/');
      for (let i = 1; i <= segments.length; i++) {
        const path = join(root, ...segments.slice(0, i));
        const info = lstatSync(path, { throwIfNoEntry: false });
        if (!info?.isDirectory() && !seeding.has(path)) missing.push(path);
      }
      const base = join(root, dir);
      const dirs = [...new Set(files.map((f) => posix.dirname(f.path)).filter((d) => d !== '.'))].sort().map((d) => join(base, d));
      if (parts.keeper && parts.buildUid !== undefined) {
        // The build's uid gets them: made by its keeper, off this thread (MAKE in ./keepers.ts).
        // Seeds may be sent one after another without waiting (the working directory and the job
        // directory): the keeper's lines are one round trip then, and a later seed leaves out
        // what an earlier one makes.
        const uid = parts.buildUid;
        const own = (path: string) => ({ op: 'own' as const, path, uid, gid: uid });
        const made = [...missing, ...dirs, ...files.map((file) => join(base, file.path))];
        for (const path of made) seeding.add(path);
        try {
          await parts.keeper.make([
            ...[...missing, ...dirs].flatMap((path) => [{ op: 'mkdir' as const, path, mode: 0o755 }, own(path)]),
            ...files.flatMap((file) => [{ op: 'write' as const, path: join(base, file.path), mode: file.mode, data: file.content }, own(join(base, file.path))]),
          ]);
        } finally {
          for (const path of made) seeding.delete(path);
        }
        return true;
      }
      const made: string[] = [];
      for (const path of [...missing, ...dirs]) {
        mkdirSync(path, { mode: 0o755 });
        made.push(path);
      }
      for (const file of files) {
        const path = join(base, file.path);
        writeFileSync(path, file.content, { mode: file.mode, flag: 'wx' });
        made.push(path);
      }
      // Modes again (the server's umask, 077, cuts what mkdir and writeFile set), then the owner.
      for (const path of made) {
        const file = files.find((f) => join(base, f.path) === path);
        chmodSync(path, file ? file.mode : 0o755);
        if (parts.buildUid !== undefined) lchownSync(path, parts.buildUid, parts.buildUid);
      }
      return true;
    },
    async close() {
      if (closed) return;
      closed = true;
      killGroups();
      // The task's own files (a script, its environment) where the task alone may read them.
      for (const path of heldFiles.splice(0)) rmSync(path, { force: true });
      // What the keeper was making is made first (it does its lines in order; the removal here
      // must not meet a directory being made).
      await ready.catch(() => undefined);
      // Nothing of the task may run while its files are removed (for a uid: nothing of that uid),
      // and the identity goes back only after: the next task of that uid finds nothing. The
      // keeper removes them after its sweep, off this thread; whatever it left is removed here.
      const removes = parts.removes ?? parts.home;
      await parts.keeper?.sweep(taskDirsOf(removes));
      groups.clear();
      try {
        await removeTaskDirs(removes);
      } finally {
        await (parts.release ? parts.release() : parts.keeper?.close());
      }
    },
  };
}

/** A relative path of plain names: no `..`, `.`, empty or absolute segments. */
function isSeedPath(path: string): boolean {
  return path.length > 0 && !path.startsWith('/') && path.split('/').every((seg) => seg !== '' && seg !== '.' && seg !== '..');
}
