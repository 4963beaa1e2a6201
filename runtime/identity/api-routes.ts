import { Type } from '@sinclair/typebox';
import { auditOf, principalOf, type GyreApp } from '../api/http-app';
import { cursorText, decodePageToken, encodePageToken, settingsOf } from '../api/read-model';
import { ProjectSettingsShape } from '../api/v2-shapes';
import { ConflictError, NotFoundError, PermissionError } from '../domain/errors';
import { OneOf, PageQuery, Segment, SlugParams } from '../api/schemas';
import { ORG_ROLES, PROJECT_ROLES } from '../domain/permissions';
import { PROJECT_TOKEN_SCOPES } from '../domain/principal';
import type { Projects } from '../projects/projects';
import { checkOrgName, type Identity } from './identity';

/**
 * The identity API: who I am and where I belong (CircleCI's `/me/collaborations`, `/user/{id}`),
 * personal tokens, project tokens, users (instance admins), organisations and the roles users hold
 * in them and on projects. Each route declares its permission; the boundary decides it.
 */
export interface IdentityRouteDeps {
  readonly identity: Identity;
  readonly projects: Projects;
}

const SLUG = '/api/v2/project/:vcs/:org/:repo';
const ORG = '/api/v2/organization/:vcs/:org';
const slugOf = (p: { vcs: string; org: string; repo: string }) => `${p.vcs}/${p.org}/${p.repo}`;

const Label = Type.Optional(Type.String({ maxLength: 200 }));
const ExpiresInDays = Type.Optional(Type.Integer({ minimum: 1, maximum: 3650, description: 'days until the token stops working; without it, until revoked' }));
const TokenBody = Type.Object({ label: Label, expires_in_days: ExpiresInDays });
const LoginParams = Type.Object({ login: Segment });
const OrgParams = Type.Object({ vcs: Segment, org: Segment });
const OrgMemberParams = Type.Object({ vcs: Segment, org: Segment, login: Segment });
const ProjectMemberParams = Type.Object({ vcs: Segment, org: Segment, repo: Segment, login: Segment });
const ProjectTokenParams = Type.Object({ vcs: Segment, org: Segment, repo: Segment, tokenId: Segment });

export function registerIdentityRoutes(app: GyreApp, deps: IdentityRouteDeps): void {
  const { identity, projects } = deps;
  const page = <T>(items: T[]) => ({ items, next_page_token: null });

  // --- Who I am -------------------------------------------------------------------------------

  // CircleCI's shape: the organisations the user belongs to.
  app.get('/api/v2/me/collaborations', { config: { permission: 'user:self' } }, async (request) =>
    (await identity.orgs.visible(principalOf(request))).map((o) => ({ id: o.id, 'vcs-type': o['vcs-type'], name: o.name, avatar_url: '', slug: o.slug, role: o.role })),
  );

  app.get('/api/v2/user/:id', { config: { permission: 'authenticated' }, schema: { params: Type.Object({ id: Segment }) } }, async (request) => {
    const user = await identity.users.byId(request.params.id);
    return { id: user.id, login: user.login, name: user.name };
  });

  // --- Personal tokens --------------------------------------------------------------------------

  app.get('/api/v2/me/tokens', { config: { permission: 'user:self' } }, async (request) => page(await identity.tokens.listPersonal(principalOf(request).userId)));

  app.post('/api/v2/me/tokens', { config: { permission: 'user:self', action: 'token.create' }, schema: { body: TokenBody } }, async (request, reply) => {
    const made = await identity.tokens.createPersonal(principalOf(request).userId, { label: request.body.label, expiresInDays: request.body.expires_in_days }, auditOf(request));
    reply.code(201);
    return { ...made.view, token: made.token };
  });

  app.delete('/api/v2/me/tokens/:tokenId', { config: { permission: 'user:self', action: 'token.revoke' }, schema: { params: Type.Object({ tokenId: Segment }) } }, async (request) => {
    await identity.tokens.revokePersonal(principalOf(request).userId, request.params.tokenId, auditOf(request));
    return { message: 'Token revoked.' };
  });

  // --- Users (instance admins) ------------------------------------------------------------------

  app.get('/api/v2/users', { config: { permission: 'instance:admin' }, schema: { querystring: PageQuery } }, async (request) => {
    const cursor = decodePageToken<{ after?: string }>(request.query['page-token'], (c) => cursorText(c.after));
    const limit = 100;
    const rows = await identity.users.list({ after: cursor?.after, limit: limit + 1 });
    return { items: rows.slice(0, limit), next_page_token: rows.length > limit ? encodePageToken({ after: rows[limit - 1].login }) : null };
  });

  app.post(
    '/api/v2/users',
    {
      config: { permission: 'instance:admin', action: 'user.create' },
      schema: {
        body: Type.Object({
          login: Type.String({ minLength: 1, maxLength: 100 }),
          name: Type.Optional(Type.String({ maxLength: 200 })),
          email: Type.Optional(Type.String({ maxLength: 320 })),
          admin: Type.Optional(Type.Boolean()),
        }),
      },
    },
    async (request, reply) => {
      const made = await identity.users.add(request.body, auditOf(request));
      reply.code(201);
      return { ...made.user, token: made.token };
    },
  );

  app.get('/api/v2/users/:login', { config: { permission: 'instance:admin' }, schema: { params: LoginParams } }, async (request) => identity.users.get(request.params.login));

  app.patch(
    '/api/v2/users/:login',
    {
      config: { permission: 'instance:admin', action: 'user.update' },
      schema: {
        params: LoginParams,
        body: Type.Object({
          name: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
          email: Type.Optional(Type.Union([Type.String({ maxLength: 320 }), Type.Null()])),
          admin: Type.Optional(Type.Boolean()),
          disabled: Type.Optional(Type.Boolean()),
        }),
      },
    },
    async (request) => identity.users.update(request.params.login, request.body, auditOf(request)),
  );

  // An instance admin issues a token for a user (until sign-in lets users make their own first one).
  app.post('/api/v2/users/:login/tokens', { config: { permission: 'instance:admin', action: 'token.issue' }, schema: { params: LoginParams, body: TokenBody } }, async (request, reply) => {
    const user = await identity.users.get(request.params.login);
    const made = await identity.tokens.createPersonal(user.id, { label: request.body.label, expiresInDays: request.body.expires_in_days }, auditOf(request));
    reply.code(201);
    return { ...made.view, token: made.token };
  });

  // --- Organisations and their members ----------------------------------------------------------

  app.get('/api/v2/organizations', { config: { permission: 'authenticated' } }, async (request) => page(await identity.orgs.visible(principalOf(request))));

  app.post(
    '/api/v2/organizations',
    { config: { permission: 'instance:admin', action: 'org.create' }, schema: { body: Type.Object({ name: Type.String({ minLength: 1, maxLength: 104 }) }) } },
    async (request, reply) => {
      const name = checkOrgName(request.body.name.replace(/^(gh|github)\//, ''));
      reply.code(201);
      return identity.orgs.create(name, auditOf(request));
    },
  );

  app.get(ORG, { config: { permission: 'org:read' }, schema: { params: OrgParams } }, async (request) => {
    const org = await identity.orgs.get(request.params.org);
    const mine = (await identity.orgs.visible(principalOf(request))).find((o) => o.name === org.name);
    return { ...org, role: mine?.role ?? null };
  });

  app.get(`${ORG}/members`, { config: { permission: 'org:read' }, schema: { params: OrgParams } }, async (request) => page(await identity.orgs.members(request.params.org)));

  app.put(
    `${ORG}/members/:login`,
    { config: { permission: 'org:admin', action: 'org.member.set' }, schema: { params: OrgMemberParams, body: Type.Object({ role: OneOf(ORG_ROLES) }) } },
    async (request) => identity.orgs.setRole(request.params.org, request.params.login, request.body.role, auditOf(request)),
  );

  app.delete(`${ORG}/members/:login`, { config: { permission: 'org:admin', action: 'org.member.remove' }, schema: { params: OrgMemberParams } }, async (request) => {
    await identity.orgs.removeMember(request.params.org, request.params.login, auditOf(request));
    return { message: 'Member removed.' };
  });

  // CircleCI's "create a project" (`POST /project/{slug}`): an organisation admin adds a project to it,
  // answered with its settings (CircleCI's project_settings). Gyre needs the repository to build from:
  // the GitHub App installed on it, or `repo_url`, a path or URL the server itself reads, which only
  // an instance admin may give (as on POST /api/v2/projects): an organisation's admin must not point
  // Gyre at another organisation's repository on its disk or at hosts only the server reaches.
  app.post(
    SLUG,
    {
      config: { permission: 'org:admin', action: 'project.create' },
      schema: { params: SlugParams, body: Type.Object({ repo_url: Type.Optional(Type.String({ minLength: 1, maxLength: 4096 })) }), response: { 201: ProjectSettingsShape } },
    },
    async (request, reply) => {
      const { org, repo } = request.params;
      // A project that exists is a 409 whoever asks (its organisation's admins can see it anyway).
      const existing = await projects.get(slugOf(request.params)).catch((error: unknown) => {
        if (error instanceof NotFoundError) return undefined;
        throw error;
      });
      if (existing) throw new ConflictError(`project ${existing.slug} already exists`);
      if (request.body.repo_url !== undefined && !principalOf(request).isAdmin) {
        throw new PermissionError('body.repo_url (a path or URL the server reads) may be given by an instance admin only; without it, Gyre finds the repository through the GitHub App installed on it');
      }
      const project = await projects.add({ org, name: repo, repoUrl: request.body.repo_url }, auditOf(request));
      reply.code(201);
      return settingsOf(project);
    },
  );

  // --- Project members and project tokens -------------------------------------------------------

  app.get(`${SLUG}/members`, { config: { permission: 'project:read' }, schema: { params: SlugParams } }, async (request) => {
    const project = await projects.get(slugOf(request.params));
    return page(await identity.orgs.projectMembers(project.id));
  });

  app.put(
    `${SLUG}/members/:login`,
    { config: { permission: 'project:admin', action: 'project.member.set' }, schema: { params: ProjectMemberParams, body: Type.Object({ role: OneOf(PROJECT_ROLES) }) } },
    async (request) => {
      const project = await projects.get(slugOf(request.params));
      return identity.orgs.setProjectRole(project, request.params.login, request.body.role, auditOf(request));
    },
  );

  app.delete(`${SLUG}/members/:login`, { config: { permission: 'project:admin', action: 'project.member.remove' }, schema: { params: ProjectMemberParams } }, async (request) => {
    const project = await projects.get(slugOf(request.params));
    await identity.orgs.removeProjectMember(project, request.params.login, auditOf(request));
    return { message: 'Member removed.' };
  });

  app.get(`${SLUG}/tokens`, { config: { permission: 'project:admin' }, schema: { params: SlugParams } }, async (request) => {
    const project = await projects.get(slugOf(request.params));
    return page(await identity.tokens.listProject(project.id));
  });

  app.post(
    `${SLUG}/tokens`,
    {
      config: { permission: 'project:admin', action: 'project.token.create' },
      schema: { params: SlugParams, body: Type.Object({ label: Label, scope: OneOf(PROJECT_TOKEN_SCOPES), expires_in_days: ExpiresInDays }) },
    },
    async (request, reply) => {
      const project = await projects.get(slugOf(request.params));
      const { label, scope, expires_in_days: expiresInDays } = request.body;
      const made = await identity.tokens.createProject(project, principalOf(request).userId, { label, scope, expiresInDays }, auditOf(request));
      reply.code(201);
      return { ...made.view, token: made.token };
    },
  );

  app.delete(`${SLUG}/tokens/:tokenId`, { config: { permission: 'project:admin', action: 'project.token.revoke' }, schema: { params: ProjectTokenParams } }, async (request) => {
    const project = await projects.get(slugOf(request.params));
    await identity.tokens.revokeProject(project, request.params.tokenId, auditOf(request));
    return { message: 'Token revoked.' };
  });
}
