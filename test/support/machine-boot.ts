import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const ROOT = resolve(__dirname, '../..');

/** A booted stand-in machine: the startup script running under `sh`, and what it printed. */
export interface BootedMachine {
  readonly process: ChildProcess;
  output(): string;
  /** Whether the script reached `poweroff` (the agent exited). */
  poweredOff(): boolean;
  kill(): void;
}

/**
 * Boots a stand-in machine: runs the startup script Gyre gave the cloud, exactly, under `sh` on
 * this host, with a PATH whose `gyre` is this checkout's and whose `poweroff` only records that it
 * was called (as a machine image with Gyre installed would run it, minus the kernel).
 */
export function bootMachine(script: string, env: Record<string, string | undefined> = process.env): BootedMachine {
  const bin = mkdtempSync(join(tmpdir(), 'gyre-machine-bin-'));
  const marker = join(bin, 'powered-off');
  writeFileSync(join(bin, 'gyre'), `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(join(ROOT, 'bin/gyre.js'))} "$@"\n`);
  writeFileSync(join(bin, 'poweroff'), `#!/bin/sh\ntouch ${JSON.stringify(marker)}\n`);
  chmodSync(join(bin, 'gyre'), 0o755);
  chmodSync(join(bin, 'poweroff'), 0o755);
  let out = '';
  const child = spawn('sh', ['-c', script], {
    cwd: ROOT,
    env: { ...env, GYRE_LOG_LEVEL: 'silent', PATH: `${bin}:${env.PATH ?? ''}` },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  const keep = (d: Buffer) => (out = (out + d.toString()).slice(-65_536));
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  let exited = false;
  child.on('exit', () => (exited = true));
  return {
    process: child,
    output: () => out,
    poweredOff: () => existsSync(marker),
    kill() {
      if (exited || !child.pid) return;
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        /* gone already */
      }
    },
  };
}
