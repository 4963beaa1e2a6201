import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { TSchema, Static } from '@sinclair/typebox';
import {
  AGENT_API_VERSION,
  AGENT_API_VERSION_HEADER,
  AGENT_ROUTES,
  agentPath,
  answerJson,
  CacheExistsAnswer,
  CacheFindAnswer,
  CancellationAnswer,
  checkAnswer,
  ClaimAnswer,
  HeartbeatAnswer,
  OUTPUT_BYTES_HEADER,
  parseAnswer,
  PreviousTestResultsAnswer,
  SaveCacheAnswer,
  SecretsGivenAnswer,
  SecretsRefusedAnswer,
  TaskAnswer,
  TestTimingsAnswer,
  taskTokenParts,
  WorkspaceLayersAnswer,
  type AgentPathParams,
  type AgentRoute,
  type ClaimBody,
  type SecretsAnswer,
  type StepFinishedBody,
  type StepStartedBody,
  type TaskOutcome,
} from '../agent-contract';
import { AuthenticationError, PermissionError, StaleLeaseError } from '../domain/errors';
import type { CompressedChunk } from '../output/log-chunk';

export interface AgentApiClientOptions {
  /** The server's base URL (`https://gyre.example.com`). */
  readonly url: string;
  /** A task token (every call about its task), or a runner's resource-class token (`claim` only). */
  readonly token: string;
  /** The task the token is for. @default - read from the task token */
  readonly taskId?: string;
}

/** A body sent as it is produced, with the headers of this attempt (an `Idempotency-Key`). */
export interface Upload {
  readonly headers: Readonly<Record<string, string>>;
  readonly stream: AsyncIterable<Uint8Array>;
}

/** What one request carries besides the token and the version. */
export interface AgentRequest {
  readonly query?: Readonly<Record<string, string>>;
  readonly json?: unknown;
  /** A body in hand, in parts sent one after another (an output chunk's gzip members). */
  readonly bytes?: readonly Uint8Array[];
  /** Headers besides the token and the content type (which follows from the body). */
  readonly headers?: Readonly<Record<string, string>>;
  /** Sent as it is produced, never held whole in memory. */
  readonly stream?: AsyncIterable<Uint8Array>;
  /** Abandons the request (a long-poll the agent no longer needs). */
  readonly signal?: AbortSignal;
}

/**
 * The agent's one client of the agent API (runtime/agent-contract/): every call the agent and a
 * runner make, with the paths and answer schemas of the contract. Each answer is checked against
 * its schema before a field of it is read; one that is not of it is an AgentAnswerError naming
 * the call and the field.
 *
 * Statuses: a 409 means the lease is gone (StaleLeaseError); 401/403 mean the token is not good
 * for this task (AuthenticationError, PermissionError; `asLost` makes them a lost lease). Other
 * failures are a TaskApiError with the server's message and status, which the callers' retry
 * policies (./retries.ts) judge. An idempotent request whose kept-alive connection was reset
 * before any answer is sent once more; nothing else is retried here.
 */
export class AgentApiClient {
  readonly taskId: string;
  private readonly base: string;
  private readonly token: string;

  constructor(options: AgentApiClientOptions) {
    this.base = options.url.replace(/\/+$/, '');
    this.token = options.token;
    this.taskId = options.taskId ?? taskTokenParts(options.token).taskId;
  }

  /** The base URL, without a trailing slash. */
  get url(): string {
    return this.base;
  }

  // ---- Runners (resource-class token) ----------------------------------------------------------

  /**
   * Long-polls for a task of the token's resource class: the task and its token, or 'empty' when
   * none came in the wait. A refused token is an error saying so ("refused"), which a runner
   * does not retry.
   */
  async claim(body: ClaimBody, signal?: AbortSignal): Promise<ClaimAnswer | 'empty'> {
    const path = agentPath('claim', {});
    const res = await this.send('POST', path, { json: body, signal });
    if (res.status === 204) {
      await res.arrayBuffer();
      return 'empty';
    }
    const text = await res.text().catch(() => '');
    if (res.status === 401) throw new Error(`the resource-class token was refused by ${this.base}: ${messageOf(text) ?? ''}`);
    if (res.status >= 400) throw new Error(`claim failed with ${res.status}: ${messageOf(text) ?? ''}`);
    return parseAnswer(ClaimAnswer, text, `POST ${path}`);
  }

  // ---- The task (task token) -------------------------------------------------------------------

  /** The task, its lease's expiry and TTL, and whether it was canceled already; renews the lease. */
  task(): Promise<TaskAnswer> {
    return this.answer('task', {}, TaskAnswer);
  }

  /** The task's secrets, or why it may not have them. */
  async secrets(): Promise<SecretsAnswer> {
    const { call, text } = await this.text('secrets', {});
    const body = answerJson(text, call);
    // A refusal is told apart by its one field, so a malformed answer names the field it lacks.
    const refused = body !== null && typeof body === 'object' && 'refused' in body;
    return refused ? checkAnswer(SecretsRefusedAnswer, body, call) : checkAnswer(SecretsGivenAnswer, body, call);
  }

  /** Renews the lease. */
  heartbeat(signal?: AbortSignal): Promise<HeartbeatAnswer> {
    return this.answer('heartbeat', {}, HeartbeatAnswer, { signal });
  }

  /** Waits on the server up to `waitMs` for a cancel of the task. */
  cancellation(waitMs: number, signal?: AbortSignal): Promise<CancellationAnswer> {
    return this.answer('cancellation', {}, CancellationAnswer, { query: { wait_ms: String(waitMs) }, signal });
  }

  stepStarted(index: number, body: StepStartedBody): Promise<void> {
    return this.write('stepStarted', { index }, { json: body });
  }

  /** One chunk of a step's output, gzip members holding `chunk.rawBytes` bytes. */
  stepOutput(index: number, seq: number, chunk: CompressedChunk): Promise<void> {
    return this.write('stepOutput', { index, seq }, { bytes: chunk.members ?? [chunk.gzip], headers: { 'Content-Encoding': 'gzip', [OUTPUT_BYTES_HEADER]: String(chunk.rawBytes) } });
  }

  stepFinished(index: number, body: StepFinishedBody): Promise<void> {
    return this.write('stepFinished', { index }, { json: body });
  }

  complete(outcome: TaskOutcome): Promise<void> {
    return this.write('complete', {}, { json: { outcome } });
  }

  /** Seconds per test file of the task's job, from stored test results (`circleci tests split --split-by=timings`). */
  testTimings(): Promise<TestTimingsAnswer> {
    return this.answer('testTimings', {}, TestTimingsAnswer);
  }

  /** The tests of the last successful run of the task's job (items checked one by one by their reader). */
  previousTestResults(): Promise<PreviousTestResultsAnswer> {
    return this.answer('previousTestResults', {}, PreviousTestResultsAnswer);
  }

  // ---- File steps (task token) -----------------------------------------------------------------

  uploadArtifact(path: string, upload: Upload): Promise<void> {
    return this.write('uploadArtifact', {}, { query: { path }, ...upload });
  }

  cacheExists(key: string): Promise<CacheExistsAnswer> {
    return this.answer('cacheExists', {}, CacheExistsAnswer, { query: { key } });
  }

  saveCache(key: string, upload: Upload): Promise<SaveCacheAnswer> {
    return this.answer('saveCache', {}, SaveCacheAnswer, { query: { key }, ...upload });
  }

  findCache(keys: readonly string[]): Promise<CacheFindAnswer> {
    return this.answer('findCache', {}, CacheFindAnswer, { json: { keys } });
  }

  persistWorkspace(upload: Upload): Promise<void> {
    return this.write('persistWorkspace', {}, upload);
  }

  workspaceLayers(): Promise<WorkspaceLayersAnswer> {
    return this.answer('workspaceLayers', {}, WorkspaceLayersAnswer);
  }

  /** The test cases as NDJSON, all stored or none. */
  storeTestResults(upload: Upload): Promise<void> {
    return this.write('storeTestResults', {}, upload);
  }

  /** A cache's bytes (`headers`: a `Range` to resume from). */
  openCache(id: string, headers?: Readonly<Record<string, string>>): Promise<Response> {
    return this.request(AGENT_ROUTES.openCache.method, this.path('openCache', { cache: id }), { headers });
  }

  /** A workspace layer's bytes (`headers`: a `Range` to resume from). */
  openWorkspaceLayer(id: string, headers?: Readonly<Record<string, string>>): Promise<Response> {
    return this.request(AGENT_ROUTES.openWorkspaceLayer.method, this.path('openWorkspaceLayer', { layer: id }), { headers });
  }

  // ---- Transport -------------------------------------------------------------------------------

  /** One request with the token; answers the response when it succeeded (see the class for failures). */
  async request(method: string, path: string, init: AgentRequest = {}): Promise<Response> {
    const res = await this.send(method, path, init);
    if (res.ok) return res;
    const text = await res.text().catch(() => '');
    const message = messageOf(text) ?? text;
    if (res.status === 409) throw new StaleLeaseError(this.taskId, 'remote');
    if (res.status === 401) throw new AuthenticationError(message || 'task token refused');
    if (res.status === 403) throw new PermissionError(message || 'task token refused');
    throw new TaskApiError(`${method} ${new URL(this.base + path).pathname} → ${res.status}: ${message}`, res.status, retryAfterMs(res.headers.get('retry-after')));
  }

  /** A task route's path, its `:id` this client's task. */
  private path<R extends AgentRoute>(route: R, params: Omit<AgentPathParams<R>, 'id'>): string {
    return agentPath(route, { ...params, id: this.taskId } as unknown as AgentPathParams<R>);
  }

  private async text<R extends AgentRoute>(route: R, params: Omit<AgentPathParams<R>, 'id'>, init?: AgentRequest): Promise<{ call: string; text: string }> {
    const { method } = AGENT_ROUTES[route];
    const path = this.path(route, params);
    const res = await this.request(method, path, init);
    return { call: `${method} ${path}`, text: await res.text() };
  }

  /** A call whose answer the agent reads: checked against `schema`. */
  private async answer<R extends AgentRoute, S extends TSchema>(route: R, params: Omit<AgentPathParams<R>, 'id'>, schema: S, init?: AgentRequest): Promise<Static<S>> {
    const { call, text } = await this.text(route, params, init);
    return parseAnswer(schema, text, call);
  }

  /** A write whose answer (`{ ok: true }`) tells nothing: it is read to its end and dropped. */
  private async write<R extends AgentRoute>(route: R, params: Omit<AgentPathParams<R>, 'id'>, init?: AgentRequest): Promise<void> {
    await this.text(route, params, init);
  }

  private async send(method: string, path: string, init: AgentRequest): Promise<Response> {
    const url = new URL(this.base + path);
    for (const [name, value] of Object.entries(init.query ?? {})) url.searchParams.set(name, value);
    const contentType = init.json !== undefined ? 'application/json' : init.bytes || init.stream ? 'application/octet-stream' : undefined;
    const source = init.stream ? tracked(init.stream) : undefined;
    const headers = { ...init.headers, Authorization: `Bearer ${this.token}`, [AGENT_API_VERSION_HEADER]: String(AGENT_API_VERSION), ...(contentType ? { 'Content-Type': contentType } : {}) };
    const bytes = init.bytes;
    const send = () =>
      bytes
        ? sendBytes(method, url, headers, bytes, init.signal)
        : fetch(url, {
            method,
            headers,
            body: source ? (source.body as unknown as RequestInit['body']) : init.json === undefined ? undefined : JSON.stringify(init.json),
            ...(source ? { duplex: 'half' } : {}),
            ...(init.signal ? { signal: init.signal } : {}),
          } as RequestInit);
    try {
      try {
        return await send();
      } catch (error) {
        // A kept-alive connection the server closed just as this request went out is reset before
        // any answer: an idempotent request with a body it still holds is sent once more, on a new
        // connection, as HTTP clients do (RFC 9110 §9.2.2). Anything else is the caller's to retry.
        if (source || !IDEMPOTENT.has(method) || !isConnectionReset(error) || init.signal?.aborted) throw error;
        return await send();
      }
    } catch (error) {
      // A body that failed to produce (a broken archive) is the reason, not "fetch failed".
      throw source?.error() ?? error;
    } finally {
      // The server may answer before reading the whole body (a refusal): stop producing it.
      source?.close();
    }
  }
}

const IDEMPOTENT = new Set(['GET', 'HEAD', 'PUT', 'DELETE']);

/** How long a request sent with its bytes in hand waits for its answer (as fetch's headers timeout). */
const ANSWER_TIMEOUT_MS = 300_000;
/** Statuses whose answer has no body (a Response refuses one). */
const NO_BODY = new Set([204, 205, 304]);

/**
 * A request whose body is bytes in hand (an output chunk's gzip members): sent with node:http(s),
 * which writes them to the connection as they are, without joining them, on a kept-alive
 * connection of Node's global agent. fetch copied every such body twice on its way (undici's body
 * extraction, then its web stream's clone): a loud step's agent spent a tenth of its thread on
 * the copies, and collected its heap the more often (docs/speed.md, the thirtieth sitting). The
 * answer is a fetch Response and a failure fails as fetch's do ("fetch failed" before an answer,
 * "terminated" while reading it, the socket's error as the cause), so the rest of this client and
 * the retry rules treat both alike.
 */
function sendBytes(method: string, url: URL, headers: Record<string, string>, body: readonly Uint8Array[], signal?: AbortSignal): Promise<Response> {
  return new Promise<Response>((resolve, reject) => {
    const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
    const length = body.reduce((sum, part) => sum + part.byteLength, 0);
    const request = send(url, { method, headers: { ...headers, 'Content-Length': String(length) }, ...(signal ? { signal } : {}) });
    let answered = false;
    request.setTimeout(ANSWER_TIMEOUT_MS, () => {
      const timeout = Object.assign(new Error(`no answer within ${ANSWER_TIMEOUT_MS / 1000} s`), { code: answered ? 'UND_ERR_BODY_TIMEOUT' : 'UND_ERR_HEADERS_TIMEOUT' });
      request.destroy(timeout);
    });
    // An abort is the AbortError itself, as fetch's is.
    request.on('error', (error) => reject(signal?.aborted ? error : new TypeError(answered ? 'terminated' : 'fetch failed', { cause: error })));
    request.on('response', (res) => {
      answered = true;
      const parts: Buffer[] = [];
      res.on('data', (part: Buffer) => parts.push(part));
      res.on('error', (error) => reject(new TypeError('terminated', { cause: error })));
      res.on('end', () => {
        const status = res.statusCode ?? 0;
        if (status < 200 || status > 599) return reject(new TypeError('fetch failed', { cause: new Error(`the server answered with status ${status}`) }));
        const answerHeaders = new Headers();
        for (const [name, value] of Object.entries(res.headers)) for (const v of Array.isArray(value) ? value : value === undefined ? [] : [value]) answerHeaders.append(name, v);
        resolve(new Response(NO_BODY.has(status) ? null : Buffer.concat(parts), { status, statusText: res.statusMessage, headers: answerHeaders }));
      });
    });
    for (const part of body.slice(0, -1)) request.write(part);
    request.end(body.at(-1));
  });
}

/** Whether `fetch` failed because the connection was reset or closed before an answer came. */
function isConnectionReset(error: unknown): boolean {
  const cause = (error as { cause?: { code?: string } })?.cause;
  return (error as Error | undefined)?.name === 'TypeError' && ['ECONNRESET', 'UND_ERR_SOCKET', 'EPIPE'].includes(cause?.code ?? '');
}

/** A failure the server (or a proxy in front of it) answered with a status other than 401, 403 and 409. */
export class TaskApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
    /** What a `Retry-After` header asked for, in milliseconds. */
    readonly retryAfterMs?: number,
  ) {
    super(message);
    this.name = 'TaskApiError';
  }
}

function retryAfterMs(header: string | null): number | undefined {
  const seconds = header === null ? NaN : Number(header);
  return Number.isFinite(seconds) && seconds >= 0 ? seconds * 1000 : undefined;
}

/** The `message` of an error answer (`{ "message": … }`), when it has one. */
function messageOf(text: string): string | undefined {
  try {
    const message = (JSON.parse(text) as { message?: unknown } | null)?.message;
    return typeof message === 'string' ? message : undefined;
  } catch {
    return undefined;
  }
}

/** A refused token can never become good again: the agent stops as if the lease were lost. */
export async function asLost<T>(taskId: string, p: Promise<T>): Promise<T> {
  try {
    return await p;
  } catch (error) {
    if (error instanceof AuthenticationError || error instanceof PermissionError) throw new StaleLeaseError(taskId, 'refused');
    throw error;
  }
}

/** The body as fetch iterates it, remembering its error and closable once fetch is done with it. */
function tracked(stream: AsyncIterable<Uint8Array>) {
  let failure: unknown;
  let finished = false;
  const iterator = stream[Symbol.asyncIterator]();
  async function* body() {
    let ended = false;
    try {
      for (;;) {
        const next = await iterator.next();
        if (next.done) break;
        yield next.value;
      }
      ended = true;
    } catch (error) {
      failure = error;
      ended = true;
      throw error;
    } finally {
      finished = true;
      // fetch stopped reading early (the connection broke): close the source, or its producer waits on it.
      if (!ended) void Promise.resolve(iterator.return?.()).catch(() => undefined);
    }
  }
  return {
    body: body(),
    error: () => failure,
    close() {
      if (!finished) void Promise.resolve(iterator.return?.()).catch(() => undefined);
    },
  };
}
