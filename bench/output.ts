import { join } from 'node:path';
import { runTask } from '../runtime/agent/agent';
import { readSse } from '../runtime/cli/sse';
import type { Executor } from '../runtime/agent/executor';
import { createShellExecutor } from '../runtime/agent/shell-executor';
import { openBlobStore } from '../runtime/blob/open-blob-store';
import { createDispatcher } from '../runtime/dispatcher/dispatcher';
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

/**
 * An executor whose command prints `bytes` of log lines as fast as the agent takes them: the
 * figure is the agent → output → stored path, not the speed of some program writing output.
 */
function printingExecutor(inner: Executor, bytes: number): Executor {
  const line = Buffer.from('2026-11-27T12:00:00.000Z INFO worker-07 processed request id=0123456789abcdef in 12 ms\n');
  const block = Buffer.concat(Array.from({ length: Math.ceil(65536 / line.length) }, () => line));
  return {
    ...inner,
    start(_request, onOutput) {
      const done = (async () => {
        for (let sent = 0; sent < bytes; sent += block.length) {
          onOutput(block.subarray(0, Math.min(block.length, bytes - sent)));
          if ((sent / block.length) % 16 === 0) await new Promise((r) => setImmediate(r));
        }
        return { exitCode: 0, timedOut: false, canceled: false };
      })();
      return { done, stop: () => undefined };
    },
  };
}

async function ingestion(g: TestGyre, kind: string, bytes: number, runs: number): Promise<void> {
  const log = createLogger({ level: 'error' });
  const settings = readSettings({ GYRE_DATA_DIR: g.dataDir });
  const logs = createLogStore({ store: g.gyre.store, blobs: openBlobStore(settings.blobs, g.dataDir), log, limitBytes: 4 * 1024 ** 3 });
  const dispatcher = createDispatcher({ store: g.gyre.store, log, output: logs, config: { leaseTtlMs: 60_000, maxAttempts: 3 } });
  await g.addProject('gh/bench/loud', { '.circleci/config.yml': ONE_STEP });
  const rates: number[] = [];
  const lineRates: number[] = [];
  const lineLength = 84;
  for (let run = 0; run < runs; run++) {
    await g.trigger('gh/bench/loud');
    let claimed;
    while (!(claimed = await dispatcher.claim('bench', ['*']))) await new Promise((r) => setTimeout(r, 10));
    const executor = printingExecutor(await createShellExecutor({ taskDir: join(g.dataDir, 'bench-task') }), bytes);
    const t0 = performance.now();
    const result = await runTask({
      task: claimed.task,
      reporter: localReporter(dispatcher, claimed),
      executor,
      log,
      heartbeatMs: 20_000,
      masker: createValueMasker(SECRETS),
    });
    const seconds = (performance.now() - t0) / 1000;
    if (!('outcome' in result) || result.outcome !== 'success') throw new Error(`bench task did not succeed: ${JSON.stringify(result)}`);
    rates.push(bytes / 1e6 / seconds);
    lineRates.push(bytes / lineLength / seconds);
  }
  console.log(
    `log ingestion agent → output → stored (${kind}, ${bytes / 1e6} MB per step, masking ${SECRETS.length} values): ` +
      `median ${median(rates).toFixed(1)} MB/s, ${Math.round(median(lineRates)).toLocaleString('en')} lines/s (${runs} runs)`,
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
      await ingestion(g, kind, 100_000_000, 5);
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
