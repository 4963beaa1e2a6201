import { AGENT_API_VERSION, AGENT_API_VERSION_HEADER, agentApiVersionOf } from '../domain/agent-api-version';
import { timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Server, IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import fastifyCookie from '@fastify/cookie';
import fastifyRateLimit from '@fastify/rate-limit';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import Ajv, { type ValidateFunction } from 'ajv';
import type { DataValidationCxt } from 'ajv/dist/types';
import addFormats from 'ajv-formats';
import FindMyWay, { type HTTPMethod } from 'find-my-way';
import secureJson from 'secure-json-parse';
import { AuthenticationError, InputError, NotFoundError, PermissionError, RateLimitError, TooLargeError } from '../domain/errors';
import { ID_TARGETS, PERMISSIONS, WHO_HOLDS, decide, idTargetScope, scopeOf, type AccessTarget, type IdTarget, type Permission, type Standing } from '../domain/permissions';
import type { Principal } from '../domain/principal';
import { actorOf, createRequestAudit, type AuditEvent, type RequestAudit } from '../audit/audit-log';
import type { Lease } from '../dispatcher/dispatcher';
import type { Logger } from '../logger';
import type { Metrics } from '../metrics/metrics';
import { failureOf } from './http-errors';

/**
 * The HTTP boundary of every Gyre listener, on fastify. What it guarantees, whatever the route:
 *
 * - credentials are read and checked before the body is read (route option `config.auth`:
 *   `user` by default, `task`, `runner` or `public`);
 * - a `user` route declares the permission it needs (`config.permission`), and one policy
 *   (`decide`, runtime/domain/permissions.ts) decides it, also before the body is read: a project
 *   or organisation the caller cannot see is a 404, one they can see but not act on a 403;
 * - a route that changes something declares its audit `action`: the service records the change in
 *   its transaction, and a refused or failed attempt is recorded here;
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
  /** An API token (Circle-Token, basic auth, Bearer) or the browser session's cookie: `request.principal`. */
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
    /**
     * What a `user` route needs (runtime/domain/permissions.ts). An organisation permission is about
     * the organisation in `:vcs/:org`; a project permission about the project in `:vcs/:org/:repo`,
     * or, with `of`, the project of the pipeline, workflow or job in `:id` (or the organisation or
     * project whose id `:id` is: `org-id`, `project-id`). A `user` route without
     * one answers only the instance admin (and the route-permission test fails naming it).
     */
    permission?: Permission;
    /** What `:id` names, for a project permission on a route without `:vcs/:org/:repo`. */
    of?: IdTarget;
    /**
     * The audit action of a route that changes something (`pipeline.trigger`): the route hands
     * `request.audit` to the service, which records the change in its transaction; refused and failed
     * attempts are recorded by the boundary. `false` for a route that is not a GET but changes nothing.
     */
    action?: string | false;
    /**
     * Also take the API token from the `circle-token` query parameter, as CircleCI's v1.1 API and
     * the clients written for it send it (runtime/api/v1-routes.ts). Logged paths redact it.
     */
    tokenInQuery?: boolean;
    /**
     * A write that changes nothing the API's caches hold (runtime/roles/api.ts): no token, user,
     * organisation, project's name or membership, and no existing pipeline. A trigger is one: the
     * pipeline it makes is new, and no cache keeps an answer about what does not exist yet. Every
     * other successful write clears them as its answer goes out.
     */
    keepsCaches?: true;
  }
  interface FastifyRequest {
    /** The caller on `user` routes. */
    principal?: Principal;
    /** The audit record of a request to a route with an `action`, for the service that makes the change. */
    audit?: RequestAudit;
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
  /** The user a browser session's cookie (SESSION_COOKIE) stands for, and the session's CSRF token. */
  session?(cookie: string): Promise<{ principal: Principal; csrf: string } | undefined>;
  /** The lease a task token stands for; throws AuthenticationError when it is not a valid token. */
  task(token: string): Lease;
  /** The resource class a runner token belongs to. */
  runner(token: string): Promise<string | undefined>;
}

/** Where a principal stands toward an organisation or project (the identity service's `standing`). */
export interface Access {
  standing(principal: Principal, target: AccessTarget): Promise<Standing>;
}

/** A route as registered, for the route-permission test and the docs. */
export interface RouteInfo {
  readonly method: string;
  readonly url: string;
  readonly auth: RouteAuth;
  readonly permission?: Permission;
  readonly of?: IdTarget;
  readonly action?: string | false;
}

export interface HttpAppDeps {
  readonly log: Logger;
  /** How callers' credentials are checked; without it, only `public` routes can be called. */
  readonly credentials?: Credentials;
  /** Roles toward organisations and projects; without it, only the instance admin passes their permissions. */
  readonly access?: Access;
  /** Where refused and failed attempts at audited routes are recorded (and a change a service forgot to record). */
  readonly auditLog?: { append(event: AuditEvent): Promise<void> };
  readonly limits?: HttpLimits;
  /** PEM files of the listener's certificate (chain) and key; plain HTTP without. */
  readonly tls?: { readonly certFile: string; readonly keyFile: string };
  /** Trust X-Forwarded-For from these proxies (addresses or CIDRs) for the client's address. */
  readonly trustProxy?: string[];
  /** Where request durations are counted (by route pattern, method and status). */
  readonly metrics?: Metrics;
}

/** The browser session's cookie (HttpOnly; set by sign-in, runtime/identity/sign-in/routes.ts). */
export const SESSION_COOKIE = 'gyre_session';
/** The header a write made with the session cookie must carry: the session's CSRF token. */
export const CSRF_HEADER = 'x-gyre-csrf';
const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/**
 * Reads an API or task token: `Circle-Token` header, HTTP basic (token as user), Bearer, a bare
 * `Authorization: <token>` (what the circleci CLI sends to `/graphql-unstable`), or, on routes
 * that take it (`config.tokenInQuery`), the `circle-token` query parameter.
 */
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
    // A scheme with nothing after it (`Bearer `, trimmed by Node to `Bearer`) is no token; any
    // other single word is a bare token, as the circleci CLI sends it.
    if (/^[\x21-\x7e]+$/.test(auth) && !/^(bearer|basic)$/i.test(auth)) return auth;
  }
  if (request.routeOptions.config?.tokenInQuery) {
    const query = (request.query ?? {}) as Record<string, unknown>;
    const value = query['circle-token'];
    if (typeof value === 'string' && value) return value;
  }
  return undefined;
}

/** `/api/v2/project/gh%2Facme%2Fwidgets/…` (and `/insights/…`) as `/api/v2/project/gh/acme/widgets/…`; any other URL as it is. */
export function rewriteEncodedSlug(url: string): string {
  return url.replace(/^(\/api\/v2\/(?:project|insights)\/)([^/?#%]+)%2[Ff]([^/?#%]+)%2[Ff]([^/?#]+)/, '$1$2/$3/$4');
}

/** A request path as it may be logged: a `circle-token` query parameter's value redacted. */
export function loggablePath(url: string): string {
  return url.replace(/([?&]circle-token=)[^&#]*/gi, '$1[redacted]');
}

/** The caller of a `user` route (the hook has made sure there is one). */
export function principalOf(request: FastifyRequest): Principal {
  if (!request.principal) throw new AuthenticationError();
  return request.principal;
}

/** The audit record of a request to a route with an `action` (undefined for other routes). */
export function auditOf(request: FastifyRequest): RequestAudit | undefined {
  return request.audit;
}

const ROUTE_TABLES = new WeakMap<object, RouteInfo[]>();

/** Every route registered on an app, in order (HEAD routes fastify adds for GETs left out). */
export function routesOf(app: GyreApp): readonly RouteInfo[] {
  return ROUTE_TABLES.get(app) ?? [];
}

/** The path parameters of a route pattern (`/api/v2/pipeline/:id` → `id`). */
function paramsOf(url: string): string[] {
  return [...url.matchAll(/:([A-Za-z0-9_]+)/g)].map((m) => m[1]);
}

/** What a request's permission is about, from its path parameters. */
function targetOf(permission: Permission, of: IdTarget | undefined, params: Record<string, string>): AccessTarget {
  for (const [name, value] of Object.entries(params)) {
    // The policy reads the database before the path is validated: a NUL is refused as validation would refuse it.
    if (typeof value === 'string' && value.includes('\0')) throw new InputError(`path.${name} holds a NUL character, which is not allowed`, `path.${name}`);
  }
  if (of) return { kind: of, id: params.id };
  const vcs = params.vcs;
  if (vcs !== 'gh' && vcs !== 'github') {
    const what = scopeOf(permission) === 'org' ? `organization slug '${vcs}/${params.org}' must look like gh/<org>` : `project slug '${vcs}/${params.org}/${params.repo}' must look like gh/<org>/<repo>`;
    throw new InputError(what, 'vcs');
  }
  if (scopeOf(permission) === 'org') return { kind: 'org', name: params.org };
  return { kind: 'project', slug: `gh/${params.org}/${params.repo}` };
}

/** What a target is called in a 404, the same words as for one that does not exist. */
function notFound(target: AccessTarget): NotFoundError {
  if (target.kind === 'project') return new NotFoundError('project', target.slug);
  if (target.kind === 'org') return new NotFoundError('organization', `gh/${target.name}`);
  if (target.kind === 'org-id' || target.kind === 'project-id') return new NotFoundError(target.kind === 'org-id' ? 'organization' : 'project', target.id);
  return new NotFoundError(target.kind, target.id);
}

function describeTarget(target: AccessTarget | undefined, standing: Standing | undefined): string {
  if (!target) return 'this instance';
  if (target.kind === 'project') return target.slug;
  if (target.kind === 'org') return `gh/${target.name}`;
  return `${target.kind} ${target.id}${standing?.org ? ` (of organization gh/${standing.org})` : ''}`;
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
/** Set when the policy refused a request (403, or 404 for what the caller may not see). */
const DENIED = Symbol('gyre.denied');

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
    // CircleCI's clients send a project slug as one encoded segment (`project/gh%2Facme%2Fwidgets`,
    // as the API v2 spec's examples do): it is routed as the three segments it stands for.
    rewriteUrl: (req) => rewriteEncodedSlug(req.url ?? '/'),
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
  // Each route's validator is compiled by Ajv the first time a request needs it, not when the
  // route is added: a process compiled all of them at start (about 0.4 CPU-seconds of a server's
  // start, where most routes are never asked in a pod's life). The function Fastify holds hands
  // Ajv its context (the parent a coerced root value is written to) and Ajv's errors.
  app.setValidatorCompiler(({ schema, httpPart }) => {
    let compiled: ValidateFunction | undefined;
    const validate = (data: unknown, context?: DataValidationCxt): boolean => {
      compiled ??= (httpPart === 'body' ? ajvBody : ajvText).compile(schema as object);
      const valid = compiled(data, context) as boolean;
      validate.errors = compiled.errors;
      return valid;
    };
    validate.errors = undefined as ValidateFunction['errors'];
    // What Fastify looks for to pass the context on (it marks a function compiled by Ajv).
    validate.schemaEnv = true;
    return validate as never;
  });
  // Response schemas document a route (GET /api/v2/openapi.json); they never reshape its answer (a
  // schema-driven serializer would drop fields a schema leaves out, and coerce the rest).
  app.setSerializerCompiler(() => (data) => JSON.stringify(data));

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
      const cookie = request.cookies?.[SESSION_COOKIE];
      if (!token && cookie && credentials.session) {
        const session = await credentials.session(cookie);
        if (!session) return anonymous(new AuthenticationError('Your session has ended; sign in again.'));
        const rate = { rateKey: `session:${session.principal.token?.id ?? session.principal.userId}`, rateMax: limits.rate.token };
        // A write made with the cookie must prove it comes from Gyre's own pages: the session's
        // CSRF token, which another site can neither read nor guess, in a header it cannot set.
        if (!SAFE_METHODS.has(request.method)) {
          const sent = request.headers[CSRF_HEADER];
          const given = Buffer.from(typeof sent === 'string' ? sent : '');
          const expected = Buffer.from(session.csrf);
          if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
            return { ...rate, failure: new PermissionError(`A change made with the session cookie needs the session's CSRF token in the X-Gyre-CSRF header (GET /auth/session gives it); API clients send a token instead.`) };
          }
        }
        request.principal = session.principal;
        return rate;
      }
      if (!token) return anonymous(new AuthenticationError('You must log in first: send your API token in the Circle-Token header.'));
      const principal = await credentials.user(token);
      if (!principal) return anonymous(new AuthenticationError('The API token is not valid.'));
      request.principal = principal;
      return { rateKey: `token:${principal.token?.id ?? principal.userId}`, rateMax: limits.rate.token };
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

  /**
   * The one policy decision of a `user` request: the route's permission, the caller, and (for an
   * organisation or project permission) where the caller stands toward the one in the path.
   */
  const authorize = async (request: FastifyRequest): Promise<void> => {
    const principal = principalOf(request);
    const config = request.routeOptions.config ?? {};
    const permission = config.permission;
    const route = `${request.method} ${request.routeOptions.url}`;
    const target = permission && scopeOf(permission) !== 'instance' ? targetOf(permission, config.of, (request.params ?? {}) as Record<string, string>) : undefined;
    let standing: Standing | undefined;
    if (target) standing = deps.access ? await deps.access.standing(principal, target) : { exists: false };
    if (config.action) {
      request.audit = createRequestAudit({
        actor: actorOf(principal),
        action: config.action,
        address: request.ip,
        org: standing?.org ?? (target?.kind === 'org' ? target.name : target?.kind === 'project' ? target.slug.split('/')[1] : undefined),
        project: target?.kind === 'project' ? target.slug : undefined,
      });
    }
    const decision = permission ? decide(principal, permission, standing) : principal.isAdmin ? 'allow' : 'forbidden';
    if (decision === 'allow') return;
    (request as unknown as Record<symbol, boolean>)[DENIED] = true;
    if (decision === 'not-found' && target) throw notFound(target);
    if (!permission) throw new PermissionError(`${route} declares no permission, so only an instance admin may call it`);
    throw new PermissionError(`Your token may not do this on ${describeTarget(target, standing)}: ${route} needs ${permission}, held by ${WHO_HOLDS[permission]}.`);
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
    if ((request.routeOptions.config?.auth ?? 'user') === 'user' && request.principal) await authorize(request);
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

  // The attempts a service did not record: refused (the policy's 403 and 404, a handler's 403) and
  // failed ones (400, 404, 409, 500, …). Recorded before the answer leaves, so a client that sees
  // the answer finds the record. 401 and 429 are not recorded: there is no actor, or a flood.
  if (deps.auditLog) {
    const auditLog = deps.auditLog;
    app.addHook('onSend', async (request, reply, payload) => {
      const audit = request.audit;
      const status = reply.statusCode;
      // A failure is recorded even when the service recorded the change: its transaction rolled back.
      if (!audit || (status < 400 && audit.recorded) || status === 401 || status === 429) return payload;
      const denied = (request as unknown as Record<symbol, boolean>)[DENIED] === true || status === 403;
      const result = status < 400 ? 'success' : denied ? 'denied' : 'failed';
      if (result === 'success') log.warn('a change was not recorded in its transaction; recording it after the answer', { route: `${request.method} ${request.routeOptions.url}`, action: audit.action });
      const message = status >= 400 ? messageOf(payload) : undefined;
      await auditLog
        .append({
          actor: audit.actor,
          action: audit.action,
          address: audit.address,
          org: audit.org,
          project: audit.project,
          result,
          status,
          target: request.params && (request.params as Record<string, string>).id ? { type: request.routeOptions.config?.of ?? 'id', id: String((request.params as Record<string, string>).id).slice(0, 200) } : undefined,
          detail: { route: `${request.method} ${request.routeOptions.url}`, ...(message ? { message } : {}), ...(result === 'success' ? { recorded_after_answer: true } : {}) },
        })
        .catch((error) => log.error('audit record failed', { action: audit.action, error: (error as Error).message }));
      return payload;
    });
  }

  app.setErrorHandler((error, request, reply) => {
    // A client that closed the connection before its body was complete (Node's `aborted`, from the
    // request stream): nothing failed here, and no answer can reach it. Only that error: a body
    // the handler itself stopped reading (a refusal) keeps its own answer.
    const e = error as { code?: unknown; message?: unknown };
    const cutOff = e.code === 'ECONNRESET' && e.message === 'aborted';
    const failure = cutOff ? { status: 400, message: 'The request body was cut off: the client closed the connection.' } : failureOf(error);
    if (failure.status >= 500 && failure.status !== 503) {
      log.error('request failed', { method: request.method, path: loggablePath(request.url).slice(0, 300), error: (error as Error).stack ?? String(error) });
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

  // Every route is in the route table; a permission that cannot find what it is about is a mistake
  // in the route, refused as it is registered.
  const table: RouteInfo[] = [];
  ROUTE_TABLES.set(app, table);
  app.addHook('onRoute', (route) => {
    const methods = (Array.isArray(route.method) ? route.method : [route.method]).filter((m) => m !== 'HEAD');
    const config = (route.config ?? {}) as { auth?: RouteAuth; permission?: Permission; of?: IdTarget; action?: string | false };
    const auth = config.auth ?? 'user';
    const where = `${methods.join(',')} ${route.url}`;
    if (config.permission !== undefined) {
      if (!(PERMISSIONS as readonly string[]).includes(config.permission)) throw new Error(`route ${where}: permission '${config.permission}' is not one of ${PERMISSIONS.join(', ')}`);
      const params = paramsOf(route.url);
      const scope = scopeOf(config.permission);
      if (config.of !== undefined && (!(ID_TARGETS as readonly string[]).includes(config.of) || scope !== idTargetScope(config.of) || !params.includes('id'))) {
        throw new Error(`route ${where}: 'of: ${config.of}' needs an :id parameter and a permission about what it names (of: ${ID_TARGETS.join(', ')}; org-id with an org permission, the others with a project permission)`);
      }
      if (scope === 'project' && !config.of && !['vcs', 'org', 'repo'].every((p) => params.includes(p))) throw new Error(`route ${where}: ${config.permission} needs :vcs/:org/:repo in the path, or 'of' naming what :id is`);
      if (scope === 'org' && !config.of && !['vcs', 'org'].every((p) => params.includes(p))) throw new Error(`route ${where}: ${config.permission} needs :vcs/:org in the path, or 'of: org-id' naming what :id is`);
    }
    for (const method of methods) table.push({ method, url: route.url, auth, permission: config.permission, of: config.of, action: config.action });
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

/** An error answer's message, to keep with the record of a refused or failed attempt. */
function messageOf(payload: unknown): string | undefined {
  try {
    const text = typeof payload === 'string' ? payload : Buffer.isBuffer(payload) ? payload.toString('utf8') : undefined;
    const message = text ? (JSON.parse(text) as { message?: unknown }).message : undefined;
    return typeof message === 'string' ? message.slice(0, 500) : undefined;
  } catch {
    return undefined;
  }
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

/**
 * Reads a request body the route takes raw, refusing it (413) past `maxBytes`. `shared`: into
 * memory a worker thread reads without a copy (a SharedArrayBuffer), when the body has a length.
 */
export async function readRawBody(request: FastifyRequest, maxBytes: number, what: string, { shared = false } = {}): Promise<Buffer> {
  // The pieces arrive as views of the connection's read buffers and are copied once: into one
  // buffer of the declared length when there is one. (An agent's output chunk comes every few
  // milliseconds of a loud step; every buffer made here waits for a collection of this heap.)
  const declared = Number(request.headers['content-length']);
  if (!Number.isSafeInteger(declared) || declared < 0 || declared > maxBytes) {
    const chunks: Uint8Array[] = [];
    let size = 0;
    for await (const chunk of boundedBody(request, maxBytes, what)) {
      chunks.push(chunk);
      size += chunk.length;
    }
    return Buffer.concat(chunks, size);
  }
  const body = shared ? Buffer.from(new SharedArrayBuffer(declared)) : Buffer.allocUnsafe(declared);
  let size = 0;
  for await (const chunk of boundedBody(request, maxBytes, what)) {
    // Node's HTTP parser ends a body at its Content-Length; this is only its belt and braces.
    if (size + chunk.length > declared) throw new InputError(`${what} holds more bytes than its Content-Length (${declared}) says`, 'body');
    body.set(chunk, size);
    size += chunk.length;
  }
  return size === declared ? body : body.subarray(0, size);
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
