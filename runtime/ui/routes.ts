import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { Router, RequestContext } from '../api/router';

/**
 * The web UI: one HTML page, its script and stylesheet. Routing inside the UI uses the URL fragment
 * (`#/pipeline/<id>`), so the server only needs these few paths. The UI reads everything else from
 * the REST API with the `gyre-token` cookie.
 */

// The page runs no inline script or style, so the policy can forbid both: build output shown in
// the log can then never run as code even if an escaping bug let markup through.
const SECURITY_HEADERS = {
  'Content-Security-Policy': "default-src 'self'; img-src 'self' data:; style-src 'self'",
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'no-referrer',
  // The fragment of /login carries the token; the page must not be framed by another site either.
  'X-Frame-Options': 'DENY',
};

interface Asset {
  readonly body: Buffer;
  readonly contentType: string;
}

function load(file: string, contentType: string): Asset {
  return { body: readFileSync(path.join(__dirname, file)), contentType };
}

function serve(asset: Asset) {
  return async (ctx: RequestContext) => {
    ctx.res.writeHead(200, {
      ...SECURITY_HEADERS,
      'Content-Type': asset.contentType,
      'Content-Length': asset.body.length,
      'Cache-Control': 'no-cache',
    });
    ctx.res.end(ctx.req.method === 'HEAD' ? undefined : asset.body);
    return undefined;
  };
}

/** Registers the UI's public routes. The files are read once, here. */
export function registerUiRoutes(router: Router): void {
  const page = load('index.html', 'text/html; charset=utf-8');
  const assets: Record<string, Asset> = {
    '/ui/app.js': load('app.js', 'text/javascript; charset=utf-8'),
    '/ui/ansi.js': load('ansi.js', 'text/javascript; charset=utf-8'),
    '/ui/app.css': load('app.css', 'text/css; charset=utf-8'),
  };
  router.get('/', serve(page), { public: true });
  router.get('/login', serve(page), { public: true });
  for (const [route, asset] of Object.entries(assets)) router.get(route, serve(asset), { public: true });
}
