import type { JobFile } from './job-tools/job-dir';
import type { RemoteDockerSession } from './remote-docker/session';

/**
 * The `Executor` seam: where an agent runs a task's commands. The embedded default is the host's
 * shell; the Docker Engine API (Docker or Podman) comes behind the same interface.
 */
export interface ExecRequest {
  /** The script to run (a step's `command`, or one the agent writes, e.g. for checkout). */
  readonly script: string;
  /** The shell to run it with, e.g. `/bin/bash -eo pipefail`; the script file is appended. */
  readonly shell: string;
  readonly env: Readonly<Record<string, string>>;
  /** Working directory; `~` is expanded to the executor's home. Created when missing. */
  readonly cwd: string;
  /** Stop the command after this long without output. */
  readonly noOutputTimeoutMs?: number;
  /**
   * Run nothing of the script until this resolves, and nothing at all when it rejects (the step's
   * start being recorded under the task's lease). Only given to an executor that `holdsSteps`; it
   * may start the process meanwhile, held before the script's first command.
   */
  readonly gate?: Promise<void>;
  /**
   * The command's environment, when it is not known yet (the task's secrets still being read):
   * `env` is then not used. Only given with a gate, to an executor that `holdsSteps`; it may start
   * the process before this resolves and give it the environment at the gate. When it rejects,
   * nothing of the script runs.
   */
  readonly environmentLater?: Promise<Readonly<Record<string, string>>>;
}

export interface ExecResult {
  /** Exit code, or null when the command was stopped by a signal (cancel, timeout). */
  readonly exitCode: number | null;
  readonly timedOut: boolean;
  readonly canceled: boolean;
}

/** Takes a piece of a command's output; a promise asks the executor to stop reading until it settles. */
export type OutputTaker = (chunk: Uint8Array) => void | Promise<void>;

export interface Execution {
  /** Settles when the command ends. */
  readonly done: Promise<ExecResult>;
  /** Stops the command and everything it started. */
  stop(): void;
}

/**
 * The reason an agent aborts its steps with when its lease is lost: executors kill at once (no
 * SIGTERM grace), since another attempt of the task may soon be claimed.
 */
export const LEASE_LOST = 'lease-lost';

export interface Executor {
  /** The home directory commands see (`~`). */
  readonly home: string;
  /**
   * Whether a path on this host means the same file to the commands (a shell without isolation).
   * When not, a checkout of a repository given as a local path is copied in. @default false
   */
  readonly seesHostPaths?: boolean;
  /** Said at the start of the first step's output (e.g. that the build runs without isolation). */
  readonly notice?: string;
  /**
   * Gyre's directory in the job (`GYRE_JOB_DIR`: the in-job `circleci` CLI, timings, the `step
   * halt` marker; runtime/agent/job-tools/job-dir.ts). @default - none: the job has no in-job CLI
   */
  readonly jobDir?: JobDir;
  /**
   * The address of this host as the commands reach it (a container job: its network's gateway),
   * where a service for the job listens (the remote Docker engine's TLS port). @default - 127.0.0.1
   */
  hostAddress?(): Promise<string>;
  /** `setup_remote_docker` for this task (runtime/agent/remote-docker/). @default - none: the step fails saying how to enable it */
  readonly remoteDocker?: RemoteDockerSession;
  /** Whether `bash` exists where commands run; otherwise `sh` is the default shell. */
  hasBash(): Promise<boolean>;
  /**
   * Makes the job's working directory before its first step, where the executor can without
   * starting a process (a shell box before anything of the build has run). Never required: a step
   * makes its working directory when it is missing, as the build. @default - the steps make it
   */
  makeWorkingDirectory?(path: string): Promise<void>;
  /**
   * Starts a command; its combined stdout and stderr go to `onOutput` in order. When `onOutput`
   * returns a promise, no more output is read until it settles: the command then blocks on a full
   * pipe, so an agent never holds more output than it has sent (and the no-output timeout does not
   * run meanwhile, since the command is not the one waiting).
   */
  start(request: ExecRequest, onOutput: OutputTaker, signal: AbortSignal): Execution;
  /** Whether `start` honours ExecRequest.gate (the agent waits for what it stands for otherwise). */
  readonly holdsSteps?: boolean;
  /**
   * Resolves once what the executor makes for the task is made (a shell box's directories: the
   * executor is handed out meanwhile), rejects with why it could not be. Until then only steps
   * held at a gate may be started (the executor holds them until it is ready too); everything
   * else waits for it. @default - ready when handed out
   */
  readonly ready?: Promise<void>;
  /** Removes what the executor made for this task. */
  cleanup(): Promise<void>;
  /**
   * File transfer out of the task: packs what `patterns` match under `root` into an uncompressed
   * tar stream (ustar; pax headers for long names). `root` may start with `~`; a relative root is
   * relative to `home`. Patterns are relative to `root` (`*`, `?` within a segment, `**` across;
   * `.` is the whole root; `globToRegExp` in runtime/output/file-sets.ts gives the exact rules).
   * A matched directory brings everything under it; symlinks are packed as links, never followed.
   * Entry names are relative to `root`. Patterns that match nothing are listed in `missing`.
   * A root that does not exist rejects with NotFoundError('path', root).
   */
  archive(root: string, patterns: readonly string[]): Promise<{ readonly tar: AsyncIterable<Uint8Array>; readonly missing: readonly string[] }>;
  /**
   * File transfer into the task: unpacks a tar stream under `dest` (created when missing).
   * Every entry must pass `checkEntry` and `createArchiveTree` (runtime/output/tar-paths.ts): no
   * `..`, absolute names, devices or fifos, links out of `dest` (judged at the real place the
   * link is made, after links earlier in the archive), NUL or over-long names; the first bad
   * entry rejects the whole call with its UnsafePathError. Later entries overwrite earlier ones.
   * `maxEntries` and `maxBytes` (file content written) default to DEFAULT_EXTRACT_LIMITS.
   */
  extract(dest: string, tar: AsyncIterable<Uint8Array>, limits?: { readonly maxEntries?: number; readonly maxBytes?: number }): Promise<{ readonly entries: number; readonly bytes: number }>;
}

/** Where an executor keeps Gyre's files for the job's commands. */
export interface JobDir {
  /** The directory as the commands see it (absolute); its `bin` goes first on their PATH. */
  readonly path: string;
  /** Writes the files into it, the directory itself writable by the job's user. */
  install(files: readonly JobFile[]): Promise<void>;
  /** Whether a step left a file of this name in it (never following a link). */
  has(name: string): Promise<boolean>;
}

/** Expands a leading `~` to `home`, as a shell would. */
export function expandHome(path: string, home: string): string {
  if (path === '~') return home;
  if (path.startsWith('~/')) return `${home}/${path.slice(2)}`;
  return path;
}
