import type { IncomingMessage } from 'node:http';
import { InputError } from '../domain/errors';
import { loadTaskContext, type Dispatcher, type Lease, type TaskContext } from '../dispatcher/dispatcher';
import type { TestCase } from '../output/junit';
import type { OutputClient } from '../output/output-client';
import type { TaskTokens } from '../scheduler/task-token';
import type { Store } from '../store/store';
import { taskLeaseOf } from './agent-routes';
import { sendStream } from './http-server';
import { isUuid } from './read-model';
import type { RequestContext, Router } from './router';

/**
 * The file steps of a remote agent, under /api/v2/agent/task/:id: every `OutputClient` call for
 * the caller's own task, authorized by its task token as the other agent routes are (a token for
 * another task is a 403, a stale lease a 409). The task is loaded from the store, never taken from
 * the request. Bodies are streamed through to the output role, which bounds them by its limits.
 *
 * | call | body | answer |
 * |---|---|---|
 * | `PUT artifacts?path=P` | the file's bytes | `{ ok }` |
 * | `GET cache?key=K` | — | `{ exists }` |
 * | `POST cache/find` | `{ keys }` | `{ cache: { id, key, bytes } \| null }` |
 * | `PUT cache?key=K` | gzip tar | `{ result: 'saved' \| 'exists' }` |
 * | `GET cache/:cache` | — | gzip tar |
 * | `POST workspace` | gzip tar | `{ ok }` |
 * | `GET workspace/layers` | — | `{ items: [{ id, job_name }] }` |
 * | `GET workspace/layers/:layer` | — | gzip tar |
 * | `POST test-results` | `{ cases }` (at most 32 MiB) | `{ stored }` |
 */
export interface AgentOutputRouteDeps {
  readonly store: Store;
  readonly dispatcher: Pick<Dispatcher, 'heartbeat'>;
  readonly tokens: TaskTokens;
  /** The output role's own client (`createOutputService(...).client`). */
  readonly output: OutputClient;
}

const TASK = '/api/v2/agent/task/:id';
const RESULTS: readonly TestCase['result'][] = ['success', 'failure', 'skipped'];
const MAX_KEYS = 100;

export function registerAgentOutputRoutes(router: Router, deps: AgentOutputRouteDeps): void {
  const { store, dispatcher, tokens, output } = deps;

  /** The caller's task, once its lease is found current (the heartbeat is that check). */
  const taskOf = async (ctx: RequestContext): Promise<{ lease: Lease; task: TaskContext }> => {
    const lease = taskLeaseOf(tokens, ctx);
    await dispatcher.heartbeat(lease);
    return { lease, task: await loadTaskContext(store, lease.taskId) };
  };

  /**
   * The request body as it arrives; once it has all arrived the lease is checked again, before
   * the output role stores anything (an upload can outlast a lease that was current at its start).
   */
  async function* bodyOf(req: IncomingMessage, lease: Lease): AsyncIterable<Uint8Array> {
    for await (const chunk of req) yield chunk as Buffer;
    await dispatcher.heartbeat(lease);
  }

  const required = (ctx: RequestContext, name: string, what: string): string => {
    const value = ctx.query.get(name);
    if (!value) throw new InputError(`${what} goes in the query: ?${name}=…`, name);
    return value;
  };
  const idParam = (ctx: RequestContext, name: string): string => {
    const id = ctx.params[name];
    if (!isUuid(id)) throw new InputError(`'${id}' is not a ${name} id`, name);
    return id;
  };

  router.put(
    `${TASK}/artifacts`,
    async (ctx) => {
      const { lease, task } = await taskOf(ctx);
      await output.uploadArtifact(task, required(ctx, 'path', 'the artifact path'), bodyOf(ctx.req, lease));
      return { json: { ok: true } };
    },
    { public: true },
  );

  router.get(
    `${TASK}/cache`,
    async (ctx) => {
      const { task } = await taskOf(ctx);
      return { json: { exists: await output.cacheExists(task, required(ctx, 'key', 'the cache key')) } };
    },
    { public: true },
  );

  router.post(
    `${TASK}/cache/find`,
    async (ctx) => {
      const { task } = await taskOf(ctx);
      const { keys } = await ctx.body<{ keys?: unknown }>();
      if (!Array.isArray(keys) || keys.length === 0 || keys.length > MAX_KEYS || !keys.every((k) => typeof k === 'string' && k !== '')) {
        throw new InputError(`keys must be a list of 1 to ${MAX_KEYS} non-empty strings, in the order to try them`, 'keys');
      }
      const found = await output.findCache(task, keys);
      return { json: { cache: found ? { id: found.id, key: found.key, bytes: found.bytes } : null } };
    },
    { public: true },
  );

  router.put(
    `${TASK}/cache`,
    async (ctx) => {
      const { lease, task } = await taskOf(ctx);
      return { json: { result: await output.saveCache(task, required(ctx, 'key', 'the cache key'), bodyOf(ctx.req, lease)) } };
    },
    { public: true },
  );

  router.get(
    `${TASK}/cache/:cache`,
    async (ctx) => {
      const { task } = await taskOf(ctx);
      return sendStream(ctx.res, await output.openCache(task, idParam(ctx, 'cache')), { 'Content-Type': 'application/gzip' });
    },
    { public: true },
  );

  router.post(
    `${TASK}/workspace`,
    async (ctx) => {
      const { lease, task } = await taskOf(ctx);
      await output.persistWorkspace(task, bodyOf(ctx.req, lease));
      return { json: { ok: true } };
    },
    { public: true },
  );

  router.get(
    `${TASK}/workspace/layers`,
    async (ctx) => {
      const { task } = await taskOf(ctx);
      const layers = await output.workspaceLayers(task);
      return { json: { items: layers.map((l) => ({ id: l.id, job_name: l.jobName })) } };
    },
    { public: true },
  );

  router.get(
    `${TASK}/workspace/layers/:layer`,
    async (ctx) => {
      const { task } = await taskOf(ctx);
      return sendStream(ctx.res, await output.openWorkspaceLayer(task, idParam(ctx, 'layer')), { 'Content-Type': 'application/gzip' });
    },
    { public: true },
  );

  router.post(
    `${TASK}/test-results`,
    async (ctx) => {
      const { task } = await taskOf(ctx);
      const cases = testCasesOf((await ctx.body<{ cases?: unknown }>()).cases);
      await output.storeTestResults(task, cases);
      return { json: { stored: cases.length } };
    },
    { public: true },
  );
}

/** Test cases as the agent parsed them, checked field by field (nothing else is kept). */
function testCasesOf(value: unknown): TestCase[] {
  if (!Array.isArray(value)) throw new InputError('cases must be a list of test cases', 'cases');
  return value.map((c, i) => {
    const text = (field: string) => {
      const v = (c as Record<string, unknown>)?.[field] ?? '';
      if (typeof v !== 'string') throw new InputError(`cases[${i}].${field} must be a string`, 'cases');
      return v;
    };
    const result = (c as Record<string, unknown>)?.result as TestCase['result'];
    if (!RESULTS.includes(result)) throw new InputError(`cases[${i}].result must be one of ${RESULTS.join(', ')}`, 'cases');
    const runTime = Number((c as Record<string, unknown>).run_time ?? 0);
    if (!Number.isFinite(runTime) || runTime < 0) throw new InputError(`cases[${i}].run_time must be a number of seconds`, 'cases');
    return { name: text('name'), classname: text('classname'), file: text('file'), result, message: text('message'), run_time: runTime };
  });
}
