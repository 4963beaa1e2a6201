import { createRetention } from '../retention/retention';
import { every, type Role } from './role';

/**
 * `output`: keeps stored output tidy. Expired caches are never restored; the sweep frees their rows
 * and blobs, and forgets the request keys of old writes (also at start, so a process that restarts
 * more often than the interval still sweeps). Hourly (and at start), pipelines past their
 * project's retention are deleted with their output (runtime/retention). Uploads and log chunks are taken by the API's agent
 * routes through the output service.
 */
export const outputRole: Role = {
  name: 'output',
  async start(core) {
    const { output } = core;
    const log = core.log.child({ role: 'output' });
    const sweep = () =>
      Promise.all([
        output.sweepExpiredCaches().catch((error) => log.error('cache sweep failed', { error: (error as Error).message })),
        output.forgetOldRequests().catch((error) => log.error('forgetting old output request keys failed', { error: (error as Error).message })),
      ]);
    await sweep();
    const stop = every(10 * 60_000, sweep, () => undefined);
    // Retention: expired pipelines and their output, from the database and the blob store together.
    const retention = createRetention({ store: core.store, blobs: core.blobs, log, defaultDays: core.settings.retentionDays });
    const retain = () => retention.sweep().catch((error) => log.error('retention sweep failed', { error: (error as Error).message }));
    void retain();
    const stopRetention = every(60 * 60_000, retain, () => undefined);
    return {
      async stop() {
        stop();
        stopRetention();
      },
    };
  },
};
