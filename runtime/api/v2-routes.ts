import type { IncomingMessage, ServerResponse } from 'node:http';
import { TextDecoder } from 'node:util';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { Type } from '@sinclair/typebox';
import type { Conductor } from '../conductor/conductor';
import { CHANNELS } from '../dispatcher/dispatcher';
import { InputError, NotFoundError } from '../domain/errors';
import { isTerminalJobStatus } from '../domain/model';
import type { Projects } from '../projects/projects';
import type { PipelineViewCache } from './pipeline-view-cache';
import type { Store } from '../store/store';
import type { LogReader, OutputChunk } from '../output/logs';
import { auditOf, drained, principalOf, sendStream, type GyreApp } from './http-app';
import type { ParameterValue, Triggers } from '../triggers/triggers';
import {
  cursorText,
  decodePageToken,
  encodePageToken,
  findJob,
  getPipeline,
  getWorkflow,
  isUuid,
  jobDetails,
  jobStatus,
  jobSteps,
  listPipelines,
  listWorkflowJobs,
  listWorkflows,
  pipelineConfig,
  projectView,
  settingsOf,
  stepOutput,
  stepView,
  taskOfNode,
  userView,
} from './read-model';
import { given, IdParams, Int32, OptionalText, PageQuery, Parameters, Segment, SlugParams } from './schemas';
import {
  JobDetailsShape,
  Message,
  PipelineConfigShape,
  PipelineCreation,
  PipelineList,
  PipelineShape,
  ProjectList,
  ProjectSettingsShape,
  ProjectShape,
  UserShape,
  WorkflowJobList,
  WorkflowList,
  WorkflowShape,
} from './v2-shapes';

export interface V2RouteDeps {
  readonly store: Store;
  readonly projects: Projects;
  readonly triggers: Triggers;
  readonly conductor: Conductor;
  /** The address users reach the UI at, for `web_url`. */
  readonly webUrl: () => string;
  /** Reads step output wherever it is kept (the output role). @default - the database only */
  readonly logs?: LogReader;
  /** Largest continuation body (the configuration a setup job generated), in bytes. */
  readonly maxContinuationBytes: number;
  /** Answers of `GET /pipeline/{id}` kept in memory (pipeline-view-cache.ts). @default - none: every request reads */
  readonly pipelineViews?: PipelineViewCache;
}

const SLUG = '/api/v2/project/:vcs/:org/:repo';
const slugOf = (params: { vcs: string; org: string; repo: string }) => `${params.vcs}/${params.org}/${params.repo}`;

const JobParams = Type.Object({ vcs: Segment, org: Segment, repo: Segment, number: Segment });
const NodeQuery = Type.Object({ node_index: Type.Optional(Int32({ maximum: 9999 })) });

/** The continuation orb sends parameters as a JSON string as often as an object. */
function continuationParameters(value: unknown): Record<string, ParameterValue> {
  let parsed = value;
  if (typeof value === 'string') {
    try {
      parsed = value.trim() ? JSON.parse(value) : {};
    } catch {
      throw new InputError('parameters must be an object (or a string holding a JSON object)', 'parameters');
    }
  }
  if (parsed === undefined || parsed === null) return {};
  if (typeof parsed !== 'object' || Array.isArray(parsed)) throw new InputError('parameters must be an object of name to value', 'parameters');
  const out: Record<string, ParameterValue> = {};
  for (const [name, v] of Object.entries(parsed)) {
    if (typeof v !== 'string' && typeof v !== 'number' && typeof v !== 'boolean') {
      throw new InputError(`parameter '${name}' must be a string, number or boolean`, 'parameters');
    }
    out[name] = v;
  }
  return out;
}

export function registerV2Routes(app: GyreApp, deps: V2RouteDeps): void {
  const { store, projects, triggers, conductor } = deps;
  const view = (p: Awaited<ReturnType<Projects['get']>>) => ({
    ...projectView({ id: p.id, slug: p.slug, name: p.name, org: p.org, organization_id: p.organizationId, repo_url: p.repoUrl, default_branch: p.defaultBranch }),
    protected_branches: p.protectedBranches,
  });

  app.get('/api/v2/me', { config: { permission: 'user:self' }, schema: { response: { 200: UserShape } } }, async (request) => userView(store, principalOf(request).userId));

  app.get('/api/v2/projects', { config: { permission: 'authenticated' }, schema: { querystring: PageQuery, response: { 200: ProjectList } } }, async (request) => {
    const cursor = decodePageToken<{ after?: string }>(request.query['page-token'], (c) => cursorText(c.after));
    const limit = 50;
    const rows = await projects.list({ after: cursor?.after, limit: limit + 1, visibleTo: principalOf(request) });
    return { items: rows.slice(0, limit).map(view), next_page_token: rows.length > limit ? encodePageToken({ after: rows[limit - 1].slug }) : null };
  });

  app.post(
    '/api/v2/projects',
    {
      config: { permission: 'instance:admin', action: 'project.create' },
      schema: {
        body: Type.Object({ org: Type.String({ minLength: 1, maxLength: 100 }), name: Type.String({ minLength: 1, maxLength: 100 }), repo_url: Type.Optional(Type.String({ minLength: 1, maxLength: 4096 })) }),
        response: { 201: ProjectShape },
      },
    },
    async (request, reply) => {
      const { org, name, repo_url: repoUrl } = request.body;
      reply.code(201);
      return view(await projects.add({ org, name, repoUrl }, auditOf(request)));
    },
  );

  app.get(SLUG, { config: { permission: 'project:read' }, schema: { params: SlugParams, response: { 200: ProjectShape } } }, async (request) => view(await projects.get(slugOf(request.params))));

  // Branches whose jobs restore only caches saved on protected branches, beside the default branch
  // (GYRE_CACHE_TRUST=protected; docs/security.md).
  app.put(
    `${SLUG}/protected-branches`,
    {
      config: { permission: 'project:admin', action: 'project.protected-branches' },
      schema: { params: SlugParams, body: Type.Object({ patterns: Type.Array(Type.String({ minLength: 1, maxLength: 256 }), { maxItems: 100 }) }) },
    },
    async (request) => {
      const project = await projects.setProtectedBranches(slugOf(request.params), request.body.patterns, auditOf(request));
      return { protected_branches: project.protectedBranches };
    },
  );

  // CircleCI's project settings (`advanced`), those Gyre has (runtime/projects/projects.ts says what
  // each does). A setting Gyre does not have, or a value that is not a boolean, is a 400 naming it.
  const settingsView = settingsOf;
  const Setting = Type.Optional(Type.Boolean());
  const Advanced = Type.Object(
    { autocancel_builds: Setting, build_fork_prs: Setting, build_prs_only: Setting, forks_receive_secret_env_vars: Setting, set_github_status: Setting },
    { additionalProperties: false },
  );
  app.get(`${SLUG}/settings`, { config: { permission: 'project:read' }, schema: { params: SlugParams, response: { 200: ProjectSettingsShape } } }, async (request) => settingsView(await projects.get(slugOf(request.params))));
  app.patch(
    `${SLUG}/settings`,
    {
      config: { permission: 'project:admin', action: 'project.settings' },
      schema: { params: SlugParams, body: Type.Object({ advanced: Type.Optional(Advanced) }, { additionalProperties: false }), response: { 200: ProjectSettingsShape } },
    },
    async (request) => {
      const advanced = request.body.advanced ?? {};
      const change = {
        autocancelBuilds: advanced.autocancel_builds,
        buildForkPrs: advanced.build_fork_prs,
        buildPrsOnly: advanced.build_prs_only,
        forksReceiveSecretEnvVars: advanced.forks_receive_secret_env_vars,
        setGithubStatus: advanced.set_github_status,
      };
      return settingsView(await projects.updateSettings(slugOf(request.params), change, auditOf(request)));
    },
  );

  app.post(
    `${SLUG}/pipeline`,
    {
      config: { permission: 'project:trigger', action: 'pipeline.trigger', keepsCaches: true },
      schema: {
        params: SlugParams,
        body: Type.Object({ branch: OptionalText(1024), tag: OptionalText(1024), parameters: Type.Optional(Type.Union([Parameters, Type.Null()])) }),
        response: { 201: PipelineCreation },
      },
    },
    async (request, reply) => {
      const { branch, tag, parameters } = request.body;
      const created = await triggers.trigger({
        slug: slugOf(request.params),
        branch: given(branch),
        tag: given(tag),
        parameters: parameters ?? {},
        actorId: principalOf(request).userId,
        type: 'api',
        audit: auditOf(request),
      });
      reply.code(201);
      return { id: created.id, number: created.number, state: created.state, created_at: created.createdAt.toISOString() };
    },
  );

  app.get(
    `${SLUG}/pipeline`,
    {
      config: { permission: 'project:read' },
      schema: { params: SlugParams, querystring: Type.Object({ branch: Type.Optional(Type.String({ maxLength: 1024 })), 'page-token': Type.Optional(Type.String({ maxLength: 1000 })) }), response: { 200: PipelineList } },
    },
    async (request) => {
      const project = await projects.get(slugOf(request.params));
      return listPipelines(store, project.id, { branch: given(request.query.branch), pageToken: request.query['page-token'] });
    },
  );

  app.get('/api/v2/pipeline/:id', { config: { permission: 'project:read', of: 'pipeline' }, schema: { params: IdParams, response: { 200: PipelineShape } } }, async (request) => {
    const id = request.params.id;
    if (!deps.pipelineViews) return getPipeline(store, id);
    return deps.pipelineViews.get(id, () => getPipeline(store, id), (pipeline) => pipeline.state === 'created' || pipeline.state === 'errored');
  });

  app.get('/api/v2/pipeline/:id/workflow', { config: { permission: 'project:read', of: 'pipeline' }, schema: { params: IdParams, response: { 200: WorkflowList } } }, async (request) => listWorkflows(store, request.params.id));

  app.get('/api/v2/pipeline/:id/config', { config: { permission: 'project:read', of: 'pipeline' }, schema: { params: IdParams, response: { 200: PipelineConfigShape } } }, async (request) => pipelineConfig(store, request.params.id));

  // The continuation key authenticates this call (a setup job has no API token), so it is public;
  // its body is bounded by the largest config the compiler takes.
  app.post(
    '/api/v2/pipeline/continue',
    {
      config: { auth: 'public' },
      bodyLimit: deps.maxContinuationBytes,
      schema: {
        body: Type.Object({
          'continuation-key': Type.String({ minLength: 1, maxLength: 1024 }),
          configuration: Type.String({ minLength: 1 }),
          parameters: Type.Optional(Type.Union([Parameters, Type.String(), Type.Null()])),
        }),
        response: { 200: Message },
      },
    },
    async (request) => {
      const body = request.body;
      if (!body.configuration.trim()) throw new InputError('configuration is required: the config YAML (or JSON) to continue the pipeline with', 'configuration');
      await conductor.continuePipeline({ key: body['continuation-key'], configuration: body.configuration, parameters: continuationParameters(body.parameters) });
      return { message: 'Pipeline continued.' };
    },
  );

  app.get('/api/v2/workflow/:id', { config: { permission: 'project:read', of: 'workflow' }, schema: { params: IdParams, response: { 200: WorkflowShape } } }, async (request) => getWorkflow(store, request.params.id));

  app.get('/api/v2/workflow/:id/job', { config: { permission: 'project:read', of: 'workflow' }, schema: { params: IdParams, response: { 200: WorkflowJobList } } }, async (request) => listWorkflowJobs(store, request.params.id));

  app.post('/api/v2/workflow/:id/cancel', { config: { permission: 'project:trigger', of: 'workflow', action: 'workflow.cancel' }, schema: { params: IdParams, response: { 202: Message } } }, async (request, reply) => {
    if (!isUuid(request.params.id)) throw new NotFoundError('workflow', request.params.id);
    await conductor.cancelWorkflow(request.params.id, principalOf(request).userId, auditOf(request));
    reply.code(202);
    return { message: 'Accepted.' };
  });

  app.post(
    '/api/v2/workflow/:id/approve/:requestId',
    { config: { permission: 'project:trigger', of: 'workflow', action: 'job.approve' }, schema: { params: Type.Object({ id: Segment, requestId: Segment }), response: { 202: Message } } },
    async (request, reply) => {
      const { id, requestId } = request.params;
      if (!isUuid(id)) throw new NotFoundError('workflow', id);
      if (!isUuid(requestId)) throw new NotFoundError('approval request', requestId);
      await conductor.approveJob(id, requestId, principalOf(request).userId, auditOf(request));
      reply.code(202);
      return { message: 'Accepted.' };
    },
  );

  const jobOf = async (params: { vcs: string; org: string; repo: string; number: string }) => {
    const project = await projects.get(slugOf(params));
    return findJob(store, project.id, params.number);
  };

  app.get(`${SLUG}/job/:number`, { config: { permission: 'project:read' }, schema: { params: JobParams, response: { 200: JobDetailsShape } } }, async (request) => jobDetails(store, await jobOf(request.params), deps.webUrl()));

  app.get(`${SLUG}/job/:number/steps`, { config: { permission: 'project:read' }, schema: { params: JobParams, querystring: NodeQuery } }, async (request) => {
    const job = await jobOf(request.params);
    const steps = await jobSteps(store, job.id, request.query.node_index);
    return { items: steps.map(stepView), next_page_token: null };
  });

  app.get(
    `${SLUG}/job/:number/output`,
    { config: { permission: 'project:read' }, schema: { params: JobParams, querystring: Type.Object({ node_index: Type.Optional(Int32({ maximum: 9999 })), step: Int32({ maximum: 99_999 }) }) } },
    async (request, reply) => {
      const job = await jobOf(request.params);
      const nodeIndex = request.query.node_index ?? 0;
      const step = (await jobSteps(store, job.id, nodeIndex)).find((s) => s.index === request.query.step);
      if (!step) throw new NotFoundError('step', `${request.query.step} of node ${nodeIndex} of job ${job.number}`);
      // Streamed chunk by chunk (from the database, or the archive through gunzip): a step of any
      // size costs one chunk of memory. Its length is not known up front, so no Content-Length. The
      // first chunk is read before the headers go out, so a step that cannot be read is an error
      // response, not a cut one.
      const chunks = readOutput(deps, step.task_id, step.attempt, step.index);
      const first = await chunks.next();
      async function* body() {
        try {
          if (first.done) return;
          yield first.value.data;
          for await (const chunk of { [Symbol.asyncIterator]: () => chunks }) yield chunk.data;
        } finally {
          // A client that hangs up ends the reading (and closes an archive being read).
          await chunks.return(undefined);
        }
      }
      await sendStream(reply, body(), { 'Content-Type': 'text/plain; charset=utf-8', 'X-Gyre-Step-Status': step.status });
    },
  );

  app.get(`${SLUG}/job/:number/output/stream`, { config: { permission: 'project:read' }, schema: { params: JobParams, querystring: NodeQuery } }, async (request, reply) => {
    const job = await jobOf(request.params);
    await followJobOutput(request, reply, deps, job.id, request.query.node_index ?? 0);
  });
}

/** A step's output after chunk `afterSeq`, from the output role (without it, from the database). */
async function* readOutput(deps: V2RouteDeps, taskId: string, attempt: number, step: number, afterSeq = -1): AsyncGenerator<OutputChunk> {
  if (deps.logs) yield* deps.logs.read(taskId, attempt, step, afterSeq);
  else yield* await stepOutput(deps.store, taskId, attempt, step, afterSeq);
}

/**
 * Streams a job's steps and output as Server-Sent Events, from the beginning, until the job ends.
 * New output is announced by NOTIFY; a slow poll covers notifications lost to a reconnect.
 */
async function followJobOutput(request: FastifyRequest, reply: FastifyReply, deps: V2RouteDeps, jobId: string, nodeIndex: number): Promise<void> {
  const { store } = deps;
  // Everything it needs is looked up before the stream starts: a failure after it has is a cut stream.
  const task = await taskOfNode(store, jobId, nodeIndex);
  reply.hijack();
  // Once the stream has started, a failure can only cut it.
  await streamJobOutput(request.raw, reply.raw, deps, jobId, nodeIndex, task).catch(() => reply.raw.destroy());
}

async function streamJobOutput(req: IncomingMessage, res: ServerResponse, deps: V2RouteDeps, jobId: string, nodeIndex: number, task: { id: string } | undefined): Promise<void> {
  const { store } = deps;
  res.writeHead(200, {
    'Content-Type': 'text/event-stream; charset=utf-8',
    'Cache-Control': 'no-store',
    Connection: 'keep-alive',
    'X-Accel-Buffering': 'no',
  });
  res.write(': following\n\n');
  const send = (event: string, data: unknown) => res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);

  let closed = false;
  let wake: (() => void) | undefined;
  // `dirty` remembers a notification that arrived while we were querying, so none is missed.
  let dirty = false;
  const poke = () => {
    dirty = true;
    wake?.();
  };
  req.on('close', () => {
    closed = true;
    poke();
  });
  const unlisten = await store.listen(CHANNELS.taskOutput, (payload) => {
    try {
      if (task && JSON.parse(payload).taskId === task.id) poke();
    } catch {
      /* not ours */
    }
  });
  // The job's status is read when it may have changed: at first, when it is announced, and on the
  // slow poll; not for every chunk of output.
  let jobMayHaveEnded = true;
  const unlistenJob = await store.listen(CHANNELS.jobFinished, (id) => {
    if (id !== jobId) return;
    jobMayHaveEnded = true;
    poke();
  });
  const keepAlive = setInterval(() => res.write(': keep-alive\n\n'), 15000);
  try {
    let attempt = -1;
    const sentStatus = new Map<number, string>();
    const cursor = new Map<number, number>();
    const decoders = new Map<number, TextDecoder>();
    while (!closed) {
      dirty = false;
      // Read before the steps: a job that has ended has all its steps' output stored.
      const checkJob = jobMayHaveEnded;
      jobMayHaveEnded = false;
      const status = checkJob ? await jobStatus(store, jobId) : undefined;
      const steps = await jobSteps(store, jobId, nodeIndex);
      const current = steps.length ? steps[0].attempt : attempt;
      if (current !== attempt && steps.length) {
        if (attempt !== -1) send('attempt', { node_index: nodeIndex, attempt: current });
        attempt = current;
        sentStatus.clear();
        cursor.clear();
        decoders.clear();
      }
      for (const step of steps) {
        // A step's status is read before its output, and it ends only after its last chunk was
        // stored: once its end has been sent, everything of it has, and it is not read again.
        if (step.status !== 'running' && sentStatus.get(step.index) === step.status) continue;
        if (sentStatus.get(step.index) === undefined) {
          send('step', { ...stepView(step), status: 'running', exit_code: null, stopped_at: null });
          sentStatus.set(step.index, 'running');
        }
        let decoder = decoders.get(step.index);
        if (!decoder) decoders.set(step.index, (decoder = new TextDecoder('utf-8')));
        for await (const chunk of readOutput(deps, step.task_id, step.attempt, step.index, cursor.get(step.index) ?? -1)) {
          // A chunk may end inside a multi-byte character: the streaming decoder keeps the tail.
          const text = decoder.decode(chunk.data, { stream: true });
          cursor.set(step.index, chunk.seq);
          // A long backlog (a finished step of a large log) goes out as fast as the client reads it.
          if (text && !send('output', { node_index: nodeIndex, step: step.index, seq: chunk.seq, text })) await drained(res);
          if (closed) break;
        }
        if (closed) break;
        if (step.status !== 'running' && sentStatus.get(step.index) !== step.status) {
          const tail = decoder.decode();
          if (tail) send('output', { node_index: nodeIndex, step: step.index, seq: cursor.get(step.index) ?? 0, text: tail });
          send('step', stepView(step));
          sentStatus.set(step.index, step.status);
        }
      }
      if (status && isTerminalJobStatus(status)) {
        send('end', { status });
        break;
      }
      if (dirty) continue;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          jobMayHaveEnded = true;
          resolve();
        }, 1000);
        wake = () => {
          clearTimeout(timer);
          wake = undefined;
          resolve();
        };
      });
    }
  } finally {
    clearInterval(keepAlive);
    await unlisten();
    await unlistenJob();
    res.end();
  }
}
