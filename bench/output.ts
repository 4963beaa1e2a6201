import { join } from 'node:path';
import { runTask } from '../runtime/agent/agent';
import { createAgentClient } from '../runtime/agent/http-reporter';
import { readSse } from '../runtime/cli/sse';
import type { Executor } from '../runtime/agent/executor';
import { createShellExecutor } from '../runtime/agent/shell-executor';
import { openBlobStore } from '../runtime/blob/open-blob-store';
import { createDispatcher, type TaskContext } from '../runtime/dispatcher/dispatcher';
import { createLogger } from '../runtime/logger';
import { createLogStore } from '../runtime/output/logs';
import { createValueMasker } from '../runtime/output/masking';
import { localReporter } from '../runtime/scheduler/builtin-driver';
import { readSettings } from '../runtime/settings';
import { startTestGyre, type TestGyre } from '../test/support/gyre';
import { median, ms, percentile } from './stats';

const ONE_STEP = `version: 2.1
jobs:
  loud:
    docker: [{ image: x }]
    steps:
      - run: "true"
workflows:
  w:
    jobs: [loud]
`;

/** Secrets the masking hook looks for in every chunk (none occur in the output: the cost is the search). */
const SECRETS = ['s3cr3t-token-value-0001', 'AKIAEXAMPLEKEY123456', 'hunter2-but-longer', 'ghp_abcdefghijklmnop0123', 'xoxb-1234-5678-abcdef'];

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

const REMOTE_CLASS = 'bench/remote';
const REMOTE_STEP = `version: 2.1
jobs:
  loud:
    machine: true
    resource_class: ${REMOTE_CLASS}
    steps:
      - run: "true"
workflows:
  w:
    jobs: [loud]
`;

/** How the agent reaches the output role: in the server's process (built-in runner), or over HTTP (runners, Nomad). */
type AgentPath = 'in-process' | 'http';

/** A task claimed the way its kind of agent claims it, with the reporter that agent uses. */
async function claimTask(g: TestGyre, path: AgentPath, dispatcher: ReturnType<typeof createDispatcher>, runnerToken: string | undefined) {
  if (path === 'in-process') {
    await g.trigger('gh/bench/loud');
    let claimed;
    while (!(claimed = await dispatcher.claim('bench', ['*']))) await new Promise((r) => setTimeout(r, 10));
    return { task: claimed.task, reporter: localReporter(dispatcher, claimed) };
  }
  await g.trigger('gh/bench/remote');
  for (;;) {
    const res = await fetch(`${g.url}/api/v2/agent/claim`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${runnerToken}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ runner_id: 'bench', wait_ms: 10_000 }),
    });
    if (res.status !== 200) {
      await res.arrayBuffer();
      continue;
    }
    const body = (await res.json()) as { token: string; task: TaskContext };
    return { task: body.task, reporter: createAgentClient({ url: g.url, token: body.token, taskId: body.task.taskId }).reporter() };
  }
}

async function ingestion(g: TestGyre, kind: string, path: AgentPath, bytes: number, runs: number): Promise<void> {
  const log = createLogger({ level: 'error' });
  const settings = readSettings({ GYRE_DATA_DIR: g.dataDir });
  const logs = createLogStore({ store: g.gyre.store, blobs: openBlobStore(settings.blobs, g.dataDir), log, limitBytes: 4 * 1024 ** 3 });
  const dispatcher = createDispatcher({ store: g.gyre.store, log, output: logs, config: { leaseTtlMs: 60_000, maxAttempts: 3 } });
  let runnerToken: string | undefined;
  if (path === 'in-process') {
    await g.addProject('gh/bench/loud', { '.circleci/config.yml': ONE_STEP });
  } else {
    await g.api('POST', '/api/v2/resource-classes', { name: REMOTE_CLASS, cpu: 1, memory_mb: 512, driver: 'runner' });
    runnerToken = (await g.api('POST', `/api/v2/resource-classes/${encodeURIComponent(REMOTE_CLASS)}/tokens`, {})).token;
    await g.addProject('gh/bench/remote', { '.circleci/config.yml': REMOTE_STEP });
  }
  const rates: number[] = [];
  const lineRates: number[] = [];
  const blocks = logBlocks();
  for (let run = 0; run < runs; run++) {
    const { task, reporter } = await claimTask(g, path, dispatcher, runnerToken);
    const printed = { lines: 0 };
    const executor = printingExecutor(await createShellExecutor({ taskDir: join(g.dataDir, 'bench-task') }), bytes, blocks, printed);
    const t0 = performance.now();
    const result = await runTask({ task, reporter, executor, log, heartbeatMs: 20_000, masker: createValueMasker(SECRETS) });
    const seconds = (performance.now() - t0) / 1000;
    if (!('outcome' in result) || result.outcome !== 'success') throw new Error(`bench task did not succeed: ${JSON.stringify(result)}`);
    rates.push(bytes / 1e6 / seconds);
    lineRates.push(printed.lines / seconds);
  }
  console.log(
    `log ingestion agent → output → stored (${kind}, agent ${path === 'http' ? 'over HTTP' : 'in the server process'}, ${bytes / 1e6} MB per step, masking ${SECRETS.length} values): ` +
      `median ${median(rates).toFixed(1)} MB/s, ${Math.round(median(lineRates)).toLocaleString('en')} lines/s (${runs} runs: ${rates.map((r) => r.toFixed(1)).join(', ')})`,
  );
}

async function liveFollow(g: TestGyre, kind: string): Promise<void> {
  await g.addProject('gh/bench/ticker', {
    '.circleci/config.yml': `version: 2.1
jobs:
  tick:
    docker: [{ image: x }]
    steps:
      - run: for i in $(seq 1 150); do echo "t=$(date +%s%3N)"; sleep 0.02; done
workflows:
  w:
    jobs: [tick]
`,
  });
  const { id } = await g.trigger('gh/bench/ticker');
  const jobNumber = await g.firstJobNumber(id);
  const res = await fetch(`${g.url}/api/v2/project/gh/bench/ticker/job/${jobNumber}/output/stream`, { headers: { 'Circle-Token': g.token } });
  const delays: number[] = [];
  for await (const e of readSse(res.body as unknown as AsyncIterable<Uint8Array>)) {
    if (e.event !== 'output') continue;
    for (const m of String(JSON.parse(e.data).text).matchAll(/t=(\d+)/g)) delays.push(e.receivedAt - Number(m[1]));
  }
  console.log(`live follow, printed → received over SSE (${kind}, ${delays.length} lines every 20 ms): p50 ${ms(median(delays))}, p99 ${ms(percentile(delays, 99))}`);
}

async function caches(g: TestGyre, kind: string): Promise<void> {
  const megabytes = 100;
  await g.addProject('gh/bench/cache', {
    '.circleci/config.yml': `version: 2.1
jobs:
  save:
    docker: [{ image: x }]
    steps:
      - run: mkdir -p ~/data && for i in $(seq 1 ${megabytes}); do head -c 1000000 /dev/urandom > ~/data/f$i; done
      - save_cache:
          key: bench-{{ .BuildNum }}
          paths: [~/data]
      - restore_cache:
          keys: [bench-]
workflows:
  w:
    jobs: [save]
`,
  });
  const save: number[] = [];
  const restore: number[] = [];
  for (let run = 0; run < 3; run++) {
    const { id } = await g.trigger('gh/bench/cache');
    const { jobs } = await g.waitForPipeline(id, 300_000);
    if (jobs.save.status !== 'success') throw new Error(`cache bench job ended ${jobs.save.status}`);
    const steps = (await g.api('GET', `/api/v2/project/gh/bench/cache/job/${jobs.save.job_number}/steps`)).items;
    save.push(megabytes / (steps[1].duration_ms / 1000));
    restore.push(megabytes / (steps[2].duration_ms / 1000));
  }
  console.log(`cache of ${megabytes} MB of incompressible files (${kind}, local blob store): save median ${median(save).toFixed(1)} MB/s, restore median ${median(restore).toFixed(1)} MB/s (3 runs)`);
}

/** Log ingestion, live-follow latency and cache throughput, on PGlite and (with DATABASE_URL) PostgreSQL. */
export async function benchOutput(): Promise<void> {
  const kinds = process.env.DATABASE_URL ? (['pglite', 'postgres'] as const) : (['pglite'] as const);
  console.log('\n## Output');
  for (const kind of kinds) {
    let g = await startTestGyre({ store: kind, env: { GYRE_RUNNER_SLOTS: '0' } });
    try {
      await ingestion(g, kind, 'in-process', 100_000_000, 5);
      await ingestion(g, kind, 'http', 100_000_000, 5);
    } finally {
      await g.stop();
    }
    g = await startTestGyre({ store: kind, env: { GYRE_RUNNER_SLOTS: '2' } });
    try {
      await liveFollow(g, kind);
      await caches(g, kind);
    } finally {
      await g.stop();
    }
  }
}
