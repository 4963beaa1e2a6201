import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTestDatabase } from '../test/support/database';
import { makeGitRepo } from '../test/support/gyre';
import { apiCall, startServerProcess } from '../test/support/processes';
import { median } from './stats';
import { listen, report, rssOf } from './user-view';

/**
 * `npm run bench -- memory`: an embedded server's memory as `ps` shows it (issue #19: under
 * 250 MiB idle, under 300 MiB after 1,000 pipelines). `gyre server` runs as its own process with
 * `npm start` settings (embedded PGlite, the default executor, the built-in runner's 4 slots) on a
 * fresh data directory: time from spawn to the ready line, and VmRSS 2 s after it; then the same
 * server is stopped and started again on that data directory (a restart), measured the same way;
 * then BENCH_PIPELINES (default 200) one-job no-op pipelines are triggered back to back on the
 * restarted server and its VmRSS is read 2 s after the last command ran. Medians over BENCH_ROUNDS
 * (default 3) rounds, each on a fresh data directory. With DATABASE_URL, the same again for a
 * server on PostgreSQL (a fresh database each round; issue #19: under 200 MiB after 1,000 pipelines).
 */
export async function benchMemory(): Promise<void> {
  const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
  const pipelines = Number(process.env.BENCH_PIPELINES ?? 200);
  await benchStore('Embedded server memory', rounds, pipelines, undefined);
  if (process.env.DATABASE_URL) await benchStore('Server on PostgreSQL memory', rounds, pipelines, process.env.DATABASE_URL);
}

async function benchStore(title: string, rounds: number, pipelines: number, databaseUrl: string | undefined): Promise<void> {
  const each: Round[] = [];
  console.log(`\n${title}:`);
  for (let r = 0; r < rounds; r++) {
    const database = databaseUrl ? await createTestDatabase() : undefined;
    let round: Round;
    try {
      round = await oneRound(pipelines, database?.url ?? '');
    } finally {
      await database?.drop();
    }
    each.push(round);
    console.log(
      `  round ${r + 1}: first start ready in ${round.firstReadyMs.toFixed(0)} ms, RSS ${round.firstRss.toFixed(0)} MiB; ` +
        `restart ready in ${round.restartReadyMs.toFixed(0)} ms, RSS ${round.restartRss.toFixed(0)} MiB; ` +
        `after ${pipelines} pipelines RSS ${round.afterRss.toFixed(0)} MiB`,
    );
  }
  const m = (pick: (f: Round) => number) => median(each.map(pick)).toFixed(0);
  console.log(`\n## ${title} (medians of ${rounds} rounds, each on a fresh data directory${databaseUrl ? ' and database' : ''})\n`);
  console.log('| | time to ready | VmRSS 2 s after ready |');
  console.log('|---|---|---|');
  console.log(`| first start (new data directory${databaseUrl ? ', new database' : ''}) | ${m((f) => f.firstReadyMs)} ms | ${m((f) => f.firstRss)} MiB |`);
  console.log(`| restart on that data directory${databaseUrl ? ' and database' : ''} | ${m((f) => f.restartReadyMs)} ms | ${m((f) => f.restartRss)} MiB |`);
  if (pipelines > 0) console.log(`| after ${pipelines} no-op pipelines back to back (restarted server) | | ${m((f) => f.afterRss)} MiB |`);
}

interface Round {
  firstReadyMs: number;
  firstRss: number;
  restartReadyMs: number;
  restartRss: number;
  afterRss: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function oneRound(pipelines: number, databaseUrl: string): Promise<Round> {
  const dataDir = mkdtempSync(join(tmpdir(), 'gyre-bench-memory-'));
  const token = `bench-${randomBytes(12).toString('hex')}`;
  const receiver = await listen();
  const repo = makeGitRepo({
    '.circleci/config.yml': `version: 2.1
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
`,
  });
  // `npm start` settings; only what a harness must set differs (known admin token, kernel-chosen ports, no example).
  const env = { GYRE_DATA_DIR: dataDir, GYRE_ADMIN_TOKEN: token, GYRE_EXECUTOR: 'auto', GYRE_LOG_LEVEL: 'info', DATABASE_URL: databaseUrl };
  const start = async () => {
    const t0 = performance.now();
    // A user's first start: the database is made here, not copied from the tests' migrated one.
    const server = await startServerProcess(env, { firstStart: true });
    const readyMs = performance.now() - t0;
    await sleep(2000);
    return { server, readyMs, rss: rssOf(server.child.pid!) };
  };
  const stop = async (server: Awaited<ReturnType<typeof startServerProcess>>) => {
    server.child.kill('SIGTERM');
    await new Promise((r) => {
      const timer = setTimeout(() => (server.child.kill('SIGKILL'), r(undefined)), 15_000);
      server.child.once('exit', () => (clearTimeout(timer), r(undefined)));
    });
  };
  try {
    const first = await start();
    await stop(first.server);
    const again = await start();
    try {
      let afterRss = NaN;
      if (pipelines > 0) {
        const api = (method: string, path: string, body?: unknown) => apiCall(again.server.url, token, method, path, body);
        await api('POST', '/api/v2/projects', { org: 'bench', name: 'report', repo_url: repo });
        const ran = Promise.all(Array.from({ length: pipelines }, (_, i) => receiver.when(i + 1)));
        for (let n = 1; n <= pipelines; n++) await api('POST', '/api/v2/project/gh/bench/report/pipeline', { parameters: { n } });
        await ran;
        await sleep(2000);
        afterRss = rssOf(again.server.child.pid!);
      }
      return { firstReadyMs: first.readyMs, firstRss: first.rss, restartReadyMs: again.readyMs, restartRss: again.rss, afterRss };
    } finally {
      await stop(again.server);
    }
  } finally {
    receiver.close();
    rmSync(dataDir, { recursive: true, force: true });
    rmSync(repo, { recursive: true, force: true });
  }
}
