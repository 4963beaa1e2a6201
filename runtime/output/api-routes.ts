import { decodePageToken, encodePageToken, findJob, isUuid } from '../api/read-model';
import type { RequestContext, Router } from '../api/router';
import { NotFoundError } from '../domain/errors';
import type { Projects } from '../projects/projects';
import type { Store } from '../store/store';
import type { BlobStore } from '../blob/blob-store';
import type { OutputService } from './output-service';

export interface OutputRouteDeps {
  readonly store: Store;
  readonly blobs: BlobStore;
  readonly projects: Projects;
  readonly output: OutputService;
  /** Where API clients reach Gyre, for artifact URLs. */
  readonly apiUrl: () => string;
}

const SLUG = '/api/v2/project/:vcs/:org/:repo';
const slugOf = (ctx: RequestContext) => `${ctx.params.vcs}/${ctx.params.org}/${ctx.params.repo}`;
const PAGE = 1000;

function pageAfter(ctx: RequestContext): number {
  const cursor = decodePageToken<{ after?: number }>(ctx.query.get('page-token'));
  return typeof cursor?.after === 'number' ? cursor.after : -1;
}

/** The API of the output role: artifacts (listed with token-free download URLs), test results. */
export function registerOutputRoutes(router: Router, deps: OutputRouteDeps): void {
  const { store, projects, output } = deps;

  router.get(`${SLUG}/:number/artifacts`, async (ctx) => {
    const project = await projects.get(slugOf(ctx));
    const job = await findJob(store, project.id, ctx.params.number);
    const offset = Math.max(0, pageAfter(ctx));
    const rows = await store.query<{ id: string; path: string; node_index: number }>(
      'SELECT id, path, node_index FROM artifacts WHERE job_id = $1 ORDER BY node_index, path, id OFFSET $2 LIMIT $3',
      [job.id, offset, PAGE + 1],
    );
    const base = deps.apiUrl().replace(/\/+$/, '');
    const items = [];
    for (const row of rows.slice(0, PAGE)) {
      const name = encodeURIComponent(row.path.split('/').pop() || 'artifact');
      items.push({ path: row.path, node_index: row.node_index, url: `${base}/output/artifact/${row.id}/${await output.signArtifact(row.id)}/${name}` });
    }
    return { json: { items, next_page_token: rows.length > PAGE ? encodePageToken({ after: offset + PAGE }) : null } };
  });

  // Public: the signature in the URL is the permission to read this one artifact. The response
  // is a download in a sandbox, so an HTML artifact never runs script with the UI's origin.
  router.get(
    '/output/artifact/:id/:signature/:name',
    async (ctx) => {
      const { id, signature } = ctx.params;
      if (!isUuid(id) || !(await output.verifyArtifact(id, signature))) throw new NotFoundError('artifact', id);
      const [row] = await store.query<{ path: string; blob_key: string; bytes: string }>('SELECT path, blob_key, bytes FROM artifacts WHERE id = $1', [id]);
      if (!row) throw new NotFoundError('artifact', id);
      const body = await deps.blobs.get(row.blob_key);
      const filename = row.path.split('/').pop() || 'artifact';
      ctx.res.writeHead(200, {
        'Content-Type': 'application/octet-stream',
        'Content-Length': row.bytes,
        'Content-Disposition': `attachment; filename="${filename.replace(/[^\x20-\x7e]|["\\]/g, '_')}"; filename*=UTF-8''${encodeURIComponent(filename)}`,
        'Content-Security-Policy': "sandbox; default-src 'none'",
        'X-Content-Type-Options': 'nosniff',
        'Cross-Origin-Resource-Policy': 'same-origin',
        'Referrer-Policy': 'no-referrer',
        'Cache-Control': 'private, max-age=300',
      });
      for await (const chunk of body) if (!ctx.res.write(chunk)) await new Promise((r) => ctx.res.once('drain', r));
      ctx.res.end();
      return undefined;
    },
    { public: true },
  );

  router.get(`${SLUG}/:number/tests`, async (ctx) => {
    const project = await projects.get(slugOf(ctx));
    const job = await findJob(store, project.id, ctx.params.number);
    const after = pageAfter(ctx);
    const rows = await store.query<{ id: string; name: string; classname: string; file: string; result: string; message: string; run_time: number }>(
      'SELECT id, name, classname, file, result, message, run_time FROM test_results WHERE job_id = $1 AND id > $2 ORDER BY id LIMIT $3',
      [job.id, after, PAGE + 1],
    );
    const page = rows.slice(0, PAGE);
    return {
      json: {
        items: page.map(({ id: _id, ...t }) => ({ ...t, run_time: Number(t.run_time) })),
        next_page_token: rows.length > PAGE ? encodePageToken({ after: Number(page[page.length - 1].id) }) : null,
      },
    };
  });

  router.get('/api/v2/insights/:vcs/:org/:repo/flaky-tests', async (ctx) => {
    const project = await projects.get(slugOf(ctx));
    const rows = await store.query<{ name: string; classname: string; file: string; job_name: string; times_flaked: string }>(
      `SELECT name, classname, file, job_name, count(*) AS times_flaked FROM (
         SELECT name, classname, file, job_name, revision FROM test_results WHERE project_id = $1
          GROUP BY name, classname, file, job_name, revision
         HAVING bool_or(result = 'success') AND bool_or(result = 'failure')) flaky
        GROUP BY name, classname, file, job_name ORDER BY count(*) DESC, classname, name LIMIT 1000`,
      [project.id],
    );
    const flaky = rows.map((r) => ({ test_name: r.name, classname: r.classname, file: r.file, job_name: r.job_name, times_flaked: Number(r.times_flaked) }));
    return { json: { flaky_tests: flaky, total_flaky_tests: flaky.length } };
  });
}
