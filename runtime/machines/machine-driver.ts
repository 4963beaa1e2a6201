import { CHANNELS, resourceClassOf, type ClaimedTask, type Dispatcher } from '../dispatcher/dispatcher';
import { leaseState } from '../dispatcher/sql/leases';
import type { Logger } from '../logger';
import type { Driver } from '../scheduler/driver';
import type { TaskTokens } from '../scheduler/task-token';
import { createWakeableSleep } from '../scheduler/wakeable-sleep';
import type { Store } from '../store/store';
import type { MachineInstance, MachineProvider } from './machine-provider';
import { MACHINE_CLAIM, machineImageOf as imageOfSpec } from './machine-tasks';
import { machineStartupScript } from './startup-script';

export interface MachineDriverOptions {
  readonly store: Store;
  readonly dispatcher: Dispatcher;
  readonly tokens: TaskTokens;
  readonly provider: MachineProvider;
  readonly log: Logger;
  /** The address machines' agents call back to. */
  readonly gyreUrl: string;
  readonly installationId: string;
  /** `machine: image:` → template; `*` serves every image not named. */
  readonly images: Readonly<Record<string, string>>;
  /** Resource class → instance type. @default {} */
  readonly instanceTypes?: Readonly<Record<string, string>>;
  /** @default false */
  readonly spot?: boolean;
  /** How often the cloud is swept for machines whose task ended. @default 60000 */
  readonly sweepMs?: number;
  /** How long a machine may take to start the agent before the attempt ends. @default 600000 */
  readonly bootTimeoutMs?: number;
  /** Machines launched and not yet destroyed, at most. @default 64 */
  readonly maxMachines?: number;
  /** How often machines in hand are checked, and the queue when no notification comes. @default 1000 */
  readonly pollMs?: number;
}

interface InHand {
  readonly claimed: ClaimedTask;
  instance?: MachineInstance;
  readonly launchedAt: number;
  /** The agent on the machine reported a step: it renews the lease from then on. */
  agentStarted: boolean;
}

/** The message of a job whose `machine: image:` no template serves. */
export function unmappedImageMessage(image: string, images: Readonly<Record<string, string>>): string {
  const known = Object.keys(images).sort();
  return (
    `The machine image '${image}' is not configured for this installation, so no machine was started. ` +
    `Configured machine images: ${known.length ? known.join(', ') : '(none)'}. ` +
    `Use one of them in \`machine: image:\`, or ask an operator to add '${image}' to the machine images (GYRE_MACHINE_CONFIG).\n`
  );
}

/**
 * The machine driver: claims the tasks of `machine:` jobs, gives each its own machine from the
 * provider (the image's template, the class's instance type, the task's own token in the startup
 * script), renews the lease while the machine boots, and destroys the machine once the attempt has
 * ended. The sweep (at start and every `sweepMs`) destroys every machine of this installation
 * whose task attempt is no longer running, so a machine outlives its task by at most one sweep
 * even when the process that launched it died.
 */
export function createMachineDriver(options: MachineDriverOptions): Driver & { sweep(): Promise<number> } {
  const { dispatcher, provider, log, store } = options;
  const pollMs = options.pollMs ?? 1000;
  const inHand = new Map<string, InHand>();
  const unlisten: (() => Promise<void>)[] = [];
  const { sleep, wakeAll: wake } = createWakeableSleep();
  let stopping = false;
  let loops: Promise<void>[] = [];

  async function destroy(instance: MachineInstance, why: string): Promise<void> {
    try {
      await provider.destroy(instance);
      log.info('machine destroyed', { instance: instance.id, taskId: instance.taskId, attempt: instance.attempt, why });
    } catch (error) {
      // The sweep tries again.
      log.warn('destroying a machine failed', { instance: instance.id, error: (error as Error).message });
    }
  }

  /** Ends an attempt that cannot run: the first step says why, the job fails (not retried: nothing would change). */
  async function fail(claimed: ClaimedTask, message: string): Promise<void> {
    const { lease } = claimed;
    const first = claimed.task.spec.steps[0];
    try {
      if (first) {
        await dispatcher.stepStarted(lease, { index: 0, name: first.name, type: first.type });
        await dispatcher.appendOutput(lease, 0, 0, new TextEncoder().encode(message));
        await dispatcher.stepFinished(lease, { index: 0, status: 'failed', exitCode: null });
      }
      await dispatcher.completeTask(lease, 'failed');
    } catch (error) {
      log.warn('failing a machine task failed', { taskId: lease.taskId, error: (error as Error).message });
    }
  }

  async function launch(claimed: ClaimedTask): Promise<void> {
    const { lease, task } = claimed;
    const image = imageOfSpec(task.spec) ?? 'default';
    // `*` is the template of every image the map does not name.
    const template = options.images[image] ?? options.images['*'];
    if (!template) {
      log.warn('a machine job names an image with no template', { taskId: lease.taskId, image });
      await fail(claimed, unmappedImageMessage(image, options.images));
      return;
    }
    const entry: InHand = { claimed, launchedAt: Date.now(), agentStarted: false };
    inHand.set(lease.taskId, entry);
    try {
      const instanceType = options.instanceTypes?.[resourceClassOf(task.spec)];
      entry.instance = await provider.launch({
        installationId: options.installationId,
        taskId: lease.taskId,
        attempt: lease.attempt,
        template,
        instanceType,
        spot: options.spot ?? false,
        startupScript: machineStartupScript({ gyreUrl: options.gyreUrl, token: options.tokens.mint(lease), taskId: lease.taskId, attempt: lease.attempt }),
      });
      log.info('machine launched', { taskId: lease.taskId, attempt: lease.attempt, image, instance: entry.instance.id });
    } catch (error) {
      inHand.delete(lease.taskId);
      log.error('launching a machine failed; ending the attempt', { taskId: lease.taskId, error: (error as Error).message });
      // Like a lost Nomad allocation: queued again while attempts remain.
      await dispatcher.releaseLease(lease, `the ${provider.name} machine could not be launched: ${(error as Error).message}`).catch(() => undefined);
      wake();
    }
  }

  /** One look at every machine in hand: destroy those whose attempt ended; keep booting ones' leases alive. */
  async function watch(): Promise<void> {
    for (const [taskId, entry] of inHand) {
      if (!entry.instance) continue;
      const { lease } = entry.claimed;
      try {
        const state = await leaseState(store, lease);
        if (!state.current) {
          inHand.delete(taskId);
          await destroy(entry.instance, 'its task attempt ended');
          continue;
        }
        if (entry.agentStarted) continue;
        const [started] = await store.query(`SELECT 1 FROM steps WHERE task_id = $1 AND attempt = $2 LIMIT 1`, [lease.taskId, lease.attempt]);
        if (started) {
          entry.agentStarted = true;
        } else if (state.cancelRequested) {
          // No agent yet to hear the cancel: the attempt ends here.
          inHand.delete(taskId);
          await destroy(entry.instance, 'canceled while booting');
          await dispatcher.completeTask(lease, 'canceled').catch(() => undefined);
        } else if (Date.now() - entry.launchedAt > (options.bootTimeoutMs ?? 600_000)) {
          inHand.delete(taskId);
          await destroy(entry.instance, 'the agent did not start in time');
          await dispatcher.releaseLease(lease, `the machine did not start the agent within ${options.bootTimeoutMs ?? 600_000} ms`).catch(() => undefined);
        } else {
          await dispatcher.heartbeat(lease).catch(() => undefined);
        }
      } catch (error) {
        log.warn('checking a machine failed', { taskId, error: (error as Error).message });
      }
    }
  }

  async function sweep(): Promise<number> {
    const instances = await provider.list(options.installationId);
    if (instances.length === 0) return 0;
    const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
    const ids = [...new Set(instances.map((i) => i.taskId).filter((id) => uuid.test(id)))];
    const running = new Set(
      (await store.query<{ id: string; attempt: number }>(`SELECT id::text AS id, attempt FROM tasks WHERE id = ANY($1::uuid[]) AND status = 'running'`, [ids])).map(
        (r) => `${r.id.toLowerCase()}/${r.attempt}`,
      ),
    );
    let destroyed = 0;
    for (const instance of instances) {
      if (running.has(`${instance.taskId.toLowerCase()}/${instance.attempt}`)) continue;
      destroyed++;
      await destroy(instance, 'swept: its task attempt is not running');
    }
    return destroyed;
  }

  async function claimLoop(): Promise<void> {
    while (!stopping) {
      try {
        if (inHand.size >= (options.maxMachines ?? 64)) {
          await sleep(pollMs);
          continue;
        }
        const claimed = await dispatcher.claim(`machines-${options.installationId}`, [MACHINE_CLAIM], 'machine');
        if (!claimed) {
          await sleep(pollMs);
          continue;
        }
        void launch(claimed);
      } catch (error) {
        log.error('machine driver loop failed', { error: (error as Error).message });
        await sleep(pollMs);
      }
    }
  }

  async function watchLoop(): Promise<void> {
    let lastSweep = Date.now();
    while (!stopping) {
      await sleep(pollMs);
      if (stopping) return;
      await watch();
      if (Date.now() - lastSweep >= (options.sweepMs ?? 60_000)) {
        lastSweep = Date.now();
        await sweep().catch((error) => log.warn('the machine sweep failed', { error: (error as Error).message }));
      }
    }
  }

  return {
    name: 'machine',
    sweep,
    async start() {
      // Machines left by a process that died (a restart mid-job) go first.
      await sweep().catch((error) => log.warn('the machine sweep failed', { error: (error as Error).message }));
      unlisten.push(await store.listen(CHANNELS.taskQueued, wake));
      loops = [claimLoop(), watchLoop()];
    },
    async stop() {
      stopping = true;
      wake();
      await Promise.all(loops);
      for (const off of unlisten) await off().catch(() => undefined);
      // Machines in hand keep running their tasks (their agents renew the leases); the sweep of
      // the next start, or of another replica, destroys them once their tasks end.
    },
  };
}
