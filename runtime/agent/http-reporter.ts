import type { HeartbeatResult, TaskContext } from '../agent-contract';
import { AuthenticationError, PermissionError, StaleLeaseError } from '../domain/errors';
import type { OutputClient } from '../output/output-client';
import type { TaskReporter } from './agent';
import { AgentApiClient, asLost } from './agent-api-client';
import { createHttpOutputClient } from './http-output-client';
import { parseTaskSshKeys } from './steps/ssh-key-steps';
import { withRetries, type RetryPolicy } from './retries';
import type { TestTiming } from './job-tools/job-dir';

/**
 * The agent's side of the agent API: a TaskReporter (and the file steps' OutputClient) over the
 * one AgentApiClient, with the task token. A 409 means the lease is gone (StaleLeaseError);
 * 401/403 mean the token is not good for this task, which is as final as a lost lease. Other
 * failures (an answer not of the contract's shape among them) throw and the agent retries them.
 */
export interface AgentClient {
  /** The task this token stands for, and whether it was canceled already. */
  fetchTask(): Promise<{ task: TaskContext; cancelRequested: boolean; leaseTtlMs?: number }>;
  reporter(): TaskReporter;
  /** What the file steps (artifacts, caches, workspaces, test results) send and fetch. */
  output(): OutputClient;
}

/**
 * How the reports a step cannot do without (the task, a step started or finished) ride out an API
 * pod restarting: transient failures are retried for up to 30 s. The server takes each of them
 * twice safely (a step's start is inserted once, its end is an update).
 */
const REPORT_RETRY: RetryPolicy = { attempts: 20, firstDelayMs: 250, maxDelayMs: 2000, budgetMs: 30_000 };

/** How long one cancel long-poll waits on the server before it is asked again. */
const CANCEL_POLL_MS = 25_000;

export function createAgentClient(options: {
  url: string;
  token: string;
  taskId?: string;
  /** How file steps retry transient failures. @default DEFAULT_RETRY_POLICY */
  retry?: Partial<RetryPolicy>;
}): AgentClient {
  const api = new AgentApiClient(options);
  const { taskId } = api;
  const reliably = <T>(what: string, call: () => Promise<T>) => withRetries(what, () => call(), { policy: REPORT_RETRY });
  return {
    async fetchTask() {
      const body = await reliably('Fetching the task', () => asLost(taskId, api.task()));
      return { task: body.task, cancelRequested: body.cancel_requested, leaseTtlMs: Number(body.lease_ttl_ms) || undefined };
    },
    reporter() {
      return {
        async secrets() {
          const body = await reliably("Fetching the task's secrets", () => asLost(taskId, api.secrets()));
          if ('refused' in body) return { refused: body.refused };
          const sshKeys = parseTaskSshKeys(body.ssh_keys);
          return { env: body.env, ...(body.git_token ? { gitToken: body.git_token } : {}), ...(sshKeys ? { sshKeys } : {}) };
        },
        async heartbeat(signal): Promise<HeartbeatResult> {
          const body = await asLost(taskId, api.heartbeat(signal));
          return { leaseExpiresAt: new Date(body.lease_expires_at), cancelRequested: body.cancel_requested };
        },
        async stepStarted(step) {
          await reliably(`Reporting step ${step.index} started`, () => asLost(taskId, api.stepStarted(step.index, { name: step.name, type: step.type })));
        },
        async output(step, seq, chunk) {
          await asLost(taskId, api.stepOutput(step, seq, chunk));
        },
        async stepFinished(step) {
          await reliably(`Reporting step ${step.index} finished`, () => asLost(taskId, api.stepFinished(step.index, { status: step.status, exit_code: step.exitCode ?? null })));
        },
        async cancelRequested(signal) {
          // Long-polls the server, which answers as soon as a cancel is asked for (or after a while,
          // to be asked again). Failures back off and retry; a lost lease ends the watch, since the
          // heartbeat then stops the agent.
          for (let failures = 0; ; ) {
            signal.throwIfAborted();
            try {
              const body = await api.cancellation(CANCEL_POLL_MS, signal);
              failures = 0;
              if (body.cancel_requested) return;
            } catch (error) {
              signal.throwIfAborted();
              if (error instanceof StaleLeaseError || error instanceof AuthenticationError || error instanceof PermissionError) throw error;
              failures++;
              await new Promise((r) => setTimeout(r, Math.min(5000, 100 * 2 ** failures)));
            }
          }
        },
        async testTimings() {
          return parsePreviousTestResults(await asLost(taskId, api.previousTestResults()));
        },
        async complete(outcome) {
          // Completion must arrive: retry transient failures, never a refusal.
          for (let attempt = 0; ; attempt++) {
            try {
              await asLost(taskId, api.complete(outcome));
              return;
            } catch (error) {
              if (error instanceof StaleLeaseError || attempt >= 10) throw error;
              await new Promise((r) => setTimeout(r, Math.min(2000, 100 * 2 ** attempt)));
            }
          }
        },
      };
    },
    output: () => createHttpOutputClient(api, { retry: options.retry }),
  };
}

/** The items of `GET …/previous-test-results`, as timings; an item not of its shape is left out. */
export function parsePreviousTestResults(body: unknown): TestTiming[] {
  const items = (body as { items?: unknown } | null)?.items;
  if (!Array.isArray(items)) return [];
  const out: TestTiming[] = [];
  for (const item of items) {
    if (!item || typeof item !== 'object') continue;
    const { file, classname, name, run_time: seconds } = item as Record<string, unknown>;
    if (typeof file !== 'string' || typeof classname !== 'string' || typeof name !== 'string' || typeof seconds !== 'number') continue;
    out.push({ file, classname, name, seconds });
  }
  return out;
}
