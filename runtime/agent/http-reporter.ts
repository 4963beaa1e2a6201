import { AuthenticationError, PermissionError, StaleLeaseError } from '../domain/errors';
import type { HeartbeatResult, TaskContext } from '../dispatcher/dispatcher';
import type { TaskReporter } from './agent';

/**
 * The agent's side of the agent API: a TaskReporter that sends each call over HTTP with the task
 * token. A 409 means the lease is gone (StaleLeaseError); 401/403 mean the token is not good for
 * this task, which is as final as a lost lease. Other failures throw and the agent retries them.
 */
export interface AgentClient {
  /** The task this token stands for, and whether it was canceled already. */
  fetchTask(): Promise<{ task: TaskContext; cancelRequested: boolean }>;
  reporter(): TaskReporter;
}

export function createAgentClient(options: { url: string; token: string; taskId?: string }): AgentClient {
  const base = options.url.replace(/\/+$/, '');
  const taskId = options.taskId ?? options.token.split('.')[1];
  const path = (rest: string) => `${base}/api/v2/agent/task/${encodeURIComponent(taskId)}${rest}`;
  const call = async (method: string, url: string, body?: unknown, raw?: Uint8Array): Promise<any> => {
    const res = await fetch(url, {
      method,
      headers: {
        Authorization: `Bearer ${options.token}`,
        ...(raw ? { 'Content-Type': 'application/octet-stream' } : body === undefined ? {} : { 'Content-Type': 'application/json' }),
      },
      body: raw ?? (body === undefined ? undefined : JSON.stringify(body)),
    });
    const text = await res.text();
    const json = text ? safeJson(text) : undefined;
    if (res.status === 409) throw new StaleLeaseError(taskId, 'remote');
    if (res.status === 401) throw new AuthenticationError(json?.message ?? 'task token refused');
    if (res.status === 403) throw new PermissionError(json?.message ?? 'task token refused');
    if (res.status >= 400) throw new Error(`${method} ${url} → ${res.status}: ${json?.message ?? text}`);
    return json;
  };
  const asLost = async <T>(p: Promise<T>): Promise<T> => {
    try {
      return await p;
    } catch (error) {
      // A token refused for this task can never become good again: stop as if the lease were lost.
      if (error instanceof AuthenticationError || error instanceof PermissionError) throw new StaleLeaseError(taskId, 'refused');
      throw error;
    }
  };
  return {
    async fetchTask() {
      const body = await call('GET', path(''));
      return { task: body.task, cancelRequested: body.cancel_requested === true };
    },
    reporter() {
      return {
        async heartbeat(): Promise<HeartbeatResult> {
          const body = await asLost(call('POST', path('/heartbeat')));
          return { leaseExpiresAt: new Date(body.lease_expires_at), cancelRequested: body.cancel_requested === true };
        },
        async stepStarted(step) {
          await asLost(call('POST', path(`/step/${step.index}/started`), { name: step.name, type: step.type }));
        },
        async output(step, seq, data) {
          await asLost(call('PUT', path(`/step/${step}/output/${seq}`), undefined, data));
        },
        async stepFinished(step) {
          await asLost(call('POST', path(`/step/${step.index}/finished`), { status: step.status, exit_code: step.exitCode ?? null }));
        },
        async complete(outcome) {
          // Completion must arrive: retry transient failures, never a refusal.
          for (let attempt = 0; ; attempt++) {
            try {
              await asLost(call('POST', path('/complete'), { outcome }));
              return;
            } catch (error) {
              if (error instanceof StaleLeaseError || attempt >= 10) throw error;
              await new Promise((r) => setTimeout(r, Math.min(2000, 100 * 2 ** attempt)));
            }
          }
        },
      };
    },
  };
}

function safeJson(text: string): any {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
