import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { cpuPer, readCpu, type Classify } from '../../bench/cpu';

/**
 * The latency bench's CPU a pipeline costs each part (bench/cpu.ts) is read from /proc: a finished
 * child's time must land on the part its reaping parent gives its children, a running one's on its
 * own part, and each process once.
 */
/** Spins until the process has used argv[1] ms of CPU (by CPU, not the clock: a loaded machine gives it less than a core). */
const BURN = 'const end = Number(process.argv[1]) * 1000; while (process.cpuUsage().user + process.cpuUsage().system < end) {}';

/**
 * The tree's root: a fresh Node process whose only children are the two below, so nothing a test
 * file before this one left running in the same Jest worker counts (a leftover child of the worker
 * that ended between two readings moved its time from one part to another there). On stdin `go` it
 * runs a child that burns 400 ms and is reaped, then one that burns 400 ms and keeps running, and
 * says `burned`; on `stop` it kills and reaps that one and says `reaped`.
 */
const ROOT = `
const { spawn } = require('node:child_process');
const burn = ${JSON.stringify(BURN)};
let running;
require('node:readline').createInterface({ input: process.stdin }).on('line', (line) => {
  if (line === 'go') {
    spawn(process.execPath, ['-e', burn, '400'], { stdio: 'ignore' }).on('exit', () => {
      running = spawn(process.execPath, ['-e', burn + "; console.log('burned'); setInterval(() => {}, 1000)", '400'], { stdio: ['ignore', 'pipe', 'ignore'] });
      running.stdout.once('data', () => console.log('burned'));
    });
  } else if (line === 'stop') {
    running.on('exit', () => console.log('reaped'));
    running.kill('SIGKILL');
  }
});
`;

describe('CPU by part, from /proc', () => {
  it('counts a finished child under its reaping parent and a running one under its own part, each once', async () => {
    const root = spawn(process.execPath, ['-e', ROOT], { stdio: ['pipe', 'pipe', 'inherit'] });
    const ended = once(root, 'exit');
    const lines = createInterface({ input: root.stdout! });
    const said = (word: string) => new Promise<void>((resolve) => lines.on('line', (line) => line === word && resolve()));
    const classify: Classify = (p) => (p.pid === root.pid ? { own: 'root', children: 'reaped' } : { own: 'running', children: 'running' });
    try {
      const before = readCpu([root.pid!], classify);
      const burned = said('burned');
      root.stdin!.write('go\n');
      await burned;
      const during = readCpu([root.pid!], classify);
      const between = cpuPer(before, during, 1);
      // Each child used 400 ms of CPU (its start-up included); a reading counts at 10 ms ticks.
      expect(between.reaped).toBeGreaterThanOrEqual(380);
      expect(between.reaped).toBeLessThan(1500);
      expect(between.running).toBeGreaterThanOrEqual(380);
      expect(between.running).toBeLessThan(1500);
      // Once it ended and was reaped, its time moved to the parent's children, not counted twice.
      const reaped = said('reaped');
      root.stdin!.write('stop\n');
      await reaped;
      const after = readCpu([root.pid!], classify);
      const since = cpuPer(during, after, 1);
      expect(since.reaped).toBeGreaterThanOrEqual(380);
      expect(Math.abs(since.reaped + since.running)).toBeLessThan(60);
    } finally {
      root.kill('SIGKILL');
      await ended;
    }
  });

  it('divides by the units of work and leaves out a backend that ended', () => {
    const before = { parts: { server: 1 }, backends: new Map([[10, 2], [11, 5]]) };
    const after = { parts: { server: 3, steps: 1 }, backends: new Map([[10, 3], [12, 1]]) };
    // server (3 - 1) s, steps 1 s, PostgreSQL: backend 10's 1 s and the new backend 12's 1 s (11 ended) — over 100 pipelines.
    expect(cpuPer(before, after, 100)).toEqual({ server: 20, steps: 10, PostgreSQL: 20 });
  });
});
