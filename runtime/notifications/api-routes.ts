import { Type } from '@sinclair/typebox';
import type { FastifyRequest } from 'fastify';
import { auditOf, principalOf, type Access, type GyreApp } from '../api/http-app';
import { OneOf, PageQuery, Segment, SlugParams } from '../api/schemas';
import { NotFoundError, PermissionError } from '../domain/errors';
import { decide, WHO_HOLDS } from '../domain/permissions';
import type { Projects } from '../projects/projects';
import { WEBHOOK_EVENTS } from './payloads';
import type { Webhooks } from './webhooks';

/**
 * Outbound webhooks over CircleCI's API v2 paths and shapes (`../shared/reference`, operations
 * getWebhooks, createWebhook, getWebhookById, updateWebhook, deleteWebhook), and Gyre's own routes
 * beside them (docs/notifications.md):
 *
 * - `GET /webhook/{id}/deliveries`: the webhook's delivery log, each delivery with every attempt's
 *   answer (status, the first characters of the body, or the error) and when the next is due;
 * - `GET|PUT /project/{slug}/notifications`: email recipients, a Slack-compatible incoming webhook,
 *   and whether to notify on failed and on fixed workflows; `…/notifications/deliveries`: their log.
 *
 * Every one needs `project:admin` on the project (a webhook URL or Slack URL may carry a token,
 * and the log shows what receivers answered). `GET /webhook` and `POST /webhook` name their
 * project in the query or body, which the boundary does not read before deciding, so they declare
 * `authenticated` and ask the same policy (`decide`) themselves once they know the project.
 */
export interface NotificationRouteDeps {
  readonly webhooks: Webhooks;
  readonly projects: Projects;
  /** Where a caller stands toward a project (the identity service). */
  readonly access: Access;
}

const WEBHOOK = '/api/v2/webhook';
const WEBHOOK_ID = `${WEBHOOK}/:id`;
const NOTIFICATIONS = '/api/v2/project/:vcs/:org/:repo/notifications';
const slugOf = (p: { vcs: string; org: string; repo: string }) => `${p.vcs}/${p.org}/${p.repo}`;

const Events = Type.Array(OneOf(WEBHOOK_EVENTS), { maxItems: 10 });
const Url = Type.String({ maxLength: 4096 });
const Secret = Type.String({ maxLength: 4096 });
const Name = Type.String({ maxLength: 1000 });
const Scope = Type.Object({ id: Type.String({ maxLength: 100 }), type: OneOf(['project'] as const) });
const CreateBody = Type.Object(
  { name: Name, events: Events, url: Url, 'verify-tls': Type.Boolean(), 'signing-secret': Secret, scope: Scope },
  { additionalProperties: false },
);
const UpdateBody = Type.Object(
  { name: Type.Optional(Name), events: Type.Optional(Events), url: Type.Optional(Url), 'verify-tls': Type.Optional(Type.Boolean()), 'signing-secret': Type.Optional(Secret) },
  { additionalProperties: false },
);
const IdParams = Type.Object({ id: Segment });
const SettingsBody = Type.Object(
  {
    emails: Type.Optional(Type.Array(Type.String({ maxLength: 1000 }), { maxItems: 1000 })),
    on_failed: Type.Optional(Type.Boolean()),
    on_fixed: Type.Optional(Type.Boolean()),
    slack_webhook_url: Type.Optional(Type.Union([Url, Type.Null()])),
  },
  { additionalProperties: false },
);

export function registerNotificationRoutes(app: GyreApp, deps: NotificationRouteDeps): void {
  const { webhooks, projects, access } = deps;

  /**
   * The policy for the two routes whose project is in the query or body: project admins only. A
   * caller who may not see the project gets the 404 a project that does not exist gets.
   */
  const authorizeProject = async (request: FastifyRequest, projectId: string) => {
    const notFound = new NotFoundError('project', projectId);
    let project;
    try {
      project = await webhooks.project(projectId);
    } catch (error) {
      throw error instanceof NotFoundError ? notFound : error;
    }
    const principal = principalOf(request);
    const decision = decide(principal, 'project:admin', await access.standing(principal, { kind: 'project-id', id: project.id }));
    if (decision === 'not-found') throw notFound;
    if (decision === 'forbidden') {
      throw new PermissionError(`Your token may not do this on ${project.slug}: ${request.method} ${request.routeOptions.url} needs project:admin, held by ${WHO_HOLDS['project:admin']}.`);
    }
    return project;
  };

  app.get(
    WEBHOOK,
    { config: { permission: 'authenticated' }, schema: { querystring: Type.Object({ 'scope-id': Type.String({ maxLength: 100 }), 'scope-type': OneOf(['project'] as const), 'page-token': Type.Optional(Type.String({ maxLength: 1000 })) }) } },
    async (request) => {
      const project = await authorizeProject(request, request.query['scope-id']);
      return webhooks.list(project.id, { pageToken: request.query['page-token'] });
    },
  );

  app.post(WEBHOOK, { config: { permission: 'authenticated', action: 'webhook.create' }, schema: { body: CreateBody } }, async (request, reply) => {
    const project = await authorizeProject(request, request.body.scope.id);
    const made = await webhooks.create(project, request.body, auditOf(request));
    reply.code(201);
    return made;
  });

  app.get(WEBHOOK_ID, { config: { permission: 'project:admin', of: 'webhook' }, schema: { params: IdParams } }, async (request) => webhooks.get(request.params.id));

  app.put(
    WEBHOOK_ID,
    { config: { permission: 'project:admin', of: 'webhook', action: 'webhook.update' }, schema: { params: IdParams, body: UpdateBody } },
    async (request) => webhooks.update(request.params.id, request.body, auditOf(request)),
  );

  app.get(
    `${WEBHOOK_ID}/deliveries`,
    { config: { permission: 'project:admin', of: 'webhook' }, schema: { params: IdParams, querystring: PageQuery } },
    async (request) => webhooks.deliveries(request.params.id, { pageToken: request.query['page-token'] }),
  );

  // Last of the webhook routes: a route-permission sweep that calls them in order deletes last.
  app.delete(WEBHOOK_ID, { config: { permission: 'project:admin', of: 'webhook', action: 'webhook.delete' }, schema: { params: IdParams } }, async (request) => {
    await webhooks.delete(request.params.id, auditOf(request));
    return { message: 'Webhook deleted.' };
  });

  app.get(NOTIFICATIONS, { config: { permission: 'project:admin' }, schema: { params: SlugParams } }, async (request) => webhooks.settings((await projects.get(slugOf(request.params))).id));

  app.put(
    NOTIFICATIONS,
    { config: { permission: 'project:admin', action: 'project.notifications.put' }, schema: { params: SlugParams, body: SettingsBody } },
    async (request) => {
      const project = await projects.get(slugOf(request.params));
      return webhooks.putSettings(project, request.body, auditOf(request));
    },
  );

  app.get(
    `${NOTIFICATIONS}/deliveries`,
    { config: { permission: 'project:admin' }, schema: { params: SlugParams, querystring: PageQuery } },
    async (request) => webhooks.notificationDeliveries((await projects.get(slugOf(request.params))).id, { pageToken: request.query['page-token'] }),
  );
}
