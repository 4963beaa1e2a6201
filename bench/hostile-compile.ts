import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeGitRepo } from '../test/support/gyre';
import { hostileConfig, sampleLatency, type HostileConfig } from '../test/support/hostile-compile';
import { apiCall, startServerProcess } from '../test/support/processes';
import { median, ms, percentile } from './stats';

/**
 * `npm run bench -- hostile-compile`: Gyre as its own process (`gyre server`, embedded database,
 * no runner), sent pipelines whose configs are hostile (test/fixtures/hostile/: a parameter doubled
 * 18 times, a node bomb, a time bomb), while `/healthz` is requested every 20 ms. Prints the
 * `/healthz` latency (median, p99, max) while idle and during each hostile compilation, and how
 * each pipeline ended.
 *
 * The figures mean something only once the server compiles in the worker pool
 * (runtime/config/compiler-pool.ts, wired in runtime/server/gyre.ts). Against a server that still
 * compiles on its event loop the benchmark still runs to the end: it waits at most
 * BENCH_COMPILE_WAIT_MS (default 120 s) per pipeline, prints what it saw, and says that the loop
 * was blocked.
 */
export async function benchHostileCompile(): Promise<void> {
  const dataDir = mkdtempSync(join(tmpdir(), 'gyre-bench-hostile-'));
  const token = `bench-${randomBytes(12).toString('hex')}`;
  const waitMs = Number(process.env.BENCH_COMPILE_WAIT_MS ?? 120_000);
  const repos: string[] = [];
  // /healthz is sampled every 20 ms from one address: past the anonymous rate limit, so that is off here.
  const server = await startServerProcess({ GYRE_DATA_DIR: dataDir, GYRE_ADMIN_TOKEN: token, GYRE_RUNNER_SLOTS: '0', GYRE_LOG_LEVEL: 'error', GYRE_RATE_LIMIT_ANONYMOUS: '0', DATABASE_URL: '' });
  const api = (method: string, path: string, body?: unknown) => apiCall(server.url, token, method, path, body);
  const healthz = `${server.url}/healthz`;
  try {
    console.log(`\n## /healthz while hostile configs compile (gyre server in its own process, ${server.url})`);
    const idle = sampleLatency(healthz);
    await new Promise((r) => setTimeout(r, 2000));
    report('idle, for 2 s', await idle.stop());

    const project = async (name: string, config: string) => {
      const repo = makeGitRepo({ '.circleci/config.yml': config });
      repos.push(repo);
      await api('POST', '/api/v2/projects', { org: 'bench', name, repo_url: repo });
      return `gh/bench/${name}`;
    };
    const run = async (what: string, configs: HostileConfig[]) => {
      const slugs = await Promise.all(configs.map((c, i) => project(`${c}-${i}-${Date.now().toString(36)}`, hostileConfig(c))));
      const sampler = sampleLatency(healthz);
      const t0 = performance.now();
      const ended = await Promise.all(slugs.map(async (slug) => waitForCompile(api, (await api('POST', `/api/v2/project/${slug}/pipeline`, {})).id, waitMs)));
      const wall = performance.now() - t0;
      const samples = await sampler.stop();
      report(`${what}, ${(wall / 1000).toFixed(1)} s until compiled`, samples);
      for (const [i, e] of ended.entries()) console.log(`    ${configs[i]}: ${e}`);
      return samples;
    };
    const all: { ms: number }[] = [];
    for (const c of ['doubling', 'node-bomb', 'time-bomb'] as const) all.push(...(await run(c, [c])));
    all.push(...(await run('doubling ×2 and time-bomb at once', ['doubling', 'doubling', 'time-bomb'])));
    const worst = Math.max(...all.map((s) => s.ms));
    if (worst > 1000) {
      console.log(`  /healthz waited up to ${ms(worst)}: the event loop was blocked while compiling. Is the compiler pool wired into runtime/server/gyre.ts?`);
    }
  } finally {
    server.child.kill('SIGTERM');
    await new Promise((r) => {
      const timer = setTimeout(() => (server.child.kill('SIGKILL'), r(undefined)), 10_000);
      server.child.once('exit', () => (clearTimeout(timer), r(undefined)));
    });
    rmSync(dataDir, { recursive: true, force: true });
    for (const repo of repos) rmSync(repo, { recursive: true, force: true });
  }
}

function report(what: string, samples: { ms: number; status: number }[]): void {
  const times = samples.map((s) => s.ms);
  const failed = samples.filter((s) => s.status !== 200).length;
  console.log(
    `  ${what}: /healthz median ${ms(median(times))}, p99 ${ms(percentile(times, 99))}, max ${ms(Math.max(...times))} (${samples.length} requests${failed ? `, ${failed} not answered 200` : ''})`,
  );
}

/** Waits until the pipeline has left `pending` (compiled or errored); answers how it ended. */
async function waitForCompile(api: (m: string, p: string) => Promise<any>, id: string, waitMs: number): Promise<string> {
  const deadline = performance.now() + waitMs;
  while (performance.now() < deadline) {
    const p = await api('GET', `/api/v2/pipeline/${id}`).catch(() => undefined);
    if (p?.state === 'errored') return `errored: ${String(p.errors?.[0]?.message ?? '').slice(0, 140)}`;
    if (p && p.state !== 'pending') return `${p.state} (compiled without a budget error)`;
    await new Promise((r) => setTimeout(r, 50));
  }
  return `still pending after ${waitMs / 1000} s`;
}
