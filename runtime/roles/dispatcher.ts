import { every, type Role } from './role';

/**
 * `dispatcher`: the lease reaper (an expired lease ends its attempt and, within the retry limit,
 * queues the task again) and the queue's metrics. Claims themselves are served by the agent API
 * and the built-in runner through the dispatcher service.
 */
export const dispatcherRole: Role = {
  name: 'dispatcher',
  async start(core) {
    const { store, dispatcher, settings } = core;
    const log = core.log.child({ role: 'dispatcher' });
    // The embedded store has one owner, this process: a lease its built-in runner held belongs to
    // a previous run that died (and its steps with it), so end those attempts now instead of
    // waiting for their expiry. Remote runners' leases run their course.
    if (store.kind === 'pglite') await dispatcher.reapExpiredLeases({ heldBy: 'builtin' });
    const stopReaper = every(Math.max(250, Math.min(5000, settings.leaseTtlMs / 4)), () => dispatcher.reapExpiredLeases(), (error) =>
      log.error('lease reaper failed', { error: (error as Error).message }),
    );
    // Jobs of classes no driver serves (macOS, Windows, Arm without runners) fail once they waited
    // GYRE_UNSERVED_CLASS_TIMEOUT_MS; looked for often enough to be late by a small part of it.
    const stopUnserved = every(Math.max(250, Math.min(10_000, settings.unservedClassTimeoutMs / 10)), () => dispatcher.failUnservedTasks(), (error) =>
      log.error('failing jobs of unserved classes failed', { error: (error as Error).message }),
    );
    // The queue gauges are read here on a timer (GYRE_METRICS_REFRESH_MS), never by a scrape.
    const refresh = () => core.executionMetrics.refresh(store);
    await refresh().catch(() => undefined);
    const stopMetrics = every(settings.metricsRefreshMs, refresh, (error) => log.warn('queue metrics refresh failed', { error: (error as Error).message }));
    return {
      async stop() {
        stopReaper();
        stopUnserved();
        stopMetrics();
      },
    };
  },
};
