import { Type } from '@sinclair/typebox';
import type { GyreApp } from '../api/http-app';
import { Int32, OneOf, Segment } from '../api/schemas';
import type { Store } from '../store/store';
import { listAudit, parseAuditTime } from './audit-log';

export interface AuditRouteDeps {
  readonly store: Store;
}

const AuditQuery = Type.Object({
  since: Type.Optional(Type.String({ maxLength: 64, description: 'ISO 8601 time, or a span back from now: 30m, 24h, 7d' })),
  until: Type.Optional(Type.String({ maxLength: 64 })),
  order: Type.Optional(OneOf(['asc', 'desc'] as const)),
  limit: Type.Optional(Int32({ minimum: 1, maximum: 1000 })),
  'page-token': Type.Optional(Type.String({ maxLength: 1000 })),
});

/**
 * The audit log, paged: `GET /api/v2/audit` (instance admins, everything) and
 * `GET /api/v2/organization/{vcs}/{org}/audit` (an organisation's admins, its records).
 * Newest first unless `order=asc`.
 */
export function registerAuditRoutes(app: GyreApp, deps: AuditRouteDeps): void {
  const query = (q: { since?: string; until?: string; order?: 'asc' | 'desc'; limit?: number; 'page-token'?: string }, org?: string) => ({
    since: q.since ? parseAuditTime(q.since, 'since') : undefined,
    until: q.until ? parseAuditTime(q.until, 'until') : undefined,
    order: q.order,
    limit: q.limit,
    pageToken: q['page-token'],
    org,
  });

  app.get('/api/v2/audit', { config: { permission: 'instance:admin' }, schema: { querystring: AuditQuery } }, async (request) => listAudit(deps.store, query(request.query)));

  app.get(
    '/api/v2/organization/:vcs/:org/audit',
    { config: { permission: 'org:admin' }, schema: { params: Type.Object({ vcs: Segment, org: Segment }), querystring: AuditQuery } },
    async (request) => listAudit(deps.store, query(request.query, request.params.org)),
  );
}
