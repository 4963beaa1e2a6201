import type { IncomingMessage } from 'node:http';
import { StringDecoder } from 'node:string_decoder';
import { InputError } from '../domain/errors';
import { loadTaskContext, type Dispatcher, type Lease, type TaskContext } from '../dispatcher/dispatcher';
import type { TestCase } from '../output/junit';
import type { CallOptions, Download, OutputClient } from '../output/output-client';
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
 * A write may carry an `Idempotency-Key` header (the agent sends one per write, the same on each
 * retry of it): a write whose key was stored already stores nothing and answers as the first did.
 *
 * | call | body | answer |
 * |---|---|---|
 * | `PUT artifacts?path=P` | the file's bytes | `{ ok }` |
 * | `GET cache?key=K` | — | `{ exists }` |
 * | `POST cache/find` | `{ keys }` | `{ cache: { id, key, bytes } \| null }` |
 * | `PUT cache?key=K` | gzip tar | `{ result: 'saved' \| 'exists' }` |
 * | `GET cache/:cache` | — | gzip tar (a `Range: bytes=N-` gets a 206 from byte N) |
 * | `POST workspace` | gzip tar | `{ ok }` |
 * | `GET workspace/layers` | — | `{ items: [{ id, job_name }] }` |
 * | `GET workspace/layers/:layer` | — | gzip tar (as for a cache) |
 * | `PUT test-results` | NDJSON, one test case a line (all or nothing) | `{ ok }` |
 * | `POST test-results` | `{ cases }` (at most 32 MiB; what agents before NDJSON sent) | `{ stored }` |
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
/** Longest line of a test-results body: one test case as JSON. */
const MAX_CASE_BYTES = 1024 * 1024;
const REQUEST_KEY = /^[A-Za-z0-9._:-]{1,128}$/;

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
    // A reader that stops early (a refusal) leaves the rest of the body on the connection: it is
    // read and dropped (not destroyed), so the answer goes out and the connection stays good for
    // the agent's next request.
    let ended = false;
    try {
      for await (const chunk of req.iterator({ destroyOnReturn: false })) yield chunk as Buffer;
      ended = true;
    } finally {
      if (!ended) req.resume();
    }
    await dispatcher.heartbeat(lease);
  }

  const required = (ctx: RequestContext, name: string, what: string): string => {
    const value = ctx.query.get(name);
    if (!value) throw new InputError(`${what} goes in the query: ?${name}=…`, name);
    return value;
  };
  /** The write's options: its Idempotency-Key, if it sent one. */
  const writeOptions = (ctx: RequestContext): CallOptions => {
    const key = ctx.req.headers['idempotency-key'];
    if (key === undefined) return {};
    if (typeof key !== 'string' || !REQUEST_KEY.test(key)) {
      throw new InputError("the Idempotency-Key header must be 1 to 128 letters, digits, '.', '_', ':' or '-'", 'Idempotency-Key');
    }
    return { requestKey: key };
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
      await output.uploadArtifact(task, required(ctx, 'path', 'the artifact path'), bodyOf(ctx.req, lease), writeOptions(ctx));
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
      return { json: { result: await output.saveCache(task, required(ctx, 'key', 'the cache key'), bodyOf(ctx.req, lease), writeOptions(ctx)) } };
    },
    { public: true },
  );

  router.get(
    `${TASK}/cache/:cache`,
    async (ctx) => {
      const { task } = await taskOf(ctx);
      const id = idParam(ctx, 'cache');
      return sendDownload(ctx, `"cache-${id}"`, (start) => output.openCache(task, id, { start }));
    },
    { public: true },
  );

  router.post(
    `${TASK}/workspace`,
    async (ctx) => {
      const { lease, task } = await taskOf(ctx);
      await output.persistWorkspace(task, bodyOf(ctx.req, lease), writeOptions(ctx));
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
      const id = idParam(ctx, 'layer');
      return sendDownload(ctx, `"layer-${id}"`, (start) => output.openWorkspaceLayer(task, id, { start }));
    },
    { public: true },
  );

  router.put(
    `${TASK}/test-results`,
    async (ctx) => {
      const { lease, task } = await taskOf(ctx);
      // Parsed as it arrives; a bad line stops the upload, and nothing of it is stored.
      await output.storeTestResults(task, testCasesIn(bodyOf(ctx.req, lease)), writeOptions(ctx));
      return { json: { ok: true } };
    },
    { public: true },
  );

  router.post(
    `${TASK}/test-results`,
    async (ctx) => {
      const { task } = await taskOf(ctx);
      const cases = testCasesOf((await ctx.body<{ cases?: unknown }>()).cases);
      await output.storeTestResults(task, cases, writeOptions(ctx));
      return { json: { stored: cases.length } };
    },
    { public: true },
  );
}

/**
 * A cache or workspace layer, resumable. `Range: bytes=N-` (the one form the agent sends, to
 * resume a download that broke off) is answered 206 from byte N, or 416 when N is at or past the
 * end; any other range, or an `If-Range` that is not this ETag, gets the whole body (200), as HTTP
 * allows. The ETag is the id: a cache or layer never changes once stored.
 */
async function sendDownload(ctx: RequestContext, etag: string, open: (start?: number) => Promise<Download>): Promise<undefined> {
  const headers = { 'Content-Type': 'application/gzip', 'Accept-Ranges': 'bytes', ETag: etag };
  const start = rangeStart(ctx.req, etag);
  let body = await open(start);
  if (start !== undefined && body.size === undefined) {
    // Without the size there is no saying which part this is: the whole body instead.
    await body[Symbol.asyncIterator]().return?.();
    body = await open(undefined);
  }
  const size = body.size;
  if (start === undefined || size === undefined) return sendStream(ctx.res, body, { ...headers, ...(size === undefined ? {} : { 'Content-Length': size }) });
  if (start >= size) {
    await body[Symbol.asyncIterator]().return?.();
    ctx.res.writeHead(416, { ...headers, 'Content-Range': `bytes */${size}`, 'Cache-Control': 'no-store' }).end();
    return undefined;
  }
  return sendStream(ctx.res, body, { ...headers, 'Content-Range': `bytes ${start}-${size - 1}/${size}`, 'Content-Length': size - start }, 206);
}

/** Where a `Range: bytes=N-` asks to start, when the request has one (and no `If-Range` for another ETag). */
function rangeStart(req: IncomingMessage, etag: string): number | undefined {
  const match = /^bytes=(\d{1,15})-$/.exec(req.headers.range?.trim() ?? '');
  if (!match) return undefined;
  const ifRange = req.headers['if-range'];
  if (ifRange !== undefined && ifRange !== etag) return undefined;
  return Number(match[1]);
}

/** The test cases of an NDJSON body, one JSON object a line (blank lines are skipped), checked as they come. */
async function* testCasesIn(body: AsyncIterable<Uint8Array>): AsyncIterable<TestCase> {
  const decoder = new StringDecoder('utf8');
  let pending = '';
  let line = 0;
  const parse = (text: string): TestCase | undefined => {
    line++;
    if (!text.trim()) return undefined;
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (error) {
      throw new InputError(`test results line ${line} is not JSON: ${(error as Error).message}`, 'test-results');
    }
    return testCaseOf(value, `line ${line}`);
  };
  for await (const chunk of body) {
    pending += decoder.write(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
    let start = 0;
    for (let end: number; (end = pending.indexOf('\n', start)) >= 0; start = end + 1) {
      const c = parse(pending.slice(start, end));
      if (c) yield c;
    }
    pending = pending.slice(start);
    if (Buffer.byteLength(pending) > MAX_CASE_BYTES) {
      throw new InputError(`test results line ${line + 1} is longer than the limit of ${MAX_CASE_BYTES} bytes for one test case`, 'test-results');
    }
  }
  pending += decoder.end();
  const last = parse(pending);
  if (last) yield last;
}

/** Test cases as the agent parsed them, checked field by field (nothing else is kept). */
function testCasesOf(value: unknown): TestCase[] {
  if (!Array.isArray(value)) throw new InputError('cases must be a list of test cases', 'cases');
  return value.map((c, i) => testCaseOf(c, `cases[${i}]`));
}

/** One test case, checked field by field; `where` names it in an error (`cases[3]`, `line 4`). */
function testCaseOf(c: unknown, where: string): TestCase {
  const field = where.startsWith('line') ? 'test-results' : 'cases';
  if (c === null || typeof c !== 'object' || Array.isArray(c)) throw new InputError(`${where} must be a test case object`, field);
  const record = c as Record<string, unknown>;
  const text = (name: string) => {
    const v = record[name] ?? '';
    if (typeof v !== 'string') throw new InputError(`${where}.${name} must be a string`, field);
    return v;
  };
  const result = record.result as TestCase['result'];
  if (!RESULTS.includes(result)) throw new InputError(`${where}.result must be one of ${RESULTS.join(', ')}`, field);
  const runTime = Number(record.run_time ?? 0);
  if (!Number.isFinite(runTime) || runTime < 0) throw new InputError(`${where}.run_time must be a number of seconds`, field);
  return { name: text('name'), classname: text('classname'), file: text('file'), result, message: text('message'), run_time: runTime };
}
