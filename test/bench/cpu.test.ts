import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { cpuPer, readCpu, type Classify } from '../../bench/cpu';

/**
 * The latency bench's CPU a pipeline costs each part (bench/cpu.ts) is read from /proc: a finished
 * child's time must land on the part its reaping parent gives its children, a running one's on its
 * own part, and each process once.
 */
/** Spins until the process has used argv[1] ms of CPU (by CPU, not the clock: a loaded machine gives it less than a core). */
const BURN = 'const end = Number(process.argv[1]) * 1000; while (process.cpuUsage().user + process.cpuUsage().system < end) {}';

const classify: Classify = (p) => (p.pid === process.pid ? { own: 'bench', children: 'reaped' } : { own: 'running', children: 'running' });

describe('CPU by part, from /proc', () => {
  it('counts a finished child under its reaping parent and a running one under its own part, each once', async () => {
    const before = readCpu([process.pid], classify);
    const finished = spawn(process.execPath, ['-e', BURN, '400']);
    await once(finished, 'exit');
    const running = spawn(process.execPath, ['-e', `${BURN}; console.log('burned'); setInterval(() => {}, 1000)`, '400'], { stdio: ['ignore', 'pipe', 'ignore'] });
    const ended = once(running, 'exit');
    let between: Record<string, number>;
    let during: ReturnType<typeof readCpu>;
    try {
      await once(running.stdout!, 'data');
      during = readCpu([process.pid], classify);
      between = cpuPer(before, during, 1);
    } finally {
      running.kill('SIGKILL');
      await ended;
    }
    // Each child used 400 ms of CPU (its start-up included); a reading counts at 10 ms ticks.
    expect(between.reaped).toBeGreaterThanOrEqual(380);
    expect(between.reaped).toBeLessThan(1500);
    expect(between.running).toBeGreaterThanOrEqual(380);
    expect(between.running).toBeLessThan(1500);
    // Once it ended and was reaped, its time moved to the parent's children, not counted twice.
    const after = readCpu([process.pid], classify);
    const since = cpuPer(during, after, 1);
    expect(since.reaped).toBeGreaterThanOrEqual(380);
    expect(Math.abs(since.reaped + since.running)).toBeLessThan(60);
  });

  it('divides by the units of work and leaves out a backend that ended', () => {
    const before = { parts: { server: 1 }, backends: new Map([[10, 2], [11, 5]]) };
    const after = { parts: { server: 3, steps: 1 }, backends: new Map([[10, 3], [12, 1]]) };
    // server (3 - 1) s, steps 1 s, PostgreSQL: backend 10's 1 s and the new backend 12's 1 s (11 ended) — over 100 pipelines.
    expect(cpuPer(before, after, 100)).toEqual({ server: 20, steps: 10, PostgreSQL: 20 });
  });
});
