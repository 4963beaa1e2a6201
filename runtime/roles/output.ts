import { every, type Role } from './role';

/**
 * `output`: keeps stored output tidy. Expired caches are never restored; the sweep frees their rows
 * and blobs, and forgets the request keys of old writes (also at start, so a process that restarts
 * more often than the interval still sweeps). Uploads and log chunks are taken by the API's agent
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
    return {
      async stop() {
        stop();
      },
    };
  },
};
