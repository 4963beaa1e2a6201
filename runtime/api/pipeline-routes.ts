import { Type } from '@sinclair/typebox';
import { InputError } from '../domain/errors';
import { visibilityOf } from '../identity/identity';
import type { Projects } from '../projects/projects';
import type { Store } from '../store/store';
import type { Triggers } from '../triggers/triggers';
import { auditOf, principalOf, type GyreApp } from './http-app';
import { getPipelineByNumber, listPipelines, listVisiblePipelines, pipelineValues } from './read-model';
import { IdParams, Parameters, Segment, SlugParams } from './schemas';
import { PipelineCreation, PipelineList, PipelineShape, PipelineValuesShape } from './v2-shapes';

/**
 * The rest of CircleCI API v2's pipelines and projects (beside v2-routes.ts): a pipeline by its
 * number, `pipeline/mine`, `pipeline/{id}/values`, the pipelines of every project a caller can see
 * (`GET /pipeline`) and `pipeline/run`. Response schemas (./v2-shapes.ts) are the
 * description's shapes and go into `GET /api/v2/openapi.json`.
 */
export interface PipelineRouteDeps {
  readonly store: Store;
  readonly projects: Projects;
  readonly triggers: Triggers;
}

const SLUG = '/api/v2/project/:vcs/:org/:repo';
const slugOf = (p: { vcs: string; org: string; repo: string }) => `${p.vcs}/${p.org}/${p.repo}`;

const PageToken = Type.Optional(Type.String({ maxLength: 1000 }));
const NumberParams = Type.Object({ vcs: Segment, org: Segment, repo: Segment, number: Segment });
const Ref = Type.Object({ branch: Type.Optional(Type.String({ minLength: 1, maxLength: 1024 })), tag: Type.Optional(Type.String({ minLength: 1, maxLength: 1024 })) }, { additionalProperties: false });

/** CircleCI's pipelineRequest (`pipeline/run`): what to read the config from and check out, and parameters. */
const PipelineRunBody = Type.Object(
  {
    definition_id: Type.Optional(Type.String({ maxLength: 100, description: 'accepted and not used: a Gyre project has one pipeline definition, its .circleci/config.yml' })),
    config: Type.Optional(Ref),
    checkout: Type.Optional(Ref),
    parameters: Type.Optional(Parameters),
  },
  { additionalProperties: false }
);

/** The ref one part of a pipeline/run body names, or undefined; both a branch and a tag is a 400 naming the part. */
function refOf(ref: { branch?: string; tag?: string } | undefined, part: string): { branch?: string; tag?: string } | undefined {
  if (!ref || (ref.branch === undefined && ref.tag === undefined)) return undefined;
  if (ref.branch !== undefined && ref.tag !== undefined) throw new InputError(`body.${part} gives a branch and a tag: give one of them`, part);
  return ref;
}

export function registerPipelineRoutes(app: GyreApp, deps: PipelineRouteDeps): void {
  const { store, projects, triggers } = deps;

  app.get(
    '/api/v2/pipeline',
    {
      config: { permission: 'authenticated' },
      schema: {
        querystring: Type.Object({ 'org-slug': Type.Optional(Type.String({ maxLength: 300 })), 'page-token': PageToken, mine: Type.Optional(Type.Boolean()) }),
        response: { 200: PipelineList },
      },
    },
    async (request) => {
      const q = request.query;
      let orgName: string | undefined;
      if (q['org-slug']) {
        const m = /^(?:gh|github)\/([^/]+)$/.exec(q['org-slug']);
        if (!m) throw new InputError(`org-slug '${q['org-slug'].slice(0, 100)}' must look like gh/<org>`, 'org-slug');
        orgName = m[1];
      }
      const principal = principalOf(request);
      return listVisiblePipelines(store, { who: visibilityOf(principal), orgName, actorId: q.mine ? principal.userId : undefined, pageToken: q['page-token'] });
    }
  );

  app.get(
    `${SLUG}/pipeline/mine`,
    { config: { permission: 'project:read' }, schema: { params: SlugParams, querystring: Type.Object({ 'page-token': PageToken }), response: { 200: PipelineList } } },
    async (request) => {
      const project = await projects.get(slugOf(request.params));
      return listPipelines(store, project.id, { actorId: principalOf(request).userId, pageToken: request.query['page-token'] });
    }
  );

  app.get(`${SLUG}/pipeline/:number`, { config: { permission: 'project:read' }, schema: { params: NumberParams, response: { 200: PipelineShape } } }, async (request) => {
    const project = await projects.get(slugOf(request.params));
    return getPipelineByNumber(store, project.id, request.params.number);
  });

  app.get('/api/v2/pipeline/:id/values', { config: { permission: 'project:read', of: 'pipeline' }, schema: { params: IdParams, response: { 200: PipelineValuesShape } } }, async (request) =>
    pipelineValues(store, request.params.id)
  );

  // CircleCI's newer trigger: the config's ref and the checkout's ref. Gyre reads the config from
  // the commit it checks out, so they must name the same ref when both are given.
  app.post(
    `${SLUG}/pipeline/run`,
    {
      config: { permission: 'project:trigger', action: 'pipeline.trigger', keepsCaches: true },
      schema: { params: SlugParams, body: Type.Union([PipelineRunBody, Type.Null()]), response: { 201: PipelineCreation } },
    },
    async (request, reply) => {
      const body = request.body ?? {};
      const config = refOf(body.config, 'config');
      const checkout = refOf(body.checkout, 'checkout');
      if (config && checkout && (config.branch !== checkout.branch || config.tag !== checkout.tag)) {
        throw new InputError('body.checkout must name the same branch or tag as body.config: Gyre reads the config from the commit it checks out', 'checkout');
      }
      const ref = config ?? checkout ?? {};
      const created = await triggers.trigger({
        slug: slugOf(request.params),
        branch: ref.branch,
        tag: ref.tag,
        parameters: body.parameters ?? {},
        actorId: principalOf(request).userId,
        type: 'api',
        audit: auditOf(request),
      });
      reply.code(201);
      return { id: created.id, number: created.number, state: created.state, created_at: created.createdAt.toISOString() };
    }
  );
}
