import type { IncomingMessage, ServerResponse } from 'node:http';
import { InputError } from '../domain/errors';

/** The authenticated caller of a request. */
export interface Principal {
  readonly userId: string;
  readonly login: string;
  readonly isAdmin: boolean;
}

export interface RequestContext {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  /** Path parameters, decoded: `/pipeline/:id` gives `{ id }`. */
  readonly params: Readonly<Record<string, string>>;
  readonly query: URLSearchParams;
  /** Undefined only on routes registered with `{ public: true }`. */
  readonly principal?: Principal;
  /** Reads and parses a JSON body (an empty body is `{}`); a malformed one is an InputError. */
  body<T = unknown>(): Promise<T>;
}

/**
 * What a handler returns: a JSON body with a status, or `undefined` when the handler wrote the
 * response itself (streams, files).
 */
export type HandlerResult = { status?: number; json: unknown } | { status?: number; text: string; contentType?: string } | undefined;
export type Handler = (ctx: RequestContext) => Promise<HandlerResult>;

export interface RouteOptions {
  /** No token needed (health, login page, static UI, continuation with its own key). */
  readonly public?: boolean;
}

interface Route {
  readonly method: string;
  readonly pattern: RegExp;
  readonly names: string[];
  readonly handler: Handler;
  readonly options: RouteOptions;
}

export interface RouteMatch {
  readonly handler: Handler;
  readonly params: Record<string, string>;
  readonly options: RouteOptions;
}

/**
 * A small method + path router. Paths use `:name` for one segment and `:name*` for the rest of the
 * path (project slugs contain slashes: `/project/:slug*` would be ambiguous, so slug routes spell
 * out the three segments `:vcs/:org/:repo`).
 */
export class Router {
  private readonly routes: Route[] = [];

  add(method: string, path: string, handler: Handler, options: RouteOptions = {}): void {
    const names: string[] = [];
    const source = path
      .split('/')
      .map((segment) => {
        const m = /^:(\w+)(\*)?$/.exec(segment);
        if (!m) return segment.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
        names.push(m[1]);
        return m[2] ? '(.+)' : '([^/]+)';
      })
      .join('/');
    this.routes.push({ method, pattern: new RegExp(`^${source}/?$`), names, handler, options });
  }

  get(path: string, handler: Handler, options?: RouteOptions): void {
    this.add('GET', path, handler, options);
  }

  post(path: string, handler: Handler, options?: RouteOptions): void {
    this.add('POST', path, handler, options);
  }

  put(path: string, handler: Handler, options?: RouteOptions): void {
    this.add('PUT', path, handler, options);
  }

  delete(path: string, handler: Handler, options?: RouteOptions): void {
    this.add('DELETE', path, handler, options);
  }

  /** The route for this method and path; `'method'` when the path exists under another method. */
  match(method: string, pathname: string): RouteMatch | 'method' | undefined {
    let pathMatched = false;
    for (const route of this.routes) {
      const m = route.pattern.exec(pathname);
      if (!m) continue;
      pathMatched = true;
      if (route.method !== method && !(method === 'HEAD' && route.method === 'GET')) continue;
      const params: Record<string, string> = {};
      route.names.forEach((name, i) => {
        try {
          params[name] = decodeURIComponent(m[i + 1]);
        } catch {
          throw new InputError(`path segment is not valid URL encoding: ${m[i + 1]}`, name);
        }
      });
      return { handler: route.handler, params, options: route.options };
    }
    return pathMatched ? 'method' : undefined;
  }
}
