import { createServer, type IncomingMessage, type OutgoingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  AuthenticationError,
  ConflictError,
  GyreError,
  InputError,
  NotFoundError,
  PermissionError,
  StaleLeaseError,
} from '../domain/errors';
import type { Logger } from '../logger';
import type { Principal, RequestContext, Router } from './router';

const MAX_BODY_BYTES = 32 * 1024 * 1024;

/** The one place domain errors become HTTP statuses and `{ "message": … }` bodies. */
export function statusOf(error: unknown): number {
  if (error instanceof InputError) return 400;
  if (error instanceof AuthenticationError) return 401;
  if (error instanceof PermissionError) return 403;
  if (error instanceof NotFoundError) return 404;
  if (error instanceof ConflictError) return 409;
  if (error instanceof StaleLeaseError) return 409;
  return 500;
}

export interface HttpServerDeps {
  readonly router: Router;
  readonly authenticate: (token: string) => Promise<Principal | undefined>;
  readonly log: Logger;
}

export interface RunningHttpServer {
  readonly server: Server;
  readonly port: number;
  close(): Promise<void>;
}

/** Reads the API token: `Circle-Token` header, HTTP basic (token as user), or the UI's cookie. */
export function tokenOf(req: IncomingMessage): string | undefined {
  const header = req.headers['circle-token'];
  if (typeof header === 'string' && header) return header;
  const auth = req.headers.authorization;
  if (auth?.startsWith('Basic ')) {
    const decoded = Buffer.from(auth.slice(6), 'base64').toString('utf8');
    const user = decoded.includes(':') ? decoded.slice(0, decoded.indexOf(':')) : decoded;
    if (user) return user;
  }
  if (auth?.startsWith('Bearer ')) return auth.slice(7);
  const cookie = req.headers.cookie;
  if (cookie) {
    for (const part of cookie.split(';')) {
      const [name, ...rest] = part.trim().split('=');
      if (name === 'gyre-token') return decodeURIComponent(rest.join('='));
    }
  }
  return undefined;
}

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        reject(new InputError(`request body is larger than ${MAX_BODY_BYTES / 1024 / 1024} MiB`));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(text), 'Cache-Control': 'no-store' });
  res.end(text);
}

/**
 * Writes a streamed response (200 unless `status` says otherwise). A failure once the headers are out cuts the connection, so the
 * client sees a broken response rather than a short one that looks whole; a client that hangs up
 * stops the reading of `body`.
 */
export async function sendStream(res: ServerResponse, body: AsyncIterable<Uint8Array>, headers: OutgoingHttpHeaders = {}, status = 200): Promise<undefined> {
  res.writeHead(status, { 'Content-Type': 'application/octet-stream', 'Cache-Control': 'no-store', ...headers });
  try {
    for await (const chunk of body) {
      if (res.destroyed) break;
      if (!res.write(chunk)) await drained(res);
    }
  } catch (error) {
    res.destroy();
    throw error;
  }
  res.end();
  return undefined;
}

/** Waits until a response can take more, or is closed. */
export function drained(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}

export async function startHttpServer(deps: HttpServerDeps, port: number, host: string): Promise<RunningHttpServer> {
  const { router, authenticate, log } = deps;
  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    try {
      const match = router.match(req.method ?? 'GET', url.pathname);
      if (match === undefined) throw new NotFoundError('route', `${req.method} ${url.pathname}`);
      if (match === 'method') {
        sendJson(res, 405, { message: `${req.method} is not allowed on ${url.pathname}` });
        return;
      }
      let principal: Principal | undefined;
      if (!match.options.public) {
        const token = tokenOf(req);
        if (!token) throw new AuthenticationError('You must log in first: send your API token in the Circle-Token header.');
        principal = await authenticate(token);
        if (!principal) throw new AuthenticationError('The API token is not valid.');
      }
      let bodyCache: unknown;
      const ctx: RequestContext = {
        req,
        res,
        params: match.params,
        query: url.searchParams,
        principal,
        async body<T>() {
          if (bodyCache !== undefined) return bodyCache as T;
          const raw = (await readBody(req)).toString('utf8');
          if (!raw.trim()) return (bodyCache = {}) as T;
          try {
            bodyCache = JSON.parse(raw);
          } catch (error) {
            throw new InputError(`request body is not valid JSON: ${(error as Error).message}`);
          }
          if (bodyCache === null || typeof bodyCache !== 'object' || Array.isArray(bodyCache)) {
            throw new InputError('request body must be a JSON object');
          }
          return bodyCache as T;
        },
      };
      const result = await match.handler(ctx);
      if (result === undefined) return;
      if ('json' in result) sendJson(res, result.status ?? 200, result.json);
      else {
        res.writeHead(result.status ?? 200, { 'Content-Type': result.contentType ?? 'text/plain; charset=utf-8', 'Cache-Control': 'no-store' });
        res.end(result.text);
      }
    } catch (error) {
      const status = statusOf(error);
      if (status === 500) log.error('request failed', { method: req.method, path: url.pathname, error: (error as Error).stack ?? String(error) });
      if (res.headersSent) {
        res.end();
        return;
      }
      const message = error instanceof GyreError ? error.message : 'Internal server error';
      sendJson(res, status, { message });
    }
  };
  const server = createServer((req, res) => {
    void handle(req, res);
  });
  server.keepAliveTimeout = 5000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const sockets = new Set<import('node:net').Socket>();
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  return {
    server,
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        // Live log followers keep connections open; end them so shutdown does not wait on them.
        for (const socket of sockets) socket.destroy();
      }),
  };
}
