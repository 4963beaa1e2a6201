import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createPgliteStore } from '../runtime/store/pglite-store';
import { createPostgresStore } from '../runtime/store/postgres-store';
import type { Store } from '../runtime/store/store';
import { makeGitRepo } from '../test/support/gyre';
import { cpuPer, readCpu, type CpuReading } from './cpu';
import { startFloor } from './floor';
import { startUserServer } from './server-process';
import { median, percentile } from './stats';

/**
 * `npm run bench -- latency`: speed as a user measures it (issue #19). Gyre runs as its own process
 * with `npm start` settings (`gyre server`: embedded PGlite in a fresh data directory, the built-in
 * runner with its default 4 slots, the default executor, which without a container engine is the
 * sandboxed shell with build uids, and a project secret so masking has work to do); with
 * DATABASE_URL, a second server on a fresh PostgreSQL database. The project's one job is one `run`
 * step, no checkout, whose command writes `date +%s.%N` to a file: bash's `/dev/tcp` file, a
 * loopback socket this process listens on (the sandbox shows a task nothing of the host's
 * filesystem to write to, and a socket says at once when the command ran).
 *
 * Per server: 3 warm-ups (the first, 2 s after the server answered, is reported as the first
 * pipeline after a start), then 30 triggers 150 ms apart, each timed from the moment the REST
 * trigger request is sent to the time the command wrote (median, p90, p99), and the trigger
 * request's own time; then 100 pipelines triggered back to back, one request after the other →
 * pipelines a second until the last command ran; server RSS (VmRSS of the server's pid) idle after
 * start and after the runs; the CPU each part took per pipeline over the back-to-back run (from
 * /proc: the server, the step launcher, the keepers, the steps' own processes, and on PostgreSQL
 * the backends of the server's database; bench/cpu.ts), and the pipelines a second the machine's
 * cores allow at that cost. Each figure is the median over BENCH_ROUNDS rounds (default 3), each
 * on a fresh server.
 *
 * With DATABASE_URL it also measures the floor (bench/floor.ts) the same way: the least a trigger
 * can cost on this machine (an HTTP POST, an INSERT and NOTIFY, a claim, `bash -c`), so that the
 * targets' absolute figures can be read against what the machine allows, and prints Gyre on
 * PostgreSQL as a multiple of it.
 *
 * `npm run bench -- peers` does the same and measures Debian's Buildbot (`buildbot`,
 * `buildbot-worker`) the same way in the same run: a master on SQLite, 2 workers on loopback, a
 * builder whose one step writes `date +%s.%N`; its trigger request is a change sent to the master's
 * PB change source (Debian ships no buildbot-www, so the REST force scheduler cannot be served),
 * answered once the change is stored. Prints the ratios Gyre/Buildbot.
 */
export async function benchUserLatency(): Promise<Figures[]> {
  const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
  const results: Figures[] = [];
  const stores = storesToMeasure();
  for (const store of stores) results.push(await rounded(`Gyre ${store === 'pglite' ? 'embedded (PGlite)' : 'on PostgreSQL'}, 4 slots`, rounds, (receiver) => gyreTarget(store, receiver)));
  if (stores.includes('postgres')) {
    const floor = await rounded(FLOOR_NAME, rounds, floorTarget);
    results.push(floor);
    printTable(results);
    const pg = results.find((f) => f.name.includes('PostgreSQL'))!;
    console.log(
      `\nGyre on PostgreSQL / the floor: trigger → command ${(pg.latency.p50 / floor.latency.p50).toFixed(2)}× the floor's time, ` +
        `${(pg.rate / floor.rate).toFixed(2)}× its pipelines a second (the floor does no authentication, config, isolation or output: what this machine allows)`,
    );
    return results;
  }
  printTable(results);
  return results;
}

/**
 * The stores whose servers are measured: BENCH_STORES (`embedded`, `postgres` or both, comma
 * separated), else the embedded one, and PostgreSQL too with DATABASE_URL. The floor is measured
 * with PostgreSQL.
 */
function storesToMeasure(): ('pglite' | 'postgres')[] {
  const given = process.env.BENCH_STORES;
  if (given === undefined || given.trim() === '') return process.env.DATABASE_URL ? ['pglite', 'postgres'] : ['pglite'];
  const names = given.split(',').map((name) => name.trim());
  const unknown = names.filter((name) => name !== 'embedded' && name !== 'postgres');
  if (unknown.length > 0 || names.length === 0) throw new Error(`BENCH_STORES '${given}': allowed are embedded and postgres, comma separated`);
  if (names.includes('postgres') && !process.env.DATABASE_URL) throw new Error('BENCH_STORES names postgres: set DATABASE_URL to the PostgreSQL database to measure on');
  return [...new Set(names)].map((name) => (name === 'embedded' ? 'pglite' : 'postgres'));
}

export async function benchPeers(): Promise<void> {
  // BENCH_SKIP_GYRE=1 measures Buildbot alone (to check a Buildbot install without waiting for Gyre's rounds).
  const gyre = process.env.BENCH_SKIP_GYRE === '1' ? [] : await benchUserLatency();
  if (!buildbotInstalled()) {
    console.log('\nBuildbot is not installed (apt-get install buildbot buildbot-worker): no peer comparison.');
    return;
  }
  const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
  const buildbot = await rounded('Buildbot 3.7 (SQLite, 2 workers)', rounds, buildbotTarget);
  printTable([...gyre, buildbot]);
  console.log('\nGyre / Buildbot (times: below 1 means Gyre is faster; pipelines a second: above 1 means Gyre is faster)');
  for (const g of gyre) {
    console.log(
      `  ${g.name}: trigger → command median ${(g.latency.p50 / buildbot.latency.p50).toFixed(2)}×, p99 ${(g.latency.p99 / buildbot.latency.p99).toFixed(2)}×, ` +
        `pipelines/s ${(g.rate / buildbot.rate).toFixed(2)}×, trigger request ${(g.request / buildbot.request).toFixed(2)}×`,
    );
  }
}

/** What one round measures against a running system. */
interface Target {
  readonly name: string;
  /** Sends one trigger request whose command will report `n`; resolves when the request is answered, with the pipeline's id when there is one. */
  trigger(n: number): Promise<string | void>;
  rssMiB(): number;
  /** Its processes' CPU so far, by part (bench/cpu.ts). */
  cpu?(): CpuReading;
  /** Where the time of each of `runs` went, from the rows it left, by pipeline id (Gyre only; may stop the server). */
  stages?(runs: readonly Run[]): Promise<Map<string, Stages>>;
  stop(): Promise<void>;
}

/** One measured trigger: its pipeline, and the bench's clock when the request was sent and answered and when the command ran. */
interface Run {
  readonly pipelineId: string;
  readonly sent: number;
  readonly answered: number;
  readonly ran: number;
}

/**
 * Milliseconds from the trigger request being sent to each stage, medians over the measured
 * triggers. The stages are the database's own times (`now()`, the start of the transaction that
 * wrote the row), on the same host clock as the bench's and the command's `date +%s.%N`.
 */
interface Stages {
  /** The trigger's transaction began: the request was read, authenticated, validated and the ref resolved. */
  pipelineRow: number;
  answered: number;
  /** The conductor's transaction that wrote the workflows and queued the task began: config read and compiled. */
  workflowRows: number;
  /** A slot's claim of the task. */
  claimed: number;
  /** The agent recorded the step's start: secrets opened, executor and job directory made. */
  stepStarted: number;
  /** The step's own command wrote its time: the executor spawned the shell. */
  commandRan: number;
}

const STAGE_LABELS: [keyof Stages, string][] = [
  ['pipelineRow', 'trigger transaction began (request read, authenticated, validated, ref resolved)'],
  ['answered', 'trigger request answered'],
  ['workflowRows', 'conductor wrote the workflow and queued the task (config read and compiled)'],
  ['claimed', 'task claimed by a built-in slot'],
  ['stepStarted', "step start recorded (the task's secrets opened, executor and job directory made)"],
  ['commandRan', "the step's command ran (the sandboxed shell spawned)"],
];

interface Figures {
  name: string;
  stages?: Stages;
  /** The stages of the first pipeline after the start (the first warm-up). */
  firstStages?: Stages;
  latency: { p50: number; p90: number; p99: number };
  /** The first pipeline's trigger → command on the fresh server (the first warm-up). */
  first: number;
  request: number;
  /**
   * The trigger requests of the back-to-back run: their median (ms), and their share of the run's
   * time. The client sends each after the last one's answer, so where the share is near 1 the rate
   * is the inverse of the request's time under load, not of what the cores allow.
   */
  burstRequest: number;
  burstShare: number;
  rate: number;
  rssIdle: number;
  rssAfter: number;
  /** CPU ms per pipeline over the back-to-back run, by part. */
  cpu?: Record<string, number>;
}

const FLOOR_NAME = 'the floor (HTTP POST, INSERT + NOTIFY, claim, bash -c), 4 slots';
const WARMUPS = 3;
const RUNS = 30;
const GAP_MS = 150;
const BACK_TO_BACK = 100;

async function rounded(name: string, rounds: number, start: (receiver: Receiver) => Promise<Target>): Promise<Figures> {
  const each: Figures[] = [];
  for (let r = 0; r < rounds; r++) {
    const receiver = await listen();
    const target = await start(receiver);
    try {
      const { figures: f, runs, firstRun } = await measure(target, receiver);
      if (target.stages) {
        const byId = await target.stages(firstRun ? [firstRun, ...runs] : runs);
        f.stages = medianStages(runs.flatMap((run) => byId.get(run.pipelineId) ?? []));
        if (firstRun) f.firstStages = byId.get(firstRun.pipelineId);
      }
      each.push(f);
      console.log(
        `  ${name}, round ${r + 1}: trigger → command p50 ${f.latency.p50.toFixed(1)} ms (p90 ${f.latency.p90.toFixed(1)}, p99 ${f.latency.p99.toFixed(1)}), ` +
          `first ${f.first.toFixed(0)} ms, request ${f.request.toFixed(1)} ms (${f.burstRequest.toFixed(1)} back to back), ${f.rate.toFixed(1)} pipelines/s, RSS ${f.rssIdle.toFixed(0)} → ${f.rssAfter.toFixed(0)} MiB`,
      );
    } finally {
      await target.stop();
      receiver.close();
    }
  }
  const m = (pick: (f: Figures) => number) => median(each.map(pick));
  const withStages = each.filter((f) => f.stages);
  const withFirst = each.filter((f) => f.firstStages);
  return {
    name,
    ...(withFirst.length ? { firstStages: medianStages(withFirst.map((f) => f.firstStages!)) } : {}),
    ...(withStages.length
      ? { stages: medianStages(withStages.map((f) => f.stages!)) }
      : {}),
    latency: { p50: m((f) => f.latency.p50), p90: m((f) => f.latency.p90), p99: m((f) => f.latency.p99) },
    first: m((f) => f.first),
    request: m((f) => f.request),
    burstRequest: m((f) => f.burstRequest),
    burstShare: m((f) => f.burstShare),
    rate: m((f) => f.rate),
    rssIdle: m((f) => f.rssIdle),
    rssAfter: m((f) => f.rssAfter),
    ...(each.every((f) => f.cpu) ? { cpu: Object.fromEntries(Object.keys(each[0].cpu!).map((part) => [part, m((f) => f.cpu![part] ?? 0)])) } : {}),
  };
}

async function measure(target: Target, receiver: Receiver): Promise<{ figures: Figures; runs: Run[]; firstRun?: Run }> {
  await new Promise((r) => setTimeout(r, 2000)); // let start-up work (migrations, the first claims) settle
  const rssIdle = target.rssMiB();
  let n = 0;
  const latencies: number[] = [];
  const requests: number[] = [];
  const runs: Run[] = [];
  let first = NaN;
  let firstRun: Run | undefined;
  for (let i = 0; i < WARMUPS + RUNS; i++) {
    const id = ++n;
    const ran = receiver.when(id);
    const sent = now();
    const pipelineId = await target.trigger(id);
    const answered = now();
    const at = await withTimeout(ran, 60_000, `${target.name}: command ${id} did not run`);
    if (i === 0) {
      first = at - sent;
      if (pipelineId) firstRun = { pipelineId, sent, answered, ran: at };
    }
    if (i >= WARMUPS) {
      latencies.push(at - sent);
      requests.push(answered - sent);
      if (pipelineId) runs.push({ pipelineId, sent, answered, ran: at });
    }
    await new Promise((r) => setTimeout(r, GAP_MS));
  }
  await new Promise((r) => setTimeout(r, 1000)); // the last pipelines finish
  const ids = Array.from({ length: BACK_TO_BACK }, () => ++n);
  const all = Promise.all(ids.map((id) => receiver.when(id)));
  const cpuBefore = target.cpu?.();
  const t0 = now();
  const burstRequests: number[] = [];
  for (const id of ids) {
    const sent = now();
    await target.trigger(id);
    burstRequests.push(now() - sent);
  }
  const times = await withTimeout(all, 300_000, `${target.name}: back-to-back pipelines did not all run`);
  const burstMs = Math.max(...times) - t0;
  const rate = BACK_TO_BACK / (burstMs / 1000);
  await new Promise((r) => setTimeout(r, 2000)); // the last pipelines finish (their CPU counts)
  const cpuAfter = target.cpu?.();
  const rssAfter = target.rssMiB();
  return {
    figures: {
      name: target.name,
      latency: { p50: median(latencies), p90: percentile(latencies, 90), p99: percentile(latencies, 99) },
      first,
      request: median(requests),
      burstRequest: median(burstRequests),
      burstShare: burstRequests.reduce((a, b) => a + b, 0) / burstMs,
      rate,
      rssIdle,
      rssAfter,
      ...(cpuBefore && cpuAfter ? { cpu: cpuPer(cpuBefore, cpuAfter, BACK_TO_BACK) } : {}),
    },
    runs,
    firstRun,
  };
}

/** The rows' times of each measured pipeline's one task and step, in ms since the epoch. */
const STAGE_QUERY = `SELECT p.id,
    extract(epoch FROM p.created_at) * 1000 AS pipeline_row,
    extract(epoch FROM w.created_at) * 1000 AS workflow_rows,
    extract(epoch FROM t.started_at) * 1000 AS claimed,
    extract(epoch FROM max(s.started_at)) * 1000 AS step_started
  FROM pipelines p
  JOIN workflows w ON w.pipeline_id = p.id
  JOIN jobs j ON j.workflow_id = w.id
  JOIN tasks t ON t.job_id = j.id
  JOIN steps s ON s.task_id = t.id AND s.attempt = t.attempt
  WHERE p.id = ANY($1::uuid[])
  GROUP BY p.id, p.created_at, w.created_at, t.started_at`;

/** The median of each stage over `each`. */
function medianStages(each: readonly Stages[]): Stages {
  if (each.length === 0) throw new Error('no measured pipeline left the rows the stages are read from');
  return Object.fromEntries(STAGE_LABELS.map(([key]) => [key, median(each.map((e) => e[key]))])) as unknown as Stages;
}

async function stagesFrom(store: Store, runs: readonly Run[]): Promise<Map<string, Stages>> {
  const rows = await store.query<{ id: string; pipeline_row: string; workflow_rows: string; claimed: string; step_started: string }>(STAGE_QUERY, [runs.map((r) => r.pipelineId)]);
  const byId = new Map(rows.map((r) => [r.id, r]));
  return new Map(
    runs.flatMap((run) => {
      const row = byId.get(run.pipelineId);
      if (!row) return [];
      const stages: Stages = {
        pipelineRow: Number(row.pipeline_row) - run.sent,
        answered: run.answered - run.sent,
        workflowRows: Number(row.workflow_rows) - run.sent,
        claimed: Number(row.claimed) - run.sent,
        stepStarted: Number(row.step_started) - run.sent,
        commandRan: run.ran - run.sent,
      };
      return [[run.pipelineId, stages] as const];
    }),
  );
}

function printTable(results: readonly Figures[]): void {
  const row = (label: string, cell: (f: Figures) => string) => console.log(`| ${label} | ${results.map(cell).join(' | ')} |`);
  console.log(`\n## Speed as a user measures it (medians of ${process.env.BENCH_ROUNDS ?? 3} rounds, each on a fresh server)\n`);
  console.log(`| | ${results.map((f) => f.name).join(' | ')} |`);
  console.log(`|---|${results.map(() => '---|').join('')}`);
  row(`trigger → step command running, median of ${RUNS} (p90, p99)`, (f) => `${f.latency.p50.toFixed(1)} ms (${f.latency.p90.toFixed(1)}, ${f.latency.p99.toFixed(1)})`);
  row('the first pipeline after a start (triggered 2 s after the server answered), trigger → command', (f) => `${f.first.toFixed(0)} ms`);
  row('trigger request answered, median', (f) => `${f.request.toFixed(1)} ms`);
  row(`${BACK_TO_BACK} one-job no-op pipelines back to back → last command ran`, (f) => `${f.rate.toFixed(1)}/s`);
  row('trigger request answered during the back-to-back run, median (the requests\' share of its time: the client waits for each answer)', (f) => `${f.burstRequest.toFixed(1)} ms (${Math.round(f.burstShare * 100)} %)`);
  row('server RSS idle → after the runs', (f) => `${f.rssIdle.toFixed(0)} → ${f.rssAfter.toFixed(0)} MiB`);
  if (results.some((f) => f.cpu)) {
    const total = (f: Figures) => Object.values(f.cpu!).reduce((a, b) => a + b, 0);
    row('CPU per pipeline back to back, ms (until 2 s after the last command)', (f) => (f.cpu ? `${Object.entries(f.cpu).map(([part, ms]) => `${part} ${ms.toFixed(1)}`).join(' + ')} = ${total(f).toFixed(1)}` : '–'));
    row(`pipelines a second this CPU allows on ${availableParallelism()} cores (cores ÷ CPU per pipeline)`, (f) => (f.cpu ? `${((availableParallelism() * 1000) / total(f)).toFixed(0)}/s` : '–'));
  }
  const staged = results.filter((f) => f.stages);
  if (staged.length === 0) return;
  console.log(`\n### Where the time goes: ms from the trigger request being sent, medians of the ${RUNS} measured triggers (the rows' own times)\n`);
  console.log(`| stage | ${staged.map((f) => f.name).join(' | ')} |`);
  console.log(`|---|${staged.map(() => '---|').join('')}`);
  for (const [key, label] of STAGE_LABELS) console.log(`| ${label} | ${staged.map((f) => f.stages![key].toFixed(1)).join(' | ')} |`);
  const firsts = results.filter((f) => f.firstStages);
  if (firsts.length === 0) return;
  console.log(`\n### The first pipeline after a start: ms from its trigger request being sent (median of the rounds' first pipelines)\n`);
  console.log(`| stage | ${firsts.map((f) => f.name).join(' | ')} |`);
  console.log(`|---|${firsts.map(() => '---|').join('')}`);
  for (const [key, label] of STAGE_LABELS) console.log(`| ${label} | ${firsts.map((f) => f.firstStages![key].toFixed(1)).join(' | ')} |`);
}

/** Wall-clock time in ms with sub-millisecond precision, on the same clock as `date +%s.%N`. */
const now = () => performance.timeOrigin + performance.now();

export interface Receiver {
  readonly port: number;
  /** When the command reporting `n` wrote its time (ms since the epoch). */
  when(n: number): Promise<number>;
  close(): void;
}

/** A listener (on loopback unless told) for the lines `<n> <date +%s.%N>` the step commands write. */
export function listen(address = '127.0.0.1'): Promise<Receiver> {
  const seen = new Map<number, number>();
  const waiting = new Map<number, (t: number) => void>();
  const server: Server = createServer((socket) => {
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', (d) => (text += d));
    socket.on('end', () => {
      for (const line of text.split('\n')) {
        const m = /^(\d+) (\d+\.\d+)/.exec(line.trim());
        if (!m) continue;
        const n = Number(m[1]);
        const t = Number(m[2]) * 1000;
        seen.set(n, t);
        waiting.get(n)?.(t);
      }
    });
    socket.on('error', () => undefined);
  });
  return new Promise((resolve) => {
    server.listen(0, address, () => {
      resolve({
        port: (server.address() as { port: number }).port,
        when: (n) => (seen.has(n) ? Promise.resolve(seen.get(n)!) : new Promise((r) => waiting.set(n, r))),
        close: () => server.close(),
      });
    });
  });
}

function withTimeout<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([p, new Promise<T>((_, reject) => (timer = setTimeout(() => reject(new Error(message)), ms)))]).finally(() => clearTimeout(timer));
}

export function rssOf(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

/** The command both systems run: one line to the receiver, written by bash to its /dev/tcp file. */
export const report = (port: number, n: string) => `echo "${n} $(date +%s.%N)" > /dev/tcp/127.0.0.1/${port}`;

async function gyreTarget(store: 'pglite' | 'postgres', receiver: Receiver): Promise<Target> {
  const config = `version: 2.1
jobs:
  report:
    docker: [{ image: cimg/base:current }]
    steps:
      - run: '${report(receiver.port, '<< pipeline.parameters.n >>')}'
parameters:
  n: { type: integer, default: 0 }
workflows:
  w:
    jobs: [report]
`;
  const repo = makeGitRepo({ '.circleci/config.yml': config });
  const server = await startUserServer(store, 'user');
  const slug = `gh/bench/report`;
  await server.api('POST', '/api/v2/projects', { org: 'bench', name: 'report', repo_url: repo });
  // Masking on: the project has a secret, so every line of output is scanned for it.
  await server.api('POST', `/api/v2/project/${slug}/envvar`, { name: 'BENCH_SECRET', value: randomBytes(16).toString('hex') });
  const pid = server.child.pid!;
  return {
    name: `Gyre ${store}`,
    async trigger(n) {
      const res = await fetch(`${server.url}/api/v2/project/${slug}/pipeline`, {
        method: 'POST',
        headers: { 'Circle-Token': server.token, 'Content-Type': 'application/json' },
        body: JSON.stringify({ parameters: { n } }),
      });
      const text = await res.text();
      if (res.status >= 300) throw new Error(`trigger → ${res.status} ${text}`);
      return (JSON.parse(text) as { id: string }).id;
    },
    rssMiB: () => rssOf(pid),
    // The step launcher's reaped children are the steps' processes (bash, date); the keepers (one
    // per task slot, under flock: runtime/agent/sandbox/keepers.ts) sweep after each task, each
    // with its uid's signaller; the rest of the server's tree is the server (with PGlite when embedded) and git.
    cpu: () =>
      readCpu(
        [pid],
        (p) =>
          /gyre-launcher-/.test(p.cmdline)
            ? { own: 'launcher', children: 'steps' }
            : /^flock |handBack|groups\.add|gyre uid signaller/.test(p.cmdline)
              ? { own: 'keepers', children: 'keepers' }
              : { own: 'server', children: 'server' },
        server.databaseUrl ? new URL(server.databaseUrl).pathname.slice(1) : undefined,
      ),
    async stages(runs) {
      // PostgreSQL is read beside the running server; the embedded database once the server is
      // stopped (PGlite is one process's).
      if (!server.databaseUrl) await server.stopServer();
      const store = server.databaseUrl ? await createPostgresStore({ connectionString: server.databaseUrl }) : await createPgliteStore(join(server.dataDir, 'pgdata'));
      try {
        return await stagesFrom(store, runs);
      } finally {
        await store.close();
      }
    },
    async stop() {
      await server.stop();
      rmSync(repo, { recursive: true, force: true });
    },
  };
}

function buildbotInstalled(): boolean {
  return existsSync('/usr/bin/buildbot') && existsSync('/usr/bin/buildbot-worker');
}

async function buildbotTarget(receiver: Receiver): Promise<Target> {
  const root = mkdtempSync(join(tmpdir(), 'gyre-bench-buildbot-'));
  const master = join(root, 'master');
  const pbPort = await freePort();
  const run = (cmd: string, args: string[]) => {
    const r = spawnSync(cmd, args, { encoding: 'utf8', cwd: root });
    if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stdout}${r.stderr}`);
  };
  run('buildbot', ['create-master', '-r', master]);
  writeFileSync(
    join(master, 'master.cfg'),
    `from buildbot.plugins import changes, schedulers, steps, util, worker
c = BuildmasterConfig = {}
c['buildbotNetUsageData'] = None
c['workers'] = [worker.Worker('w1', 'pass'), worker.Worker('w2', 'pass')]
c['protocols'] = {'pb': {'port': 'tcp:${pbPort}:interface=127.0.0.1'}}
c['change_source'] = [changes.PBChangeSource(user='bench', passwd='bench')]
c['schedulers'] = [schedulers.AnyBranchScheduler(name='each-change', treeStableTimer=None, builderNames=['report'])]
f = util.BuildFactory()
f.addStep(steps.ShellCommand(command=['bash', '-c', util.Interpolate('${report(receiver.port, '%(prop:n)s').replace('+%s.%N', '+%%s.%%N')}')]))
c['builders'] = [util.BuilderConfig(name='report', workernames=['w1', 'w2'], factory=f, collapseRequests=False)]
c['title'] = 'bench'
c['buildbotURL'] = 'http://127.0.0.1/'
c['db'] = {'db_url': 'sqlite:///state.sqlite'}
`,
  );
  run('buildbot', ['start', master]);
  for (const w of ['w1', 'w2']) {
    run('buildbot-worker', ['create-worker', join(root, w), `127.0.0.1:${pbPort}`, w, 'pass']);
    run('buildbot-worker', ['start', join(root, w)]);
  }
  const pid = Number(readFileSync(join(master, 'twistd.pid'), 'utf8').trim());
  const workerPids = ['w1', 'w2'].map((w) => Number(readFileSync(join(root, w, 'twistd.pid'), 'utf8').trim()));
  // One long-lived client sends changes over PB, as `buildbot sendchange` does once per process.
  const sender = startChangeSender(pbPort);
  await new Promise((r) => setTimeout(r, 3000)); // the workers attach
  return {
    name: 'Buildbot',
    trigger: (n) => sender.send(n),
    rssMiB: () => rssOf(pid),
    // The workers' reaped children are the steps' processes; the master (with SQLite) and the workers are Buildbot's.
    cpu: () => readCpu([pid, ...workerPids], (p) => (workerPids.includes(p.pid) ? { own: 'Buildbot', children: 'steps' } : { own: 'Buildbot', children: 'Buildbot' })),
    async stop() {
      sender.child.kill('SIGTERM');
      for (const w of ['w1', 'w2']) spawnSync('buildbot-worker', ['stop', join(root, w)]);
      spawnSync('buildbot', ['stop', master]);
      rmSync(root, { recursive: true, force: true });
    },
  };
}

/** The floor (bench/floor.ts): the least a trigger must cost on this machine, for reading the targets against. */
async function floorTarget(receiver: Receiver): Promise<Target> {
  const floor = await startFloor();
  const pid = floor.child.pid!;
  return {
    name: 'floor',
    async trigger(n) {
      await floor.trigger(report(receiver.port, String(n)));
    },
    rssMiB: () => rssOf(pid),
    cpu: () => readCpu([pid], () => ({ own: 'program', children: 'steps' }), floor.database),
    stop: () => floor.stop(),
  };
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/** A Python process that sends a change per line read (`<n>`) and prints `<n>` once the master stored it. */
function startChangeSender(pbPort: number): { child: ChildProcess; send(n: number): Promise<void> } {
  const script = `
import sys
from twisted.internet import reactor, stdio
from twisted.protocols.basic import LineReceiver
from buildbot.clients.sendchange import Sender
sender = Sender('127.0.0.1:${pbPort}', auth=('bench', 'bench'))
class Lines(LineReceiver):
    delimiter = b'\\n'
    def lineReceived(self, line):
        n = line.decode().strip()
        d = sender.send('main', n, 'bench', ['f'], who='bench', properties={'n': n})
        d.addCallbacks(lambda _: self.sendLine(('ok ' + n).encode()), lambda e: self.sendLine(('error ' + n + ' ' + str(e.value)).encode()))
stdio.StandardIO(Lines())
reactor.run()
`;
  // Debian's python, the one its buildbot package is installed for.
  const child = spawn('/usr/bin/python3', ['-c', script], { stdio: ['pipe', 'pipe', 'inherit'] });
  const waiting = new Map<string, { resolve: () => void; reject: (e: Error) => void }>();
  child.on('exit', (code) => {
    for (const w of waiting.values()) w.reject(new Error(`the buildbot change sender exited (${code})`));
    waiting.clear();
  });
  let buffer = '';
  child.stdout!.setEncoding('utf8');
  child.stdout!.on('data', (d: string) => {
    buffer += d;
    let i;
    while ((i = buffer.indexOf('\n')) >= 0) {
      const [word, n, ...rest] = buffer.slice(0, i).trim().split(' ');
      buffer = buffer.slice(i + 1);
      const w = waiting.get(n);
      waiting.delete(n);
      if (word === 'ok') w?.resolve();
      else w?.reject(new Error(`buildbot change ${n}: ${rest.join(' ')}`));
    }
  });
  return {
    child,
    send: (n) =>
      new Promise<void>((resolve, reject) => {
        waiting.set(String(n), { resolve, reject });
        child.stdin!.write(`${n}\n`);
      }),
  };
}
