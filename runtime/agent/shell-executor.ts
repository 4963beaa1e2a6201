import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { isAbsolute, join } from 'node:path';
import type { ExecRequest, ExecResult, Execution, Executor } from './executor';
import { expandHome } from './executor';

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
  let scripts = 0;
  // Process groups started for this task; whatever is left of them dies with the task.
  const groups = new Set<number>();
  const bash = existsSync('/bin/bash') || existsSync('/usr/bin/bash');
  return {
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
          const child = spawn(command, [...args, scriptPath], {
            cwd: dir,
            env: { ...request.env },
            detached: true,
            stdio: ['ignore', 'pipe', 'pipe'],
          });
          if (child.pid !== undefined) groups.add(child.pid);
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
              timedOut = true;
              killGroup();
            }, request.noOutputTimeoutMs);
          };
          const onData = (chunk: Buffer) => {
            armIdle();
            onOutput(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength));
          };
          child.stdout.on('data', onData);
          child.stderr.on('data', onData);
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
