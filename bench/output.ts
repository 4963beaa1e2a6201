import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readSse } from '../runtime/cli/sse';
import { openBlobStore } from '../runtime/blob/open-blob-store';
import { createDispatcher } from '../runtime/dispatcher/dispatcher';
import { createLogger } from '../runtime/logger';
import { createLogStore } from '../runtime/output/logs';
import { localReporter } from '../runtime/scheduler/builtin-driver';
import { readSettings } from '../runtime/settings';
import { makeGitRepo, startTestGyre, type TestGyre } from '../test/support/gyre';
import { gyreCommand } from '../test/support/processes';
import { configOnClass } from '../test/support/runner-tasks';
import { gzipOneRate, SECRETS, timedLoudStep, type Masking } from './log-printer';
import { startUserServer } from './server-process';
import { median, ms, percentile } from './stats';

const ROOT = join(__dirname, '..');

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

const REMOTE_CLASS = 'bench/remote';
const REMOTE_STEP = configOnClass(REMOTE_CLASS);

/**
 * Where the agent runs: in the server's process (the built-in runner), or in a process of its own
 * that reaches the server over HTTP (runners, Nomad allocations).
 */
type AgentPath = 'in-process' | 'http';

type Timed = { masking: Masking; seconds: number; lines: number };

/**
 * Steps of `bytes` each, run by an agent in the server's process, masking off and on in turn (so
 * drift in the machine's speed falls on both alike); seconds and lines of each.
 */
async function inProcessSteps(g: TestGyre, bytes: number, runs: number): Promise<Timed[]> {
  const log = createLogger({ level: 'error' });
  const settings = readSettings({ GYRE_DATA_DIR: g.dataDir });
  const logs = createLogStore({ store: g.gyre.store, blobs: openBlobStore(settings.blobs, g.dataDir), log, limitBytes: 4 * 1024 ** 3 });
  const dispatcher = createDispatcher({ store: g.gyre.store, log, output: logs, config: { leaseTtlMs: 60_000, maxAttempts: 3 } });
  await g.addProject('gh/bench/loud', { '.circleci/config.yml': ONE_STEP });
  const results = [];
  for (let run = 0; run < runs; run++) {
    await g.trigger('gh/bench/loud');
    let claimed;
    while (!(claimed = await dispatcher.claim('bench', ['*']))) await new Promise((r) => setTimeout(r, 10));
    const masking: Masking = run % 2 === 0 ? 'off' : 'on';
    results.push({ masking, ...(await timedLoudStep(claimed.task, localReporter(dispatcher, claimed), bytes, g.dataDir, masking)) });
  }
  await logs.close();
  return results;
}

/** The in-process steps on a server of their own in this process (a fresh database and data directory). */
async function inProcessOn(kind: 'pglite' | 'postgres', bytes: number, runs: number): Promise<Timed[]> {
  const g = await startTestGyre({ store: kind, env: { GYRE_RUNNER_SLOTS: '0' } });
  try {
    return await inProcessSteps(g, bytes, runs);
  } finally {
    await g.stop();
  }
}

/**
 * The same steps, run by bench/remote-agent.ts in a process of its own with a runner token, over
 * HTTP to a server in a process of its own: the path of `gyre runner` and `gyre agent`.
 */
async function remoteSteps(kind: 'pglite' | 'postgres', bytes: number, runs: number): Promise<Timed[]> {
  const server = await startUserServer(kind, 'ingest');
  const repo = makeGitRepo({ '.circleci/config.yml': REMOTE_STEP });
  const workDir = mkdtempSync(join(tmpdir(), 'gyre-bench-agent-'));
  try {
    await server.api('POST', '/api/v2/resource-classes', { name: REMOTE_CLASS, cpu: 1, memory_mb: 512, driver: 'runner' });
    const { token } = await server.api('POST', `/api/v2/resource-classes/${encodeURIComponent(REMOTE_CLASS)}/tokens`, {});
    await server.api('POST', '/api/v2/projects', { org: 'bench', name: 'remote', repo_url: repo });
    for (let run = 0; run < runs; run++) await server.api('POST', '/api/v2/project/gh/bench/remote/pipeline', {});
    // With the Node flags and environment `gyre agent` starts with (bin/gyre.js's first line), so
    // the agent measured is the one users run (its heap's sizes decide how it collects garbage).
    const gyre = gyreCommand([]);
    // BENCH_CPU_PROFILE=<dir>: the agent writes a V8 CPU profile there too, as the server does.
    const profileDir = process.env.BENCH_CPU_PROFILE;
    const nodeFlags = [...gyre.command.slice(1, -1), ...(profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : [])];
    const agent = spawn(process.execPath, [...nodeFlags, join(ROOT, 'bin/run-ts.js'), join(ROOT, 'bench/remote-agent.ts'), server.url, token, String(bytes), String(runs), workDir], {
      env: { ...process.env, ...gyre.env },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    agent.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
    const code = await new Promise<number | null>((resolve) => agent.on('close', resolve));
    if (code !== 0) throw new Error(`the benchmark's remote agent exited with ${code}`);
    return out
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as Timed);
  } finally {
    await server.stop();
    rmSync(repo, { recursive: true, force: true });
    rmSync(workDir, { recursive: true, force: true });
  }
}

/**
 * Log ingestion with masking off and with the task's 100 secrets masked (`runs` steps of each,
 * alternating): both medians, and the ratio of the median times (masked / off; 1.10 is 10% slower).
 */
export async function ingestion(kind: 'pglite' | 'postgres', path: AgentPath, bytes: number, runs: number): Promise<void> {
  // The bar: single-core gzip -1 over the same bytes, measured now (machines of this kind differ 2–3×),
  // before the steps and after them: on one machine of this kind it measured 63–101 MB/s within one
  // run of this benchmark, so the bar is the median of both.
  const before = await gzipOneRate(bytes);
  const steps = path === 'in-process' ? await inProcessOn(kind, bytes, 2 * runs) : await remoteSteps(kind, bytes, 2 * runs);
  const gzipRates = [...before, ...(await gzipOneRate(bytes))];
  const figures = (masking: Masking) => {
    const of = steps.filter((s) => s.masking === masking);
    const rates = of.map((s) => bytes / 1e6 / s.seconds);
    return {
      seconds: median(of.map((s) => s.seconds)),
      text: `median ${median(rates).toFixed(1)} MB/s, ${Math.round(median(of.map((s) => s.lines / s.seconds))).toLocaleString('en')} lines/s (${rates.map((r) => r.toFixed(1)).join(', ')})`,
    };
  };
  const off = figures('off');
  const on = figures('on');
  const gzip = median(gzipRates);
  console.log(
    `log ingestion agent → output → stored (${kind}, ${path === 'http' ? 'agent and server each in a process of its own, over HTTP' : 'agent in the server process'}, ${bytes / 1e6} MB per step, ${runs} runs each):\n` +
      `  masking off: ${off.text}\n  masking ${Object.keys(SECRETS).length} secrets: ${on.text}\n  masked / off time: ${(on.seconds / off.seconds).toFixed(3)}\n` +
      `  gzip -1 on one core, the same bytes: median ${gzip.toFixed(1)} MB/s (${Math.min(...gzipRates).toFixed(1)}–${Math.max(...gzipRates).toFixed(1)}, 3 runs before the steps, 3 after); masked ingestion / gzip -1: ${(bytes / 1e6 / on.seconds / gzip).toFixed(2)}×`,
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

/** Log ingestion with masking off and on, both agent paths, on one store. */
async function ingestionOn(kind: 'pglite' | 'postgres'): Promise<void> {
  for (const path of ['in-process', 'http'] as const) await ingestion(kind, path, 100_000_000, 5);
}

const storeKinds = () => (process.env.DATABASE_URL ? (['pglite', 'postgres'] as const) : (['pglite'] as const));

/** `npm run bench -- masking`: log ingestion only, masking off and with 100 secrets. */
export async function benchMasking(): Promise<void> {
  console.log('\n## Masking');
  for (const kind of storeKinds()) await ingestionOn(kind);
}

/** Log ingestion, live-follow latency and cache throughput, on PGlite and (with DATABASE_URL) PostgreSQL. */
export async function benchOutput(): Promise<void> {
  console.log('\n## Output');
  for (const kind of storeKinds()) {
    await ingestionOn(kind);
    const g = await startTestGyre({ store: kind, env: { GYRE_RUNNER_SLOTS: '2' } });
    try {
      await liveFollow(g, kind);
      await caches(g, kind);
    } finally {
      await g.stop();
    }
  }
}
