import { AGENT_API_VERSION, AGENT_API_VERSION_HEADER, agentApiVersionOf } from '../domain/agent-api-version';
import { readFileSync } from 'node:fs';
import type { Server, IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import fastifyCookie from '@fastify/cookie';
import fastifyRateLimit from '@fastify/rate-limit';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import Ajv from 'ajv';
import addFormats from 'ajv-formats';
import FindMyWay, { type HTTPMethod } from 'find-my-way';
import secureJson from 'secure-json-parse';
import { AuthenticationError, InputError, PermissionError, RateLimitError, TooLargeError } from '../domain/errors';
import type { Principal } from '../domain/principal';
import type { Lease } from '../dispatcher/dispatcher';
import type { Logger } from '../logger';
import type { Metrics } from '../metrics/metrics';
import { failureOf } from './http-errors';

/**
 * The HTTP boundary of every Gyre listener, on fastify. What it guarantees, whatever the route:
 *
 * - credentials are read and checked before the body is read (route option `config.auth`:
 *   `user` by default, `task`, `runner` or `public`), and a route's own check comes after;
 * - every request is rate limited per credential, or per address when it has none (or a bad one),
 *   answered 429 with `Retry-After`;
 * - input is validated against the route's schema before its handler runs (a 400 names the field);
 * - bodies are bounded per route (`bodyLimit`) from Content-Length and while they stream (413);
 * - headers and bodies that arrive too slowly are cut off (timeouts);
 * - every failure, a handler's or the framework's, is answered `{ message }` with one status
 *   mapping (`http-errors.ts`); a 500 never says more than that, and is logged.
 */

/** Who may call a route. */
export type RouteAuth =
  /** An API token (Circle-Token, basic auth, Bearer, or the UI's cookie): `request.principal`. */
  | 'user'
  /** A task token for the task in the path (`:id`): `request.lease`. */
  | 'task'
  /** A runner's resource-class token: `request.runnerClass`. */
  | 'runner'
  /** Anyone; the route checks what it needs itself (a signature, a continuation key). */
  | 'public';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Who may call the route. @default 'user' */
    auth?: RouteAuth;
  }
  interface FastifyRequest {
    /** The caller on `user` routes. */
    principal?: Principal;
    /** The caller's lease on `task` routes. */
    lease?: Lease;
    /** The resource class of the caller's runner token on `runner` routes. */
    runnerClass?: string;
  }
}

export type GyreApp = FastifyInstance<Server, IncomingMessage, ServerResponse, FastifyBaseLogger, TypeBoxTypeProvider>;

/** Requests per minute; 0 turns that limit off. */
export interface RateLimits {
  /** Per address, for requests with no credentials or bad ones. */
  readonly anonymous: number;
  /** Per API token or runner token. */
  readonly token: number;
  /** Per task token (agents send output, heartbeats and files). */
  readonly agent: number;
}

export interface HttpLimits {
  /** Largest JSON body a route takes unless it says otherwise. */
  readonly bodyBytes: number;
  /** Time allowed for the request line and headers to arrive. */
  readonly headersTimeoutMs: number;
  /** Time allowed for a whole request (headers and body) to arrive; uploads included. */
  readonly requestTimeoutMs: number;
  /** A connection with nothing sent either way for this long is closed. */
  readonly idleTimeoutMs: number;
  readonly rate: RateLimits;
}

export const DEFAULT_HTTP_LIMITS: HttpLimits = {
  bodyBytes: 1024 * 1024,
  headersTimeoutMs: 20_000,
  requestTimeoutMs: 600_000,
  idleTimeoutMs: 120_000,
  rate: { anonymous: 600, token: 6000, agent: 60_000 },
};

export interface Credentials {
  /** The user an API token belongs to. */
  user(token: string): Promise<Principal | undefined>;
  /** The lease a task token stands for; throws AuthenticationError when it is not a valid token. */
  task(token: string): Lease;
  /** The resource class a runner token belongs to. */
  runner(token: string): Promise<string | undefined>;
}

export interface HttpAppDeps {
  readonly log: Logger;
  /** How callers' credentials are checked; without it, only `public` routes can be called. */
  readonly credentials?: Credentials;
  readonly limits?: HttpLimits;
  /** PEM files of the listener's certificate (chain) and key; plain HTTP without. */
  readonly tls?: { readonly certFile: string; readonly keyFile: string };
  /** Trust X-Forwarded-For from these proxies (addresses or CIDRs) for the client's address. */
  readonly trustProxy?: string[];
  /** Where request durations are counted (by route pattern, method and status). */
  readonly metrics?: Metrics;
}

/** Reads an API or task token: `Circle-Token` header, HTTP basic (token as user), Bearer, or the UI's cookie. */
export function tokenOf(request: FastifyRequest): string | undefined {
  const header = request.headers['circle-token'];
  if (typeof header === 'string' && header) return header;
  const auth = request.headers.authorization;
  if (typeof auth === 'string') {
    if (/^basic /i.test(auth)) {
      const decoded = Buffer.from(auth.slice(6).trim(), 'base64').toString('utf8');
      const user = decoded.includes(':') ? decoded.slice(0, decoded.indexOf(':')) : decoded;
      if (user) return user;
    }
    if (/^bearer /i.test(auth)) return auth.slice(7).trim() || undefined;
  }
  const cookie = request.cookies?.['gyre-token'];
  return cookie || undefined;
}

/** The caller of a `user` route (the hook has made sure there is one). */
export function principalOf(request: FastifyRequest): Principal {
  if (!request.principal) throw new AuthenticationError();
  return request.principal;
}

/** The lease of a `task` route's caller. */
export function leaseOf(request: FastifyRequest): Lease {
  if (!request.lease) throw new AuthenticationError('Send the task token as a Bearer token.');
  return request.lease;
}

/** Where in a parsed input a string holds a NUL (`body.parameters.x`), if anywhere. */
function nulIn(value: unknown, path: string, depth = 0): string | undefined {
  if (typeof value === 'string') return value.includes('\0') ? path : undefined;
  if (value === null || typeof value !== 'object' || depth > 64) return undefined;
  for (const [key, v] of Object.entries(value)) {
    if (key.includes('\0')) return `${path} key`;
    const found = nulIn(v, `${path}.${key.slice(0, 50)}`, depth + 1);
    if (found) return found;
  }
  return undefined;
}

/** Answers to requests Node's HTTP parser refused, by its error code. */
const CLIENT_ERRORS: Record<string, [string, string]> = {
  HPE_HEADER_OVERFLOW: ['431 Request Header Fields Too Large', 'The request headers are too large.'],
  ERR_HTTP_REQUEST_TIMEOUT: ['408 Request Timeout', 'The request took too long to arrive.'],
  HPE_INVALID_METHOD: ['400 Bad Request', 'The request method is not valid HTTP.'],
  HPE_INVALID_URL: ['400 Bad Request', 'The request target is not a valid URL.'],
};

/** What the identify hook found, before the rate limit and the route's rule are applied. */
interface Identified {
  readonly rateKey: string;
  readonly rateMax: number;
  readonly failure?: Error;
}
const IDENTIFIED = Symbol('gyre.identified');

/**
 * Makes the app every listener uses. Routes are added by the caller, then `listen`.
 * The framework's own logger is off: failures are logged once, here, with Gyre's logger.
 */
export async function createHttpApp(deps: HttpAppDeps): Promise<GyreApp> {
  const limits = deps.limits ?? DEFAULT_HTTP_LIMITS;
  const log = deps.log;
  const app = Fastify({
    logger: false,
    ...(deps.tls ? { https: { cert: readFileSync(deps.tls.certFile), key: readFileSync(deps.tls.keyFile) } } : {}),
    bodyLimit: limits.bodyBytes,
    requestTimeout: limits.requestTimeoutMs,
    connectionTimeout: limits.idleTimeoutMs,
    keepAliveTimeout: 5000,
    forceCloseConnections: true,
    return503OnClosing: true,
    onProtoPoisoning: 'error',
    onConstructorPoisoning: 'error',
    trustProxy: deps.trustProxy?.length ? deps.trustProxy : false,
    routerOptions: { ignoreTrailingSlash: true, maxParamLength: 2048 },
    // A path that is not valid URL encoding never reaches a route: answered here, in Gyre's words.
    frameworkErrors: (error, _request, reply) => {
      const failure = failureOf(error);
      (reply as FastifyReply).code(failure.status).header('Cache-Control', 'no-store').send({ message: failure.message });
    },
    // Gyre's own error bodies, also for a request the HTTP parser could not read at all.
    clientErrorHandler: (error, socket) => {
      if (!socket.writable) {
        socket.destroy();
        return;
      }
      const [status, message] = CLIENT_ERRORS[(error as NodeJS.ErrnoException).code ?? ''] ?? ['400 Bad Request', 'The request could not be read as HTTP.'];
      const body = JSON.stringify({ message });
      socket.end(`HTTP/1.1 ${status}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
    },
  }) as unknown as GyreApp;
  app.server.headersTimeout = limits.headersTimeoutMs;
  // CONNECT never reaches routes (Node hands it to a 'connect' listener, or drops the connection
  // without a word when there is none): answer it like any method no route takes.
  app.server.on('connect', (_req: IncomingMessage, socket: import('node:net').Socket) => {
    const body = JSON.stringify({ message: 'CONNECT is not allowed here.' });
    socket.on('error', () => undefined);
    socket.end(`HTTP/1.1 405 Method Not Allowed\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
  });

  // Two validators: query strings, path parameters and headers are text, so numbers and booleans
  // there are coerced; a JSON body is taken as sent (a string is not a number).
  const ajvText = new Ajv({ coerceTypes: 'array', useDefaults: true, allErrors: false, strict: false });
  const ajvBody = new Ajv({ coerceTypes: false, useDefaults: true, allErrors: false, strict: false });
  addFormats(ajvText);
  addFormats(ajvBody);
  app.setValidatorCompiler(({ schema, httpPart }) => (httpPart === 'body' ? ajvBody : ajvText).compile(schema as object) as never);

  // A JSON body may be empty (`{}`); any content type is read as JSON, as the API always has
  // (clients such as `curl -d` send form encoding). Routes that take raw bytes replace this.
  // `__proto__` and `constructor.prototype` are refused (secure-json-parse), not silently dropped.
  const parseJson = (_request: FastifyRequest, body: string | Buffer, done: (err: Error | null, body?: unknown) => void) => {
    const text = String(body);
    if (text.trim() === '') return done(null, {});
    try {
      done(null, secureJson.parse(text, undefined, { protoAction: 'error', constructorAction: 'error' }));
    } catch (error) {
      if (/prototype/.test((error as Error).message)) done(new InputError('The request body sets __proto__ or constructor.prototype, which is not allowed.', 'body'));
      else done(new InputError('The request body is not valid JSON.', 'body'));
    }
  };
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('application/json', { parseAs: 'string' }, parseJson);
  app.addContentTypeParser('*', { parseAs: 'string' }, parseJson);

  await app.register(fastifyCookie);
  await app.register(fastifyRateLimit, { global: false });
  const limiter = app.createRateLimit({
    keyGenerator: (request) => (request as unknown as Record<symbol, Identified>)[IDENTIFIED]?.rateKey ?? `addr:${request.ip}`,
    max: (request) => (request as unknown as Record<symbol, Identified>)[IDENTIFIED]?.rateMax ?? limits.rate.anonymous,
    timeWindow: 60_000,
  });

  /** Who is calling, by the route's rule; a bad credential is remembered, not thrown, so it is rate limited first. */
  const identify = async (request: FastifyRequest): Promise<Identified> => {
    const auth = request.routeOptions.config?.auth ?? 'user';
    const anonymous = (failure?: Error): Identified => ({ rateKey: `addr:${request.ip}`, rateMax: limits.rate.anonymous, failure });
    if (auth === 'public') return anonymous();
    const credentials = deps.credentials;
    if (!credentials) return anonymous(new AuthenticationError('This listener serves no routes that take credentials.'));
    const token = tokenOf(request);
    if (auth === 'user') {
      if (!token) return anonymous(new AuthenticationError('You must log in first: send your API token in the Circle-Token header.'));
      const principal = await credentials.user(token);
      if (!principal) return anonymous(new AuthenticationError('The API token is not valid.'));
      request.principal = principal;
      return { rateKey: `user:${principal.userId}`, rateMax: limits.rate.token };
    }
    if (auth === 'runner') {
      const resourceClass = token ? await credentials.runner(token) : undefined;
      if (!resourceClass) return anonymous(new AuthenticationError('The resource-class token is not valid.'));
      request.runnerClass = resourceClass;
      return { rateKey: `runner:${resourceClass}`, rateMax: limits.rate.token };
    }
    if (!token) return anonymous(new AuthenticationError('Send the task token as a Bearer token.'));
    let lease: Lease;
    try {
      lease = credentials.task(token);
    } catch (error) {
      return anonymous(error as Error);
    }
    const taskId = (request.params as Record<string, string> | undefined)?.id;
    if (lease.taskId !== taskId) return { rateKey: `task:${lease.taskId}`, rateMax: limits.rate.agent, failure: new PermissionError('This task token is for another task.') };
    request.lease = lease;
    return { rateKey: `task:${lease.taskId}`, rateMax: limits.rate.agent };
  };

  app.addHook('onRequest', async (request, reply) => {
    const identified = await identify(request);
    (request as unknown as Record<symbol, Identified>)[IDENTIFIED] = identified;
    if (identified.rateMax > 0) {
      const rate = await limiter(request);
      if (!rate.isAllowed && rate.isExceeded) {
        const seconds = Math.max(1, rate.ttlInSeconds);
        throw new RateLimitError(`Too many requests: the limit is ${rate.max} a minute; try again in ${seconds} s.`, seconds);
      }
    }
    if (identified.failure) throw identified.failure;
    // Agents and runners say which agent API they speak; the previous release's (no header) is served too.
    const auth = request.routeOptions.config?.auth;
    if (auth === 'task' || auth === 'runner') {
      // On the raw response, so answers streamed past the framework (downloads) carry it too.
      reply.raw.setHeader(AGENT_API_VERSION_HEADER, String(AGENT_API_VERSION));
      agentApiVersionOf(request.headers[AGENT_API_VERSION_HEADER.toLowerCase()]);
    }
  });

  // PostgreSQL cannot hold a NUL in text: one in any path segment, query value or JSON string is a
  // 400 naming where it was, here, rather than a query error later.
  app.addHook('preValidation', async (request) => {
    const where = nulIn(request.params, 'path') ?? nulIn(request.query, 'query') ?? (Buffer.isBuffer(request.body) ? undefined : nulIn(request.body, 'body'));
    if (where) throw new InputError(`${where} holds a NUL character, which is not allowed`, where);
  });

  if (deps.metrics) {
    const durations = deps.metrics.histogram('gyre_http_request_duration_seconds', 'Time from a request arriving to its answer sent, by route pattern, method and status.', [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60], ['route', 'method', 'status']);
    app.addHook('onResponse', async (request, reply) => {
      // The route's pattern, never the path: ids and slugs would make a series per request.
      durations.observe({ route: request.routeOptions.url ?? 'unmatched', method: request.method, status: String(reply.statusCode) }, reply.elapsedTime / 1000);
    });
  }

  app.addHook('onSend', async (_request, reply) => {
    reply.header('X-Content-Type-Options', 'nosniff');
    if (deps.tls) reply.header('Strict-Transport-Security', 'max-age=31536000');
  });

  app.setErrorHandler((error, request, reply) => {
    const failure = failureOf(error);
    if (failure.status >= 500 && failure.status !== 503) {
      log.error('request failed', { method: request.method, path: request.url.slice(0, 300), error: (error as Error).stack ?? String(error) });
    }
    if (reply.sent || reply.raw.headersSent) {
      reply.raw.destroy();
      return;
    }
    if (failure.retryAfter !== undefined) reply.header('Retry-After', String(failure.retryAfter));
    // A refused body is read on and dropped after the answer (bounded by the request timeout), so a
    // client still sending it sees the answer rather than a reset connection.
    if (failure.status === 408) reply.header('Connection', 'close');
    reply.code(failure.status).header('Cache-Control', 'no-store').send({ message: failure.message });
  });

  // An unknown path is a 404; a known path under another method is a 405 naming the allowed ones.
  // The framework's router is not public, so a second router holds the same patterns to ask.
  const shadow = FindMyWay({ ignoreTrailingSlash: true, maxParamLength: 2048 });
  app.addHook('onRoute', (route) => {
    for (const method of Array.isArray(route.method) ? route.method : [route.method]) {
      if (method === 'HEAD' || shadow.hasRoute(method as HTTPMethod, route.url)) continue;
      shadow.on(method as HTTPMethod, route.url, () => undefined);
    }
  });
  app.setNotFoundHandler((request, reply) => {
    const path = request.url.split('?')[0];
    const allowed = (['GET', 'POST', 'PUT', 'DELETE', 'PATCH'] as const).filter((m) => m !== request.method && shadow.find(m, path) !== null);
    if (allowed.length > 0) {
      reply.code(405).header('Allow', allowed.join(', ')).send({ message: `${request.method} is not allowed on ${path.slice(0, 200)} (allowed: ${allowed.join(', ')})` });
      return;
    }
    reply.code(404).send({ message: `route not found: ${request.method} ${path.slice(0, 200)}` });
  });

  return app;
}

export interface RunningHttpServer {
  readonly port: number;
  /** http://host:port or https://host:port as a client on this machine reaches it. */
  readonly url: string;
  close(): Promise<void>;
}

/** Listens; `close` ends every open connection (live log followers, long polls) too. */
export async function listen(app: GyreApp, port: number, host: string, tls: boolean): Promise<RunningHttpServer> {
  await app.listen({ port, host });
  const address = app.server.address() as AddressInfo;
  const shownHost = host === '0.0.0.0' || host === '::' ? 'localhost' : host.includes(':') ? `[${host}]` : host;
  return {
    port: address.port,
    url: `${tls ? 'https' : 'http'}://${shownHost}:${address.port}`,
    close: () => app.close(),
  };
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

/**
 * Streams a response the route writes itself (downloads, logs). A failure once the headers are out
 * cuts the connection, so the client sees a broken response rather than a short one that looks
 * whole; a client that hangs up stops the reading of `body`. Never rejects.
 */
export async function sendStream(reply: FastifyReply, body: AsyncIterable<Uint8Array>, headers: Record<string, string | number> = {}, status = 200): Promise<void> {
  reply.hijack();
  const res = reply.raw;
  res.writeHead(status, { 'Content-Type': 'application/octet-stream', 'Cache-Control': 'no-store', 'X-Content-Type-Options': 'nosniff', ...headers });
  try {
    for await (const chunk of body) {
      if (res.destroyed) break;
      if (!res.write(chunk)) await drained(res);
    }
    res.end();
  } catch {
    res.destroy();
  }
}

/** Reads a request body the route takes raw, refusing it (413) past `maxBytes`. */
export async function readRawBody(request: FastifyRequest, maxBytes: number, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of boundedBody(request, maxBytes, what)) {
    size += chunk.length;
    chunks.push(Buffer.from(chunk));
  }
  return Buffer.concat(chunks, size);
}

/**
 * A raw request body as it arrives, refused (TooLargeError, 413) as soon as Content-Length or the
 * bytes received pass `maxBytes`. A reader that stops early leaves the rest on the connection:
 * it is read and dropped, so the answer goes out and the connection stays good.
 */
export async function* boundedBody(request: FastifyRequest, maxBytes: number, what: string): AsyncIterable<Uint8Array> {
  const declared = Number(request.headers['content-length']);
  if (Number.isFinite(declared) && declared > maxBytes) {
    request.raw.resume();
    throw new TooLargeError(`${what} may be at most ${maxBytes} bytes (Content-Length says ${declared})`, 'body', maxBytes);
  }
  let ended = false;
  let size = 0;
  try {
    for await (const chunk of request.raw.iterator({ destroyOnReturn: false })) {
      size += (chunk as Buffer).length;
      if (size > maxBytes) throw new TooLargeError(`${what} may be at most ${maxBytes} bytes`, 'body', maxBytes);
      yield chunk as Buffer;
    }
    ended = true;
  } finally {
    if (!ended) request.raw.resume();
  }
}
