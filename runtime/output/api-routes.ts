import { Type } from '@sinclair/typebox';
import { cursorInt, decodePageToken, encodePageToken, findJob, isUuid } from '../api/read-model';
import { sendStream, type GyreApp } from '../api/http-app';
import { PageQuery, Segment, SlugParams } from '../api/schemas';
import { NotFoundError } from '../domain/errors';
import type { Projects } from '../projects/projects';
import type { Store } from '../store/store';
import type { BlobStore } from '../blob/blob-store';
import { artifactFile, flakyTests, jobArtifacts, jobTestResults, type OutputService } from './output-service';

export interface OutputRouteDeps {
  readonly store: Store;
  readonly blobs: BlobStore;
  readonly projects: Projects;
  readonly output: OutputService;
  /** Where API clients reach Gyre, for artifact URLs. */
  readonly apiUrl: () => string;
}

const SLUG = '/api/v2/project/:vcs/:org/:repo';
const slugOf = (params: { vcs: string; org: string; repo: string }) => `${params.vcs}/${params.org}/${params.repo}`;
const PAGE = 1000;
const JobParams = Type.Object({ vcs: Segment, org: Segment, repo: Segment, number: Segment });

/** The API of the output role: artifacts (listed with token-free download URLs), test results. */
export function registerOutputRoutes(app: GyreApp, deps: OutputRouteDeps): void {
  const { store, projects, output } = deps;
  const jobOf = async (params: { vcs: string; org: string; repo: string; number: string }) => findJob(store, (await projects.get(slugOf(params))).id, params.number);

  app.get(`${SLUG}/:number/artifacts`, { config: { permission: 'project:read' }, schema: { params: JobParams, querystring: PageQuery } }, async (request) => {
    const job = await jobOf(request.params);
    const offset = Math.max(0, decodePageToken<{ after?: number }>(request.query['page-token'], (c) => cursorInt(c.after))?.after ?? 0);
    const rows = await jobArtifacts(store, job.id, offset, PAGE + 1);
    const base = deps.apiUrl().replace(/\/+$/, '');
    const items = [];
    for (const row of rows.slice(0, PAGE)) {
      const name = encodeURIComponent(row.path.split('/').pop() || 'artifact');
      items.push({ path: row.path, node_index: row.node_index, url: `${base}/output/artifact/${row.id}/${await output.signArtifact(row.id)}/${name}` });
    }
    return { items, next_page_token: rows.length > PAGE ? encodePageToken({ after: offset + PAGE }) : null };
  });

  // Public: the signature in the URL is the permission to read this one artifact. The response
  // is a download in a sandbox, so an HTML artifact never runs script with the UI's origin.
  app.get(
    '/output/artifact/:id/:signature/:name',
    { config: { auth: 'public' }, schema: { params: Type.Object({ id: Segment, signature: Type.String({ minLength: 1, maxLength: 200 }), name: Type.String({ maxLength: 2048 }) }) } },
    async (request, reply) => {
      const { id, signature } = request.params;
      if (!isUuid(id) || !(await output.verifyArtifact(id, signature))) throw new NotFoundError('artifact', id);
      const row = await artifactFile(store, id);
      if (!row) throw new NotFoundError('artifact', id);
      const body = await deps.blobs.get(row.blob_key);
      const filename = row.path.split('/').pop() || 'artifact';
      await sendStream(reply, body, {
        'Content-Type': 'application/octet-stream',
        'Content-Length': row.bytes,
        'Content-Disposition': `attachment; filename="${filename.replace(/[^\x20-\x7e]|["\\]/g, '_')}"; filename*=UTF-8''${encodeURIComponent(filename)}`,
        'Content-Security-Policy': "sandbox; default-src 'none'",
        'Cross-Origin-Resource-Policy': 'same-origin',
        'Referrer-Policy': 'no-referrer',
        'Cache-Control': 'private, max-age=300',
      });
    },
  );

  app.get(`${SLUG}/:number/tests`, { config: { permission: 'project:read' }, schema: { params: JobParams, querystring: PageQuery } }, async (request) => {
    const job = await jobOf(request.params);
    const after = decodePageToken<{ after?: number }>(request.query['page-token'], (c) => cursorInt(c.after))?.after ?? -1;
    const rows = await jobTestResults(store, job.id, after, PAGE + 1);
    const page = rows.slice(0, PAGE);
    return {
      // `source`, the program that wrote the results, is not known: CircleCI's answer without one.
      items: page.map(({ id: _id, ...t }) => ({ ...t, source: '', run_time: Number(t.run_time) })),
      next_page_token: rows.length > PAGE ? encodePageToken({ after: Number(page[page.length - 1].id) }) : null,
    };
  });

  app.get('/api/v2/insights/:vcs/:org/:repo/flaky-tests', { config: { permission: 'project:read' }, schema: { params: SlugParams } }, async (request) => {
    const project = await projects.get(slugOf(request.params));
    const flaky = await flakyTests(store, project.id);
    return { 'flaky-tests': flaky, 'total-flaky-tests': flaky.length };
  });
}
