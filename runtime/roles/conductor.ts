import { CHANNELS } from '../dispatcher/dispatcher';
import { createOutboxSender } from '../outbox/sender';
import { PIPELINE_CREATED, type StartingPipeline } from '../triggers/triggers';
import { every, type Role } from './role';

/**
 * `conductor`: compiles new pipelines' configs, creates their workflows and advances them as jobs
 * finish. It also sends the outbox (runtime/outbox): the effects those state changes have outside
 * Gyre, written in the same transactions (commit statuses on GitHub), posted with retries and
 * backoff. The conductor runs in every install and makes most of what the outbox holds; any number
 * of conductor processes send it, each delivery claimed by one (`FOR UPDATE SKIP LOCKED`).
 */
export const conductorRole: Role = {
  name: 'conductor',
  async start(core) {
    const { store, conductor } = core;
    const log = core.log.child({ role: 'conductor' });
    const onError = (what: string) => (error: unknown) => log.error(what, { error: (error as Error).message });
    // A pipeline created in this process is handed over at once, with what starting it reads; the
    // NOTIFY every conductor hears follows, and whichever of the two comes second here is dropped
    // (the embedded database delivers the NOTIFY first). Both come within moments: a short memory.
    const started = new Set<string>();
    const start = (id: string, starting?: StartingPipeline) => {
      if (started.delete(id)) return;
      started.add(id);
      if (started.size > 1024) started.delete(started.values().next().value as string);
      void conductor.startPipeline(id, starting).catch(onError('pipeline start failed'));
    };
    const unlistenCreated = await store.listen(PIPELINE_CREATED, (id) => start(id));
    const offCreatedHere = core.triggers.onCreated((pipeline) => start(pipeline.id, pipeline));
    const unlistenFinished = await store.listen(CHANNELS.jobFinished, (id) => void conductor.jobFinished(id).catch(onError('workflow advance failed')));
    // The sweep picks up what a notification lost (a restart, a dropped connection) would leave waiting.
    await conductor.sweep().catch(onError('sweep failed'));
    const stopSweep = every(5000, () => conductor.sweep(), onError('sweep failed'));
    const outbox = createOutboxSender({ store, log: log.child({ outbox: 'sender' }), handlers: core.outboxHandlers });
    await outbox.start();
    return {
      async stop() {
        stopSweep();
        await outbox.stop();
        offCreatedHere();
        await unlistenCreated().catch(() => undefined);
        await unlistenFinished().catch(() => undefined);
      },
    };
  },
};
