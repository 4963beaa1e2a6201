import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

/**
 * For tests and benchmarks of hostile compilations: the hostile configs, a meter of this thread's
 * event-loop lag, and a sampler of an HTTP endpoint's latency (e.g. `/healthz` of a server while it
 * compiles a hostile config).
 */

const HOSTILE = resolve(__dirname, '../fixtures/hostile');

/** `doubling` (byte budget), `node-bomb` (node budget), `time-bomb` (time budget): see each file's header. */
export type HostileConfig = 'doubling' | 'node-bomb' | 'time-bomb';

export function hostileConfig(name: HostileConfig): string {
  return readFileSync(join(HOSTILE, `${name}.yml`), 'utf8');
}

/**
 * Measures how late a timer that should fire every `everyMs` fires: the longest time this thread
 * was too busy to run it. An event loop blocked for 2 s shows a lag of ~2 s.
 */
export function startLagMeter(everyMs = 5): { stop(): { maxMs: number; ticks: number } } {
  let last = performance.now();
  let maxMs = 0;
  let ticks = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    maxMs = Math.max(maxMs, now - last - everyMs);
    last = now;
    ticks++;
  }, everyMs);
  return {
    stop() {
      clearInterval(timer);
      // A blocked loop that has not yet let the timer fire counts too.
      maxMs = Math.max(maxMs, performance.now() - last - everyMs);
      return { maxMs, ticks };
    },
  };
}

/** Requests `url` one after another (a pause of `everyMs` between) until stopped; answers each request's milliseconds and status. */
export function sampleLatency(url: string, everyMs = 20): { stop(): Promise<{ ms: number; status: number }[]> } {
  const samples: { ms: number; status: number }[] = [];
  let running = true;
  const loop = (async () => {
    while (running) {
      const t0 = performance.now();
      const status = await fetch(url, { signal: AbortSignal.timeout(60_000) })
        .then(async (res) => {
          await res.arrayBuffer();
          return res.status;
        })
        .catch(() => 0);
      samples.push({ ms: performance.now() - t0, status });
      await new Promise((r) => setTimeout(r, everyMs));
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return samples;
    },
  };
}
