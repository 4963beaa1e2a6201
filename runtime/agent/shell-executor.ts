import { existsSync } from 'node:fs';
import { lstat } from 'node:fs/promises';
import { isAbsolute, join, posix } from 'node:path';
import type { ExecRequest, ExecResult, Execution, Executor } from './executor';
import { expandHome, LEASE_LOST } from './executor';
import { detectIsolation, type Isolation } from './sandbox/isolation';
import type { StepProcess } from './sandbox/step-launcher';
import { jobFilesTar } from './job-tools/job-dir';

/** Gyre's directory in a shell job, under its home (the only place the build may write). */
const JOB_DIR = '.gyre-job';

/** How long a stopped command gets between SIGTERM and SIGKILL. */
const KILL_GRACE_MS = 2000;

export interface ShellExecutorOptions {
  /** The task's directory, also its `$HOME` (so `~/project` lands inside it). */
  readonly taskDir: string;
  /** How the build is kept apart from Gyre and other builds. @default none (Gyre's own user; for tests of other things) */
  readonly isolation?: Isolation;
  /**
   * Hands the executor out while the task's directories are being made (Executor.ready says when
   * they are): the agent's first step starts beside them. @default false: once they are made
   */
  readonly early?: boolean;
}

/**
 * Runs commands in a shell on this host, in the task's box (`sandbox/isolation.ts`): as a build
 * uid of its own, in a bubblewrap sandbox, or, without isolation, as Gyre's user. Each command
 * runs in its own process group, so stopping it stops whatever it started too; the file steps read
 * and write the task's tree with the build's identity.
 */
export async function createShellExecutor({ taskDir, isolation, early }: ShellExecutorOptions): Promise<Executor> {
  const chosen = isolation ?? detectIsolation({ mode: 'shell' });
  const box = await chosen.openBox(taskDir, { early });
  const bash = existsSync('/bin/bash') || existsSync('/usr/bin/bash');
  const resolvePath = (path: string) => {
    const expanded = expandHome(path, box.home);
    return isAbsolute(expanded) ? expanded : join(box.home, expanded);
  };
  const jobDirPath = posix.join(box.home, JOB_DIR);
  /**
   * Starts a step's process: held before its first command where the box can (ExecRequest.gate),
   * and before its environment is known where it is given later (ExecRequest.environmentLater);
   * else once the gate opens. Undefined when it was canceled before anything was started.
   */
  const launch = async (request: ExecRequest, dir: string, shell: readonly string[], signal: AbortSignal): Promise<StepProcess | undefined> => {
    if (request.environmentLater) {
      if (request.gate && box.gates(dir, shell, box.env)) {
        const held = box.runScriptBeforeEnvironment(dir, shell, request.script);
        let env: Readonly<Record<string, string>>;
        try {
          const [later] = await Promise.all([request.environmentLater, request.gate]);
          env = { ...later, ...box.env };
        } catch {
          // Not to run (its start not recorded, or the task ended first): it ends having run nothing.
          held.stop();
          return held.process;
        }
        if (held.open(env)) return held.process;
        // An environment a shell cannot be given after its start (docs in ./sandbox/isolation.ts):
        // the held process ends unrun and the step starts again with it.
        held.process.on('error', () => undefined);
        held.process.stdout.resume();
        if (signal.aborted) return undefined;
        return box.runScript(dir, shell, request.script, env);
      }
      const [later] = await Promise.all([request.environmentLater, request.gate]);
      if (signal.aborted) return undefined;
      return box.runScript(dir, shell, request.script, { ...later, ...box.env });
    }
    const env = { ...request.env, ...box.env };
    // Started now and held before its first command where the box can; else started once the gate opens.
    if (request.gate && box.gates(dir, shell, env)) return box.runScript(dir, shell, request.script, env, request.gate);
    if (request.gate) await request.gate;
    if (signal.aborted) return undefined;
    return box.runScript(dir, shell, request.script, env);
  };
  return {
    jobDir: {
      path: jobDirPath,
      // Written before anything of the build has run, by the agent itself and handed to the build
      // (no helper process: most of a task's start-up otherwise); else as the build, through the
      // helper. Either way the build owns it, and may use and change it.
      install: async (files) => {
        if (await box.seed(JOB_DIR, files)) return;
        await box.extract(jobDirPath, jobFilesTar(files));
      },
      // Every kind of box keeps the task's home at taskDir on this host; a stat, not a process.
      has: async (name) => (await lstat(join(taskDir, JOB_DIR, name)).catch(() => undefined)) !== undefined,
    },
    archive: (root, patterns) => box.archive(resolvePath(root), patterns),
    extract: (dest, tar, limits) => box.extract(resolvePath(dest), tar, limits),
    home: box.home,
    seesHostPaths: box.seesHostPaths,
    notice: chosen.notice,
    hasBash: async () => bash,
    // Made by the agent while the home is still as it made it: a step's wrapper would otherwise
    // start `mkdir` for it, a process of its own on the way to the first command (a job without
    // a checkout, and a checkout itself, start in a working directory that is not there yet).
    // One outside the home is left to the step, made as the build.
    async makeWorkingDirectory(path) {
      const dir = posix.normalize(resolvePath(path)).replace(/\/+$/, '');
      if (!dir.startsWith(`${box.home}/`)) return;
      await box.seed(dir.slice(box.home.length + 1), []);
    },
    holdsSteps: true,
    ready: box.ready,
    start(request: ExecRequest, onOutput, signal): Execution {
      let stop = () => undefined as void;
      const done = (async (): Promise<ExecResult> => {
        const dir = resolvePath(request.cwd);
        const shell = splitShell(request.shell);
        const child = await launch(request, dir, shell, signal);
        // Canceled while it waited: nothing was started.
        if (!child) return { exitCode: null, timedOut: false, canceled: true };
        return new Promise<ExecResult>((resolve) => {
          let timedOut = false;
          let canceled = false;
          // stdout and stderr share one pipe (the box runs `exec 2>&1` before the script), so the log
          // keeps the order in which the command wrote to either, as a terminal would.
          let killTimer: NodeJS.Timeout | undefined;
          const kill = (signalName: NodeJS.Signals) => {
            // Asked before the launcher said its pid: sent the moment it does.
            if (child.pid === undefined) {
              child.once('spawn', () => kill(signalName));
              return;
            }
            try {
              process.kill(-child.pid, signalName);
            } catch {
              /* already gone */
            }
          };
          const killGroup = (now = false) => {
            if (child.exitCode !== null || child.signalCode !== null) return;
            if (now) {
              kill('SIGKILL');
              return;
            }
            kill('SIGTERM');
            killTimer ??= setTimeout(() => kill('SIGKILL'), KILL_GRACE_MS);
          };
          let idle: NodeJS.Timeout | undefined;
          const armIdle = () => {
            if (!request.noOutputTimeoutMs) return;
            clearTimeout(idle);
            idle = setTimeout(() => {
              // A command that has exited is not timed out while its last output is being read.
              if (child.exitCode !== null || child.signalCode !== null) return;
              timedOut = true;
              killGroup();
            }, request.noOutputTimeoutMs);
          };
          // While the agent catches up with its output, the pipe is not read (the command blocks
          // writing to it) and the no-output timer waits too.
          const onData = (chunk: Buffer, from: NodeJS.ReadableStream) => {
            armIdle();
            const caughtUp = onOutput(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength));
            if (!caughtUp) return;
            from.pause();
            clearTimeout(idle);
            void caughtUp.then(
              () => {
                armIdle();
                from.resume();
              },
              () => from.resume(),
            );
          };
          child.stdout!.on('data', (chunk: Buffer) => onData(chunk, child.stdout!));
          child.stderr!.on('data', (chunk: Buffer) => onData(chunk, child.stderr!)); // only the wrapper's own errors arrive here
          const onAbort = () => {
            canceled = true;
            // A lost lease kills at once: another attempt of the task may be claimed soon.
            killGroup(signal.reason === LEASE_LOST);
          };
          if (signal.aborted) onAbort();
          else signal.addEventListener('abort', onAbort, { once: true });
          stop = onAbort;
          armIdle();
          child.on('error', (error) => {
            onOutput(new TextEncoder().encode(`cannot start ${shell[0]}: ${error.message}\n`));
          });
          child.on('close', (code) => {
            clearTimeout(idle);
            signal.removeEventListener('abort', onAbort);
            clearTimeout(killTimer);
            resolve({ exitCode: code, timedOut, canceled });
          });
        });
      })();
      return { done, stop: () => stop() };
    },
    async cleanup() {
      await box.close();
      // An isolation made for this one task gives back what it kept for a next one.
      if (!isolation) await chosen.close();
    },
  };
}

/** Splits a `shell:` value on whitespace, honouring simple quotes. */
export function splitShell(shell: string): string[] {
  const parts = shell.match(/"[^"]*"|'[^']*'|\S+/g) ?? [];
  return parts.map((p) => (/^(["']).*\1$/.test(p) ? p.slice(1, -1) : p));
}
