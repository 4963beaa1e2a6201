import { TextDecoder } from 'node:util';
import { Type } from '@sinclair/typebox';
import { NotFoundError } from '../domain/errors';
import { visibilityOf } from '../identity/identity';
import type { Projects } from '../projects/projects';
import type { LogReader, OutputChunk } from '../output/logs';
import { jobArtifacts, jobTestResults } from '../output/output-service';
import type { Store } from '../store/store';
import { principalOf, sendStream, type GyreApp } from './http-app';
import { stepOutput, userView } from './read-model';
import { Int32, OneOf, Segment } from './schemas';
import {
  actionOf,
  BUILD_FILTERS,
  buildActions,
  buildByNumber,
  buildDetails,
  buildSummary,
  followedProjects,
  followedProjectView,
  projectBuilds,
  recentBuilds,
  type BuildRow,
} from './v1-read-model';

/**
 * CircleCI's API v1.1, the part its published clients still call: a build's details with its
 * steps' actions and their `output_url`, the output those point to, recent builds (of a project,
 * of a branch, of everything the caller can see), a build's artifacts and tests, the followed
 * projects and `/me`. The same tokens and the same policy as API v2 (a project the caller cannot
 * read is a 404); the token may also come as `?circle-token=`, as these clients send it.
 *
 * An `output_url` is an API route, not a signed link: it answers only a caller who may read the
 * project, so a URL that leaks into a log or a ticket gives nothing away. Output is stored masked
 * (the agent masks secrets before it sends a byte), and is served as stored.
 */
export interface V1RouteDeps {
  readonly store: Store;
  readonly projects: Projects;
  /** Reads step output wherever it is kept (the output role). @default - the database only */
  readonly logs?: LogReader;
  /** Where users reach the UI, for `build_url`; and the API, for `output_url`. */
  readonly webUrl: () => string;
  /** A token-free download link's signature for an artifact (the output role's, as API v2 lists them). */
  readonly signArtifact: (id: string) => Promise<string>;
}

const V1 = '/api/v1.1';
const SLUG = `${V1}/project/:vcs/:org/:repo`;
const slugOf = (params: { vcs: string; org: string; repo: string }) => `${params.vcs}/${params.org}/${params.repo}`;
const BuildNumber = Type.String({ pattern: '^[0-9]{1,9}$', maxLength: 9 });
const BuildParams = Type.Object({ vcs: Segment, org: Segment, repo: Segment, number: BuildNumber });
const Page = {
  limit: Type.Optional(Int32({ minimum: 1, maximum: 100 })),
  offset: Type.Optional(Int32({ maximum: 1_000_000 })),
};
const ListQuery = Type.Object({ ...Page, filter: Type.Optional(OneOf(BUILD_FILTERS)), shallow: Type.Optional(Type.String({ maxLength: 10 })) });
/** Every v1.1 route takes the token from `?circle-token=` too; read-only, so never audited. */
const CONFIG = { tokenInQuery: true } as const;

export function registerV1Routes(app: GyreApp, deps: V1RouteDeps): void {
  const { store, projects } = deps;
  const base = () => deps.webUrl().replace(/\/+$/, '');
  const urls = () => ({ web: base(), api: base() });

  const buildOf = async (params: { vcs: string; org: string; repo: string; number: string }): Promise<BuildRow> => {
    const project = await projects.get(slugOf(params));
    const row = await buildByNumber(store, project.id, Number(params.number));
    if (!row) throw new NotFoundError('build', `${params.number} of ${project.slug}`);
    return row;
  };

  app.get(`${V1}/me`, { config: { ...CONFIG, permission: 'authenticated' } }, async (request) => {
    const me = await userView(store, principalOf(request).userId);
    return { login: me.login, name: me.name, id: me.id, admin: me.admin, vcs_type: 'github', avatar_url: null, projects: {} };
  });

  app.get(`${V1}/projects`, { config: { ...CONFIG, permission: 'authenticated' } }, async (request) => {
    const rows = await followedProjects(store, visibilityOf(principalOf(request)), { limit: 1000 });
    return rows.map(followedProjectView);
  });

  app.get(`${V1}/recent-builds`, { config: { ...CONFIG, permission: 'authenticated' }, schema: { querystring: Type.Object(Page) } }, async (request) => {
    const rows = await recentBuilds(store, visibilityOf(principalOf(request)), { limit: request.query.limit ?? 30, offset: request.query.offset ?? 0 });
    const u = urls();
    return rows.map((r) => buildSummary(r, u));
  });

  app.get(SLUG, { config: { ...CONFIG, permission: 'project:read' }, schema: { params: Type.Object({ vcs: Segment, org: Segment, repo: Segment }), querystring: ListQuery } }, async (request) => {
    const project = await projects.get(slugOf(request.params));
    const q = request.query;
    const rows = await projectBuilds(store, project.id, { filter: q.filter, limit: q.limit ?? 30, offset: q.offset ?? 0 });
    const u = urls();
    return rows.map((r) => buildSummary(r, u));
  });

  app.get(
    `${SLUG}/tree/:branch`,
    { config: { ...CONFIG, permission: 'project:read' }, schema: { params: Type.Object({ vcs: Segment, org: Segment, repo: Segment, branch: Type.String({ minLength: 1, maxLength: 1024 }) }), querystring: ListQuery } },
    async (request) => {
      const project = await projects.get(slugOf(request.params));
      const q = request.query;
      const rows = await projectBuilds(store, project.id, { branch: request.params.branch, filter: q.filter, limit: q.limit ?? 30, offset: q.offset ?? 0 });
      const u = urls();
      return rows.map((r) => buildSummary(r, u));
    },
  );

  app.get(`${SLUG}/:number`, { config: { ...CONFIG, permission: 'project:read' }, schema: { params: BuildParams } }, async (request) => {
    const row = await buildOf(request.params);
    return buildDetails(row, await buildActions(store, row.id), urls());
  });

  // What an action's `output_url` points to: CircleCI's shape, a JSON array of messages. Gyre keeps
  // one stream per step (stdout and stderr together), so it is one message of type "out", streamed
  // chunk by chunk (a step of any size costs one chunk of memory).
  app.get(
    `${SLUG}/:number/output/:step/:index`,
    { config: { ...CONFIG, permission: 'project:read' }, schema: { params: Type.Object({ vcs: Segment, org: Segment, repo: Segment, number: BuildNumber, step: Type.String({ pattern: '^[0-9]{1,5}$' }), index: Type.String({ pattern: '^[0-9]{1,4}$' }) }) } },
    async (request, reply) => {
      const row = await buildOf(request.params);
      const step = Number(request.params.step);
      const index = Number(request.params.index);
      const action = await actionOf(store, row.id, step, index);
      if (!action) throw new NotFoundError('step', `${step} of parallel run ${index} of build ${row.number}`);
      const chunks = readOutput(deps, action.task_id, action.attempt, step);
      // Read before the headers go out, so a step that cannot be read is an error answer, not a cut one.
      const first = await chunks.next();
      const time = new Date((action.stopped_at ?? action.started_at) as string).toISOString();
      async function* body(): AsyncGenerator<Uint8Array> {
        const decoder = new TextDecoder('utf-8');
        const escaped = (text: string) => Buffer.from(JSON.stringify(text).slice(1, -1));
        try {
          if (first.done) {
            yield Buffer.from('[]');
            return;
          }
          yield Buffer.from(`[{"type":"out","time":${JSON.stringify(time)},"truncated":false,"message":"`);
          // A chunk may end inside a multi-byte character: the streaming decoder keeps the tail.
          yield escaped(decoder.decode(first.value.data, { stream: true }));
          for await (const chunk of { [Symbol.asyncIterator]: () => chunks }) yield escaped(decoder.decode(chunk.data, { stream: true }));
          yield escaped(decoder.decode());
          yield Buffer.from('"}]');
        } finally {
          await chunks.return(undefined);
        }
      }
      await sendStream(reply, body(), { 'Content-Type': 'application/json; charset=utf-8' });
    },
  );

  app.get(`${SLUG}/:number/artifacts`, { config: { ...CONFIG, permission: 'project:read' }, schema: { params: BuildParams } }, async (request) => {
    const row = await buildOf(request.params);
    const out = [];
    for (const a of await jobArtifacts(store, row.id, 0, 10_000)) {
      const name = encodeURIComponent(a.path.split('/').pop() || 'artifact');
      out.push({ path: a.path, pretty_path: a.path, node_index: a.node_index, url: `${base()}/output/artifact/${a.id}/${await deps.signArtifact(a.id)}/${name}` });
    }
    return out;
  });

  app.get(`${SLUG}/:number/tests`, { config: { ...CONFIG, permission: 'project:read' }, schema: { params: BuildParams } }, async (request) => {
    const row = await buildOf(request.params);
    const tests = await jobTestResults(store, row.id, -1, 100_000);
    return {
      tests: tests.map((t) => ({ name: t.name, classname: t.classname, file: t.file || null, result: t.result, message: t.message || null, run_time: Number(t.run_time), source: 'unknown' })),
      exceptions: [],
    };
  });
}

/** A step's output after chunk -1, from the output role (without it, from the database). */
async function* readOutput(deps: V1RouteDeps, taskId: string, attempt: number, step: number): AsyncGenerator<OutputChunk> {
  if (deps.logs) yield* deps.logs.read(taskId, attempt, step);
  else yield* await stepOutput(deps.store, taskId, attempt, step);
}
