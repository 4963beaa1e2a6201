import { request as httpRequest, type IncomingMessage } from 'node:http';

/**
 * A minimal client for the Docker Engine API on a unix socket (Docker, or Podman's compatible
 * service). Only what the Docker executor needs; no docker CLI is involved.
 */
export interface DockerEngine {
  call<T = any>(method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<{ status: number; body: T }>;
  /** A request whose response body is streamed back to the caller (pulls, exec output, archives). */
  stream(method: string, path: string, body?: unknown, headers?: Record<string, string>, raw?: Buffer): Promise<IncomingMessage>;
}

export class DockerEngineError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** API version in every path; 1.41 is spoken by Docker 20.10+ and by Podman's compatibility layer. */
const VERSION = '/v1.41';

export function createDockerEngine(socketPath: string): DockerEngine {
  const stream: DockerEngine['stream'] = (method, path, body, headers = {}, raw) =>
    new Promise((resolve, reject) => {
      const payload = raw ?? (body === undefined ? undefined : Buffer.from(JSON.stringify(body)));
      const req = httpRequest(
        {
          socketPath,
          method,
          path: VERSION + path,
          headers: {
            Host: 'docker',
            ...(payload ? { 'Content-Type': raw ? 'application/x-tar' : 'application/json', 'Content-Length': payload.length } : {}),
            ...headers,
          },
        },
        resolve,
      );
      req.on('error', reject);
      req.end(payload);
    });
  return {
    stream,
    async call(method, path, body, headers) {
      const res = await stream(method, path, body, headers);
      const chunks: Buffer[] = [];
      for await (const chunk of res) chunks.push(chunk as Buffer);
      const text = Buffer.concat(chunks).toString('utf8');
      let parsed: any = text;
      try {
        parsed = text ? JSON.parse(text) : undefined;
      } catch {
        // Not JSON (e.g. a pull's progress lines): keep the text.
      }
      const status = res.statusCode ?? 0;
      if (status >= 400) throw new DockerEngineError(status, `${method} ${path} → ${status}: ${parsed?.message ?? text}`);
      return { status, body: parsed };
    },
  };
}

/**
 * Splits the multiplexed stream of a non-TTY exec or attach: frames of an 8-byte header (stream
 * type, three zero bytes, big-endian length) and the payload. Payloads are handed on in order.
 */
export function demultiplex(onPayload: (data: Buffer) => void): { push(chunk: Buffer): void } {
  let buffered: Buffer = Buffer.alloc(0);
  return {
    push(chunk) {
      buffered = buffered.length ? Buffer.concat([buffered, chunk]) : chunk;
      while (buffered.length >= 8) {
        const size = buffered.readUInt32BE(4);
        if (buffered.length < 8 + size) break;
        onPayload(buffered.subarray(8, 8 + size));
        buffered = buffered.subarray(8 + size);
      }
    },
  };
}
