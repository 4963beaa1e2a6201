/**
 * The CLI's way to the server: every CLI command except `server` talks to a running Gyre over its
 * API, using GYRE_URL (default http://localhost:8080) and GYRE_TOKEN.
 */
export interface ApiClientOptions {
  readonly url: string;
  readonly token?: string;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export interface ApiClient {
  readonly baseUrl: string;
  request<T = unknown>(method: string, path: string, body?: unknown): Promise<T>;
  /** Opens a streaming GET (SSE) and returns the raw response. */
  stream(path: string): Promise<Response>;
}

export function createApiClient(options: ApiClientOptions): ApiClient {
  const baseUrl = options.url.replace(/\/+$/, '');
  const headers = (): Record<string, string> => ({
    ...(options.token ? { 'Circle-Token': options.token } : {}),
    Accept: 'application/json',
  });
  const send = async (method: string, path: string, body?: unknown): Promise<Response> => {
    try {
      return await fetch(`${baseUrl}${path}`, {
        method,
        headers: { ...headers(), ...(body === undefined ? {} : { 'Content-Type': 'application/json' }) },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (error) {
      throw new ApiError(0, `cannot reach Gyre at ${baseUrl} (${(error as Error).cause ?? (error as Error).message}); is the server running? Set GYRE_URL to its address.`);
    }
  };
  return {
    baseUrl,
    async request<T>(method: string, path: string, body?: unknown): Promise<T> {
      const res = await send(method, path, body);
      const text = await res.text();
      let parsed: unknown = undefined;
      try {
        parsed = text ? JSON.parse(text) : undefined;
      } catch {
        parsed = undefined;
      }
      if (!res.ok) {
        const message = (parsed as { message?: string } | undefined)?.message ?? (text || res.statusText);
        throw new ApiError(res.status, `${method} ${path} failed (${res.status}): ${message}`);
      }
      return parsed as T;
    },
    async stream(path: string): Promise<Response> {
      const res = await send('GET', path);
      if (!res.ok) {
        const text = await res.text();
        let message = text;
        try {
          message = JSON.parse(text).message ?? text;
        } catch {
          /* not JSON: keep the text */
        }
        throw new ApiError(res.status, `GET ${path} failed (${res.status}): ${message}`);
      }
      return res;
    },
  };
}
