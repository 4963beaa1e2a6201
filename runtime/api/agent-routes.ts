import { Type } from '@sinclair/typebox';
import {
  AGENT_ROUTES,
  CancellationQuery,
  ClaimBody,
  CompleteBody,
  OUTPUT_BYTES_HEADER,
  StepFinishedBody,
  StepStartedBody,
  type CancellationAnswer,
  type ClaimAnswer,
  type HeartbeatAnswer,
  type OkAnswer,
  type SecretsAnswer,
  type TaskAnswer,
  type TestTimingsAnswer,
} from '../agent-contract';
import { CHANNELS, loadTaskContext, type Dispatcher } from '../dispatcher/dispatcher';
import { validateResourceClass, type ResourceClasses } from '../scheduler/resource-classes';
import type { TaskTokens } from '../scheduler/task-token';
import { MAX_RAW_CHUNK_BYTES, type CompressedChunk } from '../output/log-chunk';
import type { Store } from '../store/store';
import { InputError } from '../domain/errors';
import { auditOf, leaseOf, readRawBody, type GyreApp } from './http-app';
import { Int32, OneOf, Segment } from './schemas';
import type { FastifyRequest } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { TaskSecrets } from '../secrets/task-secrets';
import { previousTestResults } from '../output/previous-test-results';

/**
 * The agent API, under /api/v2/agent. Two kinds of caller, neither a user:
 * - runners, with a resource-class token (`auth: 'runner'`): they long-poll `claim` and get a task
 *   and its task token;
 * - agents, with a task token (`auth: 'task'`): every call about their task. The token names one
 *   task and one lease; a token for task A is refused for anything of task B (403), and a stale
 *   lease is a 409.
 */
export interface AgentRouteDeps {
  readonly store: Store;
  readonly dispatcher: Dispatcher;
  readonly tokens: TaskTokens;
  readonly resourceClasses: ResourceClasses;
  /** How long a lease lasts without a heartbeat; agents pace their heartbeats by it. */
  readonly leaseTtlMs: number;
  /** Seconds per test file of a task's job from stored test results (the output role's), for `tests split --split-by=timings`. */
  readonly testTimings: (taskId: string) => Promise<{ file: string; seconds: number }[]>;
  /** The task's secrets, for its agent only (runtime/secrets/task-secrets.ts); without it tasks get none. */
  readonly taskSecrets?: TaskSecrets;
}

/** The longest a claim waits for work before answering 204. */
const MAX_WAIT_MS = 30_000;
const OK: OkAnswer = { ok: true };

// Paths, request bodies and answers are the agent contract's (runtime/agent-contract/), which the
// agent's client speaks too; this file adds what only the server knows (auth, bounds of ids).
export const TaskParams = Type.Object({ id: Segment });
const StepParams = Type.Object({ id: Segment, index: Int32({ maximum: 100_000 }) });
const TASK_ROUTE = { auth: 'task' } as const;

export async function registerAgentRoutes(app: GyreApp, deps: AgentRouteDeps): Promise<{ close(): Promise<void> }> {
  const { store, dispatcher, tokens, resourceClasses } = deps;
  const waiters = new Set<() => void>();
  let closed = false;
  const wakeAll = () => {
    for (const wake of [...waiters]) wake();
  };
  const unlisten = await store.listen(CHANNELS.taskQueued, wakeAll);
  /** Agents long-polling for a cancel, by task id. */
  const cancelWaiters = new Map<string, Set<() => void>>();
  const wakeCanceled = (taskId: string) => {
    for (const wake of cancelWaiters.get(taskId) ?? []) wake();
  };
  const unlistenCancel = await store.listen(CHANNELS.taskCancel, wakeCanceled);

  app.post(
    AGENT_ROUTES.claim.path,
    { config: { auth: 'runner' }, schema: { body: ClaimBody } },
    async (request, reply) => {
      const resourceClass = request.runnerClass!;
      const runnerId = request.body.runner_id ?? 'runner';
      const waitMs = Math.min(MAX_WAIT_MS, request.body.wait_ms ?? 0);
      await resourceClasses.runnerSeen(runnerId, resourceClass);
      const deadline = Date.now() + waitMs;
      let gone = false;
      // The response's close before it was written means the runner hung up (a request's own
      // 'close' fires as soon as its body is read, so it cannot tell).
      reply.raw.once('close', () => {
        if (!reply.raw.writableFinished) {
          gone = true;
          wakeAll();
        }
      });
      for (;;) {
        // Wait first registered, then claim: a task queued between the claim and the wait still wakes us.
        let wake!: () => void;
        const woken = new Promise<void>((resolve) => (wake = resolve));
        waiters.add(wake);
        try {
          // A runner that hung up gets nothing claimed for it (that task would wait out a lease).
          if (gone || closed) return reply.code(204).send();
          const claimed = await dispatcher.claim(runnerId, [resourceClass]);
          if (claimed) {
            return { token: tokens.mint(claimed.lease), lease_expires_at: claimed.leaseExpiresAt.toISOString(), lease_ttl_ms: deps.leaseTtlMs, task: claimed.task } satisfies ClaimAnswer;
          }
          const left = deadline - Date.now();
          if (left <= 0 || gone || closed) return reply.code(204).send();
          // Also look again now and then: a notification can be missed while LISTEN reconnects.
          let timer: NodeJS.Timeout | undefined;
          await Promise.race([woken, new Promise((r) => (timer = setTimeout(r, Math.min(left, 5000))))]);
          clearTimeout(timer);
        } finally {
          waiters.delete(wake);
        }
      }
    },
  );

  app.get(AGENT_ROUTES.task.path, { config: TASK_ROUTE, schema: { params: TaskParams } }, async (request) => {
    const lease = leaseOf(request);
    // The heartbeat doubles as the check that this lease is still current.
    const beat = await dispatcher.heartbeat(lease);
    return {
      task: await loadTaskContext(store, lease.taskId),
      lease_expires_at: beat.leaseExpiresAt.toISOString(),
      lease_ttl_ms: deps.leaseTtlMs,
      cancel_requested: beat.cancelRequested,
    } satisfies TaskAnswer;
  });

  // The one answer that holds secrets in clear: to the agent holding the task's lease, on request,
  // never cached by anyone on the way.
  app.get(AGENT_ROUTES.secrets.path, { config: TASK_ROUTE, schema: { params: TaskParams } }, async (request, reply): Promise<SecretsAnswer> => {
    reply.header('Cache-Control', 'no-store');
    const answer = deps.taskSecrets ? await deps.taskSecrets.forLease(leaseOf(request)) : { env: {} };
    return 'refused' in answer
      ? { refused: answer.refused }
      : { env: answer.env, ...(answer.gitToken ? { git_token: answer.gitToken } : {}), ...('sshKeys' in answer && answer.sshKeys ? { ssh_keys: answer.sshKeys } : {}) };
  });

  app.post(AGENT_ROUTES.heartbeat.path, { config: TASK_ROUTE, schema: { params: TaskParams } }, async (request) => {
    const beat = await dispatcher.heartbeat(leaseOf(request));
    return { lease_expires_at: beat.leaseExpiresAt.toISOString(), cancel_requested: beat.cancelRequested } satisfies HeartbeatAnswer;
  });

  app.get(
    AGENT_ROUTES.cancellation.path,
    { config: TASK_ROUTE, schema: { params: TaskParams, querystring: CancellationQuery } },
    async (request, reply): Promise<CancellationAnswer> => {
      const lease = leaseOf(request);
      const deadline = Date.now() + Math.min(MAX_WAIT_MS, request.query.wait_ms ?? 0);
      let wake!: () => void;
      let woken = new Promise<void>((resolve) => (wake = resolve));
      const waiter = () => wake();
      const waiting = cancelWaiters.get(lease.taskId) ?? new Set();
      cancelWaiters.set(lease.taskId, waiting);
      waiting.add(waiter);
      reply.raw.once('close', waiter);
      try {
        for (;;) {
          // Registered first, then read: a cancel committed in between still wakes us. A lease
          // that is no longer current is a 409, by the same rule as every other write.
          if (await dispatcher.cancelRequested(lease)) return { cancel_requested: true };
          const left = deadline - Date.now();
          if (left <= 0 || closed || reply.raw.destroyed) return { cancel_requested: false };
          // Also look again now and then: a notification can be missed while LISTEN reconnects.
          let timer: NodeJS.Timeout | undefined;
          await Promise.race([woken, new Promise((r) => (timer = setTimeout(r, Math.min(left, 5000))))]);
          clearTimeout(timer);
          woken = new Promise<void>((resolve) => (wake = resolve));
        }
      } finally {
        waiting.delete(waiter);
        if (waiting.size === 0) cancelWaiters.delete(lease.taskId);
        reply.raw.off('close', waiter);
      }
    },
  );

  app.post(AGENT_ROUTES.stepStarted.path, { config: TASK_ROUTE, schema: { params: StepParams, body: StepStartedBody } }, async (request) => {
    await dispatcher.stepStarted(leaseOf(request), { index: request.params.index, name: request.body.name ?? '', type: request.body.type ?? 'run' });
    return OK;
  });

  // Output chunks arrive as raw bytes (or gzip members): this scope reads bodies itself.
  await app.register(async (scope) => {
    const raw = scope.withTypeProvider<TypeBoxTypeProvider>();
    raw.removeAllContentTypeParsers();
    raw.addContentTypeParser('*', (_request, _payload, done) => done(null));
    raw.put(
      AGENT_ROUTES.stepOutput.path,
      { config: TASK_ROUTE, schema: { params: Type.Object({ id: Segment, index: Int32({ maximum: 100_000 }), seq: Int32() }) } },
      async (request) => {
        const lease = leaseOf(request);
        // Shared memory: the output role's chunk checker inflates it in a worker thread without a copy.
        const data = await readRawBody(request, MAX_RAW_CHUNK_BYTES, 'an output chunk', { shared: true });
        await dispatcher.appendOutput(lease, request.params.index, request.params.seq, outputChunkOf(request, data));
        return OK;
      },
    );
  });

  app.post(AGENT_ROUTES.stepFinished.path, { config: TASK_ROUTE, schema: { params: StepParams, body: StepFinishedBody } }, async (request) => {
    await dispatcher.stepFinished(leaseOf(request), { index: request.params.index, status: request.body.status, exitCode: request.body.exit_code ?? null });
    return OK;
  });

  app.post(AGENT_ROUTES.complete.path, { config: TASK_ROUTE, schema: { params: TaskParams, body: CompleteBody } }, async (request) => {
    await dispatcher.completeTask(leaseOf(request), request.body.outcome);
    return OK;
  });

  app.get(AGENT_ROUTES.testTimings.path, { config: TASK_ROUTE, schema: { params: TaskParams } }, async (request) => {
    const lease = leaseOf(request);
    // The lease's holder only (StaleLeaseError otherwise): read, not renewed.
    await dispatcher.cancelRequested(lease);
    return { items: await deps.testTimings(lease.taskId) } satisfies TestTimingsAnswer;
  });

  // The tests of the last successful run of this task's job, in its own project only: what the
  // in-job `circleci tests split --split-by=timings` weighs tests with (runtime/agent/job-tools).
  app.get(AGENT_ROUTES.previousTestResults.path, { config: TASK_ROUTE, schema: { params: TaskParams } }, async (request) => {
    const lease = leaseOf(request);
    await dispatcher.cancelRequested(lease);
    const { jobNumber, items } = await previousTestResults(store, lease.taskId);
    return { job_number: jobNumber, items };
  });

  return {
    async close() {
      closed = true;
      wakeAll();
      for (const taskId of cancelWaiters.keys()) wakeCanceled(taskId);
      await unlisten().catch(() => undefined);
      await unlistenCancel().catch(() => undefined);
    },
  };
}

/**
 * An output chunk's body: the bytes, or (`Content-Encoding: gzip`, as agents send it) gzip members
 * holding `X-Gyre-Output-Bytes` bytes, which the output role checks before it stores them.
 */
function outputChunkOf(request: FastifyRequest, body: Buffer): Uint8Array | CompressedChunk {
  const encoding = String(request.headers['content-encoding'] ?? 'identity').trim().toLowerCase();
  if (encoding === 'identity') return body;
  if (encoding !== 'gzip') throw new InputError(`Content-Encoding '${encoding.slice(0, 100)}' is not supported for output chunks (allowed: gzip, identity)`, 'Content-Encoding');
  const header = request.headers[OUTPUT_BYTES_HEADER.toLowerCase()];
  const rawBytes = Number(header);
  if (header === undefined || String(header).trim() === '' || !Number.isSafeInteger(rawBytes) || rawBytes < 0) {
    throw new InputError(`a gzip output chunk needs ${OUTPUT_BYTES_HEADER}, the number of bytes it holds (got '${String(header ?? '').slice(0, 100)}')`, OUTPUT_BYTES_HEADER);
  }
  return { gzip: body, rawBytes };
}

/** Admin routes for resource classes, their runner tokens, and concurrency limits. */
export function registerResourceClassRoutes(app: GyreApp, deps: { resourceClasses: ResourceClasses }): void {
  const { resourceClasses } = deps;
  const view = (rc: { name: string; cpu: number; memoryMb: number; driver: string }) => ({ name: rc.name, cpu: rc.cpu, memory_mb: rc.memoryMb, driver: rc.driver });
  app.get('/api/v2/resource-classes', { config: { permission: 'authenticated' } }, async () => ({ items: (await resourceClasses.list()).map(view) }));
  app.post(
    '/api/v2/resource-classes',
    { config: { permission: 'instance:admin', action: 'resource-class.create' }, schema: { body: Type.Object({}, { additionalProperties: true }) } },
    async (request, reply) => {
      const created = await resourceClasses.add(validateResourceClass(request.body as Record<string, unknown>), auditOf(request));
      reply.code(201);
      return view(created);
    },
  );
  app.post(
    '/api/v2/resource-classes/:name/tokens',
    { config: { permission: 'instance:admin', action: 'runner-token.create' }, schema: { params: Type.Object({ name: Segment }), body: Type.Object({ label: Type.Optional(Type.String({ maxLength: 200 })) }) } },
    async (request, reply) => {
      reply.code(201);
      return { token: await resourceClasses.createRunnerToken(request.params.name, request.body.label ?? '', auditOf(request)) };
    },
  );
  app.get(
    '/api/v2/resource-classes/:name/tokens',
    { config: { permission: 'instance:admin' }, schema: { params: Type.Object({ name: Segment }) } },
    async (request) => ({
      items: (await resourceClasses.listRunnerTokens(request.params.name)).map((t) => ({ id: t.id, label: t.label, created_at: t.createdAt, last_used_at: t.lastUsedAt })),
    }),
  );
  app.delete(
    '/api/v2/runner-tokens/:id',
    { config: { permission: 'instance:admin', action: 'runner-token.revoke' }, schema: { params: Type.Object({ id: Segment }) } },
    async (request, reply) => {
      await resourceClasses.revokeRunnerToken(request.params.id, auditOf(request));
      reply.code(204);
    },
  );
  app.put(
    '/api/v2/concurrency-limits/:scope/*',
    {
      config: { permission: 'instance:admin', action: 'concurrency-limit.set' },
      schema: {
        params: Type.Object({ scope: OneOf(['project', 'org'] as const), '*': Type.String({ minLength: 1, maxLength: 300 }) }),
        body: Type.Object({ max_running: Type.Optional(Type.Union([Type.Integer({ minimum: 1, maximum: 1_000_000 }), Type.Null()])) }),
      },
    },
    async (request) => {
      const { scope } = request.params;
      const key = request.params['*'];
      const max = request.body.max_running ?? undefined;
      await resourceClasses.setLimit(scope, key, max, auditOf(request));
      return { scope, key, max_running: max ?? null };
    },
  );
}
