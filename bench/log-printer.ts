import { spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runTask, type TaskReporter } from '../runtime/agent/agent';
import type { Executor } from '../runtime/agent/executor';
import { createShellExecutor } from '../runtime/agent/shell-executor';
import type { TaskContext } from '../runtime/dispatcher/dispatcher';
import { createLogger } from '../runtime/logger';

/**
 * The log ingestion benchmark's step: an agent runs a task whose one step prints varied log lines
 * as fast as the agent takes them, with or without secrets to mask. Used in the server's process
 * (the built-in runner's case) and in an agent process of its own (bench/remote-agent.ts).
 */

/** Masking on: the task carries 100 secrets, which the agent masks as it does a real task's. */
export type Masking = 'off' | 'on';

/**
 * 100 secrets shaped as real ones are (GitHub and Slack tokens, AWS key pairs, passwords with
 * punctuation, UUIDs, a few long ones: a private key, a service-account JSON), the same every
 * run. None occurs in the output: the cost measured is the search, in all the encoded forms.
 */
export const SECRETS: Readonly<Record<string, string>> = (() => {
  let seed = 0x2545f491;
  const random = () => ((seed = (Math.imul(seed ^ (seed >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0) / 2 ** 32);
  const pick = (alphabet: string, n: number) => Array.from({ length: n }, () => alphabet[Math.floor(random() * alphabet.length)]).join('');
  const alnum = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
  const hex = '0123456789abcdef';
  const shapes = [
    () => `ghp_${pick(alnum, 36)}`,
    () => `xoxb-${pick('0123456789', 12)}-${pick('0123456789', 13)}-${pick(alnum, 24)}`,
    () => `AKIA${pick('ABCDEFGHIJKLMNOPQRSTUVWXYZ234567', 16)}`,
    () => pick(`${alnum}/+`, 40),
    () => pick(`${alnum}!#%&*-_.:;?@^~ `, 20),
    () => `${pick(hex, 8)}-${pick(hex, 4)}-${pick(hex, 4)}-${pick(hex, 4)}-${pick(hex, 12)}`,
    () => pick(hex, 64),
    () => `postgres://app:${pick(alnum, 24)}@db.internal:5432/app`,
  ];
  const env: Record<string, string> = {};
  for (let i = 0; i < 97; i++) env[`SECRET_${i}`] = shapes[i % shapes.length]();
  const lines = (n: number) => Array.from({ length: n }, () => pick(`${alnum}/+`, 64)).join('\n');
  env.DEPLOY_KEY = `-----BEGIN OPENSSH PRIVATE KEY-----\n${lines(25)}\n-----END OPENSSH PRIVATE KEY-----\n`;
  env.GCLOUD_SERVICE_KEY = JSON.stringify({ type: 'service_account', project_id: 'acme-prod', private_key_id: pick(hex, 40), private_key: `-----BEGIN PRIVATE KEY-----\n${lines(26)}\n-----END PRIVATE KEY-----\n`, client_email: 'ci@acme-prod.iam.gserviceaccount.com' }, null, 2);
  env.NPM_TOKEN = `npm_${pick(alnum, 36)}`;
  return env;
})();

/** Reads of a pipe: what an executor hands the agent at a time. */
const BLOCK = 64 * 1024;

/**
 * 16 MiB of log lines that differ from each other as real ones do (time, worker, request id,
 * duration), cut into pipe-sized blocks, with the count of lines each block ends. Output is stored
 * compressed, so one line repeated (155 times smaller gzipped) would flatter the figure; these
 * compress 4.6 times at gzip level 1, at the low end of real text (3.6 times for `git log -p`, 5.8
 * for TypeScript declarations, 8.9 for a directory listing, measured here).
 */
function logBlocks(): { data: Buffer; lines: number }[] {
  const text: string[] = [];
  let length = 0;
  for (let n = 0; length < 16 * 1024 * 1024; n++) {
    const time = `${String(Math.floor(n / 3_600_000) % 24).padStart(2, '0')}:${String(Math.floor(n / 60_000) % 60).padStart(2, '0')}:${String(Math.floor(n / 1000) % 60).padStart(2, '0')}.${String(n % 1000).padStart(3, '0')}`;
    const id = ((n * 2654435761) >>> 0).toString(16).padStart(8, '0') + ((n * 40503) >>> 0).toString(16).padStart(8, '0');
    const line = `2026-11-27T${time}Z INFO worker-${String(n % 16).padStart(2, '0')} processed request id=${id} in ${(n * 7) % 997} ms\n`;
    text.push(line);
    length += line.length;
  }
  const all = Buffer.from(text.join(''));
  const blocks = [];
  for (let at = 0; at + BLOCK <= all.length; at += BLOCK) {
    const data = all.subarray(at, at + BLOCK);
    let lines = 0;
    for (let i = data.indexOf(10); i !== -1; i = data.indexOf(10, i + 1)) lines++;
    blocks.push({ data, lines });
  }
  return blocks;
}

/**
 * An executor whose command prints `bytes` of log lines as fast as the agent takes them: the
 * figure is the agent → output → stored path, not the speed of some program writing output.
 * `printed.lines` counts the lines it printed.
 */
function printingExecutor(inner: Executor, bytes: number, blocks: { data: Buffer; lines: number }[], printed: { lines: number }): Executor {
  return {
    ...inner,
    start(request, onOutput) {
      const done = (async () => {
        // Held at its gate, as a real command is when the agent starts it early (before the task's
        // secrets are in): output it printed before would be kept whole, without backpressure.
        if (request.gate) await request.gate;
        for (let sent = 0, i = 0; sent < bytes; sent += BLOCK, i++) {
          const block = blocks[i % blocks.length];
          const data = block.data.subarray(0, Math.min(BLOCK, bytes - sent));
          const caughtUp = onOutput(data);
          printed.lines += data.length === BLOCK ? block.lines : data.toString('latin1').split('\n').length - 1;
          // As a command blocked on its output pipe: it waits while the agent holds too much unsent.
          if (caughtUp) await caughtUp;
          else if (i % 16 === 15) await new Promise((r) => setImmediate(r));
        }
        return { exitCode: 0, timedOut: false, canceled: false };
      })();
      return { done, stop: () => undefined };
    },
  };
}

/** Made on first use: a process that only serves the benchmark's agent never builds them. */
let blocks: { data: Buffer; lines: number }[] | undefined;

/**
 * Runs `task` with `reporter`, its step printing `bytes` of log lines; how long it took and the
 * lines printed. With masking on, the task carries SECRETS and the agent builds its masker from
 * them, as for a real task (the time includes building it).
 */
export async function timedLoudStep(task: TaskContext, reporter: TaskReporter, bytes: number, workDir: string, masking: Masking): Promise<{ seconds: number; lines: number }> {
  const log = createLogger({ level: 'error' });
  const printed = { lines: 0 };
  const executor = printingExecutor(await createShellExecutor({ taskDir: join(workDir, 'bench-task') }), bytes, (blocks ??= logBlocks()), printed);
  const t0 = performance.now();
  const secretTask: TaskContext = masking === 'on' ? { ...task, secrets: { env: SECRETS } } : task;
  const result = await runTask({ task: secretTask, reporter, executor, log, heartbeatMs: 20_000 });
  const seconds = (performance.now() - t0) / 1000;
  if (!('outcome' in result) || result.outcome !== 'success') throw new Error(`bench task did not succeed: ${JSON.stringify(result)}`);
  return { seconds, lines: printed.lines };
}

/**
 * What single-core `gzip -1` does with the same bytes on this machine, in MB/s (median of `runs`):
 * the bar issue #19 set for log ingestion over HTTP. The bytes the step prints (the same blocks,
 * `bytes` of them) are written to a file first, so the figure is gzip's own, not a pipe's.
 */
export async function gzipOneRate(bytes: number, runs = 3): Promise<number[]> {
  const dir = mkdtempSync(join(tmpdir(), 'gyre-bench-gzip-'));
  const file = join(dir, 'log');
  try {
    const all = (blocks ??= logBlocks());
    const fd = openSync(file, 'w');
    try {
      for (let sent = 0, i = 0; sent < bytes; sent += BLOCK, i++) {
        const data = all[i % all.length].data;
        writeSync(fd, data, 0, Math.min(BLOCK, bytes - sent));
      }
    } finally {
      closeSync(fd);
    }
    const rates: number[] = [];
    for (let run = 0; run < runs; run++) {
      const t0 = performance.now();
      const result = spawnSync('gzip', ['-1', '-c', file], { stdio: ['ignore', 'ignore', 'pipe'], maxBuffer: 1 << 20 });
      if (result.status !== 0) throw new Error(`gzip -1 failed: ${result.error?.message ?? result.stderr?.toString()}`);
      rates.push(bytes / 1e6 / ((performance.now() - t0) / 1000));
    }
    return rates;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
