import { createInsightsRollup } from '../insights/rollup';
import { every, type Role } from './role';

/**
 * `insights`: keeps the figures the insights API answers from (runtime/insights/, docs/insights.md).
 * At start and every GYRE_INSIGHTS_INTERVAL_MS it records the workflows that ended since its last
 * pass, with their jobs, and adds them to the daily rollup; hourly it deletes runs and rollup days
 * older than 400 days. Any number of insights processes may run: they take turns on the rollup's
 * cursor, and a run is counted once. The API (`/api/v2/insights/…`) is served by the `api` role.
 */
export const insightsRole: Role = {
  name: 'insights',
  async start(core) {
    const log = core.log.child({ role: 'insights' });
    const rollup = createInsightsRollup({ store: core.store, log });
    let running: Promise<unknown> | undefined;
    let stopped = false;
    // One pass at a time in a process: a long first pass over a year of history is not overlapped.
    const pass = () => {
      if (running || stopped) return;
      running = rollup
        .pass()
        .then((n) => n > 0 && log.info('insights rolled up', { workflows: n }))
        .catch((error) => log.error('insights rollup failed', { error: (error as Error).message }))
        .finally(() => (running = undefined));
    };
    pass();
    const timer = setInterval(pass, core.settings.insightsIntervalMs);
    const forget = () =>
      rollup.forgetOld().then(
        (n) => n > 0 && log.info('old insights deleted', { rows: n }),
        (error) => log.error('insights retention sweep failed', { error: (error as Error).message }),
      );
    void forget();
    const stopForgetting = every(60 * 60_000, forget, () => undefined);
    return {
      async stop() {
        stopped = true;
        clearInterval(timer);
        stopForgetting();
        await running;
      },
    };
  },
};
