import { CHANNELS, type ClaimedTask, type Dispatcher } from '../dispatcher/dispatcher';
import type { Logger } from '../logger';
import type { Store } from '../store/store';
import type { Driver } from './driver';
import type { NomadAllocation, NomadClient } from './nomad-client';
import type { ResourceClass, ResourceClasses } from './resource-classes';
import type { TaskTokens } from './task-token';
import { createWakeableSleep } from './wakeable-sleep';
import { leaseState } from '../dispatcher/sql/leases';

/**
 * The Nomad driver: for each task of a resource class whose driver is `nomad`, one batch job in
 * Nomad that runs `gyre agent` with a task token. The job comes from the operator's template
 * (GYRE_NOMAD_JOB_TEMPLATE, as the distribution ships it) with the agent image, the class's CPU and
 * memory, and a constraint filled in. While the allocation waits for a client, the driver renews
 * the lease for it; once it runs, the agent does. An allocation that fails or is lost before the
 * agent reported ends the attempt at once (retried like an expired lease); a cancel stops the job.
 */
export interface NomadDriverOptions {
  readonly store: Store;
  readonly dispatcher: Dispatcher;
  readonly resourceClasses: ResourceClasses;
  readonly tokens: TaskTokens;
  readonly nomad: NomadClient;
  readonly log: Logger;
  /** The address agents call back to (GYRE_PUBLIC_URL / GYRE_URL). */
  readonly gyreUrl: string;
  /** GYRE_AGENT_IMAGE. */
  readonly agentImage: string;
  /** The parsed GYRE_NOMAD_JOB_TEMPLATE (`{ Job: … }` or a bare job). @default defaultJobTemplate() */
  readonly jobTemplate?: Record<string, unknown>;
  /** Jobs submitted and not yet finished, at most. @default 64 */
  readonly maxInFlight?: number;
  /** How often to look for work when no notification comes. @default 1000 */
  readonly pollMs?: number;
  /** Blocking-query wait for allocation changes, in seconds. @default 5 */
  readonly watchWaitSeconds?: number;
  /**
   * GYRE_NOMAD_DOCKER_SOCKET: the container engine's socket on the Nomad clients, bind-mounted into
   * the agent of every `docker` job so that it runs the job's images beside itself on the client's
   * engine. @default - none: `docker` jobs run in the agent's own container, as a shell job
   */
  readonly engineSocket?: string;
}

export const nomadJobId = (taskId: string, attempt: number) => `gyre-task-${taskId}-${attempt}`;

/** The template used when none is configured: the shape the distribution's ConfigMap holds. */
export function defaultJobTemplate(): Record<string, unknown> {
  return {
    Job: {
      Type: 'batch',
      Datacenters: ['default'],
      TaskGroups: [
        {
          Name: 'task',
          Count: 1,
          RestartPolicy: { Attempts: 0, Mode: 'fail' },
          ReschedulePolicy: { Attempts: 0, Unlimited: false },
          Tasks: [{ Name: 'agent', Driver: 'docker', Config: { image: 'gyre-agent' }, Resources: { CPU: 1000, MemoryMB: 2048 } }],
        },
      ],
    },
  };
}

/** Where the agent finds the client's engine socket inside its container. */
export const AGENT_ENGINE_SOCKET = '/var/run/docker.sock';

/**
 * Fills the template for one task: ids, agent image and arguments, environment, resources,
 * constraint; and for a `docker` job with `engineSocket` set, the client's engine.
 */
export function buildNomadJob(
  template: Record<string, unknown>,
  input: { claimed: ClaimedTask; token: string; gyreUrl: string; agentImage: string; resourceClass: ResourceClass; engineSocket?: string },
): Record<string, any> {
  const job = structuredClone((template.Job ?? template) as Record<string, any>);
  const { claimed, resourceClass } = input;
  const id = nomadJobId(claimed.lease.taskId, claimed.lease.attempt);
  job.ID = id;
  job.Name = id;
  job.Type = 'batch';
  job.Meta = { ...(job.Meta ?? {}), gyre_task: claimed.lease.taskId, gyre_attempt: String(claimed.lease.attempt), gyre_resource_class: resourceClass.name };
  // Each class maps to its resources, and to clients with at least as many cores.
  job.Constraints = [
    ...(job.Constraints ?? []),
    { LTarget: '${attr.cpu.numcores}', Operand: '>=', RTarget: String(Math.ceil(resourceClass.cpu)) },
  ];
  const group = job.TaskGroups?.[0];
  const task = group?.Tasks?.[0];
  if (!task) throw new Error('the Nomad job template has no TaskGroups[0].Tasks[0]');
  group.Count = 1;
  task.Config = { ...(task.Config ?? {}), image: input.agentImage, args: ['agent'] };
  task.Env = { ...(task.Env ?? {}), GYRE_URL: input.gyreUrl, GYRE_TASK_TOKEN: input.token };
  task.Resources = { ...(task.Resources ?? {}), CPU: Math.round(resourceClass.cpu * 1000), MemoryMB: resourceClass.memoryMb };
  if (input.engineSocket && claimed.task.spec.executor.kind === 'docker') {
    // The agent starts the job's primary and service containers on the client's engine, as
    // siblings of its own container (never inside it, and never with the socket: the executor
    // mounts nothing into them); each gets the class's CPU and memory as its limits. The socket is
    // root's, and whoever holds it is root on the client anyway, so the agent runs as root in its
    // container; it runs no step of the job itself. Nomad's docker plugin must allow host volumes
    // (`volumes { enabled = true }`, as the distribution's client bootstrap sets).
    task.Config.mount = [...(task.Config.mount ?? []), { type: 'bind', source: input.engineSocket, target: AGENT_ENGINE_SOCKET, readonly: false }];
    task.Env.GYRE_DOCKER_SOCKET = AGENT_ENGINE_SOCKET;
    task.User = 'root';
  }
  return job;
}

/** Why an allocation ended, from its task's last event (a validation error, a pull failure), or ''. */
export function allocationFailure(alloc: NomadAllocation): string {
  const events = Object.values(alloc.TaskStates ?? {}).flatMap((state) => state.Events ?? []);
  const last = [...events].reverse().find((e) => e.DisplayMessage || e.ValidationError || e.DriverError);
  if (!last) return '';
  return `${last.Type}: ${last.DisplayMessage || last.ValidationError || last.DriverError}`;
}

const FINISHED = new Set(['complete', 'failed', 'lost']);

export function createNomadDriver(options: NomadDriverOptions): Driver {
  const { dispatcher, nomad, log, store } = options;
  const template = options.jobTemplate ?? defaultJobTemplate();
  const inFlight = new Map<string, { claimed: ClaimedTask; jobId: string; stop: () => void }>();
  const unlisten: (() => Promise<void>)[] = [];
  let stopping = false;
  let loop: Promise<void> | undefined;
  const { sleep, wakeAll: wake } = createWakeableSleep();

  /** Follows one job's allocation until it ends; renews the lease while it waits to be placed. */
  async function watch(claimed: ClaimedTask, jobId: string, isStopped: () => boolean): Promise<void> {
    let index = 0;
    let lastBeat = Date.now();
    for (;;) {
      if (isStopped()) return;
      let allocations: NomadAllocation[];
      try {
        const r = await nomad.jobAllocations(jobId, index, options.watchWaitSeconds ?? 5);
        index = Math.max(r.index, index);
        allocations = r.allocations;
      } catch (error) {
        log.warn('watching a Nomad job failed; retrying', { jobId, error: (error as Error).message });
        await sleep(1000);
        continue;
      }
      const alloc = allocations.sort((a, b) => b.ModifyIndex - a.ModifyIndex)[0];
      // The one rule for a current lease: this attempt, unexpired on the database's clock.
      const ours = (await leaseState(store, claimed.lease)).current;
      if (!ours) {
        // The agent reported (or the attempt ended otherwise): the job has done its work.
        if (!alloc || FINISHED.has(alloc.ClientStatus)) {
          await nomad.deregisterJob(jobId, true).catch(() => undefined);
          return;
        }
      } else if (!alloc || alloc.ClientStatus === 'pending') {
        if (Date.now() - lastBeat > 1000) {
          lastBeat = Date.now();
          await dispatcher.heartbeat(claimed.lease).catch(() => undefined);
        }
      } else if (FINISHED.has(alloc.ClientStatus)) {
        // The allocation ended but the agent never completed the task: end this attempt now
        // instead of waiting out the lease, so it is retried (or fails) promptly.
        log.warn('Nomad allocation ended before the agent reported', { jobId, status: alloc.ClientStatus });
        const why = allocationFailure(alloc);
        await dispatcher.releaseLease(claimed.lease, `Nomad allocation ${alloc.ID} ended ${alloc.ClientStatus} before the agent reported${why ? ` (${why})` : ''}`).catch(() => undefined);
        await nomad.deregisterJob(jobId, true).catch(() => undefined);
        return;
      }
      if (index === 0) await sleep(200);
    }
  }

  async function submit(claimed: ClaimedTask, resourceClass: ResourceClass): Promise<void> {
    const token = options.tokens.mint(claimed.lease);
    const job = buildNomadJob(template, { claimed, token, gyreUrl: options.gyreUrl, agentImage: options.agentImage, resourceClass, engineSocket: options.engineSocket });
    let stopped = false;
    const entry = { claimed, jobId: job.ID as string, stop: () => (stopped = true) };
    inFlight.set(claimed.lease.taskId, entry);
    try {
      await nomad.registerJob(job);
      await watch(claimed, entry.jobId, () => stopped || stopping);
    } catch (error) {
      log.error('submitting a Nomad job failed; ending the attempt', { jobId: entry.jobId, error: (error as Error).message });
      await dispatcher.releaseLease(claimed.lease, `Nomad refused the job: ${(error as Error).message}`).catch(() => undefined);
    } finally {
      inFlight.delete(claimed.lease.taskId);
      wake();
    }
  }

  async function run(): Promise<void> {
    while (!stopping) {
      try {
        const classes = (await options.resourceClasses.list()).filter((rc) => rc.driver === 'nomad');
        if (classes.length === 0 || inFlight.size >= (options.maxInFlight ?? 64)) {
          await sleep(options.pollMs ?? 1000);
          continue;
        }
        const claimed = await dispatcher.claim('nomad-driver', classes.map((c) => c.name), 'nomad');
        if (!claimed) {
          await sleep(options.pollMs ?? 1000);
          continue;
        }
        const rc = classes.find((c) => c.name === claimed.task.spec.resourceClass) ?? classes[0];
        void submit(claimed, rc);
      } catch (error) {
        log.error('Nomad driver loop failed', { error: (error as Error).message });
        await sleep(1000);
      }
    }
  }

  return {
    name: 'nomad',
    async start() {
      unlisten.push(await store.listen(CHANNELS.taskQueued, wake));
      unlisten.push(
        await store.listen(CHANNELS.taskCancel, (taskId) => {
          const entry = inFlight.get(taskId);
          // Stop on cancel: Nomad kills the allocation (SIGTERM to the agent, which ends the task canceled).
          if (entry) void nomad.deregisterJob(entry.jobId, false).catch((error) => log.warn('stopping a Nomad job failed', { jobId: entry.jobId, error: (error as Error).message }));
        }),
      );
      loop = run();
    },
    async stop() {
      stopping = true;
      wake();
      await loop;
      for (const off of unlisten) await off().catch(() => undefined);
    },
  };
}
