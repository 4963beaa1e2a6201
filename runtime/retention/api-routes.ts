import { Type } from '@sinclair/typebox';
import { auditOf, type GyreApp } from '../api/http-app';
import { SlugParams } from '../api/schemas';
import type { Projects } from '../projects/projects';
import { RETENTION_DAYS_MAX } from '../settings';
import type { Store } from '../store/store';
import { changeProjectRetention, projectRetention } from './retention';

export interface RetentionRouteDeps {
  readonly store: Store;
  readonly projects: Projects;
  /** GYRE_RETENTION_DAYS. */
  readonly defaultDays: number;
}

const SLUG = '/api/v2/project/:vcs/:org/:repo';

/**
 * A project's retention: `GET` answers `{ days, default_days, effective_days }` (`days` null: the
 * server's GYRE_RETENTION_DAYS applies; 0: kept for ever); `PUT` with `{ days }` (admin) sets it.
 */
export function registerRetentionRoutes(app: GyreApp, deps: RetentionRouteDeps): void {
  const { store, projects, defaultDays } = deps;
  const slugOf = (p: { vcs: string; org: string; repo: string }) => `${p.vcs}/${p.org}/${p.repo}`;
  const view = (days: number | null) => ({ days, default_days: defaultDays, effective_days: days ?? defaultDays });

  app.get(`${SLUG}/retention`, { config: { permission: 'project:read' }, schema: { params: SlugParams } }, async (request) => {
    const project = await projects.get(slugOf(request.params));
    return view(await projectRetention(store, project.id));
  });

  app.put(
    `${SLUG}/retention`,
    {
      config: { permission: 'project:admin', action: 'project.retention' },
      schema: {
        params: SlugParams,
        body: Type.Object({
          days: Type.Union([Type.Integer({ minimum: 0, maximum: RETENTION_DAYS_MAX, description: 'days a pipeline is kept; 0 for ever; null for the server default' }), Type.Null()]),
        }),
      },
    },
    async (request) => {
      const project = await projects.get(slugOf(request.params));
      await changeProjectRetention(store, project, request.body.days, auditOf(request));
      return view(request.body.days);
    },
  );
}
