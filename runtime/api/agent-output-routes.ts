import { StringDecoder } from 'node:string_decoder';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { Type } from '@sinclair/typebox';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import {
  AGENT_ROUTES,
  ArtifactQuery,
  CacheFindBody,
  CacheKeyQuery,
  IDEMPOTENCY_KEY_HEADER,
  type CacheExistsAnswer,
  type CacheFindAnswer,
  type OkAnswer,
  type SaveCacheAnswer,
  type WorkspaceLayersAnswer,
} from '../agent-contract';
import { InputError } from '../domain/errors';
import { loadTaskContext, type Dispatcher, type Lease, type TaskContext } from '../dispatcher/dispatcher';
import type { TestCase } from '../output/junit';
import type { CallOptions, Download, OutputClient } from '../output/output-client';
import { DEFAULT_OUTPUT_LIMITS, type OutputLimits } from '../output/output-service';
import type { Store } from '../store/store';
import { TaskParams } from './agent-routes';
import { boundedBody, leaseOf, sendStream, type GyreApp } from './http-app';
import { isUuid } from './read-model';
import { Segment } from './schemas';

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
  /** The output role's own client (`createOutputService(...).client`). */
  readonly output: OutputClient;
  /** The output role's limits, so an upload past them is refused from its Content-Length. */
  readonly limits?: Partial<OutputLimits>;
}

const RESULTS: readonly TestCase['result'][] = ['success', 'failure', 'skipped'];
/** Longest line of a test-results body: one test case as JSON. */
const MAX_CASE_BYTES = 1024 * 1024;
/** Largest JSON test-results body (what agents before NDJSON sent). */
const MAX_JSON_RESULTS_BYTES = 32 * 1024 * 1024;
const REQUEST_KEY = /^[A-Za-z0-9._:-]{1,128}$/;
const TASK_ROUTE = { auth: 'task' } as const;
const OK: OkAnswer = { ok: true };
// Paths, request bodies and answers are the agent contract's (runtime/agent-contract/).
const ROUTES = AGENT_ROUTES;

export async function registerAgentOutputRoutes(app: GyreApp, deps: AgentOutputRouteDeps): Promise<void> {
  const { store, dispatcher, output } = deps;
  const limits = { ...DEFAULT_OUTPUT_LIMITS, ...deps.limits };

  /** The caller's task, once its lease is found current (the heartbeat is that check). */
  const taskOf = async (request: FastifyRequest): Promise<{ lease: Lease; task: TaskContext }> => {
    const lease = leaseOf(request);
    await dispatcher.heartbeat(lease);
    return { lease, task: await loadTaskContext(store, lease.taskId) };
  };

  /**
   * The request body as it arrives, refused past `maxBytes`; once it has all arrived the lease is
   * checked again, before the output role stores anything (an upload can outlast a lease that was
   * current at its start).
   */
  async function* bodyOf(request: FastifyRequest, lease: Lease, maxBytes: number, what: string): AsyncIterable<Uint8Array> {
    yield* boundedBody(request, maxBytes, what);
    await dispatcher.heartbeat(lease);
  }

  /** The write's options: the caller's lease (the write is stored only under it), and its Idempotency-Key, if it sent one. */
  const writeOptions = (request: FastifyRequest): CallOptions => {
    const key = request.headers[IDEMPOTENCY_KEY_HEADER.toLowerCase()];
    const lease = leaseOf(request);
    if (key === undefined) return { lease };
    if (typeof key !== 'string' || !REQUEST_KEY.test(key)) {
      throw new InputError("the Idempotency-Key header must be 1 to 128 letters, digits, '.', '_', ':' or '-'", 'Idempotency-Key');
    }
    return { requestKey: key, lease };
  };
  const idParam = (id: string, name: string): string => {
    if (!isUuid(id)) throw new InputError(`'${id.slice(0, 100)}' is not a ${name} id`, name);
    return id;
  };

  // Uploads: this scope reads bodies itself, as they stream.
  await app.register(async (scope) => {
    const raw = scope.withTypeProvider<TypeBoxTypeProvider>();
    raw.removeAllContentTypeParsers();
    raw.addContentTypeParser('*', (_request, _payload, done) => done(null));

    raw.put(
      ROUTES.uploadArtifact.path,
      { config: TASK_ROUTE, schema: { params: TaskParams, querystring: ArtifactQuery } },
      async (request) => {
        const { lease, task } = await taskOf(request);
        await output.uploadArtifact(task, request.query.path, bodyOf(request, lease, limits.artifactBytes, 'an artifact'), writeOptions(request));
        return OK;
      },
    );

    raw.put(ROUTES.saveCache.path, { config: TASK_ROUTE, schema: { params: TaskParams, querystring: CacheKeyQuery } }, async (request) => {
      const { lease, task } = await taskOf(request);
      return { result: await output.saveCache(task, request.query.key, bodyOf(request, lease, limits.cacheBytes, 'a cache'), writeOptions(request)) } satisfies SaveCacheAnswer;
    });

    raw.post(ROUTES.persistWorkspace.path, { config: TASK_ROUTE, schema: { params: TaskParams } }, async (request) => {
      const { lease, task } = await taskOf(request);
      await output.persistWorkspace(task, bodyOf(request, lease, limits.workspaceBytes, 'a workspace layer'), writeOptions(request));
      return OK;
    });

    raw.put(ROUTES.storeTestResults.path, { config: TASK_ROUTE, schema: { params: TaskParams } }, async (request) => {
      const { lease, task } = await taskOf(request);
      // Parsed as it arrives; a bad line stops the upload, and nothing of it is stored.
      await output.storeTestResults(task, testCasesIn(bodyOf(request, lease, limits.testResultsBytes, 'the test results')), writeOptions(request));
      return OK;
    });
  });

  app.get(ROUTES.cacheExists.path, { config: TASK_ROUTE, schema: { params: TaskParams, querystring: CacheKeyQuery } }, async (request) => {
    const { task } = await taskOf(request);
    return { exists: await output.cacheExists(task, request.query.key) } satisfies CacheExistsAnswer;
  });

  app.post(ROUTES.findCache.path, { config: TASK_ROUTE, schema: { params: TaskParams, body: CacheFindBody } }, async (request): Promise<CacheFindAnswer> => {
    const { task } = await taskOf(request);
    const found = await output.findCache(task, request.body.keys);
    // A cache held back by its trust level is named, so the job's output can say why nothing was restored.
    const withheld = found ? undefined : await output.withheldCache?.(task, request.body.keys);
    return { cache: found ? { id: found.id, key: found.key, bytes: found.bytes } : null, ...(withheld ? { withheld } : {}) };
  });

  app.get(ROUTES.openCache.path, { config: TASK_ROUTE, schema: { params: Type.Object({ id: Segment, cache: Segment }) } }, async (request, reply) => {
    const { task } = await taskOf(request);
    const id = idParam(request.params.cache, 'cache');
    await sendDownload(request, reply, `"cache-${id}"`, (start) => output.openCache(task, id, { start }));
  });

  app.get(ROUTES.workspaceLayers.path, { config: TASK_ROUTE, schema: { params: TaskParams } }, async (request) => {
    const { task } = await taskOf(request);
    const layers = await output.workspaceLayers(task);
    return { items: layers.map((l) => ({ id: l.id, job_name: l.jobName })) } satisfies WorkspaceLayersAnswer;
  });

  app.get(ROUTES.openWorkspaceLayer.path, { config: TASK_ROUTE, schema: { params: Type.Object({ id: Segment, layer: Segment }) } }, async (request, reply) => {
    const { task } = await taskOf(request);
    const id = idParam(request.params.layer, 'layer');
    await sendDownload(request, reply, `"layer-${id}"`, (start) => output.openWorkspaceLayer(task, id, { start }));
  });

  app.post(
    ROUTES.storeTestResultsJson.path,
    { config: TASK_ROUTE, bodyLimit: MAX_JSON_RESULTS_BYTES, schema: { params: TaskParams, body: Type.Object({ cases: Type.Array(Type.Unknown()) }) } },
    async (request) => {
      const { task } = await taskOf(request);
      const cases = request.body.cases.map((c, i) => testCaseOf(c, `cases[${i}]`));
      await output.storeTestResults(task, cases, writeOptions(request));
      return { stored: cases.length };
    },
  );
}

/**
 * A cache or workspace layer, resumable. `Range: bytes=N-` (the one form the agent sends, to
 * resume a download that broke off) is answered 206 from byte N, or 416 when N is at or past the
 * end; any other range, or an `If-Range` that is not this ETag, gets the whole body (200), as HTTP
 * allows. The ETag is the id: a cache or layer never changes once stored.
 */
async function sendDownload(request: FastifyRequest, reply: FastifyReply, etag: string, open: (start?: number) => Promise<Download>): Promise<void> {
  const headers = { 'Content-Type': 'application/gzip', 'Accept-Ranges': 'bytes', ETag: etag };
  const start = rangeStart(request, etag);
  let body = await open(start);
  if (start !== undefined && body.size === undefined) {
    // Without the size there is no saying which part this is: the whole body instead.
    await body[Symbol.asyncIterator]().return?.();
    body = await open(undefined);
  }
  const size = body.size;
  if (start === undefined || size === undefined) return sendStream(reply, body, { ...headers, ...(size === undefined ? {} : { 'Content-Length': size }) });
  if (start >= size) {
    await body[Symbol.asyncIterator]().return?.();
    reply.code(416).headers({ ...headers, 'Content-Range': `bytes */${size}`, 'Cache-Control': 'no-store' }).send();
    return;
  }
  return sendStream(reply, body, { ...headers, 'Content-Range': `bytes ${start}-${size - 1}/${size}`, 'Content-Length': size - start }, 206);
}

/** Where a `Range: bytes=N-` asks to start, when the request has one (and no `If-Range` for another ETag). */
function rangeStart(request: FastifyRequest, etag: string): number | undefined {
  const match = /^bytes=(\d{1,15})-$/.exec(request.headers.range?.trim() ?? '');
  if (!match) return undefined;
  const ifRange = request.headers['if-range'];
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
