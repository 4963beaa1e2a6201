import { createCron } from '../schedules/cron';
import type { Role } from './role';

/**
 * `cron`: scheduled pipelines. Every GYRE_CRON_INTERVAL_MS it reads the `triggers: schedule` of
 * workflows from newly compiled default-branch configs, claims the ticks of schedules (API v2) and
 * scheduled workflows that are due (one row per tick, so any number of cron processes fire each
 * tick once), and starts their pipelines through the trigger path. Ticks missed while no cron
 * process ran: the latest within the last hour fires once, older ones are skipped
 * (runtime/schedules/catch-up.ts). The schedules API is served by the `api` role.
 */
export const cronRole: Role = {
  name: 'cron',
  async start(core) {
    const log = core.log.child({ role: 'cron' });
    const cron = createCron({ store: core.store, triggers: core.triggers, log });
    let running: Promise<unknown> | undefined;
    let stopped = false;
    // One pass at a time in a process: a slow pass (many due schedules) is not overlapped by the next.
    const pass = () => {
      if (running || stopped) return;
      running = cron
        .pass()
        .catch((error) => log.error('cron pass failed', { error: (error as Error).message }))
        .finally(() => (running = undefined));
    };
    pass();
    const timer = setInterval(pass, core.settings.cronIntervalMs);
    return {
      async stop() {
        stopped = true;
        clearInterval(timer);
        await running;
      },
    };
  },
};
