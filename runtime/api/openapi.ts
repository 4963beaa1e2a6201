import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { RouteOptions } from 'fastify';
import type { GyreApp } from './http-app';

/**
 * `GET /api/v2/openapi.json`: an OpenAPI 3.1 description of every API v2 route the listener serves,
 * made from the routes themselves (their path, method and schemas: path, query, body, and response
 * where the route declares one), so it cannot list a route that is not served or miss one that is.
 *
 * Paths are written as CircleCI's description writes them: a project's `:vcs/:org/:repo` is one
 * `{project-slug}` (`gh/acme/app`, its slashes sent as they are), except on the three operations
 * CircleCI spells `{provider}/{organization}/{project}`; an organisation's `:vcs/:org` is
 * `{org-slug}`.
 */

interface Collected {
  readonly method: string;
  readonly url: string;
  readonly schema: Record<string, unknown>;
  readonly auth: string;
  readonly permission?: string;
}

/** Where the routes are collected: call before any route is registered. */
export function collectRoutes(app: GyreApp): { readonly routes: readonly Collected[] } {
  const routes: Collected[] = [];
  app.addHook('onRoute', (route: RouteOptions) => {
    if (!route.url.startsWith('/api/v2/')) return;
    const config = (route.config ?? {}) as { auth?: string; permission?: string };
    for (const method of Array.isArray(route.method) ? route.method : [route.method]) {
      if (method === 'HEAD') continue;
      routes.push({ method, url: route.url, schema: (route.schema ?? {}) as Record<string, unknown>, auth: config.auth ?? 'user', permission: config.permission });
    }
  });
  return { routes };
}

/** Operations CircleCI's description spells with `{provider}/{organization}/{project}`. */
const PROVIDER_FORM = new Set([
  'POST /api/v2/project/:vcs/:org/:repo',
  'GET /api/v2/project/:vcs/:org/:repo/settings',
  'PATCH /api/v2/project/:vcs/:org/:repo/settings',
  'POST /api/v2/project/:vcs/:org/:repo/pipeline/run',
]);

/** CircleCI's names for `:id` and `:number`, by what comes before them. */
function parameterName(before: string, name: string): string {
  if (name === 'number') return before === 'pipeline' ? 'pipeline-number' : 'job-number';
  if (name !== 'id') return name;
  const names: Record<string, string> = { pipeline: 'pipeline-id', context: 'context-id', schedule: 'schedule-id', jobs: 'job-id', webhook: 'webhook-id', org: 'orgID', project: 'projectID' };
  return names[before] ?? 'id';
}

/** A route's path as the description writes it, and how each route parameter maps onto it. */
export function describedPath(method: string, url: string): { path: string; params: Map<string, string | null> } {
  const params = new Map<string, string | null>();
  const provider = PROVIDER_FORM.has(`${method} ${url}`);
  let path = url.slice('/api/v2'.length);
  if (provider) {
    path = path.replace('/:vcs/:org/:repo', '/{provider}/{organization}/{project}');
    params.set('vcs', 'provider').set('org', 'organization').set('repo', 'project');
  } else if (path.includes('/:vcs/:org/:repo')) {
    path = path.replace('/:vcs/:org/:repo', '/{project-slug}');
    params.set('vcs', 'project-slug').set('org', null).set('repo', null);
  } else if (path.includes('/:vcs/:org')) {
    path = path.replace('/:vcs/:org', '/{org-slug}');
    params.set('vcs', 'org-slug').set('org', null);
  }
  const parts = path.split('/');
  path = parts
    .map((part, i) => {
      const m = /^:([A-Za-z0-9_]+)$/.exec(part);
      if (!m) return part === '*' ? '{rest}' : part;
      const name = parameterName(parts[i - 1] ?? '', m[1]);
      params.set(m[1], name);
      return `{${name}}`;
    })
    .join('/');
  if (path.endsWith('{rest}')) params.set('*', 'rest');
  return { path, params };
}

/** A TypeBox schema as plain JSON (its symbol-keyed markers left out). */
const plain = (schema: unknown): Record<string, unknown> => JSON.parse(JSON.stringify(schema ?? {}));

function parametersOf(route: Collected, mapped: Map<string, string | null>): unknown[] {
  const out: unknown[] = [];
  const params = plain(route.schema.params) as { properties?: Record<string, unknown> };
  const seen = new Set<string>();
  for (const [routeName, name] of mapped) {
    if (name === null || seen.has(name)) continue;
    seen.add(name);
    const whole = name === 'project-slug' || name === 'org-slug';
    out.push({
      name,
      in: 'path',
      required: true,
      schema: whole ? { type: 'string' } : params.properties?.[routeName] ?? { type: 'string' },
      ...(whole ? { description: name === 'project-slug' ? 'gh/<organization>/<repository>' : 'gh/<organization>' } : {}),
    });
  }
  const query = plain(route.schema.querystring) as { properties?: Record<string, unknown>; required?: string[] };
  for (const [name, schema] of Object.entries(query.properties ?? {})) out.push({ name, in: 'query', required: (query.required ?? []).includes(name), schema });
  return out;
}

function responsesOf(route: Collected): Record<string, unknown> {
  const declared = route.schema.response as Record<string, unknown> | undefined;
  if (!declared || Object.keys(declared).length === 0) return { '2XX': { description: 'The answer (see docs/api.md).' } };
  return Object.fromEntries(
    Object.entries(declared).map(([status, schema]) => [
      status,
      { description: (plain(schema).title as string | undefined) ?? 'The answer.', content: { 'application/json': { schema: plain(schema) } } },
    ])
  );
}

/** The OpenAPI document of the collected routes. */
export function openApiDocument(routes: readonly Collected[], version: string): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const route of routes) {
    const { path, params } = describedPath(route.method, route.url);
    const body = route.schema.body;
    const operation: Record<string, unknown> = {
      operationId: `${route.method.toLowerCase()}${path.replace(/[{}]/g, '').replace(/[^A-Za-z0-9]+(.)?/g, (_, c: string | undefined) => (c ?? '').toUpperCase())}`,
      parameters: parametersOf(route, params),
      ...(body ? { requestBody: { required: false, content: { 'application/json': { schema: plain(body) } } } } : {}),
      responses: responsesOf(route),
      ...(route.auth === 'public' ? { security: [] } : {}),
      'x-gyre-auth': route.auth,
      ...(route.permission ? { 'x-gyre-permission': route.permission } : {}),
    };
    (paths[path] ??= {})[route.method.toLowerCase()] = operation;
  }
  return {
    openapi: '3.1.0',
    info: { title: 'Gyre API v2', version, description: "CircleCI's API v2 as Gyre serves it, made from the routes' schemas. What is served and what is not: docs/api.md." },
    servers: [{ url: '/api/v2' }],
    components: { securitySchemes: { api_key_header: { type: 'apiKey', in: 'header', name: 'Circle-Token' }, basic_auth: { type: 'http', scheme: 'basic' } } },
    security: [{ api_key_header: [] }, { basic_auth: [] }],
    paths,
  };
}

/** Serves the document at `GET /api/v2/openapi.json` (public, as CircleCI's is), made at the first request. */
export function registerOpenApiRoute(app: GyreApp, collected: { readonly routes: readonly Collected[] }): void {
  let document: string | undefined;
  app.get('/api/v2/openapi.json', { config: { auth: 'public' } }, async (_request, reply) => {
    document ??= JSON.stringify(openApiDocument(collected.routes, gyreVersion()));
    reply.header('Content-Type', 'application/json; charset=utf-8').header('Cache-Control', 'public, max-age=300');
    return document;
  });
}

/** Gyre's release, from its package.json. */
function gyreVersion(): string {
  try {
    return String(JSON.parse(readFileSync(join(__dirname, '..', '..', 'package.json'), 'utf8')).version);
  } catch {
    return 'unknown';
  }
}
