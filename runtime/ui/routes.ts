import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { FastifyReply } from 'fastify';
import type { GyreApp } from '../api/http-app';

/**
 * The web UI: one HTML page, its ES modules and stylesheet, and the chart library. Routing inside
 * the UI uses the URL fragment (`#/pipeline/<id>`), so the server only needs these few paths. The
 * UI reads everything else from the REST API with the session cookie.
 *
 * The files served are a fixed list, each its own route, read once at start-up: no path from a
 * request ever reaches the filesystem, so nothing outside the list can be asked for.
 */

// The page runs no inline script or style, so the policy can forbid both: build output shown in
// the log can then never run as code even if an escaping bug let markup through. `'self'` covers
// the page's module scripts (same origin, served as text/javascript).
const SECURITY_HEADERS = {
  'Content-Security-Policy': "default-src 'self'; img-src 'self' data:; style-src 'self'",
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'no-referrer',
  // The fragment of /login carries the token; the page must not be framed by another site either.
  'X-Frame-Options': 'DENY',
};

const JS = 'text/javascript; charset=utf-8';
const CSS = 'text/css; charset=utf-8';

/** The UI's own files under runtime/ui, each served at /ui/<file>. */
export const UI_FILES: readonly string[] = [
  'app.js',
  'api.js',
  'dom.js',
  'links.js',
  'view.js',
  'ansi.js',
  'views/artifacts.js',
  'views/audit.js',
  'views/insights.js',
  'views/job.js',
  'views/log.js',
  'views/members.js',
  'views/notifications.js',
  'views/pipeline.js',
  'views/project.js',
  'views/projects.js',
  'views/settings.js',
  'views/signin.js',
  'views/status.js',
  'views/tests.js',
  'views/tokens.js',
  'views/workflow.js',
  'app.css',
];

/** Files of npm packages the UI loads (pinned in package.json), each served at /ui/vendor/<name>. */
export const VENDOR_FILES: Readonly<Record<string, string>> = {
  // uPlot draws the insights charts; its ES module build has no imports of its own.
  'uPlot.esm.js': 'uplot/dist/uPlot.esm.js',
  'uPlot.min.css': 'uplot/dist/uPlot.min.css',
};

interface Asset {
  readonly body: Buffer;
  readonly contentType: string;
}

function typeOf(file: string): string {
  if (file.endsWith('.js')) return JS;
  if (file.endsWith('.css')) return CSS;
  throw new Error(`${file}: the UI serves only .js and .css files`);
}

function load(file: string, contentType: string): Asset {
  return { body: readFileSync(file), contentType };
}

function serve(asset: Asset) {
  return async (_request: unknown, reply: FastifyReply) =>
    reply.headers({ ...SECURITY_HEADERS, 'Content-Type': asset.contentType, 'Cache-Control': 'no-cache' }).send(asset.body);
}

/** Registers the UI's public routes. The files are read once, here. */
export function registerUiRoutes(app: GyreApp): void {
  const page = load(path.join(__dirname, 'index.html'), 'text/html; charset=utf-8');
  const assets: Record<string, Asset> = {};
  for (const file of UI_FILES) assets[`/ui/${file}`] = load(path.join(__dirname, file), typeOf(file));
  for (const [name, module] of Object.entries(VENDOR_FILES)) assets[`/ui/vendor/${name}`] = load(require.resolve(module), typeOf(name));
  const PUBLIC = { config: { auth: 'public' as const } };
  app.get('/', PUBLIC, serve(page));
  app.get('/login', PUBLIC, serve(page));
  for (const [route, asset] of Object.entries(assets)) app.get(route, PUBLIC, serve(asset));
}
