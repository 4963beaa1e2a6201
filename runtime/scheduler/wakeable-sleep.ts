/**
 * Sleeps that a notification can cut short: a driver's idle loops wait for work with `sleep(ms)`,
 * and `wakeAll()` (called when a task is queued) ends every sleep at once.
 */
export function createWakeableSleep(): { sleep(ms: number): Promise<void>; wakeAll(): void } {
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
  };
}
