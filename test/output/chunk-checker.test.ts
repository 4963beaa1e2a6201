import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { InputError } from '../../runtime/domain/errors';
import { createLogger } from '../../runtime/logger';
import { createChunkChecker, type ChunkChecker } from '../../runtime/output/chunk-checker';
import { compressChunk, MAX_RAW_CHUNK_BYTES } from '../../runtime/output/log-chunk';

const log = createLogger({ level: 'silent' });
const text = (bytes: number, seed = 0) => {
  const line = (i: number) => `${String(seed)} line ${i}: compiling module ${(i * 2654435761) >>> 0}\n`;
  const parts: string[] = [];
  for (let i = 0, n = 0; n < bytes; i++) {
    parts.push(line(i));
    n += line(i).length;
  }
  return Buffer.from(parts.join('')).subarray(0, bytes);
};
/** A chunk as an agent sends it, gzip compressed in another process (so never taken as this one's own). */
const sent = (raw: Buffer, rawBytes = raw.length) => ({ gzip: gzipSync(raw, { level: 1 }), rawBytes });

/**
 * The output role's check of the chunks remote agents send, in worker threads: what an agent (or
 * anyone holding a task token) sends must be gzip holding exactly the bytes it claims, whichever
 * thread looks at it, and the server's own thread does not inflate it.
 */
describe('chunk checker', () => {
  let checker: ChunkChecker | undefined;
  afterEach(async () => {
    await checker?.close();
    checker = undefined;
  });

  it('passes chunks that hold what they claim and refuses, naming what is wrong, those that lie, are not gzip or bomb', async () => {
    checker = createChunkChecker({ log, workers: 1 });
    const raw = text(1_000_000);
    await expect(checker.check(sent(raw))).resolves.toBeUndefined();
    const refused = async (chunk: { gzip: Buffer; rawBytes: number }, message: RegExp) => {
      const error = await checker!.check(chunk).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(InputError);
      expect((error as Error).message).toMatch(message);
    };
    // Claims fewer bytes than it holds: a small body that would pass the output cap.
    await refused(sent(raw, 100_000), /holds more than the 100000 bytes it claims/);
    await refused(sent(raw.subarray(0, 100_000), 200_000), /holds 100000 bytes, not the 200000 it claims/);
    await refused({ gzip: raw.subarray(0, 300_000), rawBytes: 300_000 }, /an output chunk sent as gzip could not be read/);
    // A member cut short, as a broken connection or a hostile agent would leave it.
    const whole = sent(raw);
    await refused({ gzip: whole.gzip.subarray(0, whole.gzip.length - 100), rawBytes: raw.length }, /could not be read/);
    // 256 MiB of zeros in about 256 KB of gzip, claiming the most a chunk may hold: inflating
    // stops one byte past the claim.
    await refused(sent(Buffer.alloc(256 * 1024 * 1024), MAX_RAW_CHUNK_BYTES), new RegExp(`holds more than the ${MAX_RAW_CHUNK_BYTES} bytes it claims`));
    await refused(sent(raw, MAX_RAW_CHUNK_BYTES + 1), /must be a whole number of bytes from 0 to 4194304; got '4194305'/);
    await refused(sent(raw, -1), /from 0 to 4194304; got '-1'/);
    // And it still takes good chunks after all that.
    await expect(checker.check(sent(text(200_000, 1)))).resolves.toBeUndefined();
  }, 30_000);

  it('answers every one of many chunks sent at once to fewer workers, each for what it is', async () => {
    checker = createChunkChecker({ log, workers: 2 });
    const chunks = Array.from({ length: 24 }, (_, i) => {
      const raw = text(100_000 + i * 10_000, i);
      return i % 3 === 2 ? { chunk: sent(raw, raw.length - 1), good: false } : { chunk: sent(raw), good: true };
    });
    const results = await Promise.all(chunks.map(({ chunk }) => checker!.check(chunk).then(() => 'passed', (e: Error) => e.message)));
    results.forEach((result, i) => {
      if (chunks[i].good) expect(result).toBe('passed');
      else expect(result).toMatch(/holds \d+ bytes, not the \d+ it claims/);
    });
  }, 30_000);

  it("inflates in its workers: checking 4 MiB chunks makes no buffer of their size on the caller's thread", async () => {
    checker = createChunkChecker({ log, workers: 1 });
    const base = text(MAX_RAW_CHUNK_BYTES);
    const chunks = Array.from({ length: 20 }, (_, i) => sent(Buffer.concat([Buffer.from(`chunk ${i}\n`), base]).subarray(0, MAX_RAW_CHUNK_BYTES)));
    await checker.check(chunks[0]); // the worker started
    const before = process.memoryUsage().arrayBuffers;
    for (const chunk of chunks.slice(1)) await checker.check(chunk);
    // Inflated here, 19 chunks would have made 76 MiB of buffers (less only if a collection ran).
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(8 * 1024 * 1024);
  }, 60_000);

  it('reads a chunk in shared memory in place, and takes its own compressed chunks without a check', async () => {
    checker = createChunkChecker({ log, workers: 1 });
    const raw = text(500_000);
    const { gzip } = sent(raw);
    const shared = Buffer.from(new SharedArrayBuffer(gzip.length));
    gzip.copy(shared);
    await expect(checker.check({ gzip: shared, rawBytes: raw.length })).resolves.toBeUndefined();
    await expect(checker.check({ gzip: shared, rawBytes: raw.length + 1 })).rejects.toThrow(/holds 500000 bytes, not the 500001 it claims/);
    await expect(checker.check(await compressChunk(raw))).resolves.toBeUndefined();
  }, 30_000);

  it('still answers checks under way when it is closed, and checks made after', async () => {
    checker = createChunkChecker({ log, workers: 2 });
    const raw = text(MAX_RAW_CHUNK_BYTES);
    await checker.check(sent(raw));
    // Sent to the workers, then the workers ended: the chunks are checked on this thread instead.
    const underWay = [checker.check(sent(raw)), checker.check(sent(raw, 100_000)), checker.check(sent(raw))];
    await checker.close();
    await expect(underWay[0]).resolves.toBeUndefined();
    await expect(underWay[1]).rejects.toThrow(/holds more than the 100000 bytes it claims/);
    await expect(underWay[2]).resolves.toBeUndefined();
    await expect(checker.check(sent(raw, 100_000))).rejects.toThrow(/holds more than the 100000 bytes/);
    await expect(checker.check(sent(raw))).resolves.toBeUndefined();
  }, 30_000);

  it('checks every chunk on its own thread when a worker cannot start, each for what it is, and says so once', async () => {
    const lines: string[] = [];
    checker = createChunkChecker({ log: createLogger({ level: 'warn', write: (line) => lines.push(line) }), workers: 2, workerScript: join(tmpdir(), `gyre-no-such-worker-${process.pid}.js`) });
    const raw = text(MAX_RAW_CHUNK_BYTES);
    // Sent at once, while the first workers try to start: they wait for them, then go to this thread.
    const first = [checker.check(sent(raw)), checker.check(sent(raw, 100_000)), checker.check(sent(raw))];
    await expect(first[0]).resolves.toBeUndefined();
    await expect(first[1]).rejects.toThrow(/holds more than the 100000 bytes it claims/);
    await expect(first[2]).resolves.toBeUndefined();
    // And later ones, without another try at a worker.
    await expect(checker.check(sent(raw.subarray(0, 1_000_000), 2_000_000))).rejects.toThrow(/holds 1000000 bytes, not the 2000000 it claims/);
    await expect(checker.check(sent(raw))).resolves.toBeUndefined();
    expect(lines.filter((l) => / warn /.test(l))).toHaveLength(1);
    expect(lines[0]).toMatch(/checked on the server's main thread from now on: a worker thread for the checks could not start .*gyre-no-such-worker/);
  }, 30_000);
});
