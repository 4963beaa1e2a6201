import { gzipSync } from 'node:zlib';
import { createAgentClient } from '../../runtime/agent/http-reporter';
import { compressChunk } from '../../runtime/output/log-chunk';
import { testStores } from '../support/database';
import { startTestGyre, type TestGyre } from '../support/gyre';
import { claimTasks, configOnClass, runnerClass, type Claimed } from '../support/runner-tasks';

const CLASS = 'acme/chunks';
const config = configOnClass(CLASS);

/**
 * Output chunks as a remote agent sends them: gzip members with the number of bytes they hold.
 * What is stored must read back as sent; a body that is not what it claims is refused and nothing
 * of it is kept.
 */
describe.each(testStores())('agent output chunks over HTTP on %s', (store) => {
  let g: TestGyre;
  let claimed: Claimed;
  let jobNumber: number;

  const put = (seq: number, body: Uint8Array, headers: Record<string, string>) =>
    fetch(`${g.url}/api/v2/agent/task/${claimed.task.taskId}/step/0/output/${seq}`, {
      method: 'PUT',
      headers: { Authorization: `Bearer ${claimed.token}`, 'Content-Type': 'application/octet-stream', ...headers },
      body,
    });
  const stepOutput = async () => {
    const res = await fetch(`${g.url}/api/v2/project/gh/acme/chunks/job/${jobNumber}/output?step=0`, { headers: { 'Circle-Token': g.token } });
    expect(res.status).toBe(200);
    return Buffer.from(await res.arrayBuffer());
  };

  beforeAll(async () => {
    g = await startTestGyre({ store, env: { GYRE_RUNNER_SLOTS: '0' } });
    const token = await runnerClass(g, CLASS);
    await g.addProject('acme/chunks', { '.circleci/config.yml': config });
    const { id } = await g.trigger('acme/chunks');
    [claimed] = await claimTasks(g.url, token, 1);
    jobNumber = await g.firstJobNumber(id);
    await createAgentClient({ url: g.url, token: claimed.token, taskId: claimed.task.taskId }).reporter().stepStarted({ index: 0, name: 'work', type: 'run' });
  }, 60_000);
  afterAll(async () => {
    await g?.stop();
  });

  it('stores chunks the agent compressed and reads them back byte for byte, and refuses bodies that are not what they claim', async () => {
    const reporter = createAgentClient({ url: g.url, token: claimed.token, taskId: claimed.task.taskId }).reporter();
    // Large enough to be compressed as several members on the thread pool.
    const first = Buffer.from(Array.from({ length: 20_000 }, (_, i) => `line ${i} of the first chunk\n`).join(''));
    await reporter.output(0, 0, await compressChunk(first));
    expect(await stepOutput()).toEqual(first);

    const bad = async (body: Uint8Array, headers: Record<string, string>, message: RegExp) => {
      const res = await put(1, body, headers);
      expect(res.status).toBe(400);
      expect(((await res.json()) as { message: string }).message).toMatch(message);
    };
    const second = Buffer.from('second chunk\n');
    // The size it claims is smaller than what it holds (a small body that would pass the output cap).
    await bad(gzipSync(Buffer.alloc(1_000_000)), { 'Content-Encoding': 'gzip', 'X-Gyre-Output-Bytes': '100' }, /holds more than the 100 bytes it claims/);
    await bad(gzipSync(second), { 'Content-Encoding': 'gzip', 'X-Gyre-Output-Bytes': String(second.length + 5) }, /holds 13 bytes, not the 18 it claims/);
    await bad(second, { 'Content-Encoding': 'gzip', 'X-Gyre-Output-Bytes': String(second.length) }, /could not be read/);
    // Chunks claiming 64 KiB or more are checked in the server's worker threads: the same answers.
    await bad(gzipSync(Buffer.alloc(1_000_000)), { 'Content-Encoding': 'gzip', 'X-Gyre-Output-Bytes': '100000' }, /holds more than the 100000 bytes it claims/);
    await bad(gzipSync(first.subarray(0, 100_000)), { 'Content-Encoding': 'gzip', 'X-Gyre-Output-Bytes': '100001' }, /holds 100000 bytes, not the 100001 it claims/);
    await bad(first.subarray(0, 100_000), { 'Content-Encoding': 'gzip', 'X-Gyre-Output-Bytes': '100000' }, /could not be read/);
    await bad(gzipSync(second), { 'Content-Encoding': 'gzip' }, /needs X-Gyre-Output-Bytes/);
    await bad(gzipSync(second), { 'Content-Encoding': 'gzip', 'X-Gyre-Output-Bytes': '99999999999' }, /from 0 to 4194304/);
    await bad(second, { 'Content-Encoding': 'br' }, /Content-Encoding 'br' is not supported for output chunks \(allowed: gzip, identity\)/);
    expect(await stepOutput()).toEqual(first);

    // The refused sequence number is still free: the chunk sent properly is stored under it, and a
    // plain (identity) chunk, as curl would send it, is taken too.
    await reporter.output(0, 1, await compressChunk(second));
    expect((await put(2, Buffer.from('third, uncompressed\n'), {})).status).toBe(200);
    // Sent in pieces without a Content-Length (chunked), as a streaming client may.
    const pieces = new ReadableStream({
      start(controller) {
        controller.enqueue(Buffer.from('fourth, '));
        controller.enqueue(Buffer.from('in pieces\n'));
        controller.close();
      },
    });
    const chunked = await fetch(`${g.url}/api/v2/agent/task/${claimed.task.taskId}/step/0/output/3`, {
      method: 'PUT',
      headers: { Authorization: `Bearer ${claimed.token}`, 'Content-Type': 'application/octet-stream' },
      body: pieces,
      duplex: 'half',
    } as RequestInit);
    expect(chunked.status).toBe(200);
    expect((await stepOutput()).toString()).toBe(`${first}second chunk\nthird, uncompressed\nfourth, in pieces\n`);
  });
});
