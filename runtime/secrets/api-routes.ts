import { Type } from '@sinclair/typebox';
import type { FastifyRequest } from 'fastify';
import { auditOf, principalOf, type Access, type GyreApp } from '../api/http-app';
import { OneOf, Segment, SlugParams } from '../api/schemas';
import { InputError, NotFoundError, PermissionError } from '../domain/errors';
import { decide, WHO_HOLDS, type Permission } from '../domain/permissions';
import type { Projects } from '../projects/projects';
import type { Contexts } from './contexts';

/**
 * Contexts and project environment variables over CircleCI's API v2 paths and shapes:
 *
 * - `/context` (list by `owner-id` or `owner-slug`, create with `owner: { id | slug }`),
 *   `/context/{id}`, its `environment-variable`s and `restrictions`. Contexts belong to an
 *   organisation: its roles may list them and their variables (names and masked values, `org:read`);
 *   only its admins create, delete, set variables and restrict them (`org:admin`). A context of an
 *   organisation the caller cannot see is a 404, as one that does not exist.
 * - `/project/{slug}/envvar` and `/envvar/{name}`: masked values for `project:read`, changes for
 *   `project:admin`.
 *
 * No answer, error or audit record holds a value: values go in, masked values (`xxxx1234`) come
 * out. `GET /context` and `POST /context` name their organisation in the query or the body, which
 * the boundary does not read before deciding, so they declare `authenticated` and ask the same
 * policy (`decide`) themselves once they know the organisation.
 */
export interface SecretsRouteDeps {
  readonly contexts: Contexts;
  readonly projects: Projects;
  /** Where a caller stands toward an organisation (the identity service). */
  readonly access: Access;
}

const CONTEXT = '/api/v2/context';
const CONTEXT_ID = `${CONTEXT}/:id`;
const ENVVAR = '/api/v2/project/:vcs/:org/:repo/envvar';
const slugOf = (p: { vcs: string; org: string; repo: string }) => `${p.vcs}/${p.org}/${p.repo}`;

/** Variable bodies: a 64 KiB value, even of characters JSON escapes six bytes each, fits. */
const VARIABLE_BODY_BYTES = 512 * 1024;

const PageToken = Type.Optional(Type.String({ maxLength: 1000 }));
const IdParams = Type.Object({ id: Segment });
const VariableParams = Type.Object({ id: Segment, name: Segment });
const RestrictionParams = Type.Object({ id: Segment, restrictionId: Segment });
const ProjectVariableParams = Type.Object({ vcs: Segment, org: Segment, repo: Segment, name: Segment });
const OwnerType = Type.Optional(OneOf(['organization', 'account'] as const));

function checkOwnerType(type: string | undefined): void {
  if (type === 'account') throw new InputError("owner type 'account' is CircleCI server's; contexts in Gyre belong to organizations", 'owner-type');
}

export function registerSecretsRoutes(app: GyreApp, deps: SecretsRouteDeps): void {
  const { contexts, projects, access } = deps;

  /**
   * The policy, for the two routes whose organisation is in the query or body. A caller who may not
   * see it gets the 404 an organisation that does not exist gets, in the words they named it by.
   */
  const authorizeOrg = async (request: FastifyRequest, ref: { id?: string; slug?: string }, permission: Permission) => {
    const notFound = new NotFoundError('organization', ref.id ?? ref.slug ?? '');
    let org: { id: string; name: string };
    try {
      org = await contexts.organization(ref);
    } catch (error) {
      throw error instanceof NotFoundError ? notFound : error;
    }
    const principal = principalOf(request);
    const decision = decide(principal, permission, await access.standing(principal, { kind: 'org', name: org.name }));
    if (decision === 'not-found') throw notFound;
    if (decision === 'forbidden') {
      throw new PermissionError(`Your token may not do this on gh/${org.name}: ${request.method} ${request.routeOptions.url} needs ${permission}, held by ${WHO_HOLDS[permission]}.`);
    }
    return org;
  };

  // --- Contexts -----------------------------------------------------------------------------------

  app.get(
    CONTEXT,
    {
      config: { permission: 'authenticated' },
      schema: {
        querystring: Type.Object({
          'owner-id': Type.Optional(Type.String({ maxLength: 100 })),
          'owner-slug': Type.Optional(Type.String({ maxLength: 300 })),
          'owner-type': OwnerType,
          'page-token': PageToken,
        }),
      },
    },
    async (request) => {
      const q = request.query;
      checkOwnerType(q['owner-type']);
      const org = await authorizeOrg(request, { id: q['owner-id'], slug: q['owner-slug'] }, 'org:read');
      return contexts.list(org.id, { pageToken: q['page-token'] });
    },
  );

  app.post(
    CONTEXT,
    {
      config: { permission: 'authenticated', action: 'context.create' },
      schema: {
        body: Type.Object({
          name: Type.String({ maxLength: 1000 }),
          owner: Type.Object({ id: Type.Optional(Type.String({ maxLength: 100 })), slug: Type.Optional(Type.String({ maxLength: 300 })), type: OwnerType }),
        }),
      },
    },
    async (request) => {
      const { name, owner } = request.body;
      checkOwnerType(owner.type);
      const org = await authorizeOrg(request, { id: owner.id, slug: owner.slug }, 'org:admin');
      return contexts.create(org.id, name, auditOf(request));
    },
  );

  app.get(CONTEXT_ID, { config: { permission: 'org:read', of: 'context' }, schema: { params: IdParams } }, async (request) => {
    const { id, name, created_at } = await contexts.get(request.params.id);
    return { id, name, created_at };
  });

  // --- A context's variables ------------------------------------------------------------------------

  app.get(
    `${CONTEXT_ID}/environment-variable`,
    { config: { permission: 'org:read', of: 'context' }, schema: { params: IdParams, querystring: Type.Object({ 'page-token': PageToken }) } },
    async (request) => contexts.listVariables(request.params.id, { pageToken: request.query['page-token'] }),
  );

  app.put(
    `${CONTEXT_ID}/environment-variable/:name`,
    {
      config: { permission: 'org:admin', of: 'context', action: 'context.variable.put' },
      bodyLimit: VARIABLE_BODY_BYTES,
      schema: { params: VariableParams, body: Type.Object({ value: Type.String() }) },
    },
    async (request) => {
      const { variable, created_at, updated_at, context_id } = await contexts.putVariable(request.params.id, request.params.name, request.body.value, auditOf(request));
      return { variable, created_at, updated_at, context_id };
    },
  );

  app.delete(
    `${CONTEXT_ID}/environment-variable/:name`,
    { config: { permission: 'org:admin', of: 'context', action: 'context.variable.delete' }, schema: { params: VariableParams } },
    async (request) => {
      await contexts.deleteVariable(request.params.id, request.params.name, auditOf(request));
      return { message: 'Environment variable deleted.' };
    },
  );

  // --- A context's restrictions ---------------------------------------------------------------------

  app.get(`${CONTEXT_ID}/restrictions`, { config: { permission: 'org:read', of: 'context' }, schema: { params: IdParams } }, async (request) =>
    contexts.listRestrictions(request.params.id),
  );

  app.post(
    `${CONTEXT_ID}/restrictions`,
    {
      config: { permission: 'org:admin', of: 'context', action: 'context.restriction.add' },
      schema: {
        params: IdParams,
        body: Type.Object(
          {
            project_id: Type.Optional(Type.String({ maxLength: 100 })),
            restriction_type: Type.Optional(Type.String({ maxLength: 100 })),
            restriction_value: Type.Optional(Type.String({ maxLength: 8192 })),
          },
          { additionalProperties: false },
        ),
      },
    },
    async (request, reply) => {
      const body = request.body;
      const made = await contexts.addRestriction(request.params.id, { type: body.restriction_type, value: body.restriction_value, projectId: body.project_id }, auditOf(request));
      reply.code(201);
      return made;
    },
  );

  app.delete(
    `${CONTEXT_ID}/restrictions/:restrictionId`,
    { config: { permission: 'org:admin', of: 'context', action: 'context.restriction.delete' }, schema: { params: RestrictionParams } },
    async (request) => {
      await contexts.deleteRestriction(request.params.id, request.params.restrictionId, auditOf(request));
      return { message: 'Context restriction deleted.' };
    },
  );

  // Last of the context routes: a route-permission sweep that calls them in order deletes last.
  app.delete(CONTEXT_ID, { config: { permission: 'org:admin', of: 'context', action: 'context.delete' }, schema: { params: IdParams } }, async (request) => {
    await contexts.delete(request.params.id, auditOf(request));
    return { message: 'Context deleted.' };
  });

  // --- Project environment variables ------------------------------------------------------------------

  app.get(
    ENVVAR,
    { config: { permission: 'project:read' }, schema: { params: SlugParams, querystring: Type.Object({ 'page-token': PageToken }) } },
    async (request) => {
      const project = await projects.get(slugOf(request.params));
      return contexts.projectVariables.list(project.id, { pageToken: request.query['page-token'] });
    },
  );

  app.post(
    ENVVAR,
    {
      config: { permission: 'project:admin', action: 'project.envvar.put' },
      bodyLimit: VARIABLE_BODY_BYTES,
      schema: { params: SlugParams, body: Type.Object({ name: Type.String({ maxLength: 1000 }), value: Type.String() }) },
    },
    async (request, reply) => {
      const project = await projects.get(slugOf(request.params));
      const made = await contexts.projectVariables.put(project, request.body.name, request.body.value, auditOf(request));
      reply.code(201);
      return made;
    },
  );

  app.get(`${ENVVAR}/:name`, { config: { permission: 'project:read' }, schema: { params: ProjectVariableParams } }, async (request) => {
    const project = await projects.get(slugOf(request.params));
    return contexts.projectVariables.get(project.id, request.params.name);
  });

  app.delete(`${ENVVAR}/:name`, { config: { permission: 'project:admin', action: 'project.envvar.delete' }, schema: { params: ProjectVariableParams } }, async (request) => {
    const project = await projects.get(slugOf(request.params));
    await contexts.projectVariables.delete(project, request.params.name, auditOf(request));
    return { message: 'Environment variable deleted.' };
  });
}
