import { execFile } from 'node:child_process';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { startTestGyre } from '../test/support/gyre';

/** What autocannon's `--json` prints, the parts read here. */
interface AutocannonResult {
  requests: { average: number; total: number };
  latency: { p50: number; p99: number; average: number };
  non2xx: number;
  errors: number;
  timeouts: number;
  '2xx': number;
}

const AUTOCANNON = join(__dirname, '..', 'node_modules', 'autocannon', 'autocannon.js');

/** Runs autocannon in its own process against `url` and answers its figures. */
function autocannon(url: string, token: string, seconds: number, connections: number): Promise<AutocannonResult> {
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [AUTOCANNON, '--json', '--connections', String(connections), '--duration', String(seconds), '--headers', `Circle-Token=${token}`, url],
      { maxBuffer: 64 * 1024 * 1024 },
      (error, stdout, stderr) => {
        if (error) return reject(new Error(`autocannon failed: ${stderr || error.message}`));
        try {
          resolve(JSON.parse(stdout) as AutocannonResult);
        } catch {
          reject(new Error(`autocannon printed no JSON: ${stdout.slice(0, 300)} ${stderr.slice(0, 300)}`));
        }
      },
    );
  });
}

/**
 * `npm run bench -- api`: requests a second of `GET /api/v2/pipeline/{id}` on one Gyre process
 * (every role, no runner slots) on PostgreSQL, with a non-admin user's token (a `read` role on the
 * project) through the whole boundary: token, rate limit (set high enough not to refuse),
 * permission check, schema, serialization. autocannon runs in a process of its own. Needs
 * DATABASE_URL. The figures mean something only on a quiet machine: the load average is printed.
 */
export async function benchApiThroughput(options: { seconds?: number; connections?: number; runs?: number } = {}): Promise<void> {
  const seconds = options.seconds ?? Number(process.env.GYRE_BENCH_SECONDS ?? 10);
  const connections = options.connections ?? 32;
  const runs = options.runs ?? 3;
  console.log('\n## API throughput: GET /api/v2/pipeline/{id} (non-admin token, permission checks on)');
  if (!process.env.DATABASE_URL) {
    console.log('skipped: set DATABASE_URL to a PostgreSQL server (this figure is for PostgreSQL)');
    return;
  }
  const g = await startTestGyre({ store: 'postgres', env: { GYRE_RUNNER_SLOTS: '0', GYRE_RATE_LIMIT_TOKEN: '10000000' } });
  try {
    await g.addProject('bench/throughput', { '.circleci/config.yml': 'version: 2.1\njobs:\n  a:\n    docker: [{ image: x }]\n    steps: [{ run: "true" }]\nworkflows:\n  w: { jobs: [a] }\n' });
    const { id } = await g.trigger('bench/throughput');
    const reader = await g.api('POST', '/api/v2/users', { login: 'bench-reader' });
    await g.api('PUT', '/api/v2/project/gh/bench/throughput/members/bench-reader', { role: 'read' });
    const url = `${g.url}/api/v2/pipeline/${id}`;
    const check = await fetch(url, { headers: { 'Circle-Token': reader.token } });
    if (check.status !== 200) throw new Error(`the reader's GET answered ${check.status}: ${await check.text()}`);

    const [load1] = loadavg();
    console.log(`load average before: ${load1.toFixed(2)}${load1 >= 1.5 ? ' (the machine is busy: these figures are low)' : ''}`);
    await autocannon(url, reader.token, 3, connections); // warm-up: JIT, pools, caches
    const results: AutocannonResult[] = [];
    for (let i = 0; i < runs; i++) results.push(await autocannon(url, reader.token, seconds, connections));
    for (const [i, r] of results.entries()) {
      console.log(
        `run ${i + 1}: ${Math.round(r.requests.average)} requests/s (${r.requests.total} in ${seconds} s, ${connections} connections), latency p50 ${r.latency.p50} ms, p99 ${r.latency.p99} ms, non-2xx ${r.non2xx}, errors ${r.errors + r.timeouts}`,
      );
    }
    const best = results.map((r) => r.requests.average).sort((a, b) => a - b);
    console.log(`median ${Math.round(best[Math.floor(best.length / 2)])} requests/s over ${runs} runs (target: 5000)`);
  } finally {
    await g.stop();
  }
}
