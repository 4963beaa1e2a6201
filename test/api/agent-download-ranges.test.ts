import { randomBytes } from 'node:crypto';
import { createAgentClient } from '../../runtime/agent/http-reporter';
import { flowStore } from '../support/database';
import { startTestGyre, type TestGyre } from '../support/gyre';
import { claimTasks, configOnClass, runnerClass, type Claimed } from '../support/runner-tasks';
import { startS3rver } from '../support/s3rver';

const CLASS = 'acme/ranges';
const config = configOnClass(CLASS);

/**
 * The two download routes of the agent API answer `Range: bytes=N-` (how an agent resumes a
 * download that broke off) with the rest of the object, on each database and each blob store.
 */
// Each blob store once, on the store flowStore picks for this file: the ranges are the blob stores' and the route's, not the database's.
const matrix = flowStore().flatMap((store) => (['local', 's3'] as const).map((blobs) => [store, blobs] as const));
describe.each(matrix)('resumable downloads (%s, %s blobs)', (store, blobs) => {
  let g: TestGyre;
  let s3: Awaited<ReturnType<typeof startS3rver>> | undefined;
  let c: Claimed;
  const cache = randomBytes(10_000);
  const layer = randomBytes(7_000);
  let paths: { what: string; path: string; etag: string; content: Buffer }[];

  const get = (path: string, headers: Record<string, string> = {}) =>
    fetch(`${g.url}/api/v2/agent/task/${c.task.taskId}${path}`, { headers: { Authorization: `Bearer ${c.token}`, ...headers } });
  const bodyOf = async (res: Response) => Buffer.from(await res.arrayBuffer());

  beforeAll(async () => {
    s3 = blobs === 's3' ? await startS3rver() : undefined;
    g = await startTestGyre({ store, env: { GYRE_RUNNER_SLOTS: '0', ...s3?.env } });
    const token = await runnerClass(g, CLASS);
    await g.addProject('acme/ranges', { '.circleci/config.yml': config });
    await g.trigger('acme/ranges');
    [c] = await claimTasks(g.url, token, 1);
    const client = createAgentClient({ url: g.url, token: c.token, taskId: c.task.taskId }).output();
    await client.saveCache(c.task, 'deps', [cache]);
    await client.persistWorkspace(c.task, [layer]);
    const found = await client.findCache(c.task, ['deps']);
    const [row] = await g.gyre.store.query<{ id: string }>('SELECT id FROM workspace_layers WHERE job_id = $1', [c.task.jobId]);
    paths = [
      { what: 'cache', path: `/cache/${found!.id}`, etag: `"cache-${found!.id}"`, content: cache },
      { what: 'workspace layer', path: `/workspace/layers/${row.id}`, etag: `"layer-${row.id}"`, content: layer },
    ];
  }, 60_000);
  afterAll(async () => {
    await g?.stop();
    await s3?.stop();
  });

  it('answers without a Range with the whole body, its length, Accept-Ranges and a strong ETag', async () => {
    for (const { path, etag, content } of paths) {
      const res = await get(path);
      expect(res.status).toBe(200);
      expect([res.headers.get('accept-ranges'), res.headers.get('etag'), res.headers.get('content-length')]).toEqual(['bytes', etag, String(content.length)]);
      expect(res.headers.get('content-range')).toBeNull();
      expect((await bodyOf(res)).equals(content)).toBe(true);
    }
  });

  it('answers Range: bytes=N- with 206 and the rest from byte N, with or without a matching If-Range', async () => {
    for (const { path, etag, content } of paths) {
      for (const [start, headers] of [[4000, {}], [1, { 'If-Range': etag }], [0, {}], [content.length - 1, { 'If-Range': etag }]] as const) {
        const res = await get(path, { Range: `bytes=${start}-`, ...headers });
        expect(res.status).toBe(206);
        expect(res.headers.get('content-range')).toBe(`bytes ${start}-${content.length - 1}/${content.length}`);
        expect(res.headers.get('content-length')).toBe(String(content.length - start));
        expect([res.headers.get('accept-ranges'), res.headers.get('etag')]).toEqual(['bytes', etag]);
        expect((await bodyOf(res)).equals(content.subarray(start))).toBe(true);
      }
    }
  });

  it('answers a start at or past the end with 416 and the size', async () => {
    for (const { path, etag, content } of paths) {
      for (const start of [content.length, content.length + 1000]) {
        const res = await get(path, { Range: `bytes=${start}-` });
        expect(res.status).toBe(416);
        expect(res.headers.get('content-range')).toBe(`bytes */${content.length}`);
        expect([res.headers.get('accept-ranges'), res.headers.get('etag')]).toEqual(['bytes', etag]);
        expect(await bodyOf(res)).toHaveLength(0);
      }
    }
  });

  it('answers with the whole body (200) when If-Range names another ETag, and to ranges of other forms', async () => {
    for (const { path, content } of paths) {
      const asked: Record<string, string>[] = [{ Range: 'bytes=100-', 'If-Range': '"cache-something-else"' }, { Range: 'bytes=100-', 'If-Range': 'Wed, 21 Oct 2015 07:28:00 GMT' }, { Range: 'bytes=0-99' }, { Range: 'bytes=-100' }, { Range: 'bytes=1-,5-' }, { Range: 'items=1-' }];
      for (const headers of asked) {
        const res = await get(path, headers);
        expect(res.status).toBe(200);
        expect(res.headers.get('content-range')).toBeNull();
        expect((await bodyOf(res)).equals(content)).toBe(true);
      }
    }
  });
});
