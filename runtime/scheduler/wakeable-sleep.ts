/**
 * Sleeps that a notification can cut short: a driver's idle loops wait for work with `sleep(ms)`;
 * `wakeAll()` ends every sleep at once, `wakeOne()` the one that began first (and says whether
 * there was one). A sleep resolves `true` when it was woken, `false` when its time ran out.
 */
export function createWakeableSleep(): { sleep(ms: number): Promise<boolean>; wakeAll(): void; wakeOne(): boolean } {
  // In the order the sleeps began (a Set keeps insertion order).
  const wakers = new Set<(woken: boolean) => void>();
  return {
    sleep: (ms) =>
      new Promise<boolean>((resolve) => {
        const done = (woken: boolean) => {
          clearTimeout(timer);
          wakers.delete(done);
          resolve(woken);
        };
        const timer = setTimeout(() => done(false), ms);
        wakers.add(done);
      }),
    wakeAll: () => {
      for (const wake of [...wakers]) wake(true);
    },
    wakeOne: () => {
      const first = wakers.values().next();
      if (first.done) return false;
      first.value(true);
      return true;
    },
  };
}
