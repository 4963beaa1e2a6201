import { TextDecoder } from 'node:util';
import type { Conductor } from '../conductor/conductor';
import { CHANNELS } from '../dispatcher/dispatcher';
import { InputError, NotFoundError, PermissionError } from '../domain/errors';
import { isTerminalJobStatus, type JobStatus } from '../domain/model';
import type { Projects } from '../projects/projects';
import type { Store } from '../store/store';
import type { LogReader, OutputChunk } from '../output/logs';
import { drained, sendStream } from './http-server';
import type { ParameterValue, Triggers } from '../triggers/triggers';
import {
  findJob,
  getPipeline,
  getWorkflow,
  isUuid,
  jobDetails,
  jobSteps,
  listPipelines,
  listWorkflowJobs,
  listWorkflows,
  projectView,
  stepOutput,
  stepView,
  decodePageToken,
  encodePageToken,
} from './read-model';
import type { RequestContext, Router } from './router';

export interface V2RouteDeps {
  readonly store: Store;
  readonly projects: Projects;
  readonly triggers: Triggers;
  readonly conductor: Conductor;
  /** The address users reach the UI at, for `web_url`. */
  readonly webUrl: () => string;
  /** Reads step output wherever it is kept (the output role). @default - the database only */
  readonly logs?: LogReader;
}

const SLUG = '/api/v2/project/:vcs/:org/:repo';
const slugOf = (ctx: RequestContext) => `${ctx.params.vcs}/${ctx.params.org}/${ctx.params.repo}`;

function parseParameters(value: unknown): Record<string, ParameterValue> {
  if (value === undefined || value === null) return {};
  if (typeof value !== 'object' || Array.isArray(value)) throw new InputError('parameters must be an object of name to value', 'parameters');
  const out: Record<string, ParameterValue> = {};
  for (const [name, v] of Object.entries(value)) {
    if (typeof v !== 'string' && typeof v !== 'number' && typeof v !== 'boolean') {
      throw new InputError(`parameter '${name}' must be a string, number or boolean`, 'parameters');
    }
    out[name] = v;
  }
  return out;
}

function optionalString(body: Record<string, unknown>, field: string): string | undefined {
  const v = body[field];
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v !== 'string') throw new InputError(`${field} must be a string`, field);
  return v;
}

function nodeIndexOf(ctx: RequestContext): number | undefined {
  const raw = ctx.query.get('node_index');
  if (raw === null || raw === '') return undefined;
  if (!/^\d{1,4}$/.test(raw)) throw new InputError(`node_index '${raw}' must be a whole number`, 'node_index');
  return Number(raw);
}

export function registerV2Routes(router: Router, deps: V2RouteDeps): void {
  const { store, projects, triggers, conductor } = deps;

  router.get('/api/v2/me', async (ctx) => {
    const [user] = await store.query<{ id: string; login: string; name: string }>('SELECT id, login, name FROM users WHERE id = $1', [ctx.principal!.userId]);
    return { json: { id: user.id, login: user.login, name: user.name } };
  });

  router.get('/api/v2/projects', async (ctx) => {
    const cursor = decodePageToken<{ after?: string }>(ctx.query.get('page-token'));
    const limit = 50;
    const rows = await projects.list({ after: cursor?.after, limit: limit + 1 });
    const items = rows.slice(0, limit).map((p) => projectView({ id: p.id, slug: p.slug, name: p.name, org: p.org, repo_url: p.repoUrl, default_branch: p.defaultBranch }));
    return { json: { items, next_page_token: rows.length > limit ? encodePageToken({ after: rows[limit - 1].slug }) : null } };
  });

  router.post('/api/v2/projects', async (ctx) => {
    if (!ctx.principal?.isAdmin) throw new PermissionError('only an admin can add projects');
    const body = await ctx.body<Record<string, unknown>>();
    const org = optionalString(body, 'org');
    const name = optionalString(body, 'name');
    const repoUrl = optionalString(body, 'repo_url');
    if (!org) throw new InputError('org is required', 'org');
    if (!name) throw new InputError('name is required', 'name');
    if (!repoUrl) throw new InputError('repo_url is required (a path or URL git can clone)', 'repo_url');
    const p = await projects.add({ org, name, repoUrl });
    return { status: 201, json: projectView({ id: p.id, slug: p.slug, name: p.name, org: p.org, repo_url: p.repoUrl, default_branch: p.defaultBranch }) };
  });

  router.get(SLUG, async (ctx) => {
    const p = await projects.get(slugOf(ctx));
    return { json: projectView({ id: p.id, slug: p.slug, name: p.name, org: p.org, repo_url: p.repoUrl, default_branch: p.defaultBranch }) };
  });

  router.post(`${SLUG}/pipeline`, async (ctx) => {
    const body = await ctx.body<Record<string, unknown>>();
    const created = await triggers.trigger({
      slug: slugOf(ctx),
      branch: optionalString(body, 'branch'),
      tag: optionalString(body, 'tag'),
      parameters: parseParameters(body.parameters),
      actorId: ctx.principal?.userId,
      type: 'api',
    });
    return { status: 201, json: { id: created.id, number: created.number, state: created.state, created_at: created.createdAt.toISOString() } };
  });

  router.get(`${SLUG}/pipeline`, async (ctx) => {
    const project = await projects.get(slugOf(ctx));
    return { json: await listPipelines(store, project.id, { branch: ctx.query.get('branch') ?? undefined, pageToken: ctx.query.get('page-token') }) };
  });

  router.get('/api/v2/pipeline/:id', async (ctx) => ({ json: await getPipeline(store, ctx.params.id) }));

  router.get('/api/v2/pipeline/:id/workflow', async (ctx) => ({ json: await listWorkflows(store, ctx.params.id) }));

  router.get('/api/v2/pipeline/:id/config', async (ctx) => {
    await getPipeline(store, ctx.params.id);
    const [row] = await store.query<{
      config_source: string | null;
      config_compiled: string | null;
      setup_config_source: string | null;
      setup_config_compiled: string | null;
    }>('SELECT config_source, config_compiled, setup_config_source, setup_config_compiled FROM pipelines WHERE id = $1', [ctx.params.id]);
    return {
      json: {
        source: row.config_source ?? '',
        compiled: row.config_compiled ?? '',
        'setup-config': row.setup_config_source ?? '',
        'compiled-setup-config': row.setup_config_compiled ?? '',
      },
    };
  });

  // The continuation key authenticates this call (a setup job has no API token), so it is public.
  router.post(
    '/api/v2/pipeline/continue',
    async (ctx) => {
      const body = await ctx.body<Record<string, unknown>>();
      const key = body['continuation-key'];
      const configuration = body.configuration;
      if (typeof key !== 'string' || !key) throw new InputError('continuation-key is required', 'continuation-key');
      if (typeof configuration !== 'string' || !configuration.trim()) {
        throw new InputError('configuration is required: the config YAML (or JSON) to continue the pipeline with', 'configuration');
      }
      let parameters = body.parameters;
      // The continuation orb sends parameters as a JSON string as often as as an object.
      if (typeof parameters === 'string') {
        try {
          parameters = parameters.trim() ? JSON.parse(parameters) : {};
        } catch {
          throw new InputError('parameters must be an object (or a string holding a JSON object)', 'parameters');
        }
      }
      await conductor.continuePipeline({ key, configuration, parameters: parseParameters(parameters) });
      return { json: { message: 'Pipeline continued.' } };
    },
    { public: true },
  );

  router.get('/api/v2/workflow/:id', async (ctx) => ({ json: await getWorkflow(store, ctx.params.id) }));

  router.get('/api/v2/workflow/:id/job', async (ctx) => ({ json: await listWorkflowJobs(store, ctx.params.id) }));

  router.post('/api/v2/workflow/:id/cancel', async (ctx) => {
    if (!isUuid(ctx.params.id)) throw new NotFoundError('workflow', ctx.params.id);
    await conductor.cancelWorkflow(ctx.params.id, ctx.principal?.userId);
    return { status: 202, json: { message: 'Accepted.' } };
  });

  router.post('/api/v2/workflow/:id/approve/:requestId', async (ctx) => {
    if (!isUuid(ctx.params.id)) throw new NotFoundError('workflow', ctx.params.id);
    if (!isUuid(ctx.params.requestId)) throw new NotFoundError('approval request', ctx.params.requestId);
    await conductor.approveJob(ctx.params.id, ctx.params.requestId, ctx.principal?.userId);
    return { status: 202, json: { message: 'Accepted.' } };
  });

  router.get(`${SLUG}/job/:number`, async (ctx) => {
    const project = await projects.get(slugOf(ctx));
    const job = await findJob(store, project.id, ctx.params.number);
    return { json: await jobDetails(store, job, deps.webUrl()) };
  });

  router.get(`${SLUG}/job/:number/steps`, async (ctx) => {
    const project = await projects.get(slugOf(ctx));
    const job = await findJob(store, project.id, ctx.params.number);
    const steps = await jobSteps(store, job.id, nodeIndexOf(ctx));
    return { json: { items: steps.map(stepView), next_page_token: null } };
  });

  router.get(`${SLUG}/job/:number/output`, async (ctx) => {
    const project = await projects.get(slugOf(ctx));
    const job = await findJob(store, project.id, ctx.params.number);
    const nodeIndex = nodeIndexOf(ctx) ?? 0;
    const rawStep = ctx.query.get('step');
    if (rawStep === null || !/^\d{1,5}$/.test(rawStep)) throw new InputError('step (the step index, from the steps endpoint) is required', 'step');
    const step = (await jobSteps(store, job.id, nodeIndex)).find((s) => s.index === Number(rawStep));
    if (!step) throw new NotFoundError('step', `${rawStep} of node ${nodeIndex} of job ${job.number}`);
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
    return sendStream(ctx.res, body(), {
      'Content-Type': 'text/plain; charset=utf-8',
      'X-Content-Type-Options': 'nosniff',
      'X-Gyre-Step-Status': step.status,
    });
  });

  router.get(`${SLUG}/job/:number/output/stream`, async (ctx) => {
    const project = await projects.get(slugOf(ctx));
    const job = await findJob(store, project.id, ctx.params.number);
    await followJobOutput(ctx, deps, job.id, nodeIndexOf(ctx) ?? 0);
    return undefined;
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
async function followJobOutput(ctx: RequestContext, deps: V2RouteDeps, jobId: string, nodeIndex: number): Promise<void> {
  const { store } = deps;
  const { res, req } = ctx;
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
  const [task] = await store.query<{ id: string }>('SELECT id FROM tasks WHERE job_id = $1 AND node_index = $2', [jobId, nodeIndex]);
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
      const jobRow = checkJob ? (await store.query<{ status: JobStatus }>('SELECT status FROM jobs WHERE id = $1', [jobId]))[0] : undefined;
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
      if (jobRow && isTerminalJobStatus(jobRow.status)) {
        send('end', { status: jobRow.status });
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
