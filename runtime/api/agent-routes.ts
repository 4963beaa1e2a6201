import type { IncomingMessage } from 'node:http';
import { AuthenticationError, InputError, PermissionError, StaleLeaseError } from '../domain/errors';
import type { StepStatus } from '../domain/model';
import { CHANNELS, loadTaskContext, type Dispatcher, type Lease, type TaskOutcome } from '../dispatcher/dispatcher';
import { validateResourceClass, type ResourceClasses } from '../scheduler/resource-classes';
import type { TaskTokens } from '../scheduler/task-token';
import { MAX_RAW_CHUNK_BYTES, type CompressedChunk } from '../output/log-chunk';
import type { Store } from '../store/store';
import { tokenOf } from './http-server';
import type { RequestContext, Router } from './router';

/**
 * The agent API, under /api/v2/agent. Two kinds of caller, neither a user:
 * - runners, with a resource-class token: they long-poll `claim` and get a task and its task token;
 * - agents, with a task token: every call about their task. The token names one task and one
 *   lease; a token for task A is refused for anything of task B, and a stale lease is a 409.
 */
export interface AgentRouteDeps {
  readonly store: Store;
  readonly dispatcher: Dispatcher;
  readonly tokens: TaskTokens;
  readonly resourceClasses: ResourceClasses;
  /** How long a lease lasts without a heartbeat; agents pace their heartbeats by it. */
  readonly leaseTtlMs: number;
}

/** The longest a claim waits for work before answering 204. */
const MAX_WAIT_MS = 30_000;
const OUTCOMES: readonly TaskOutcome[] = ['success', 'failed', 'canceled', 'timedout'];
const STEP_STATUSES: readonly StepStatus[] = ['success', 'failed', 'canceled', 'skipped', 'timedout'];

/** The lease of the caller's task token, refused unless it is for the task in the path (`:id`). */
export function taskLeaseOf(tokens: TaskTokens, ctx: RequestContext): Lease {
  const token = tokenOf(ctx.req);
  if (!token) throw new AuthenticationError('Send the task token as a Bearer token.');
  const lease = tokens.verify(token);
  if (lease.taskId !== ctx.params.id) throw new PermissionError('This task token is for another task.');
  return lease;
}

export async function registerAgentRoutes(router: Router, deps: AgentRouteDeps): Promise<{ close(): Promise<void> }> {
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

  const leaseOf = (ctx: RequestContext): Lease => taskLeaseOf(tokens, ctx);
  const stepIndex = (ctx: RequestContext) => {
    const index = Number(ctx.params.index);
    if (!Number.isInteger(index) || index < 0) throw new InputError(`step index '${ctx.params.index}' must be a whole number`, 'index');
    return index;
  };

  router.post(
    '/api/v2/agent/claim',
    async (ctx) => {
      const token = tokenOf(ctx.req);
      const resourceClass = token ? await resourceClasses.classOfRunnerToken(token) : undefined;
      if (!resourceClass) throw new AuthenticationError('The resource-class token is not valid.');
      const body = await ctx.body<{ runner_id?: string; wait_ms?: number }>();
      const runnerId = String(body.runner_id ?? 'runner').slice(0, 200);
      const waitMs = Math.max(0, Math.min(MAX_WAIT_MS, Number(body.wait_ms ?? 0) || 0));
      await store.query(
        `INSERT INTO runners (id, resource_class, last_seen_at) VALUES ($1, $2, now())
         ON CONFLICT (id) DO UPDATE SET resource_class = EXCLUDED.resource_class, last_seen_at = now()`,
        [runnerId, resourceClass],
      );
      const deadline = Date.now() + waitMs;
      let gone = false;
      // The response's close before it was written means the runner hung up (a request's own
      // 'close' fires as soon as its body is read, so it cannot tell).
      ctx.res.once('close', () => {
        if (!ctx.res.writableFinished) {
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
          if (gone || closed) return { status: 204, text: '' };
          const claimed = await dispatcher.claim(runnerId, [resourceClass]);
          if (claimed) {
            return { json: { token: tokens.mint(claimed.lease), lease_expires_at: claimed.leaseExpiresAt, lease_ttl_ms: deps.leaseTtlMs, task: claimed.task } };
          }
          const left = deadline - Date.now();
          if (left <= 0 || gone || closed) return { status: 204, text: '' };
          // Also look again now and then: a notification can be missed while LISTEN reconnects.
          let timer: NodeJS.Timeout | undefined;
          await Promise.race([woken, new Promise((r) => (timer = setTimeout(r, Math.min(left, 5000))))]);
          clearTimeout(timer);
        } finally {
          waiters.delete(wake);
        }
      }
    },
    { public: true },
  );

  router.get(
    '/api/v2/agent/task/:id',
    async (ctx) => {
      const lease = leaseOf(ctx);
      // The heartbeat doubles as the check that this lease is still current.
      const beat = await dispatcher.heartbeat(lease);
      return { json: { task: await loadTaskContext(store, lease.taskId), lease_expires_at: beat.leaseExpiresAt, lease_ttl_ms: deps.leaseTtlMs, cancel_requested: beat.cancelRequested } };
    },
    { public: true },
  );

  router.post(
    '/api/v2/agent/task/:id/heartbeat',
    async (ctx) => {
      const beat = await dispatcher.heartbeat(leaseOf(ctx));
      return { json: { lease_expires_at: beat.leaseExpiresAt, cancel_requested: beat.cancelRequested } };
    },
    { public: true },
  );

  router.get(
    '/api/v2/agent/task/:id/cancellation',
    async (ctx) => {
      const lease = leaseOf(ctx);
      const waitMs = Math.max(0, Math.min(MAX_WAIT_MS, Number(ctx.query.get('wait_ms') ?? 0) || 0));
      const deadline = Date.now() + waitMs;
      let wake!: () => void;
      let woken = new Promise<void>((resolve) => (wake = resolve));
      const waiter = () => wake();
      const waiters = cancelWaiters.get(lease.taskId) ?? new Set();
      cancelWaiters.set(lease.taskId, waiters);
      waiters.add(waiter);
      ctx.res.once('close', waiter);
      try {
        for (;;) {
          // Registered first, then read: a cancel committed in between still wakes us.
          const [row] = await store.query<{ current: boolean; cancel_requested: boolean }>(
            `SELECT (lease_id = $2 AND attempt = $3 AND status = 'running') AS current, cancel_requested FROM tasks WHERE id = $1`,
            [lease.taskId, lease.leaseId, lease.attempt],
          );
          if (!row?.current) throw new StaleLeaseError(lease.taskId, lease.leaseId);
          if (row.cancel_requested) return { json: { cancel_requested: true } };
          const left = deadline - Date.now();
          if (left <= 0 || closed || ctx.res.destroyed) return { json: { cancel_requested: false } };
          // Also look again now and then: a notification can be missed while LISTEN reconnects.
          let timer: NodeJS.Timeout | undefined;
          await Promise.race([woken, new Promise((r) => (timer = setTimeout(r, Math.min(left, 5000))))]);
          clearTimeout(timer);
          woken = new Promise<void>((resolve) => (wake = resolve));
        }
      } finally {
        waiters.delete(waiter);
        if (waiters.size === 0) cancelWaiters.delete(lease.taskId);
        ctx.res.off('close', waiter);
      }
    },
    { public: true },
  );

  router.post(
    '/api/v2/agent/task/:id/step/:index/started',
    async (ctx) => {
      const lease = leaseOf(ctx);
      const body = await ctx.body<{ name?: string; type?: string }>();
      await dispatcher.stepStarted(lease, { index: stepIndex(ctx), name: String(body.name ?? ''), type: String(body.type ?? 'run') });
      return { json: { ok: true } };
    },
    { public: true },
  );

  router.put(
    '/api/v2/agent/task/:id/step/:index/output/:seq',
    async (ctx) => {
      const lease = leaseOf(ctx);
      const seq = Number(ctx.params.seq);
      if (!Number.isInteger(seq) || seq < 0) throw new InputError(`seq '${ctx.params.seq}' must be a whole number`, 'seq');
      const data = await rawBody(ctx.req);
      await dispatcher.appendOutput(lease, stepIndex(ctx), seq, outputChunkOf(ctx, data));
      return { json: { ok: true } };
    },
    { public: true },
  );

  router.post(
    '/api/v2/agent/task/:id/step/:index/finished',
    async (ctx) => {
      const lease = leaseOf(ctx);
      const body = await ctx.body<{ status?: string; exit_code?: number | null }>();
      const status = String(body.status) as StepStatus;
      if (!STEP_STATUSES.includes(status)) throw new InputError(`status '${body.status}' is not one of ${STEP_STATUSES.join(', ')}`, 'status');
      await dispatcher.stepFinished(lease, { index: stepIndex(ctx), status, exitCode: body.exit_code ?? null });
      return { json: { ok: true } };
    },
    { public: true },
  );

  router.post(
    '/api/v2/agent/task/:id/complete',
    async (ctx) => {
      const lease = leaseOf(ctx);
      const body = await ctx.body<{ outcome?: string }>();
      const outcome = String(body.outcome) as TaskOutcome;
      if (!OUTCOMES.includes(outcome)) throw new InputError(`outcome '${body.outcome}' is not one of ${OUTCOMES.join(', ')}`, 'outcome');
      await dispatcher.completeTask(lease, outcome);
      return { json: { ok: true } };
    },
    { public: true },
  );

  router.get(
    '/api/v2/agent/task/:id/test-timings',
    async (ctx) => {
      const lease = leaseOf(ctx);
      await dispatcher.heartbeat(lease);
      const [job] = await store.query<{ project_id: string; name: string }>(
        'SELECT j.project_id, j.name FROM tasks t JOIN jobs j ON j.id = t.job_id WHERE t.id = $1',
        [lease.taskId],
      );
      return { json: { items: job ? await storedTestTimings(store, job.project_id, job.name) : [] } };
    },
    { public: true },
  );

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
function outputChunkOf(ctx: RequestContext, body: Buffer): Uint8Array | CompressedChunk {
  const encoding = String(ctx.req.headers['content-encoding'] ?? 'identity').trim().toLowerCase();
  if (encoding === 'identity') return body;
  if (encoding !== 'gzip') throw new InputError(`Content-Encoding '${encoding}' is not supported for output chunks (allowed: gzip, identity)`, 'Content-Encoding');
  const header = ctx.req.headers['x-gyre-output-bytes'];
  const rawBytes = Number(header);
  if (header === undefined || String(header).trim() === '' || !Number.isSafeInteger(rawBytes)) {
    throw new InputError(`a gzip output chunk needs X-Gyre-Output-Bytes, the number of bytes it holds (got '${header ?? ''}')`, 'X-Gyre-Output-Bytes');
  }
  return { gzip: body, rawBytes };
}

function rawBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_RAW_CHUNK_BYTES) {
        reject(new InputError(`an output chunk may be at most ${MAX_RAW_CHUNK_BYTES} bytes`));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

/** Admin routes for resource classes, their runner tokens, and concurrency limits. */
export function registerResourceClassRoutes(router: Router, deps: { resourceClasses: ResourceClasses }): void {
  const { resourceClasses } = deps;
  const admin = (ctx: RequestContext) => {
    if (!ctx.principal?.isAdmin) throw new PermissionError('only an admin can manage resource classes and limits');
  };
  const view = (rc: { name: string; cpu: number; memoryMb: number; driver: string }) => ({ name: rc.name, cpu: rc.cpu, memory_mb: rc.memoryMb, driver: rc.driver });
  router.get('/api/v2/resource-classes', async () => ({ json: { items: (await resourceClasses.list()).map(view) } }));
  router.post('/api/v2/resource-classes', async (ctx) => {
    admin(ctx);
    return { status: 201, json: view(await resourceClasses.add(validateResourceClass(await ctx.body()))) };
  });
  router.post('/api/v2/resource-classes/:name/tokens', async (ctx) => {
    admin(ctx);
    const body = await ctx.body<{ label?: string }>();
    return { status: 201, json: { token: await resourceClasses.createRunnerToken(ctx.params.name, String(body.label ?? '')) } };
  });
  router.put('/api/v2/concurrency-limits/:scope/:key*', async (ctx) => {
    admin(ctx);
    const scope = ctx.params.scope;
    if (scope !== 'project' && scope !== 'org') throw new InputError(`scope '${scope}' must be project or org`, 'scope');
    const body = await ctx.body<{ max_running?: number | null }>();
    const max = body.max_running === null || body.max_running === undefined ? undefined : Number(body.max_running);
    if (max !== undefined && (!Number.isInteger(max) || max < 1)) throw new InputError(`max_running (${String(body.max_running)}) must be a whole number of at least 1, or null to remove the limit`, 'max_running');
    await resourceClasses.setLimit(scope, ctx.params.key, max);
    return { json: { scope, key: ctx.params.key, max_running: max ?? null } };
  });
}

/**
 * Seconds per test file from the output role's stored test results (its `testTimings` query),
 * summed over the tests of each file; empty when the output role offers no such query.
 */
async function storedTestTimings(store: Store, projectId: string, jobName: string): Promise<{ file: string; seconds: number }[]> {
  let query: ((db: Store, projectId: string, jobName: string) => Promise<{ file: string; classname: string; run_time: number }[]>) | undefined;
  try {
    // Looked up at run time: test-result storage belongs to the output role.
    query = require('../output/output-service').testTimings;
  } catch {
    query = undefined;
  }
  if (typeof query !== 'function') return [];
  const totals = new Map<string, number>();
  for (const t of await query(store, projectId, jobName)) {
    const file = t.file || t.classname;
    if (file) totals.set(file, (totals.get(file) ?? 0) + Number(t.run_time || 0));
  }
  return [...totals].map(([file, seconds]) => ({ file, seconds }));
}
