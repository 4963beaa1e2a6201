import { join } from 'node:path';
import { runTask, type TaskReporter } from '../runtime/agent/agent';
import type { Executor } from '../runtime/agent/executor';
import { createShellExecutor } from '../runtime/agent/shell-executor';
import type { TaskContext } from '../runtime/dispatcher/dispatcher';
import { createLogger } from '../runtime/logger';
import { createValueMasker } from '../runtime/output/masking';

/**
 * The log ingestion benchmark's step: an agent runs a task whose one step prints varied log lines
 * as fast as the agent takes them, with the masking hook on. Used in the server's process (the
 * built-in runner's case) and in an agent process of its own (bench/remote-agent.ts).
 */

/** Secrets the masking hook looks for in every chunk (none occur in the output: the cost is the search). */
export const SECRETS = ['s3cr3t-token-value-0001', 'AKIAEXAMPLEKEY123456', 'hunter2-but-longer', 'ghp_abcdefghijklmnop0123', 'xoxb-1234-5678-abcdef'];

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
    start(_request, onOutput) {
      const done = (async () => {
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

/** Runs `task` with `reporter`, its step printing `bytes` of log lines; how long it took and the lines printed. */
export async function timedLoudStep(task: TaskContext, reporter: TaskReporter, bytes: number, workDir: string): Promise<{ seconds: number; lines: number }> {
  const log = createLogger({ level: 'error' });
  const printed = { lines: 0 };
  const executor = printingExecutor(await createShellExecutor({ taskDir: join(workDir, 'bench-task') }), bytes, (blocks ??= logBlocks()), printed);
  const t0 = performance.now();
  const result = await runTask({ task, reporter, executor, log, heartbeatMs: 20_000, masker: createValueMasker(SECRETS) });
  const seconds = (performance.now() - t0) / 1000;
  if (!('outcome' in result) || result.outcome !== 'success') throw new Error(`bench task did not succeed: ${JSON.stringify(result)}`);
  return { seconds, lines: printed.lines };
}
