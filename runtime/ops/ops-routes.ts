import { timingSafeEqual } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import type { GyreApp } from '../api/http-app';
import { AuthenticationError } from '../domain/errors';
import type { Metrics } from '../metrics/metrics';
import type { Health } from './health';

export interface OpsRouteDeps {
  readonly health: Health;
  readonly metrics: Metrics;
  /** The roles this process runs, shown by /healthz. */
  readonly roles: readonly string[];
  /** When set, /metrics needs `Authorization: Bearer <token>`. */
  readonly metricsToken?: string;
  /**
   * Whether the process's roles have started. The ops listener opens first (probes get an answer
   * while roles start); until they have, /healthz is 503 `starting`, so no traffic is sent to an
   * API port that does not listen yet. @default always started
   */
  readonly started?: () => boolean;
}

/**
 * `/healthz` and `/metrics`, on the ops listener every process opens whatever its roles (probes and
 * scrapes; not routed through the load balancer). `/healthz` is also served on the API listener.
 */
export function registerOpsRoutes(app: GyreApp, deps: OpsRouteDeps): void {
  registerHealthRoute(app, deps);
  app.get('/metrics', { config: { auth: 'public' } }, async (request, reply) => {
    if (deps.metricsToken !== undefined) checkMetricsToken(request, deps.metricsToken);
    const { text, contentType } = await deps.metrics.render();
    return reply.header('Content-Type', contentType).header('Cache-Control', 'no-store').send(text);
  });
}

/** `GET /healthz`: 200 `{ status: 'ok', roles, checks }` when the roles have started and every dependency answers, else 503 (`starting`, or naming the dependencies that did not answer). */
export function registerHealthRoute(app: GyreApp, deps: Pick<OpsRouteDeps, 'health' | 'roles' | 'started'>): void {
  app.get('/healthz', { config: { auth: 'public' } }, async (_request, reply) => {
    if (deps.started && !deps.started()) {
      reply.code(503).header('Cache-Control', 'no-store');
      return { status: 'starting', roles: deps.roles, checks: {} };
    }
    const report = await deps.health.check();
    reply.code(report.ok ? 200 : 503).header('Cache-Control', 'no-store');
    return { status: report.ok ? 'ok' : 'unavailable', roles: deps.roles, checks: report.checks };
  });
}

function checkMetricsToken(request: FastifyRequest, token: string): void {
  const auth = request.headers.authorization ?? '';
  const given = Buffer.from(/^bearer /i.test(auth) ? auth.slice(7).trim() : '');
  const expected = Buffer.from(token);
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) throw new AuthenticationError('/metrics needs the metrics token: Authorization: Bearer <GYRE_METRICS_TOKEN>.');
}
