import { Readable } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import type { TestCase } from '../output/junit';
import type { OutputClient } from '../output/output-client';
import { asLost, type TaskApi } from './task-api';

/** Test results are sent in requests of about this many bytes of JSON (the server takes at most 32 MiB). */
const TEST_BATCH_BYTES = 4 * 1024 * 1024;

/**
 * The OutputClient of a remote agent: each call is one request to the agent API with the task
 * token, archives and artifact files streamed both ways. The server takes the task from the token,
 * so the `task` argument of each method is not sent. A lost lease or refused token is a
 * StaleLeaseError, as for the reporter.
 */
export function createHttpOutputClient(api: TaskApi): OutputClient {
  const call = (method: string, rest: string, init?: Parameters<TaskApi['call']>[2]) => asLost(api.taskId, api.call(method, rest, init));
  const open = async (rest: string): Promise<AsyncIterable<Uint8Array>> => {
    const res = await asLost(api.taskId, api.request('GET', rest));
    if (!res.body) return Readable.from([]);
    return Readable.fromWeb(res.body as WebReadableStream<Uint8Array>);
  };

  return {
    async uploadArtifact(_task, path, content) {
      await call('PUT', '/artifacts', { query: { path }, stream: content });
    },
    async cacheExists(_task, key) {
      return (await call('GET', '/cache', { query: { key } })).exists === true;
    },
    async saveCache(_task, key, archive) {
      const { result } = await call('PUT', '/cache', { query: { key }, stream: archive });
      return result === 'exists' ? 'exists' : 'saved';
    },
    async findCache(_task, keys) {
      const { cache } = await call('POST', '/cache/find', { json: { keys } });
      return cache ? { id: String(cache.id), key: String(cache.key), bytes: Number(cache.bytes) } : undefined;
    },
    openCache: (_task, id) => open(`/cache/${encodeURIComponent(id)}`),
    async persistWorkspace(_task, archive) {
      await call('POST', '/workspace', { stream: archive });
    },
    async workspaceLayers() {
      const { items } = await call('GET', '/workspace/layers');
      return (items as { id: string; job_name: string }[]).map((l) => ({ id: l.id, jobName: l.job_name }));
    },
    openWorkspaceLayer: (_task, id) => open(`/workspace/layers/${encodeURIComponent(id)}`),
    async storeTestResults(_task, cases) {
      for (const batch of batches(cases)) await call('POST', '/test-results', { json: { cases: batch } });
    },
  };
}

/** Splits test cases into requests of about TEST_BATCH_BYTES each (at least one case per request). */
function* batches(cases: readonly TestCase[]): Generator<TestCase[]> {
  let batch: TestCase[] = [];
  let bytes = 0;
  for (const c of cases) {
    const size = Buffer.byteLength(JSON.stringify(c));
    if (batch.length > 0 && bytes + size > TEST_BATCH_BYTES) {
      yield batch;
      batch = [];
      bytes = 0;
    }
    batch.push(c);
    bytes += size;
  }
  if (batch.length > 0) yield batch;
}
