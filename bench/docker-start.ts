import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { networkInterfaces, tmpdir } from 'node:os';
import { join } from 'node:path';
import { BUSYBOX_IMAGE, containerSocket } from '../test/support/container-engine';
import { makeGitRepo } from '../test/support/gyre';
import { apiCall, startServerProcess } from '../test/support/processes';
import { median, percentile } from './stats';
import { listen, type Receiver } from './user-view';

/**
 * `npm run bench -- docker`: a Docker-executor job's start as a user sees it, beside a bare
 * `podman run` of the same local image (issue #19: at most 1.2× of it). Needs a container engine
 * (GYRE_TEST_DOCKER_SOCKET or Podman's socket), the `podman` command and the local busybox image
 * (.ci/run makes them).
 *
 * Gyre: `gyre server` as its own process (`npm start` settings, embedded database) with
 * GYRE_DOCKER_SOCKET, a project whose one job runs in the image, one `run` step; timed from the
 * REST trigger request being sent to the moment the step's command took the time. Bare: `podman
 * run --rm <image> sh -c <the same command>`, timed from the spawn of `podman` to the same moment.
 * The command reads the clock with busybox's `adjtimex` (its `date` has no sub-second format) and
 * sends it over TCP to this process, on the host's own address (the containers are on a bridge
 * network). 2 warm-ups and RUNS runs each, one at a time, 300 ms apart.
 */
const RUNS = 15;
const WARMUPS = 2;

export async function benchDockerStart(): Promise<void> {
  console.log('\n## Docker executor start (a job in a local image) beside a bare `podman run`');
  const socket = containerSocket();
  const host = Object.values(networkInterfaces())
    .flat()
    .find((i) => i && i.family === 'IPv4' && !i.internal && !i.address.startsWith('10.88.'))?.address;
  if (!socket || !host) {
    console.log(`  skipped: ${!socket ? 'no container engine socket (GYRE_TEST_DOCKER_SOCKET)' : 'no non-loopback IPv4 address for the containers to report to'}`);
    return;
  }
  // On every address: the containers reach it through their bridge network.
  const receiver = await listen('0.0.0.0');
  let counter = 0;
  try {
    const command = (n: string) => `adjtimex | awk '/tv_sec/ { s = $2 } /tv_usec/ { u = $2 } END { printf "${n} %d.%06d\\n", s, u }' | nc ${host} ${receiver.port}`;
    const bare = await timed('bare podman run', receiver, () => ++counter, async (n) => {
      const child = spawn('podman', ['run', '--rm', BUSYBOX_IMAGE, 'sh', '-c', command(String(n))], { stdio: 'ignore' });
      child.on('error', () => undefined);
    });
    const gyre = await withGyre(socket, command('<< pipeline.parameters.n >>'), (trigger) => timed('Gyre docker job', receiver, () => ++counter, trigger));
    const row = (name: string, t: number[]) => console.log(`  ${name}: median ${median(t).toFixed(0)} ms (p90 ${percentile(t, 90).toFixed(0)}, ${t.length} runs)`);
    row('bare `podman run`, spawn → command ran', bare);
    row('Gyre, trigger request sent → the job\'s command ran', gyre);
    console.log(`  Gyre / bare podman run: ${(median(gyre) / median(bare)).toFixed(2)}× (target ≤ 1.2×)`);
  } finally {
    receiver.close();
  }
}

async function timed(name: string, receiver: Receiver, next: () => number, start: (n: number) => Promise<void>): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < WARMUPS + RUNS; i++) {
    const n = next();
    const ran = receiver.when(n);
    const sent = now();
    await start(n);
    const at = await Promise.race([ran, new Promise<number>((_, reject) => setTimeout(() => reject(new Error(`${name}: run ${n} did not report within 60 s`)), 60_000))]);
    if (i >= WARMUPS) times.push(at - sent);
    await new Promise((r) => setTimeout(r, 300));
  }
  return times;
}

async function withGyre<T>(socket: string, command: string, use: (trigger: (n: number) => Promise<void>) => Promise<T>): Promise<T> {
  const dataDir = mkdtempSync(join(tmpdir(), 'gyre-bench-docker-'));
  const token = `bench-${randomBytes(12).toString('hex')}`;
  const repo = makeGitRepo({
    '.circleci/config.yml': `version: 2.1
parameters:
  n: { type: integer, default: 0 }
jobs:
  report:
    docker: [{ image: ${BUSYBOX_IMAGE} }]
    steps:
      - run: ${JSON.stringify(command)}
workflows:
  w:
    jobs: [report]
`,
  });
  const server = await startServerProcess({ GYRE_DATA_DIR: dataDir, GYRE_ADMIN_TOKEN: token, GYRE_EXECUTOR: 'auto', GYRE_DOCKER_SOCKET: socket, DATABASE_URL: '' }, { firstStart: true });
  try {
    await apiCall(server.url, token, 'POST', '/api/v2/projects', { org: 'bench', name: 'docker', repo_url: repo });
    return await use(async (n) => {
      const res = await fetch(`${server.url}/api/v2/project/gh/bench/docker/pipeline`, {
        method: 'POST',
        headers: { 'Circle-Token': token, 'Content-Type': 'application/json' },
        body: JSON.stringify({ parameters: { n } }),
      });
      if (res.status >= 300) throw new Error(`trigger → ${res.status} ${await res.text()}`);
      await res.arrayBuffer();
    });
  } finally {
    if (server.child.exitCode === null && server.child.signalCode === null) {
      server.child.kill('SIGTERM');
      await new Promise((r) => server.child.once('exit', r));
    }
    rmSync(dataDir, { recursive: true, force: true });
    rmSync(repo, { recursive: true, force: true });
  }
}

/** Wall-clock time in ms, on the clock the containers' `adjtimex` reads. */
const now = () => performance.timeOrigin + performance.now();
