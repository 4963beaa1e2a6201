import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { FastifyReply } from 'fastify';
import type { GyreApp } from '../api/http-app';

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
  return async (_request: unknown, reply: FastifyReply) =>
    reply.headers({ ...SECURITY_HEADERS, 'Content-Type': asset.contentType, 'Cache-Control': 'no-cache' }).send(asset.body);
}

/** Registers the UI's public routes. The files are read once, here. */
export function registerUiRoutes(app: GyreApp): void {
  const page = load('index.html', 'text/html; charset=utf-8');
  const assets: Record<string, Asset> = {
    '/ui/app.js': load('app.js', 'text/javascript; charset=utf-8'),
    '/ui/ansi.js': load('ansi.js', 'text/javascript; charset=utf-8'),
    '/ui/settings.js': load('settings.js', 'text/javascript; charset=utf-8'),
    '/ui/app.css': load('app.css', 'text/css; charset=utf-8'),
  };
  const PUBLIC = { config: { auth: 'public' as const } };
  app.get('/', PUBLIC, serve(page));
  app.get('/login', PUBLIC, serve(page));
  for (const [route, asset] of Object.entries(assets)) app.get(route, PUBLIC, serve(asset));
}
