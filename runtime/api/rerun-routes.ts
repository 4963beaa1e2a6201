import { Type } from '@sinclair/typebox';
import type { Conductor } from '../conductor/conductor';
import { NotFoundError } from '../domain/errors';
import type { Projects } from '../projects/projects';
import type { Store } from '../store/store';
import { auditOf, principalOf, type GyreApp } from './http-app';
import { findJob, isUuid } from './read-model';
import { IdParams, Segment } from './schemas';
import { Message, RerunShape } from './v2-shapes';

/**
 * Reruns and cancels of CircleCI's API v2: `POST /workflow/{id}/rerun`, and job cancel by number
 * (`/project/{slug}/job/{n}/cancel`) or by id (`/jobs/{id}/cancel`). Each needs `project:trigger`,
 * as workflow cancel does, and is recorded in the audit log by the conductor that makes the change.
 */

export interface RerunRouteDeps {
  readonly store: Store;
  readonly projects: Projects;
  readonly conductor: Conductor;
}

/**
 * CircleCI's RerunWorkflowParameters (the body may be absent or null: a whole rerun). A field it
 * does not have is a 400 naming it, so a client that says `is_from_failed` (API v3's name) is told
 * so rather than rerunning everything.
 */
const RerunBody = Type.Union([
  Type.Object(
    {
      enable_ssh: Type.Optional(Type.Boolean()),
      from_failed: Type.Optional(Type.Boolean()),
      jobs: Type.Optional(Type.Array(Type.String({ maxLength: 100 }), { maxItems: 1000 })),
      sparse_tree: Type.Optional(Type.Boolean()),
    },
    { additionalProperties: false },
  ),
  Type.Null(),
]);

const JobNumberParams = Type.Object({ vcs: Segment, org: Segment, repo: Segment, number: Segment });

const ACCEPTED = { message: 'Accepted.' };

export function registerRerunRoutes(app: GyreApp, deps: RerunRouteDeps): void {
  const { store, projects, conductor } = deps;

  app.post(
    '/api/v2/workflow/:id/rerun',
    { config: { permission: 'project:trigger', of: 'workflow', action: 'workflow.rerun' }, schema: { params: IdParams, body: RerunBody, response: { 202: RerunShape } } },
    async (request, reply) => {
      if (!isUuid(request.params.id)) throw new NotFoundError('workflow', request.params.id);
      const body = request.body ?? {};
      const workflowId = await conductor.rerunWorkflow(
        request.params.id,
        { fromFailed: body.from_failed, jobs: body.jobs, sparseTree: body.sparse_tree, enableSsh: body.enable_ssh },
        principalOf(request).userId,
        auditOf(request),
      );
      reply.code(202);
      return { workflow_id: workflowId };
    },
  );

  app.post(
    '/api/v2/project/:vcs/:org/:repo/job/:number/cancel',
    { config: { permission: 'project:trigger', action: 'job.cancel' }, schema: { params: JobNumberParams, response: { 200: Message } } },
    async (request) => {
      const { vcs, org, repo, number } = request.params;
      const project = await projects.get(`${vcs}/${org}/${repo}`);
      const job = await findJob(store, project.id, number);
      await conductor.cancelJob(job.id, principalOf(request).userId, auditOf(request));
      return ACCEPTED;
    },
  );

  app.post('/api/v2/jobs/:id/cancel', { config: { permission: 'project:trigger', of: 'job', action: 'job.cancel' }, schema: { params: IdParams, response: { 200: Message } } }, async (request) => {
    if (!isUuid(request.params.id)) throw new NotFoundError('job', request.params.id);
    await conductor.cancelJob(request.params.id, principalOf(request).userId, auditOf(request));
    return ACCEPTED;
  });
}
