/**
 * Sleeps that a notification can cut short: a driver's idle loops wait for work with `sleep(ms)`;
 * `wakeAll()` ends every sleep at once, `wakeOne()` the one that began first (and says whether
 * there was one).
 */
export function createWakeableSleep(): { sleep(ms: number): Promise<void>; wakeAll(): void; wakeOne(): boolean } {
  // In the order the sleeps began (a Set keeps insertion order).
  const wakers = new Set<() => void>();
  return {
    sleep: (ms) =>
      new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          wakers.delete(done);
          resolve();
        };
        const timer = setTimeout(done, ms);
        wakers.add(done);
      }),
    wakeAll: () => {
      for (const wake of [...wakers]) wake();
    },
    wakeOne: () => {
      const first = wakers.values().next();
      if (first.done) return false;
      first.value();
      return true;
    },
  };
}
