import { Type, type TSchema } from '@sinclair/typebox';

/**
 * What API v2 routes answer, as schemas: CircleCI's shapes (its API v2 description) with the fields
 * Gyre fills, for `GET /api/v2/openapi.json` (./openapi.ts). They document; they do not shape the
 * answer (the app serializes with JSON.stringify whatever the handler returns, http-app.ts), and the
 * conformance test checks the answers themselves against CircleCI's description.
 */

/**
 * A response schema for the description only: handlers return the read model's views, whose types
 * are looser than these (database rows), so the answer's type is not checked against it.
 */
const Documented = <T extends TSchema>(schema: T) => Type.Unsafe<any>(schema);

const Nullable = <T extends TSchema>(schema: T) => Type.Union([schema, Type.Null()]);
const Uuid = Type.String({ format: 'uuid' });
const Time = Type.String({ format: 'date-time' });
const Page = <T extends TSchema>(item: T, title: string) => Type.Object({ items: Type.Array(item), next_page_token: Nullable(Type.String()) }, { title });

export const Message = Documented(Type.Object({ message: Type.String() }, { title: 'MessageResponse' }));

export const ProjectShape = Documented(
  Type.Object(
    {
      id: Uuid,
      slug: Type.String({ description: 'gh/<organization>/<repository>' }),
      name: Type.String(),
      organization_name: Type.String(),
      organization_slug: Type.String(),
      organization_id: Uuid,
      vcs_info: Type.Object({ vcs_url: Type.String(), provider: Type.String({ enum: ['GitHub'] }), default_branch: Type.String() }),
      protected_branches: Type.Optional(Type.Array(Type.String(), { description: "Gyre's: branch patterns protected besides the default branch" })),
    },
    { title: 'Project' }
  )
);
export const ProjectList = Documented(Page(ProjectShape, 'ProjectList'));

export const ProjectSettingsShape = Documented(
  Type.Object(
    {
      advanced: Type.Object({
        autocancel_builds: Type.Boolean(),
        build_fork_prs: Type.Boolean(),
        build_prs_only: Type.Boolean(),
        forks_receive_secret_env_vars: Type.Boolean(),
        set_github_status: Type.Boolean(),
      }),
    },
    { title: 'project_settings' }
  )
);

export const PipelineShape = Documented(
  Type.Object(
    {
      id: Uuid,
      errors: Type.Array(Type.Object({ type: Type.String(), message: Type.String() })),
      project_slug: Type.String(),
      updated_at: Time,
      number: Type.Integer(),
      trigger_parameters: Type.Record(Type.String(), Type.Unknown()),
      state: Type.String({ enum: ['created', 'errored', 'setup-pending', 'setup', 'pending'] }),
      created_at: Time,
      trigger: Type.Object({
        type: Type.String({ enum: ['scheduled_pipeline', 'explicit', 'api', 'webhook'] }),
        received_at: Time,
        actor: Type.Object({ login: Type.String(), avatar_url: Nullable(Type.String()) }),
      }),
      vcs: Type.Object({
        provider_name: Type.String(),
        target_repository_url: Type.String(),
        origin_repository_url: Type.String(),
        revision: Type.String(),
        branch: Type.Optional(Type.String()),
        tag: Type.Optional(Type.String()),
        commit: Type.Object({ subject: Type.String(), body: Type.String() }),
      }),
    },
    { title: 'Pipeline' }
  )
);
export const PipelineList = Documented(Page(PipelineShape, 'PipelineListResponse'));

export const PipelineCreation = Documented(
  Type.Object({ id: Uuid, number: Type.Integer(), state: Type.String({ enum: ['created', 'errored', 'setup-pending', 'setup', 'pending'] }), created_at: Time }, { title: 'PipelineCreation' })
);

export const PipelineValuesShape = Documented(Type.Record(Type.String(), Type.Union([Type.String(), Type.Integer(), Type.Boolean()]), { title: 'PipelineValues' }));

export const PipelineConfigShape = Documented(
  Type.Object({ source: Type.String(), compiled: Type.String(), 'setup-config': Type.String(), 'compiled-setup-config': Type.String() }, { title: 'PipelineConfig' })
);

const WORKFLOW_STATUSES = ['success', 'running', 'not_run', 'failed', 'error', 'failing', 'on_hold', 'canceled', 'unauthorized'];
export const WorkflowShape = Documented(
  Type.Object(
    {
      pipeline_id: Uuid,
      canceled_by: Type.Optional(Uuid),
      id: Uuid,
      name: Type.String(),
      project_slug: Type.String(),
      status: Type.String({ enum: WORKFLOW_STATUSES }),
      started_by: Type.String({ format: 'uuid', description: 'the user who started it; 00000000-0000-0000-0000-000000000000 (the system actor) when no user did: a schedule attributed to the system, a webhook from an unlinked GitHub account' }),
      pipeline_number: Type.Integer(),
      created_at: Time,
      stopped_at: Nullable(Time),
      tag: Type.Optional(Type.String()),
      rerun_of: Type.Optional(Type.String({ format: 'uuid', description: "Gyre's: the workflow this one reran" })),
    },
    { title: 'Workflow' }
  )
);
export const WorkflowList = Documented(Page(WorkflowShape, 'WorkflowListResponse'));

const JOB_STATUSES = [
  'success',
  'running',
  'not_run',
  'failed',
  'retried',
  'queued',
  'not_running',
  'infrastructure_fail',
  'timedout',
  'on_hold',
  'terminated-unknown',
  'blocked',
  'canceled',
  'unauthorized',
];
export const WorkflowJobList = Documented(
  Page(
    Type.Object({
      canceled_by: Type.Optional(Uuid),
      dependencies: Type.Array(Uuid),
      job_number: Type.Optional(Type.Integer()),
      id: Uuid,
      started_at: Nullable(Time),
      name: Type.String(),
      approved_by: Type.Optional(Uuid),
      project_slug: Type.String(),
      status: Type.String({ enum: JOB_STATUSES }),
      type: Type.String({ enum: ['build', 'approval'] }),
      stopped_at: Nullable(Time),
      approval_request_id: Type.Optional(Uuid),
    }),
    'WorkflowJobListResponse'
  )
);

export const JobDetailsShape = Documented(
  Type.Object(
    {
      web_url: Type.String(),
      project: Type.Object({ id: Uuid, slug: Type.String(), name: Type.String(), external_url: Type.String() }),
      parallel_runs: Type.Array(Type.Object({ index: Type.Integer(), status: Type.String() })),
      started_at: Nullable(Time),
      latest_workflow: Type.Object({ id: Uuid, name: Type.String() }),
      name: Type.String(),
      executor: Type.Object({ type: Type.String(), resource_class: Type.String() }),
      parallelism: Type.Integer(),
      status: Type.String({ enum: JOB_STATUSES }),
      number: Type.Integer(),
      pipeline: Type.Object({ id: Uuid }),
      duration: Nullable(Type.Integer()),
      created_at: Nullable(Time),
      messages: Type.Array(Type.Object({ type: Type.String(), message: Type.String(), reason: Type.Optional(Type.String()) })),
      contexts: Type.Array(Type.Object({ name: Type.String() })),
      organization: Type.Object({ name: Type.String() }),
      queued_at: Nullable(Time),
      stopped_at: Nullable(Time),
    },
    { title: 'Job' }
  )
);

export const RerunShape = Documented(Type.Object({ workflow_id: Uuid }, { title: 'RerunWorkflowResponse' }));

export const UserShape = Documented(
  Type.Object({ id: Uuid, login: Type.String(), name: Type.String(), admin: Type.Optional(Type.Boolean({ description: "Gyre's: an instance admin" })) }, { title: 'User' })
);
