import { CHANNELS } from '../dispatcher/dispatcher';
import { createOutboxSender } from '../outbox/sender';
import { PIPELINE_CREATED } from '../triggers/triggers';
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
    // Every pipeline's config is compiled here: the compiler's worker starts now, not on the first pipeline's way.
    core.warmCompiler();
    const onError = (what: string) => (error: unknown) => log.error(what, { error: (error as Error).message });
    // A pipeline created in this process is handed over once committed, with what starting it
    // reads, and started then; its NOTIFY, which every conductor hears, is dropped here: the trigger
    // said the id was coming before its transaction, and no NOTIFY is sent before the commit. The
    // hand-over starts it once its caller has had the answer (setImmediate runs after the
    // microtasks that write it), not within the request. A NOTIFY lost in a reconnect leaves its id
    // behind: a short memory.
    const coming = new Set<string>();
    const unlistenCreated = await store.listen(PIPELINE_CREATED, (id) => {
      if (coming.delete(id)) return;
      void conductor.startPipeline(id).catch(onError('pipeline start failed'));
    });
    const offCreatedHere = core.triggers.onCreated((id, created) => {
      coming.add(id);
      if (coming.size > 1024) coming.delete(coming.values().next().value as string);
      void created.then((pipeline) => {
        if (!pipeline) return void coming.delete(id);
        setImmediate(() => void conductor.startPipeline(id, pipeline).catch(onError('pipeline start failed')));
      });
    });
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
