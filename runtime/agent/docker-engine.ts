import { request as httpRequest, type IncomingMessage } from 'node:http';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

/**
 * A minimal client for the Docker Engine API on a unix socket (Docker, or Podman's compatible
 * service). Only what the Docker executor needs; no docker CLI is involved.
 */
export interface DockerEngine {
  call<T = any>(method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<{ status: number; body: T }>;
  /**
   * A request whose response body is streamed back to the caller (pulls, exec output, archives).
   * `raw` is a tar sent as the request body: in memory, or streamed from `body` (`length` bytes).
   */
  stream(method: string, path: string, body?: unknown, headers?: Record<string, string>, raw?: Buffer | Upload): Promise<IncomingMessage>;
  /**
   * Attaches to a created container's stdin and holds it open: the connection stays for as long
   * as this process does (it never keeps the process alive). What is written to it is the
   * container's stdin; destroying it, or the process dying, closes that. With `onStdout`, the
   * container's stdout comes back on the same connection (a non-TTY container's frames, split):
   * `onStdout` gets its bytes in order, and `undefined` once the connection has closed. A promise
   * it returns holds the reading until it settles (the container's writes then wait); otherwise
   * the stdout is read as it comes.
   */
  attachStdin(container: string, onStdout?: (data: Buffer | undefined) => void | Promise<void>): Promise<AttachedStdin>;
}

/** A container's stdin, attached (DockerEngine.attachStdin). */
export interface AttachedStdin {
  write(data: string | Buffer): void;
  destroy(): void;
  /** Keeps this process alive while the connection is open (while something runs through it), or no longer. */
  ref(): void;
  unref(): void;
}

/** A request body streamed from a source of known length (the Engine wants a Content-Length). */
export interface Upload {
  readonly body: Readable;
  readonly length: number;
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
      const upload = raw && !Buffer.isBuffer(raw) ? raw : undefined;
      const payload = upload ? undefined : ((raw as Buffer | undefined) ?? (body === undefined ? undefined : Buffer.from(JSON.stringify(body))));
      const length = upload ? upload.length : payload?.length;
      const req = httpRequest(
        {
          socketPath,
          method,
          path: VERSION + path,
          headers: {
            Host: 'docker',
            ...(length !== undefined ? { 'Content-Type': raw ? 'application/x-tar' : 'application/json', 'Content-Length': length } : {}),
            ...headers,
          },
        },
        resolve,
      );
      req.on('error', reject);
      // An upload that fails (its source, or the engine closing early) fails the request; the
      // response may already have settled it, and then this is a no-op.
      if (upload) pipeline(upload.body, req).catch(reject);
      else req.end(payload);
    });
  return {
    stream,
    attachStdin(container, onStdout) {
      return new Promise((resolve, reject) => {
        const req = httpRequest({
          socketPath,
          method: 'POST',
          path: `${VERSION}/containers/${encodeURIComponent(container)}/attach?stream=1&stdin=1&stdout=${onStdout ? 1 : 0}&stderr=0`,
          headers: { Host: 'docker', Connection: 'Upgrade', Upgrade: 'tcp' },
        });
        req.on('upgrade', (_res, socket, head) => {
          socket.on('error', () => undefined);
          socket.unref();
          if (onStdout) {
            const waits: Promise<void>[] = [];
            const frames = demultiplex((data, stream) => {
              if (stream !== 1) return;
              const wait = onStdout(data);
              if (wait) waits.push(wait);
            });
            const take = (chunk: Buffer) => {
              frames.push(chunk);
              if (waits.length === 0) return;
              socket.pause();
              void Promise.allSettled(waits.splice(0)).then(() => socket.resume());
            };
            if (head.length > 0) take(head);
            socket.on('data', take);
            socket.once('close', () => onStdout(undefined));
          }
          resolve(socket);
        });
        req.on('response', (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => reject(new DockerEngineError(res.statusCode ?? 0, `attach to ${container} → ${res.statusCode}: ${Buffer.concat(chunks).toString('utf8')}`)));
        });
        req.on('error', reject);
        req.end();
      });
    },
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
 * type, three zero bytes, big-endian length) and the payload. Payloads are handed on in order,
 * with their stream (1 stdout, 2 stderr).
 */
export function demultiplex(onPayload: (data: Buffer, stream: number) => void): { push(chunk: Buffer): void } {
  let buffered: Buffer = Buffer.alloc(0);
  return {
    push(chunk) {
      buffered = buffered.length ? Buffer.concat([buffered, chunk]) : chunk;
      while (buffered.length >= 8) {
        const size = buffered.readUInt32BE(4);
        if (buffered.length < 8 + size) break;
        onPayload(buffered.subarray(8, 8 + size), buffered[0]);
        buffered = buffered.subarray(8 + size);
      }
    },
  };
}
