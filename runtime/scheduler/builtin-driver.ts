import { randomUUID } from 'node:crypto';
import { rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { runTask, type TaskReporter } from '../agent/agent';
import { containerOwner, removeOrphanedContainers } from '../agent/docker-executor';
import { createTaskExecutor, prepareExecution, warmExecution, type Execution, type ExecutorSettings } from '../agent/task-executor';
import { CHANNELS, queuedAnnouncement, type ClaimedTask, type Dispatcher } from '../dispatcher/dispatcher';
import type { Logger } from '../logger';
import type { Store } from '../store/store';
import type { StepHandlers } from '../agent/steps/step-handler';
import type { Lease } from '../dispatcher/sql/leases';
import type { OutputMasker } from '../output/masking';
import type { Driver } from './driver';
import { createWakeableSleep } from './wakeable-sleep';
import { previousTestResults } from '../output/previous-test-results';
import type { TaskSecrets } from '../secrets/task-secrets';

export interface BuiltinDriverOptions {
  readonly store: Store;
  readonly dispatcher: Dispatcher;
  readonly log: Logger;
  /** How many tasks run at once. */
  readonly slots: number;
  /** Where task directories are made (GYRE_WORK_DIR). */
  readonly workRoot: string;
  /** Which executor runs steps and how builds are isolated (GYRE_EXECUTOR and its settings). @default shell, without isolation */
  readonly executor?: ExecutorSettings;
  /** How long a lease lasts: agents stop their steps when they could not renew it in time. */
  readonly leaseTtlMs?: number;
  /** Resource classes this driver serves; `*` serves every class. */
  readonly resourceClasses: readonly string[];
  readonly heartbeatMs: number;
  /** When no notification arrives, look for work this often anyway. */
  readonly pollMs?: number;
  readonly webUrl?: string;
  /**
   * Step handlers for one claimed task, given its lease (the output role's file steps write under
   * it). @default createStepHandlers()
   */
  readonly handlers?: (lease: Lease) => StepHandlers;
  /** Masks output before it is sent. @default a masker of each task's secrets */
  readonly masker?: OutputMasker;
  /** Opens each task's secrets for its agent (runtime/secrets/task-secrets.ts); without it tasks get none. */
  readonly taskSecrets?: TaskSecrets;
}

/** A reporter that calls the dispatcher in-process under one lease. */
export function localReporter(dispatcher: Dispatcher, claimed: ClaimedTask, taskSecrets?: TaskSecrets, store?: Store): TaskReporter {
  const lease = claimed.lease;
  return {
    ...(store
      ? {
          testTimings: async () =>
            // Only the lease's holder reads them: the lease is checked in the same statement
            // (StaleLeaseError when it is not current), not renewed, which writes the task row
            // (2 ms on PGlite) and which the lease just claimed does not need.
            (await previousTestResults(store, lease.taskId, lease)).items.map((r) => ({ file: r.file, classname: r.classname, name: r.name, seconds: r.run_time })),
        }
      : {}),
    // What the secrets are decided by came with the claim: their reads start at once.
    ...(taskSecrets ? { secrets: () => taskSecrets.forLease(lease, { facts: claimed.facts, steps: claimed.task.spec.steps }) } : {}),
    heartbeat: (signal) => {
      const beat = dispatcher.heartbeat(lease);
      if (!signal) return beat;
      // A renewal stuck in the database past its deadline counts as failed (the agent tries again).
      return Promise.race([beat, new Promise<never>((_, reject) => signal.addEventListener('abort', () => reject(signal.reason), { once: true }))]);
    },
    stepStarted: (step) => dispatcher.stepStarted(lease, step),
    output: (step, seq, data) => dispatcher.appendOutput(lease, step, seq, data),
    stepFinished: (step) => dispatcher.stepFinished(lease, step),
    complete: (outcome) => dispatcher.completeTask(lease, outcome),
  };
}

/**
 * The embedded default driver: N slots in this process, each claiming a task, running it with the
 * shell executor and claiming the next. An announcement that n tasks are queued (one per job, or
 * per task retried: `queuedAnnouncement`) wakes n idle slots, so each task costs one claim, not
 * one for every idle slot (which queued the others' claims before the winner's next statements on
 * PGlite's one connection, and on PostgreSQL woke a backend each on the cores the task needs), nor
 * a claim by the next idle slot looking for more after each one taken (a second statement per
 * task, nearly always finding nothing). Tasks announced while no slot slept are counted: as many
 * slots look again before they sleep. Work found by a slot's own look (`pollMs`: announcements
 * lost while LISTEN reconnected, tasks queued before the runner started) is not announced, so a
 * slot that finds it wakes the next to look for more.
 */
export function createBuiltinDriver(options: BuiltinDriverOptions): Driver {
  const { store, dispatcher, log } = options;
  const agentId = `builtin-${randomUUID().slice(0, 8)}`;
  const owner = containerOwner();
  let execution: Execution | undefined;
  let watchdog: NodeJS.Timeout | undefined;
  const running = new Map<string, AbortController>();
  let stopping = false;
  let loops: Promise<void>[] = [];
  const unlisten: (() => Promise<void>)[] = [];
  const { sleep: idle, wakeAll, wakeOne } = createWakeableSleep();
  /**
   * Tasks announced while no slot slept (each was claiming or running): as many slots look once
   * more before they go to sleep. At most one a slot: a slot back from a task claims anyway.
   */
  let missed = 0;
  const workQueued = (payload: string) => {
    // More than a slot each is never owed: at most `slots` are woken or counted, whatever the payload says.
    for (let n = Math.min(queuedAnnouncement(payload), options.slots); n > 0; n--) if (!wakeOne()) missed = Math.min(options.slots, missed + 1);
  };

  async function slot(n: number): Promise<void> {
    const slotLog = log.child({ agent: agentId, slot: n });
    /** Whether this slot's last sleep ran out rather than being woken by an announcement. */
    let looked = false;
    while (!stopping) {
      let claimed: ClaimedTask | undefined;
      const asked = performance.now();
      try {
        claimed = await dispatcher.claim(agentId, options.resourceClasses, 'builtin');
      } catch (error) {
        slotLog.error('claim failed', { error: (error as Error).message });
        if (stopping) break;
        await idle(1000);
        continue;
      }
      // Stopped while this claim was answered: `stop` woke the slots asleep then, not this one, so
      // it must not go to sleep now (the poll's wait would hold the stop up), nor start a task
      // (claimed as the runner stops, it is abandoned like the tasks in hand: its lease expires
      // and it runs again).
      if (stopping) break;
      if (!claimed) {
        // A claim that began before the announced task was committed found nothing: look again.
        if (missed > 0) missed--;
        else looked = !(await idle(options.pollMs ?? 1000));
        continue;
      }
      // Found by its own look, not announced: there may be more where this one came from.
      if (looked) wakeOne();
      looked = false;
      const controller = new AbortController();
      running.set(claimed.task.taskId, controller);
      const taskLog = slotLog.child({ taskId: claimed.task.taskId, job: claimed.task.jobName });
      try {
        const { task, lease } = claimed;
        await runTask({
          task,
          reporter: localReporter(dispatcher, claimed, options.taskSecrets, store),
          // The task as the agent has it, with its secrets: image credentials may name them.
          executor: (claimed, withSecrets) => createTaskExecutor({ task: claimed, withSecrets, taskDir: join(options.workRoot, `${task.taskId}-${lease.attempt}`), log: taskLog, execution: execution!, owner }),
          log: taskLog,
          heartbeatMs: options.heartbeatMs,
          leaseTtlMs: options.leaseTtlMs,
          leaseRenewedAt: asked,
          signal: controller.signal,
          webUrl: options.webUrl,
          handlers: options.handlers?.(claimed.lease),
          masker: options.masker,
        });
      } catch (error) {
        // The agent could not report (e.g. the database is down). The lease will expire and the
        // dispatcher will retry the task or mark it an infrastructure failure; nothing is lost.
        taskLog.error('task ended without reporting', { error: (error as Error).message });
      } finally {
        running.delete(claimed.task.taskId);
      }
    }
  }

  return {
    name: 'builtin',
    async start() {
      execution = await prepareExecution(options.executor ?? { choice: 'shell' });
      if (execution.isolation.kind === 'none' && execution.isolation.notice) log.warn(`built-in runner: ${execution.summary}`);
      else log.info(`built-in runner: ${execution.summary}`);
      await execution.isolation.prepareWorkRoot(options.workRoot, 'GYRE_WORK_DIR');
      const orphans = await execution.isolation.reapOrphans(options.workRoot);
      if (orphans > 0) log.warn('removed the directories of tasks left by a runner that died', { tasks: orphans });
      warmExecution(execution, options.slots, log);
      if (execution.dockerSocket) {
        // The watchdog: containers of agents that died go, now and every minute.
        const socket = execution.dockerSocket;
        const sweep = () => removeOrphanedContainers(socket, log).catch((error) => log.warn('container watchdog failed', { error: (error as Error).message }));
        await sweep();
        watchdog = setInterval(() => void sweep(), 60_000);
        watchdog.unref();
      }
      unlisten.push(await store.listen(CHANNELS.taskQueued, workQueued));
      unlisten.push(
        await store.listen(CHANNELS.taskCancel, (taskId) => {
          running.get(taskId)?.abort();
        }),
      );
      loops = Array.from({ length: options.slots }, (_, n) => slot(n));
    },
    async stop() {
      stopping = true;
      clearInterval(watchdog);
      // Tasks in hand are abandoned, not canceled: their leases expire and they run again.
      for (const controller of running.values()) controller.abort('shutdown');
      wakeAll();
      await Promise.all(loops);
      await execution?.isolation.close();
      // An empty work directory goes too (a root server's lives outside its data directory).
      await rmdir(options.workRoot).catch(() => undefined);
      for (const off of unlisten) await off().catch(() => undefined);
    },
  };
}
