import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { createLocalBlobStore } from '../../runtime/blob/local-blob-store';
import type { BlobStore } from '../../runtime/blob/blob-store';
import type { JobSpec } from '../../runtime/config/plan';
import { createDispatcher, type ClaimedTask, type Dispatcher } from '../../runtime/dispatcher/dispatcher';
import { StaleLeaseError } from '../../runtime/domain/errors';
import { createLogger } from '../../runtime/logger';
import { createLogStore, truncationMarker, type LogReader, type LogStore } from '../../runtime/output/logs';
import { migrate } from '../../runtime/store/migrate';
import type { Store } from '../../runtime/store/store';
import { openTestStore, testStores } from '../support/database';
import { queueJobs } from '../support/queued-jobs';

const log = createLogger({ level: 'silent' });

const spec: JobSpec = {
  executor: { kind: 'shell' },
  steps: [{ type: 'run', name: 'loud', command: 'true', when: 'on_success' }],
  environment: {},
  workingDirectory: '~/project',
  parallelism: 1,
};

/** Log-like bytes that compress about as real output does, with some UTF-8 and a chunk-sized tail. */
function output(bytes: number): Buffer {
  const lines: string[] = [];
  let length = 0;
  for (let n = 0; length < bytes; n++) {
    const line = `2026-11-27T12:00:${String(n % 60).padStart(2, '0')} worker-${n % 7} ✓ request ${randomBytes(6).toString('hex')} in ${n % 997} ms\n`;
    lines.push(line);
    length += Buffer.byteLength(line);
  }
  return Buffer.from(lines.join('')).subarray(0, bytes);
}

/** Cuts `data` into pieces of the given sizes (the last piece takes the rest). */
function pieces(data: Buffer, sizes: number[]): Buffer[] {
  const out: Buffer[] = [];
  let at = 0;
  for (const size of sizes) {
    out.push(data.subarray(at, at + size));
    at += size;
  }
  if (at < data.length) out.push(data.subarray(at));
  return out;
}

async function readAll(logs: LogReader, claimed: ClaimedTask, step = 0, afterSeq = -1) {
  const chunks: { seq: number; data: Buffer }[] = [];
  for await (const chunk of logs.read(claimed.lease.taskId, claimed.lease.attempt, step, afterSeq)) chunks.push({ seq: chunk.seq, data: Buffer.from(chunk.data) });
  return chunks;
}

const text = (chunks: { data: Buffer }[]) => Buffer.concat(chunks.map((c) => c.data));

describe.each(testStores())('step output on %s', (kind) => {
  let store: Store;
  let drop: (() => Promise<void>) | undefined;
  let blobs: BlobStore;
  let blobDir: string;
  const opened: LogStore[] = [];

  beforeAll(async () => {
    ({ store, drop } = await openTestStore(kind));
    blobDir = mkdtempSync(join(tmpdir(), 'gyre-log-blobs-'));
    blobs = createLocalBlobStore({ root: blobDir });
  });
  afterAll(async () => {
    for (const logs of opened) await logs.close();
    await store.close();
    await drop?.();
    rmSync(blobDir, { recursive: true, force: true });
  });

  /** A dispatcher with its own output role, as one server process has. */
  function processWith(limitBytes = 1024 ** 3, blobStore = blobs, db = store, spoolRoot?: string): { dispatcher: Dispatcher; logs: LogStore } {
    const logs = createLogStore({ store: db, blobs: blobStore, log, limitBytes, spoolRoot });
    opened.push(logs);
    return { logs, dispatcher: createDispatcher({ store: db, log, output: logs, config: { leaseTtlMs: 60_000, maxAttempts: 3 } }) };
  }

  /** Queues a one-step job and claims its task; the step has started. */
  async function runningStep(dispatcher: Dispatcher, db = store): Promise<ClaimedTask> {
    const [jobId] = await queueJobs(db, dispatcher, [spec]);
    for (;;) {
      const claimed = await dispatcher.claim('agent', ['*']);
      if (!claimed) throw new Error('nothing to claim');
      // Other tests' tasks may still be queued; take this job's.
      if (claimed.task.jobId !== jobId) continue;
      await dispatcher.stepStarted(claimed.lease, { index: 0, name: 'loud', type: 'run' });
      return claimed;
    }
  }

  /** Sends chunks as bytes, or as gzip members the way a remote agent sends them. */
  async function send(dispatcher: Dispatcher, claimed: ClaimedTask, chunks: Buffer[], firstSeq = 0, form: 'bytes' | 'gzip' = 'bytes') {
    for (const [i, data] of chunks.entries()) {
      await dispatcher.appendOutput(claimed.lease, 0, firstSeq + i, form === 'bytes' ? data : { gzip: gzipSync(data), rawBytes: data.length });
    }
  }

  /** The files holding a running step's chunks in the local blob store (none once it is moved). */
  const liveBlobs = (claimed: ClaimedTask) => {
    const dir = join(blobDir, 'logs', claimed.lease.taskId, String(claimed.lease.attempt), 'live');
    return existsSync(dir) ? readdirSync(dir) : [];
  };
  /** How each chunk row of the task holds its bytes. */
  const forms = (claimed: ClaimedTask) =>
    store.query<{ seq: number; form: string }>(
      `SELECT seq, CASE WHEN blob_key IS NOT NULL THEN 'blob' WHEN gzip IS NOT NULL THEN 'gzip' ELSE 'data' END AS form FROM log_chunks WHERE task_id = $1 ORDER BY seq`,
      [claimed.lease.taskId],
    );

  const finish = (dispatcher: Dispatcher, claimed: ClaimedTask) => dispatcher.stepFinished(claimed.lease, { index: 0, status: 'success', exitCode: 0 });

  it('reads back byte-identical chunk by chunk, running and after the move, from any chunk on', async () => {
    const { dispatcher, logs } = processWith();
    const claimed = await runningStep(dispatcher);
    const data = output(3_500_000);
    // Large chunks (compressed in parallel members), small ones, and a cut inside a multi-byte character.
    const sent = pieces(data, [1024 * 1024, 17, 300_000, 1024 * 1024, 1, 70_001]);
    await send(dispatcher, claimed, sent);

    const running = await readAll(logs, claimed);
    expect(running.map((c) => c.seq)).toEqual(sent.map((_, i) => i));
    expect(running.map((c) => c.data.length)).toEqual(sent.map((c) => c.length));
    expect(text(running).equals(data)).toBe(true);

    await finish(dispatcher, claimed);
    expect(await store.query('SELECT seq FROM log_chunks WHERE task_id = $1', [claimed.lease.taskId])).toEqual([]);
    const [archived] = await store.query<{ bytes: number }>('SELECT bytes FROM step_logs WHERE task_id = $1', [claimed.lease.taskId]);
    expect(Number(archived.bytes)).toBe(data.length);

    const moved = await readAll(logs, claimed);
    expect(moved.map((c) => [c.seq, c.data.length])).toEqual(sent.map((c, i) => [i, c.length]));
    expect(text(moved).equals(data)).toBe(true);
    const fromThird = await readAll(logs, claimed, 0, 2);
    expect(fromThird.map((c) => c.seq)).toEqual([3, 4, 5, 6]);
    expect(text(fromThird).equals(Buffer.concat(sent.slice(3)))).toBe(true);
    expect(await readAll(logs, claimed, 0, 6)).toEqual([]);
  });

  it('stores a chunk sent twice once, also when it comes again after the move', async () => {
    const { dispatcher, logs } = processWith();
    const claimed = await runningStep(dispatcher);
    const [a, b] = [output(200_000), output(5)];
    await dispatcher.appendOutput(claimed.lease, 0, 0, a);
    // A retry racing the original, and one after it.
    await Promise.all([dispatcher.appendOutput(claimed.lease, 0, 1, b), dispatcher.appendOutput(claimed.lease, 0, 1, b)]);
    await dispatcher.appendOutput(claimed.lease, 0, 0, a);
    expect(text(await readAll(logs, claimed)).equals(Buffer.concat([a, b]))).toBe(true);
    const [counter] = await store.query<{ bytes: number }>('SELECT bytes FROM task_output WHERE task_id = $1', [claimed.lease.taskId]);
    expect(Number(counter.bytes)).toBe(a.length + b.length);

    // The copies that were not stored left no blob behind (the small chunk is in the database).
    expect(await forms(claimed)).toEqual([
      { seq: 0, form: 'blob' },
      { seq: 1, form: 'gzip' },
    ]);
    expect(liveBlobs(claimed)).toHaveLength(1);

    await finish(dispatcher, claimed);
    await dispatcher.appendOutput(claimed.lease, 0, 1, b);
    expect(await store.query('SELECT seq FROM log_chunks WHERE task_id = $1', [claimed.lease.taskId])).toEqual([]);
    expect(liveBlobs(claimed)).toEqual([]);
    expect(text(await readAll(logs, claimed)).equals(Buffer.concat([a, b]))).toBe(true);
  });

  it('holds a running step in the blob store on local disk, the database keeping only the index, and removes it when the step is moved', async () => {
    const { dispatcher, logs } = processWith();
    const claimed = await runningStep(dispatcher);
    // Three large chunks and a small one (a few lines: it stays in the database).
    const sent = pieces(output(2_500_300), [1024 * 1024, 1024 * 1024, 2_500_000 - 2 * 1024 * 1024]);
    await send(dispatcher, claimed, sent, 0, 'gzip');
    expect(await forms(claimed)).toEqual(sent.map((_, seq) => ({ seq, form: seq < 3 ? 'blob' : 'gzip' })));
    const [sizes] = await store.query<{ bytes: number }>('SELECT sum(octet_length(gzip))::int AS bytes FROM log_chunks WHERE task_id = $1', [claimed.lease.taskId]);
    expect(sizes.bytes).toBeLessThan(1024);
    expect(liveBlobs(claimed)).toHaveLength(3);
    expect(text(await readAll(logs, claimed)).equals(Buffer.concat(sent))).toBe(true);

    await finish(dispatcher, claimed);
    expect(liveBlobs(claimed)).toEqual([]);
    expect(text(await readAll(logs, claimed)).equals(Buffer.concat(sent))).toBe(true);
  });

  it('keeps a running step in the database when told to (S3 and GCS)', async () => {
    const logs = createLogStore({ store, blobs, log, limitBytes: 1024 ** 3, liveChunks: 'database' });
    opened.push(logs);
    const dispatcher = createDispatcher({ store, log, output: logs, config: { leaseTtlMs: 60_000, maxAttempts: 3 } });
    const claimed = await runningStep(dispatcher);
    const sent = pieces(output(1_200_000), [1024 * 1024]);
    await send(dispatcher, claimed, sent);
    expect(await forms(claimed)).toEqual([
      { seq: 0, form: 'gzip' },
      { seq: 1, form: 'gzip' },
    ]);
    expect(liveBlobs(claimed)).toEqual([]);
    await finish(dispatcher, claimed);
    expect(text(await readAll(logs, claimed)).equals(Buffer.concat(sent))).toBe(true);
  });

  it('goes on reading from the archive when the step is moved while its chunks are being read', async () => {
    const { dispatcher, logs } = processWith();
    const claimed = await runningStep(dispatcher);
    const sent = pieces(output(600_000), [100_000, 100_000, 100_000, 100_000, 100_000]);
    await send(dispatcher, claimed, sent);
    const reading = logs.read(claimed.lease.taskId, claimed.lease.attempt, 0)[Symbol.asyncIterator]();
    const first = await reading.next();
    // The rows of all six were read with the first; their blobs go with the move.
    await finish(dispatcher, claimed);
    expect(liveBlobs(claimed)).toEqual([]);
    const rest: { seq: number; data: Buffer }[] = [];
    for (let next = await reading.next(); !next.done; next = await reading.next()) rest.push({ seq: next.value.seq, data: Buffer.from(next.value.data) });
    expect(first.done ? undefined : first.value.seq).toBe(0);
    expect(rest.map((c) => c.seq)).toEqual([1, 2, 3, 4, 5]);
    expect(Buffer.concat([Buffer.from(first.value!.data), text(rest)]).equals(Buffer.concat(sent))).toBe(true);
  });

  it('refuses a chunk under a stale lease and keeps nothing of it', async () => {
    const { dispatcher, logs } = processWith();
    const claimed = await runningStep(dispatcher);
    const stale = { ...claimed, lease: { ...claimed.lease, leaseId: randomUUID() } };
    await expect(dispatcher.appendOutput(stale.lease, 0, 0, output(100_000))).rejects.toBeInstanceOf(StaleLeaseError);
    expect(await readAll(logs, claimed)).toEqual([]);
    // Nor a file: the chunk (large enough to be held as a blob) is removed when the lease refuses it.
    expect(liveBlobs(claimed)).toEqual([]);
    expect(await store.query('SELECT bytes FROM task_output WHERE task_id = $1 AND bytes > 0', [claimed.lease.taskId])).toEqual([]);
  });

  it.each(['bytes', 'gzip'] as const)('cuts the chunk that reaches the cap, marks it, and keeps nothing after it (chunks sent as %s)', async (form) => {
    const limit = 150_000;
    const { dispatcher, logs } = processWith(limit);
    const claimed = await runningStep(dispatcher);
    const data = output(400_000);
    await send(dispatcher, claimed, pieces(data, [100_000, 100_000, 100_000, 100_000]), 0, form);
    // The crossing chunk sent again changes nothing.
    await dispatcher.appendOutput(claimed.lease, 0, 1, data.subarray(100_000, 200_000));
    const expected = Buffer.concat([data.subarray(0, limit), Buffer.from(truncationMarker(limit))]);
    expect(text(await readAll(logs, claimed)).equals(expected)).toBe(true);
    // The chunk cut at the cap is written in the database; nothing past it is held anywhere.
    expect(await forms(claimed)).toEqual([
      { seq: 0, form: 'blob' },
      { seq: 1, form: 'gzip' },
    ]);
    expect(liveBlobs(claimed)).toHaveLength(1);
    await finish(dispatcher, claimed);
    expect(text(await readAll(logs, claimed)).equals(expected)).toBe(true);
    // The cap is per attempt: a later step of it keeps nothing either.
    await dispatcher.stepStarted(claimed.lease, { index: 1, name: 'more', type: 'run' });
    await dispatcher.appendOutput(claimed.lease, 1, 0, Buffer.from('never kept\n'));
    expect(await readAll(logs, claimed, 1)).toEqual([]);
  });

  it('removes the log spools a process that died left behind, and not those of running processes', async () => {
    const root = mkdtempSync(join(tmpdir(), 'gyre-spool-root-'));
    // A process that is not running: a pid above the kernel's largest (a pid of a process that
    // just ended could be given again on a busy machine; pid_max is 32768 on some).
    const dead = Number(readFileSync('/proc/sys/kernel/pid_max', 'utf8')) + 1;
    const left = join(root, `${dead}-0d0d0d0d`);
    const live = join(root, `${process.pid}-1e1e1e1e`);
    for (const dir of [left, live]) {
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, 'gyre-log-partial.gz'), 'half a step');
    }
    try {
      const { dispatcher, logs } = processWith(undefined, undefined, undefined, root);
      const claimed = await runningStep(dispatcher);
      const data = output(10_000);
      await send(dispatcher, claimed, [data]);
      await finish(dispatcher, claimed);
      expect(text(await readAll(logs, claimed)).equals(data)).toBe(true);
      expect(existsSync(left)).toBe(false);
      expect(readFileSync(join(live, 'gyre-log-partial.gz'), 'utf8')).toBe('half a step');
      // The step's spool became its archive: the store's own directory is empty.
      const own = readdirSync(root).filter((d) => d !== basename(live));
      expect(own).toHaveLength(1);
      expect(readdirSync(join(root, own[0]))).toEqual([]);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  it('closes and removes its spools when it is closed, with a step still running', async () => {
    const root = mkdtempSync(join(tmpdir(), 'gyre-spool-root-'));
    try {
      const { dispatcher, logs } = processWith(undefined, undefined, undefined, root);
      const claimed = await runningStep(dispatcher);
      const data = output(300_000);
      await send(dispatcher, claimed, [data]);
      // The spool file is opened in the background, after the chunk is stored.
      const spooled = () => readdirSync(root).flatMap((d) => readdirSync(join(root, d)));
      for (let waited = 0; spooled().length === 0 && waited < 5000; waited += 10) await new Promise((r) => setTimeout(r, 10));
      expect(spooled()).toEqual([expect.stringMatching(/^gyre-log-.*\.gz$/)]);
      await logs.close();
      expect(readdirSync(root)).toEqual([]);
      // The running step's output is in the database, and another process moves it when it ends.
      const other = processWith();
      await finish(other.dispatcher, claimed);
      expect(text(await readAll(other.logs, claimed)).equals(data)).toBe(true);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  it('leaves no half-moved file in its spool directory when reading the chunks back fails, and the step stays readable', async () => {
    const root = mkdtempSync(join(tmpdir(), 'gyre-spool-root-'));
    try {
      // Another process stored the chunks (so this one reads them back from the database), more
      // than one batch of them; the database fails on the second batch.
      const other = processWith();
      const claimed = await runningStep(other.dispatcher);
      const sent = pieces(output(40_000), Array.from({ length: 20 }, () => 2_000));
      for (const [seq, data] of sent.entries()) await other.dispatcher.appendOutput(claimed.lease, 0, seq, data);
      let batches = 0;
      const failing = new Proxy(store, {
        get(target, key) {
          if (key === 'query')
            return (sql: string, params?: unknown[]) =>
              /FROM log_chunks/.test(sql) && /ORDER BY seq/.test(sql) && ++batches === 2 ? Promise.reject(new Error('connection lost')) : target.query(sql, params);
          const value = Reflect.get(target, key);
          return typeof value === 'function' ? value.bind(target) : value;
        },
      });
      const one = processWith(undefined, undefined, failing, root);
      await finish(one.dispatcher, claimed);
      expect(batches).toBe(2);
      expect(readdirSync(root).flatMap((d) => readdirSync(join(root, d)))).toEqual([]);
      expect(await store.query('SELECT 1 FROM step_logs WHERE task_id = $1', [claimed.lease.taskId])).toEqual([]);
      expect(text(await readAll(other.logs, claimed)).equals(Buffer.concat(sent))).toBe(true);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  it("ends a step that wrote nothing without reading its output back, and moves a step whose chunks it stored without reading them again", async () => {
    // The statements that read a step's chunks back (the spool's check, the archive's read): the
    // step's end brings what is stored with it, so neither is sent.
    const reads: string[] = [];
    const counting = new Proxy(store, {
      get(target, key) {
        if (key === 'query')
          return (sql: string, params?: unknown[]) => {
            if (/^\s*SELECT seq\b/.test(sql)) reads.push(sql);
            return target.query(sql, params);
          };
        const value = Reflect.get(target, key);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
    const { dispatcher, logs } = processWith(undefined, undefined, counting);

    const quiet = await runningStep(dispatcher);
    await finish(dispatcher, quiet);
    expect(reads).toEqual([]);
    expect(await store.query('SELECT 1 FROM step_logs WHERE task_id = $1', [quiet.lease.taskId])).toEqual([]);
    expect(await readAll(logs, quiet)).toEqual([]);

    const loud = await runningStep(dispatcher);
    const sent = pieces(output(600_000), [200_000, 100, 250_000]);
    await send(dispatcher, loud, sent);
    reads.length = 0;
    await finish(dispatcher, loud);
    expect(reads).toEqual([]);
    expect(await store.query('SELECT seq FROM log_chunks WHERE task_id = $1', [loud.lease.taskId])).toEqual([]);
    const moved = await readAll(logs, loud);
    expect(moved.map((c) => c.seq)).toEqual([0, 1, 2, 3]);
    expect(text(moved).equals(Buffer.concat(sent))).toBe(true);
  });

  it('stores each chunk once, and counts it once, when retries race the original on two processes', async () => {
    const one = processWith();
    const other = processWith();
    const claimed = await runningStep(one.dispatcher);
    const sent = Array.from({ length: 20 }, (_, seq) => output(50_000 + seq));
    for (const [seq, data] of sent.entries()) {
      // The original and two retries at once: none fails, one is stored.
      await Promise.all([one, other, one].map(({ dispatcher }) => dispatcher.appendOutput(claimed.lease, 0, seq, data)));
    }
    expect(text(await readAll(one.logs, claimed)).equals(Buffer.concat(sent))).toBe(true);
    const [counter] = await store.query<{ bytes: number }>('SELECT bytes FROM task_output WHERE task_id = $1', [claimed.lease.taskId]);
    expect(Number(counter.bytes)).toBe(sent.reduce((n, d) => n + d.length, 0));
  });

  it('moves a step byte-identical when another process stored some of its chunks', async () => {
    const one = processWith();
    const other = processWith();
    const claimed = await runningStep(one.dispatcher);
    const sent = pieces(output(2_200_000), [700_000, 700_000, 100, 700_000]);
    for (const [seq, data] of sent.entries()) await (seq % 2 ? other : one).dispatcher.appendOutput(claimed.lease, 0, seq, data);
    await finish(one.dispatcher, claimed);
    expect(await store.query('SELECT seq FROM log_chunks WHERE task_id = $1', [claimed.lease.taskId])).toEqual([]);
    expect(text(await readAll(other.logs, claimed)).equals(Buffer.concat(sent))).toBe(true);
  });

  it('keeps a step readable from the database when the blob store fails', async () => {
    const failing: BlobStore = { ...blobs, put: async () => Promise.reject(new Error('bucket unavailable')) };
    const { dispatcher, logs } = processWith(1024 ** 3, failing);
    const claimed = await runningStep(dispatcher);
    const data = output(1_500_000);
    await send(dispatcher, claimed, pieces(data, [1024 * 1024]));
    // Chunks the blob store refused are written in the database instead.
    expect((await forms(claimed)).map((c) => c.form)).toEqual(['gzip', 'gzip']);
    await finish(dispatcher, claimed);
    expect(await store.query('SELECT 1 FROM step_logs WHERE task_id = $1', [claimed.lease.taskId])).toEqual([]);
    expect(text(await readAll(logs, claimed)).equals(data)).toBe(true);
  });

  it('reads and moves chunks stored before compression came in, after the migration that brought it', async () => {
    // A database of its own: its schema goes back to before the migration, gets chunks stored the
    // way they were then, and is migrated again.
    const { store, drop: dropOwn } = await openTestStore(kind);
    try {
      await compressedAfterUncompressed(store);
    } finally {
      await store.close();
      await dropOwn?.();
    }
  });

  async function compressedAfterUncompressed(store: Store) {
    const { dispatcher, logs } = processWith(1024 ** 3, blobs, store);
    const claimed = await runningStep(dispatcher, store);
    // As it was before 300 (and so before 680, which holds chunks in the blob store).
    await store.query('DELETE FROM gyre_migrations WHERE name = ANY($1::text[])', [['300_compressed_log_chunks.sql', '680_log_chunk_blobs.sql']]);
    await store.query('ALTER TABLE log_chunks DROP COLUMN blob_key');
    await store.query('ALTER TABLE log_chunks DROP CONSTRAINT log_chunks_one_form');
    await store.query('ALTER TABLE log_chunks DROP COLUMN gzip');
    await store.query('ALTER TABLE log_chunks DROP COLUMN raw_bytes');
    await store.query('ALTER TABLE log_chunks ALTER COLUMN data SET NOT NULL');
    const before = pieces(output(1_200_000), [1024 * 1024]);
    for (const [seq, data] of before.entries()) {
      await store.query('INSERT INTO log_chunks (task_id, attempt, step_index, seq, data) VALUES ($1, $2, 0, $3, $4)', [claimed.lease.taskId, claimed.lease.attempt, seq, data]);
    }
    expect(await migrate(store)).toEqual(['300_compressed_log_chunks.sql', '680_log_chunk_blobs.sql']);

    // The step goes on with compressed chunks after the old ones.
    const after = [output(300_000), output(10)];
    await send(dispatcher, claimed, after, before.length);
    const all = Buffer.concat([...before, ...after]);
    expect(text(await readAll(logs, claimed)).equals(all)).toBe(true);
    await finish(dispatcher, claimed);
    expect(await store.query('SELECT seq FROM log_chunks WHERE task_id = $1', [claimed.lease.taskId])).toEqual([]);
    expect(text(await readAll(logs, claimed)).equals(all)).toBe(true);
    expect((await readAll(logs, claimed, 0, 0)).map((c) => c.seq)).toEqual([1, 2, 3]);
  }
});
