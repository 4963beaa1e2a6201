import { AuthenticationError, PermissionError, StaleLeaseError } from '../domain/errors';

/**
 * One agent's calls about its task under /api/v2/agent/task/<id>, with the task token. A 409 means
 * the lease is gone (StaleLeaseError); 401/403 mean the token is not good for this task
 * (AuthenticationError, PermissionError; `asLost` makes them a lost lease). Other failures throw
 * plain errors with the server's message.
 */
export interface TaskApi {
  readonly taskId: string;
  /** Sends one request; answers the response when it succeeded. */
  request(method: string, rest: string, init?: TaskRequest): Promise<Response>;
  /** `request`, then the JSON body of the answer (undefined when empty). */
  call(method: string, rest: string, init?: TaskRequest): Promise<any>;
}

export interface TaskRequest {
  readonly query?: Readonly<Record<string, string>>;
  readonly json?: unknown;
  readonly bytes?: Uint8Array;
  /** Headers besides the token and the content type (which follows from the body). */
  readonly headers?: Readonly<Record<string, string>>;
  /** Sent as it is produced, never held whole in memory. */
  readonly stream?: AsyncIterable<Uint8Array>;
  /** Abandons the request (a long-poll the agent no longer needs). */
  readonly signal?: AbortSignal;
}

export function createTaskApi(options: { url: string; token: string; taskId?: string }): TaskApi {
  const base = options.url.replace(/\/+$/, '');
  const taskId = options.taskId ?? options.token.split('.')[1];

  async function request(method: string, rest: string, init: TaskRequest = {}): Promise<Response> {
    const url = new URL(`${base}/api/v2/agent/task/${encodeURIComponent(taskId)}${rest}`);
    for (const [name, value] of Object.entries(init.query ?? {})) url.searchParams.set(name, value);
    const contentType = init.json !== undefined ? 'application/json' : init.bytes || init.stream ? 'application/octet-stream' : undefined;
    const source = init.stream ? tracked(init.stream) : undefined;
    let res: Response;
    try {
      res = await fetch(url, {
        method,
        headers: { ...init.headers, Authorization: `Bearer ${options.token}`, ...(contentType ? { 'Content-Type': contentType } : {}) },
        body: source ? (source.body as unknown as RequestInit['body']) : init.bytes ?? (init.json === undefined ? undefined : JSON.stringify(init.json)),
        ...(source ? { duplex: 'half' } : {}),
        ...(init.signal ? { signal: init.signal } : {}),
      } as RequestInit);
    } catch (error) {
      // A body that failed to produce (a broken archive) is the reason, not "fetch failed".
      throw source?.error() ?? error;
    } finally {
      // The server may answer before reading the whole body (a refusal): stop producing it.
      source?.close();
    }
    if (res.ok) return res;
    const text = await res.text().catch(() => '');
    const message = safeJson(text)?.message ?? text;
    if (res.status === 409) throw new StaleLeaseError(taskId, 'remote');
    if (res.status === 401) throw new AuthenticationError(message || 'task token refused');
    if (res.status === 403) throw new PermissionError(message || 'task token refused');
    throw new Error(`${method} ${url.pathname} → ${res.status}: ${message}`);
  }

  return {
    taskId,
    request,
    async call(method, rest, init) {
      const text = await (await request(method, rest, init)).text();
      return text ? safeJson(text) : undefined;
    },
  };
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
    try {
      for (;;) {
        const next = await iterator.next();
        if (next.done) break;
        yield next.value;
      }
    } catch (error) {
      failure = error;
      throw error;
    } finally {
      finished = true;
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

function safeJson(text: string): any {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
