import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runTask, type TaskReporter } from '../../runtime/agent/agent';
import { TaskApiError } from '../../runtime/agent/agent-api-client';
import type { Executor } from '../../runtime/agent/executor';
import { createShellExecutor } from '../../runtime/agent/shell-executor';
import type { JobSpec } from '../../runtime/config/plan';
import type { TaskContext } from '../../runtime/dispatcher/dispatcher';
import { createLogger } from '../../runtime/logger';
import { decompressChunk, type CompressedChunk } from '../../runtime/output/log-chunk';

const MiB = 1024 * 1024;

function taskOf(command: string, noOutputTimeoutMs?: number): TaskContext {
  const spec: JobSpec = {
    executor: { kind: 'shell' },
    steps: [{ type: 'run', name: 'loud', command, when: 'on_success', ...(noOutputTimeoutMs ? { noOutputTimeoutMs } : {}) }],
    environment: {},
    workingDirectory: '~/project',
    parallelism: 1,
  };
  return {
    taskId: 't-1',
    nodeIndex: 0,
    parallelism: 1,
    jobId: 'j-1',
    jobName: 'loud',
    jobNumber: 1,
    spec,
    workflowId: 'w-1',
    workflowName: 'w',
    pipelineId: 'p-1',
    pipelineNumber: 1,
    projectSlug: 'gh/o/r',
    projectOrg: 'o',
    projectName: 'r',
    repoUrl: '/nowhere',
    revision: 'abc',
  };
}

/**
 * An output role that stores nothing until the test opens its gate, as a slow or briefly
 * unreachable server does; it records what reached it.
 */
function gatedReporter() {
  let open!: () => void;
  const gate = new Promise<void>((resolve) => (open = resolve));
  const chunks: CompressedChunk[] = [];
  const outcome: string[] = [];
  const reporter: TaskReporter = {
    heartbeat: async () => ({ leaseExpiresAt: new Date(Date.now() + 60_000), cancelRequested: false }),
    stepStarted: async () => undefined,
    async output(_step, seq, chunk) {
      await gate;
      chunks[seq] = chunk;
    },
    stepFinished: async () => undefined,
    complete: async (o) => void outcome.push(o),
  };
  return { reporter, open, chunks, outcome };
}

/** The shell executor, counting the bytes of output it has read from the command. */
function counting(inner: Executor) {
  const read = { bytes: 0 };
  const executor: Executor = {
    ...inner,
    start: (request, onOutput, signal) =>
      inner.start(
        request,
        (chunk) => {
          read.bytes += chunk.byteLength;
          return onOutput(chunk);
        },
        signal,
      ),
  };
  return { executor, read };
}

async function until(done: () => boolean, failure: () => string): Promise<void> {
  for (let waited = 0; !done(); waited += 20) {
    if (waited > 30_000) throw new Error(failure());
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('output the agent has not sent yet', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'gyre-backpressure-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('holds a command that prints faster than its output is stored, and loses none of its output', async () => {
    const marker = join(dir, 'printed-all');
    // 64 MiB of numbered lines, then a marker the command leaves once everything is written.
    const command = `seq 1 7000000 | awk '{ printf "line %08d of the output\\n", $1 }' && touch ${marker}`;
    const { reporter, open, chunks, outcome } = gatedReporter();
    const { executor, read } = counting(await createShellExecutor({ taskDir: join(dir, 'task') }));
    const run = runTask({ task: taskOf(command), reporter, executor, log: createLogger({ level: 'error' }), heartbeatMs: 10_000 });

    try {
      // Nothing is stored: the agent reads up to its bound of unsent output, and then the command
      // waits on its output pipe instead of the agent holding everything in memory.
      await until(() => read.bytes >= 15 * MiB, () => `the agent read only ${read.bytes} bytes in 30 s`);
      await new Promise((r) => setTimeout(r, 1000));
      expect(read.bytes).toBeLessThan(18 * MiB);
      expect(existsSync(marker)).toBe(false);
    } finally {
      open();
    }
    expect(await run).toEqual({ outcome: 'success' });
    expect(outcome).toEqual(['success']);
    expect(existsSync(marker)).toBe(true);
    const text = Buffer.concat(await Promise.all(chunks.map((c) => decompressChunk(c)))).toString();
    const lines = text.split('\n');
    expect(lines.length).toBe(7_000_001);
    expect(lines[0]).toBe('line 00000001 of the output');
    expect(lines[6_999_999]).toBe('line 07000000 of the output');
    expect(text.length).toBe(7_000_000 * 28);
  }, 120_000);

  it('does not count the time a command waits for the agent as time without output', async () => {
    const { reporter, open, chunks } = gatedReporter();
    const { executor, read } = counting(await createShellExecutor({ taskDir: join(dir, 'task') }));
    // 32 MiB at once, more than the agent holds unsent (almost 16 MiB); a no-output timeout of 3 s
    // (1 s could be lost to a stalled event loop on a loaded machine once the gate opened).
    const command = `head -c ${32 * MiB} /dev/zero | tr '\\0' 'x'`;
    const run = runTask({ task: taskOf(command, 3000), reporter, executor, log: createLogger({ level: 'error' }), heartbeatMs: 10_000 });
    try {
      await until(() => read.bytes >= 15 * MiB, () => `the agent read only ${read.bytes} bytes in 30 s`);
      // Held for twice the no-output timeout.
      await new Promise((r) => setTimeout(r, 6000));
    } finally {
      open();
    }
    expect(await run).toEqual({ outcome: 'success' });
    const bytes = (await Promise.all(chunks.map((c) => decompressChunk(c)))).reduce((n, b) => n + b.length, 0);
    expect(bytes).toBe(32 * MiB);
  }, 60_000);

  it('still stops a command that is itself silent for longer than its no-output timeout', async () => {
    const { reporter, open, chunks, outcome } = gatedReporter();
    open();
    const { executor } = counting(await createShellExecutor({ taskDir: join(dir, 'task') }));
    const run = runTask({ task: taskOf('echo begin; sleep 30; echo never', 500), reporter, executor, log: createLogger({ level: 'error' }), heartbeatMs: 10_000 });
    expect(await run).toEqual({ outcome: 'timedout' });
    expect(outcome).toEqual(['timedout']);
    const text = Buffer.concat(await Promise.all(chunks.map((c) => decompressChunk(c)))).toString();
    expect(text).toMatch(/^begin\n\nToo long with no output \(exceeded .*\): the step was stopped\.\n$/);
  }, 30_000);
});

/** An output role that takes `ms` to store each chunk, recording each chunk's size and when it was stored. */
function slowReporter(ms: number) {
  const stored: { seq: number; text: string; at: number }[] = [];
  let finishedAt = 0;
  const reporter: TaskReporter = {
    heartbeat: async () => ({ leaseExpiresAt: new Date(Date.now() + 60_000), cancelRequested: false }),
    stepStarted: async () => undefined,
    async output(_step, seq, chunk) {
      await new Promise((r) => setTimeout(r, ms));
      stored.push({ seq, text: (await decompressChunk(chunk)).toString(), at: Date.now() });
    },
    stepFinished: async () => void (finishedAt = Date.now()),
    complete: async () => undefined,
  };
  return { reporter, stored, finishedAt: () => finishedAt };
}

describe('how a step\'s output is cut into chunks', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'gyre-chunks-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));
  const run = async (command: string, reporter: TaskReporter) =>
    runTask({ task: taskOf(command), reporter, executor: await createShellExecutor({ taskDir: join(dir, 'task') }), log: createLogger({ level: 'error' }), heartbeatMs: 10_000 });

  it('a loud step whose chunks wait for a slow store sends full chunks, not a small one each time the flush timer fires', async () => {
    // 32 MiB at once: the agent holds almost 16 MiB unsent, the command waits, and the timer fires
    // meanwhile. A chunk is stored in 150 ms: the command resumes once the sends leave room for a full chunk,
    // with chunks still queued, so it has more than one send's time to fill the next.
    const { reporter, stored } = slowReporter(150);
    expect(await run(`head -c ${32 * MiB} /dev/zero | tr '\\0' 'x'`, reporter)).toEqual({ outcome: 'success' });
    const sizes = stored.map((c) => c.text.length);
    expect(sizes.reduce((a, b) => a + b, 0)).toBe(32 * MiB);
    // Full chunks of almost 4 MiB (eight, and the rest), as a rule. Cut whenever the timer fired, a
    // run had a chunk of 24 KiB between full ones (3 runs of 3). The first may be short on a loaded
    // machine (nothing was waiting yet when the timer fired: a reader following the step gets it),
    // which moves the last; and where the writer did not fill a chunk before the sends ran out (a CI
    // machine under load, resumed with one send's time: 1.7 MiB of a 2 MiB chunk once, 1.89 MiB of
    // a 4 MiB chunk in another run), the part goes then, by design. So: no small chunk between the
    // first and the last (none under a quarter of a full chunk, forty times the timer's 24 KiB),
    // and at most one more chunk than the nine it takes.
    expect(sizes.length).toBeLessThanOrEqual(10);
    for (const size of sizes.slice(1, -1)) expect(size).toBeGreaterThanOrEqual(1 * MiB);
  }, 60_000);

  it('output that comes after a loud part, while the step goes quiet, is stored long before the step ends', async () => {
    const { reporter, stored, finishedAt } = slowReporter(150);
    expect(await run(`head -c ${10 * MiB} /dev/zero | tr '\\0' 'x'; echo; echo the-tail; sleep 6`, reporter)).toEqual({ outcome: 'success' });
    const tail = stored.find((c) => c.text.includes('the-tail'));
    expect(tail).toBeDefined();
    // The sleep is 6 s: the tail went out once the chunks before it were stored (about 1 s), not at
    // the step's end.
    expect(finishedAt() - tail!.at).toBeGreaterThan(3000);
    expect(stored.map((c) => c.text).join('')).toBe(`${'x'.repeat(10 * MiB)}\nthe-tail\n`);
  }, 60_000);

  it('a chunk the server refuses is not sent again: a line says so in its place, at once, and later output is stored', async () => {
    const stored: { seq: number; text: string }[] = [];
    let refusals = 0;
    const reporter: TaskReporter = {
      heartbeat: async () => ({ leaseExpiresAt: new Date(Date.now() + 60_000), cancelRequested: false }),
      stepStarted: async () => undefined,
      async output(_step, seq, chunk) {
        const text = (await decompressChunk(chunk)).toString();
        // As a server refuses a body past its size limit: every time the same chunk comes.
        if (text.includes('refuse-me')) {
          refusals++;
          throw new TaskApiError(`PUT /api/v2/agent/task/t-1/step/0/output/${seq} → 413: an output chunk is larger than 4194304 bytes`, 413);
        }
        stored.push({ seq, text });
      },
      stepFinished: async () => undefined,
      complete: async () => undefined,
    };
    const started = Date.now();
    expect(await run('echo first; sleep 0.5; echo refuse-me; sleep 0.5; echo third', reporter)).toEqual({ outcome: 'success' });
    // Retried, the refused chunk held the rest of the step back for half a minute and then ended its sends.
    expect(Date.now() - started).toBeLessThan(5000);
    expect(refusals).toBe(1);
    expect(stored.map((c) => c.seq)).toEqual([0, 1, 2]);
    expect(stored.map((c) => c.text).join('')).toBe(
      'first\n\n[gyre] 10 bytes of this step\'s output were refused by the server and are not stored: PUT /api/v2/agent/task/t-1/step/0/output/1 → 413: an output chunk is larger than 4194304 bytes\nthird\n',
    );
  }, 30_000);

  it('a quiet step\'s line is sent on its own, while the step goes on', async () => {
    const { reporter, stored, finishedAt } = slowReporter(0);
    expect(await run('echo first; sleep 4; echo second', reporter)).toEqual({ outcome: 'success' });
    expect(stored.map((c) => c.text)).toEqual(['first\n', 'second\n']);
    expect(finishedAt() - stored[0].at).toBeGreaterThan(2000);
  }, 30_000);
});
