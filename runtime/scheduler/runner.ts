import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { containerOwner, removeOrphanedContainers } from '../agent/docker-executor';
import { heartbeatEvery, runTask } from '../agent/agent';
import { AgentApiClient } from '../agent/agent-api-client';
import { createAgentClient } from '../agent/http-reporter';
import type { RetryPolicy } from '../agent/retries';
import { createStepHandlers } from '../agent/steps';
import { createOutputStepHandlers } from '../agent/steps/output-steps';
import { createTaskExecutor, prepareExecution, warmExecution, type Execution, type ExecutorSettings } from '../agent/task-executor';
import { taskTokenParts, type TaskContext } from '../agent-contract';
import type { Logger } from '../logger';

/**
 * A self-hosted runner: on any host, with a resource-class token, it long-polls Gyre for tasks of
 * that class and runs each with the task agent (in this process, reporting over HTTP with the
 * task token the claim returned). Many runners may serve one class; the dispatcher's claim keeps
 * each task to one of them.
 */
export interface RunnerOptions {
  readonly url: string;
  /** The resource-class token (`gyre resource-class token <name>`). */
  readonly token: string;
  readonly log: Logger;
  /** Where task directories are made. */
  readonly workRoot: string;
  /** Tasks run at once. @default 1 */
  readonly slots?: number;
  /** Exit once a claim finds no work (after finishing the task in hand). @default false */
  readonly drain?: boolean;
  /** How long one claim waits for work. @default 25000 */
  readonly pollMs?: number;
  /** How often a running task's lease is renewed. @default a third of the server's lease TTL (cancels arrive by long-poll) */
  readonly heartbeatMs?: number;
  /**
   * Which executor runs steps and how builds are isolated (`--executor`, GYRE_EXECUTOR and the
   * settings beside it), or what `prepareExecution` made of them.
   * @default auto: containers for docker jobs when /var/run/docker.sock answers, else the best sandbox here
   */
  readonly executor?: ExecutorSettings | Execution;
  /** How file steps retry transient failures. @default DEFAULT_RETRY_POLICY */
  readonly retry?: Partial<RetryPolicy>;
  /** @default `<hostname>-<random>` */
  readonly runnerId?: string;
}

export interface Runner {
  readonly id: string;
  /** Resolves when every slot has stopped (drained, or stop() and the task in hand finished). */
  readonly done: Promise<void>;
  /** Stops claiming; tasks in hand run to their end. */
  stop(): void;
  /** Tasks this runner finished (reported), for tests and logs. */
  readonly completed: () => number;
}

export function startRunner(options: RunnerOptions): Runner {
  const id = options.runnerId ?? `${hostname()}-${randomUUID().slice(0, 8)}`;
  const api = new AgentApiClient({ url: options.url, token: options.token, taskId: '' });
  const base = api.url;
  const claimAbort = new AbortController();
  let stopping = false;
  let completed = 0;

  async function claim(): Promise<{ token: string; task: TaskContext; leaseTtlMs?: number } | undefined | 'empty'> {
    const body = await api.claim({ runner_id: id, wait_ms: options.drain ? 0 : options.pollMs ?? 25_000 }, claimAbort.signal);
    if (body === 'empty') return 'empty';
    return { token: body.token, task: body.task, leaseTtlMs: Number(body.lease_ttl_ms) || undefined };
  }

  async function slot(n: number): Promise<void> {
    const log = options.log.child({ runner: id, slot: n });
    let backoff = 0;
    while (!stopping) {
      let claimed: Awaited<ReturnType<typeof claim>>;
      try {
        claimed = await claim();
        backoff = 0;
      } catch (error) {
        if (stopping) break;
        if (/refused/.test((error as Error).message)) throw error;
        backoff = Math.min(5000, backoff ? backoff * 2 : 200);
        log.warn('claim failed; retrying', { error: (error as Error).message, retryInMs: backoff });
        await new Promise((r) => setTimeout(r, backoff));
        continue;
      }
      if (claimed === 'empty' || !claimed) {
        if (options.drain) break;
        continue;
      }
      const { token, task, leaseTtlMs } = claimed;
      const taskLog = log.child({ taskId: task.taskId, job: task.jobName });
      try {
        const client = createAgentClient({ url: base, token, taskId: task.taskId, retry: options.retry });
        // Given the task with its secrets (image credentials may name them).
        const executor = (claimed: TaskContext, withSecrets: () => Promise<TaskContext>) => createTaskExecutor({ task: claimed, withSecrets, taskDir: join(options.workRoot, `${task.taskId}-${taskTokenParts(token).attempt}`), log: taskLog, execution: execution!, owner });
        const handlers = createStepHandlers(createOutputStepHandlers(client.output()));
        const result = await runTask({
          task,
          reporter: client.reporter(),
          executor,
          handlers,
          log: taskLog,
          heartbeatMs: options.heartbeatMs ?? heartbeatEvery(leaseTtlMs),
          leaseTtlMs,
          // A claim long-polls: when it was sent says nothing of when the lease began. The agent
          // renews the lease at once and counts from that.
          webUrl: base,
        });
        if ('outcome' in result) completed++;
      } catch (error) {
        // Could not report: the lease expires and the dispatcher retries the task elsewhere.
        taskLog.error('task ended without reporting', { error: (error as Error).message });
      }
    }
  }

  const owner = containerOwner();
  let execution: Execution | undefined;
  let watchdog: NodeJS.Timeout | undefined;
  /** Isolation and engine found, work directory ready, what dead runners left removed: then slots start. */
  async function prepare(): Promise<void> {
    const given = options.executor ?? { choice: 'auto' };
    execution = 'isolation' in given ? given : await prepareExecution(given);
    options.log.info(`runner ${id}: ${execution.summary}`);
    if (execution.isolation.notice) options.log.warn(execution.isolation.notice);
    await execution.isolation.prepareWorkRoot(options.workRoot, '--work-dir');
    const orphans = await execution.isolation.reapOrphans(options.workRoot);
    if (orphans > 0) options.log.warn('removed the directories of tasks left by a runner that died', { tasks: orphans });
    warmExecution(execution, Math.max(1, options.slots ?? 1), options.log);
    if (execution.dockerSocket) {
      const socket = execution.dockerSocket;
      const sweep = () => removeOrphanedContainers(socket, options.log).catch((error) => options.log.warn('container watchdog failed', { error: (error as Error).message }));
      await sweep();
      watchdog = setInterval(() => void sweep(), 60_000);
      watchdog.unref();
    }
  }

  const done = prepare()
    .then(() => Promise.all(Array.from({ length: Math.max(1, options.slots ?? 1) }, (_, n) => slot(n))))
    .then(() => undefined)
    .finally(async () => {
      clearInterval(watchdog);
      await execution?.isolation.close();
    });
  return {
    id,
    done,
    stop() {
      stopping = true;
      claimAbort.abort();
    },
    completed: () => completed,
  };
}
