import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { appendFile, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { isAbsolute, join } from 'node:path';
import type { ExecRequest, ExecResult, Execution, Executor } from './executor';
import { expandHome } from './executor';
import { archiveLocal, extractLocal } from './file-transfer';

/** How long a stopped command gets between SIGTERM and SIGKILL. */
const KILL_GRACE_MS = 2000;

/**
 * Runs commands in the host's shell. Each task gets a fresh directory that is also its `$HOME`,
 * so `~/project` lands inside it. Every command runs in its own process group, so stopping it
 * stops whatever it started too.
 */
export async function createShellExecutor({ taskDir }: { taskDir: string }): Promise<Executor> {
  await rm(taskDir, { recursive: true, force: true });
  await mkdir(join(taskDir, '.gyre'), { recursive: true });
  // Who owns this directory and which process groups it started: if this process dies, the next
  // one finds them here and stops what is left (see reapOrphanedTasks).
  await writeFile(join(taskDir, '.gyre', 'owner'), String(process.pid));
  let scripts = 0;
  // Process groups started for this task; whatever is left of them dies with the task.
  const groups = new Set<number>();
  const bash = existsSync('/bin/bash') || existsSync('/usr/bin/bash');
  const resolvePath = (path: string) => {
    const expanded = expandHome(path, taskDir);
    return isAbsolute(expanded) ? expanded : join(taskDir, expanded);
  };
  return {
    archive: (root, patterns) => archiveLocal(resolvePath(root), patterns),
    extract: (dest, tar, limits) => extractLocal(resolvePath(dest), tar, limits),
    home: taskDir,
    hasBash: async () => bash,
    start(request: ExecRequest, onOutput, signal): Execution {
      const done = (async (): Promise<ExecResult> => {
        const cwd = expandHome(request.cwd, taskDir);
        const dir = isAbsolute(cwd) ? cwd : join(taskDir, cwd);
        await mkdir(dir, { recursive: true });
        const scriptPath = join(taskDir, '.gyre', `script-${++scripts}.sh`);
        await writeFile(scriptPath, request.script, { mode: 0o600 });
        const [command, ...args] = splitShell(request.shell);
        return new Promise<ExecResult>((resolve) => {
          let timedOut = false;
          let canceled = false;
          // stdout and stderr share one pipe (`exec … 2>&1` before the real shell starts), so
          // the log keeps the order in which the command wrote to either, as a terminal would.
          const child = spawn('/bin/sh', ['-c', 'exec "$@" 2>&1', 'sh', command, ...args, scriptPath], {
            cwd: dir,
            env: { ...request.env },
            detached: true,
            stdio: ['ignore', 'pipe', 'pipe'],
          });
          if (child.pid !== undefined) {
            groups.add(child.pid);
            void appendFile(join(taskDir, '.gyre', 'pgids'), `${child.pid}\n`).catch(() => undefined);
          }
          let killTimer: NodeJS.Timeout | undefined;
          const killGroup = () => {
            if (child.pid === undefined || child.exitCode !== null) return;
            try {
              process.kill(-child.pid, 'SIGTERM');
            } catch {
              /* already gone */
            }
            killTimer ??= setTimeout(() => {
              try {
                process.kill(-child.pid!, 'SIGKILL');
              } catch {
                /* already gone */
              }
            }, KILL_GRACE_MS);
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
          child.stdout.on('data', (chunk: Buffer) => onData(chunk, child.stdout));
          child.stderr.on('data', (chunk: Buffer) => onData(chunk, child.stderr)); // only the wrapper's own errors arrive here
          const onAbort = () => {
            canceled = true;
            killGroup();
          };
          if (signal.aborted) onAbort();
          else signal.addEventListener('abort', onAbort, { once: true });
          stop = onAbort;
          armIdle();
          child.on('error', (error) => {
            onOutput(new TextEncoder().encode(`cannot start ${command}: ${error.message}\n`));
          });
          child.on('close', (code) => {
            clearTimeout(idle);
            signal.removeEventListener('abort', onAbort);
            clearTimeout(killTimer);
            resolve({ exitCode: code, timedOut, canceled });
          });
        });
      })();
      let stop = () => undefined as void;
      return { done, stop: () => stop() };
    },
    async cleanup() {
      for (const pgid of groups) {
        try {
          process.kill(-pgid, 'SIGKILL');
        } catch {
          /* group already empty */
        }
      }
      groups.clear();
      await rm(taskDir, { recursive: true, force: true });
    },
  };
}

/** Splits a `shell:` value on whitespace, honouring simple quotes. */
export function splitShell(shell: string): string[] {
  const parts = shell.match(/"[^"]*"|'[^']*'|\S+/g) ?? [];
  return parts.map((p) => (/^(["']).*\1$/.test(p) ? p.slice(1, -1) : p));
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Stops the processes of task directories whose owning process is gone (a runner that was
 * killed), then removes the directories. A process group is only killed while its leader still
 * runs a script from that directory, so a recycled process id is never hit.
 */
export async function reapOrphanedTasks(workRoot: string): Promise<number> {
  let entries: string[];
  try {
    entries = await readdir(workRoot);
  } catch {
    return 0;
  }
  let reaped = 0;
  for (const entry of entries) {
    const dir = join(workRoot, entry);
    const owner = Number(await readFile(join(dir, '.gyre', 'owner'), 'utf8').catch(() => 'NaN'));
    if (!Number.isInteger(owner) || owner === process.pid || alive(owner)) continue;
    const pgids = (await readFile(join(dir, '.gyre', 'pgids'), 'utf8').catch(() => ''))
      .split('\n')
      .map(Number)
      .filter((n) => Number.isInteger(n) && n > 1);
    for (const pgid of pgids) {
      let cmdline = '';
      try {
        cmdline = readFileSync(`/proc/${pgid}/cmdline`, 'utf8');
      } catch {
        continue;
      }
      if (!cmdline.includes(dir)) continue;
      try {
        process.kill(-pgid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
    await rm(dir, { recursive: true, force: true });
    reaped++;
  }
  return reaped;
}
