import { createHmac, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, rm, stat } from 'node:fs/promises';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { blobKey, type BlobStore } from '../blob/blob-store';
import { InputError, TooLargeError } from '../domain/errors';
import { lockCurrentLease } from '../dispatcher/sql/leases';
import type { Logger } from '../logger';
import type { Queryable, Store } from '../store/store';
import { cacheVisibilityParams, cacheVisibleSql, jobRefTrust, type CacheTrust } from './cache-trust';
import type { TestCase } from './junit';
import { openBody, type Download, type OutputClient } from './output-client';
import { safeRelativeName } from './tar';

export interface OutputLimits {
  /** Largest artifact file. @default 5 GiB */
  readonly artifactBytes: number;
  /** Largest compressed cache. @default 5 GiB */
  readonly cacheBytes: number;
  /** Largest compressed workspace layer. @default 5 GiB */
  readonly workspaceBytes: number;
  /** Days a cache is kept after it was saved. @default 15 (as CircleCI) */
  readonly cacheTtlDays: number;
  /** Largest set of test results one step stores, as JSON (one line per test). @default 256 MiB */
  readonly testResultsBytes: number;
}

export const DEFAULT_OUTPUT_LIMITS: OutputLimits = {
  artifactBytes: 5 * 1024 ** 3,
  cacheBytes: 5 * 1024 ** 3,
  workspaceBytes: 5 * 1024 ** 3,
  cacheTtlDays: 15,
  testResultsBytes: 256 * 1024 ** 2,
};

/**
 * A row (`alias`, with job_id, node_index and attempt) of its node's latest attempt: what an earlier
 * attempt wrote before it lost its task is not shown, nor attached downstream. Rows written before
 * attempts were recorded (attempt NULL) count as the latest.
 */
export const LATEST_ATTEMPT = (alias: string) =>
  `(${alias}.attempt IS NULL OR ${alias}.attempt = (SELECT t.attempt FROM tasks t WHERE t.job_id = ${alias}.job_id AND t.node_index = ${alias}.node_index))`;

/**
 * Every cache of every trust level as one relation, with `protected` and `scope` saying which:
 * caches saved on protected refs are kept in `protected_caches`, those of forks' pipelines in
 * `fork_caches` with their pull request as `scope` (migration 600), every other in `caches`
 * (migration 410). Who may restore which: `cacheVisibleSql` (./cache-trust.ts).
 */
const ALL_CACHES = `(SELECT id, project_id, key, blob_key, bytes, created_at, false AS protected, NULL::text AS scope FROM caches
  UNION ALL SELECT id, project_id, key, blob_key, bytes, created_at, true AS protected, NULL::text AS scope FROM protected_caches
  UNION ALL SELECT id, project_id, key, blob_key, bytes, created_at, false AS protected, scope FROM fork_caches)`;

/** The table a cache saved at this trust level goes in (a fork's go in `fork_caches`, by scope). */
const cacheTable = (isProtected: boolean) => (isProtected ? 'protected_caches' : 'caches');

/** A size for people: `256 MiB`, `9.8 KiB`. */
function size(bytes: number): string {
  const units: [number, string][] = [[1024 ** 3, 'GiB'], [1024 ** 2, 'MiB'], [1024, 'KiB']];
  const [unit, name] = units.find(([u]) => bytes >= u) ?? [1, 'B'];
  return `${+(bytes / unit).toFixed(1)} ${name}`;
}

/** A stream copied to a file of Gyre's alone (0600) in `dir`, refusing more than `maxBytes`. */
async function spool(dir: string, content: AsyncIterable<Uint8Array> | Iterable<Uint8Array>, maxBytes: number, what: string): Promise<{ file: string; bytes: number }> {
  const file = join(dir, `gyre-upload-${randomUUID()}`);
  const out = createWriteStream(file, { mode: 0o600, flags: 'wx' });
  let bytes = 0;
  try {
    for await (const chunk of content) {
      bytes += chunk.byteLength;
      if (bytes > maxBytes) throw new TooLargeError(`${what} is larger than the limit of ${maxBytes} bytes`, 'size', maxBytes);
      if (!out.write(chunk)) await once(out, 'drain');
    }
    out.end();
    await once(out, 'close');
    return { file, bytes: (await stat(file)).size };
  } catch (error) {
    // A write still in flight fails once the stream is destroyed: that is expected, not news.
    out.on('error', () => undefined);
    out.destroy();
    await rm(file, { force: true });
    throw error;
  }
}

/** Test cases copied to a file of Gyre's alone (0600) in `dir` as NDJSON, refusing more than `maxBytes` of it. */
async function spoolCases(dir: string, cases: AsyncIterable<TestCase> | Iterable<TestCase>, maxBytes: number): Promise<{ file: string; count: number }> {
  const file = join(dir, `gyre-tests-${randomUUID()}`);
  const out = createWriteStream(file, { mode: 0o600, flags: 'wx' });
  let bytes = 0;
  let count = 0;
  try {
    for await (const c of cases) {
      const line = `${JSON.stringify({ name: c.name, classname: c.classname, file: c.file, result: c.result, message: c.message, run_time: c.run_time })}\n`;
      bytes += Buffer.byteLength(line);
      if (bytes > maxBytes) {
        throw new TooLargeError(`the test results are larger than the limit of ${size(maxBytes)} (${maxBytes} bytes) of JSON, one line per test; nothing of them was stored`, 'test-results', maxBytes);
      }
      count++;
      if (!out.write(line)) await once(out, 'drain');
    }
    out.end();
    await once(out, 'close');
    return { file, count };
  } catch (error) {
    // A write still in flight fails once the stream is destroyed: that is expected, not news.
    out.on('error', () => undefined);
    out.destroy();
    await rm(file, { force: true });
    throw error;
  }
}

/** The lines of a spooled NDJSON file, parsed, `size` at a time. */
async function* batchesOf(file: string, size: number): AsyncIterable<unknown[]> {
  let batch: unknown[] = [];
  for await (const line of createInterface({ input: createReadStream(file), crlfDelay: Infinity })) {
    if (!line) continue;
    batch.push(JSON.parse(line));
    if (batch.length >= size) {
      yield batch;
      batch = [];
    }
  }
  if (batch.length) yield batch;
}

/** What an earlier attempt of the write `key` answered, if one was stored. */
async function earlierAnswer(db: Queryable, jobId: string, key: string | undefined): Promise<string | undefined> {
  if (key === undefined) return undefined;
  const [row] = await db.query<{ answer: string }>('SELECT answer FROM output_requests WHERE job_id = $1 AND request_key = $2', [jobId, key]);
  return row?.answer;
}

/**
 * Claims the write `key` in `tx` with the answer it will give: undefined when this attempt is
 * the first to store it (it goes on and stores), else what the earlier attempt answered (then
 * this one stores nothing). A concurrent attempt waits on the row until the first commits.
 */
async function claimRequest(tx: Queryable, jobId: string, key: string | undefined, answer: string): Promise<string | undefined> {
  if (key === undefined) return undefined;
  const claimed = await tx.query('INSERT INTO output_requests (job_id, request_key, answer) VALUES ($1, $2, $3) ON CONFLICT (job_id, request_key) DO NOTHING RETURNING 1', [jobId, key, answer]);
  if (claimed.length > 0) return undefined;
  return (await earlierAnswer(tx, jobId, key)) ?? answer;
}

/** Escapes `%`, `_` and `\` for a LIKE prefix match. */
function likePrefix(prefix: string): string {
  return prefix.replace(/[\\%_]/g, (c) => `\\${c}`) + '%';
}

/** Every job a job depends on, directly or through others, in its workflow. */
async function upstreamJobIds(db: Queryable, workflowId: string, jobId: string): Promise<Set<string>> {
  const jobs = await db.query<{ id: string; name: string; requires: { job: string }[] }>('SELECT id, name, requires FROM jobs WHERE workflow_id = $1', [workflowId]);
  const byName = new Map(jobs.map((j) => [j.name, j]));
  const seen = new Set<string>();
  const pending = [...(jobs.find((j) => j.id === jobId)?.requires ?? [])];
  while (pending.length) {
    const dep = byName.get(pending.pop()!.job);
    if (!dep || seen.has(dep.id)) continue;
    seen.add(dep.id);
    pending.push(...dep.requires);
  }
  return seen;
}

export interface OutputServiceOptions {
  readonly store: Store;
  readonly blobs: BlobStore;
  readonly log: Logger;
  readonly limits?: Partial<OutputLimits>;
  /**
   * Which caches a job on a protected ref (the default branch, or a branch matching the project's
   * protected patterns) restores: `protected`, only those saved on protected refs; `shared`, all
   * of its project's (GYRE_CACHE_TRUST). @default 'protected'
   */
  readonly cacheTrust?: CacheTrust;
  /**
   * Where uploads wait on their way to the blob store: a directory of Gyre's own, e.g.
   * `spoolDirOf(dataDir)` (runtime/data-dir.ts), made 0700 when missing. @default the temporary directory
   */
  readonly spoolDir?: string;
}

/**
 * The output role's files: the in-process `OutputClient` the built-in runner's steps use, and
 * the read side the API serves.
 */
export function createOutputService({ store, blobs, log, limits: given = {}, cacheTrust = 'protected', spoolDir }: OutputServiceOptions) {
  const limits = { ...DEFAULT_OUTPUT_LIMITS, ...given };
  let spoolReady: Promise<string> | undefined;
  /** The spool directory, made on first use. */
  const spools = (): Promise<string> => {
    if (!spoolDir) return Promise.resolve(tmpdir());
    spoolReady ??= mkdir(spoolDir, { recursive: true, mode: 0o700 }).then(() => spoolDir);
    spoolReady.catch(() => (spoolReady = undefined));
    return spoolReady;
  };

  /**
   * Whether a job may restore only caches saved on protected refs (it runs on one, under the
   * `protected` rule), whether what it saves counts as saved on a protected ref, and whether it is
   * a fork's (its caches are its pull request's alone).
   */
  const trustOf = async (jobId: string) => {
    const trust = await jobRefTrust(store, jobId);
    return { ...trust, protectedOnly: cacheTrust === 'protected' && trust.protected };
  };

  /** A stored cache or layer from `start` on, with its whole size; past the end there is nothing to read. */
  const openBlob = async (row: { blob_key: string; bytes: string }, start = 0): Promise<Download> => {
    const size = Number(row.bytes);
    const body: AsyncIterable<Uint8Array> = start >= size ? (async function* () {})() : await blobs.get(row.blob_key, { start });
    return Object.assign(body, { size });
  };

  const client: OutputClient = {
    async uploadArtifact(task, path, content, options) {
      const name = safeRelativeName(path);
      if (!name) throw new InputError('an artifact needs a path', 'path');
      const request = options?.requestKey;
      // A retry of an upload that was stored: nothing to read or store again.
      if ((await earlierAnswer(store, task.jobId, request)) !== undefined) return;
      const id = randomUUID();
      const key = blobKey('artifacts', task.jobId, id);
      const spooled = await spool(await spools(), await openBody(content), limits.artifactBytes, `the artifact '${name}'`);
      try {
        await blobs.put(key, { file: spooled.file });
      } finally {
        await rm(spooled.file, { force: true });
      }
      const earlier = await store.transaction(async (tx) => {
        // Stored only while the writer's lease is current: an attempt that lost its task writes nothing.
        if (options?.lease) await lockCurrentLease(tx, options.lease);
        const earlier = await claimRequest(tx, task.jobId, request, 'stored');
        if (earlier === undefined) {
          await tx.query('INSERT INTO artifacts (id, job_id, node_index, path, blob_key, bytes, attempt) VALUES ($1, $2, $3, $4, $5, $6, $7)', [
            id,
            task.jobId,
            task.nodeIndex,
            name,
            key,
            spooled.bytes,
            options?.lease?.attempt ?? null,
          ]);
        }
        return earlier;
      }).catch(async (error) => {
        await blobs.delete([key]).catch(() => undefined);
        throw error;
      });
      if (earlier !== undefined) await blobs.delete([key]);
    },

    async cacheExists(task, key) {
      // A job that restores only protected caches saves its own even where an unprotected one
      // exists; a fork's saves its own where it may restore none of that key.
      const trust = await trustOf(task.jobId);
      const rows = await store.query(
        `SELECT 1 FROM ${ALL_CACHES} c JOIN jobs j ON j.project_id = c.project_id
          WHERE j.id = $1 AND c.key = $2 AND c.created_at > now() - make_interval(days => $3) AND ${cacheVisibleSql(4)}`,
        [task.jobId, key, limits.cacheTtlDays, ...cacheVisibilityParams(trust)],
      );
      return rows.length > 0;
    },

    async saveCache(task, key, archive, options) {
      if (key.length === 0 || key.length > 900 || key.includes('\0')) throw new InputError('a cache key must be 1 to 900 characters with no NUL', 'key');
      const request = options?.requestKey;
      const answered = await earlierAnswer(store, task.jobId, request);
      if (answered !== undefined) return answered === 'exists' ? 'exists' : 'saved';
      const id = randomUUID();
      const [{ project_id: projectId }] = await store.query<{ project_id: string }>('SELECT project_id FROM jobs WHERE id = $1', [task.jobId]);
      const saver = await trustOf(task.jobId);
      const bKey = blobKey('caches', projectId, `${id}.tar.gz`);
      const spooled = await spool(await spools(), await openBody(archive), limits.cacheBytes, `the cache '${key}'`);
      try {
        await blobs.put(bKey, { file: spooled.file });
      } finally {
        await rm(spooled.file, { force: true });
      }
      // An expired cache of the same key (and trust level, or fork scope) gives way; a live one wins (caches are immutable).
      const { saved, replaced, earlier } = await store.transaction(async (tx) => {
        if (options?.lease) await lockCurrentLease(tx, options.lease);
        const earlier = await claimRequest(tx, task.jobId, request, 'saved');
        if (earlier !== undefined) return { saved: [], replaced: [], earlier };
        const scope = saver.forkScope;
        const replaced = scope !== null
          ? await tx.query<{ blob_key: string }>(
              `DELETE FROM fork_caches WHERE project_id = $1 AND scope = $4 AND key = $2 AND created_at <= now() - make_interval(days => $3) RETURNING blob_key`,
              [projectId, key, limits.cacheTtlDays, scope],
            )
          : await tx.query<{ blob_key: string }>(
              `DELETE FROM ${cacheTable(saver.protected)} WHERE project_id = $1 AND key = $2 AND created_at <= now() - make_interval(days => $3) RETURNING blob_key`,
              [projectId, key, limits.cacheTtlDays],
            );
        // A fork's pipeline saves into its pull request's scope only, whatever the project's settings.
        const saved = scope !== null
          ? await tx.query(
              `INSERT INTO fork_caches (id, project_id, scope, key, blob_key, bytes, attempt) VALUES ($1, $2, $7, $3, $4, $5, $6)
               ON CONFLICT (project_id, scope, key) DO NOTHING RETURNING id`,
              [id, projectId, key, bKey, spooled.bytes, options?.lease?.attempt ?? null, scope],
            )
          : await tx.query(
              `INSERT INTO ${cacheTable(saver.protected)} (id, project_id, key, blob_key, bytes, attempt) VALUES ($1, $2, $3, $4, $5, $6)
               ON CONFLICT (project_id, key) DO NOTHING RETURNING id`,
              [id, projectId, key, bKey, spooled.bytes, options?.lease?.attempt ?? null],
            );
        if (saved.length === 0 && request !== undefined) await tx.query(`UPDATE output_requests SET answer = 'exists' WHERE job_id = $1 AND request_key = $2`, [task.jobId, request]);
        return { saved, replaced, earlier };
      }).catch(async (error) => {
        await blobs.delete([bKey]).catch(() => undefined);
        throw error;
      });
      // The expired cache's archive goes with its row; nothing else refers to it.
      if (replaced.length > 0) {
        await blobs.delete(replaced.map((r) => r.blob_key)).catch((error) => log.warn('deleting a replaced cache blob failed', { error: (error as Error).message }));
      }
      if (saved.length === 0) {
        await blobs.delete([bKey]);
        // An earlier attempt of this same save that stored the cache: this one did too.
        return earlier === 'saved' ? 'saved' : 'exists';
      }
      return 'saved';
    },

    async findCache(task, keys) {
      const trust = await trustOf(task.jobId);
      for (const key of keys) {
        const [row] = await store.query<{ id: string; key: string; bytes: string }>(
          `SELECT c.id, c.key, c.bytes FROM ${ALL_CACHES} c JOIN jobs j ON j.project_id = c.project_id
            WHERE j.id = $1 AND c.key LIKE $2 AND c.created_at > now() - make_interval(days => $3) AND ${cacheVisibleSql(4)}
            ORDER BY c.created_at DESC LIMIT 1`,
          [task.jobId, likePrefix(key), limits.cacheTtlDays, ...cacheVisibilityParams(trust)],
        );
        if (row) return { id: row.id, key: row.key, bytes: Number(row.bytes) };
      }
      return undefined;
    },

    async withheldCache(task, keys) {
      const trust = await trustOf(task.jobId);
      // A fork's job is told nothing of the caches it may not restore (not even their keys).
      if (trust.forkScope !== null) return undefined;
      for (const key of keys) {
        if (trust.protectedOnly) {
          const [row] = await store.query<{ key: string }>(
            `SELECT c.key FROM ${ALL_CACHES} c JOIN jobs j ON j.project_id = c.project_id
              WHERE j.id = $1 AND c.key LIKE $2 AND c.created_at > now() - make_interval(days => $3) AND NOT c.protected AND c.scope IS NULL
              ORDER BY c.created_at DESC LIMIT 1`,
            [task.jobId, likePrefix(key), limits.cacheTtlDays],
          );
          if (row) {
            return {
              key: row.key,
              reason: `a cache for ${row.key} was saved by a job on an unprotected branch; this job runs on a protected one (${trust.ref}) and restores only caches saved on protected branches (the project's default branch, ${trust.defaultBranch}, and its protected branch patterns; the server setting GYRE_CACHE_TRUST=shared turns this off)`,
            };
          }
        }
        const [fork] = await store.query<{ key: string; scope: string }>(
          `SELECT c.key, c.scope FROM fork_caches c JOIN jobs j ON j.project_id = c.project_id
            WHERE j.id = $1 AND c.key LIKE $2 AND c.created_at > now() - make_interval(days => $3)
            ORDER BY c.created_at DESC LIMIT 1`,
          [task.jobId, likePrefix(key), limits.cacheTtlDays],
        );
        if (fork) {
          return {
            key: fork.key,
            reason: `a cache for ${fork.key} was saved by a pipeline of a pull request from a fork (${fork.scope}); a fork's caches are restored only by the pipelines of that pull request`,
          };
        }
      }
      return undefined;
    },

    async openCache(task, id, options) {
      const trust = await trustOf(task.jobId);
      const [row] = await store.query<{ blob_key: string; bytes: string }>(
        `SELECT c.blob_key, c.bytes FROM ${ALL_CACHES} c JOIN jobs j ON j.project_id = c.project_id WHERE j.id = $1 AND c.id = $2 AND ${cacheVisibleSql(3)}`,
        [task.jobId, id, ...cacheVisibilityParams(trust)],
      );
      if (!row) {
        const why = trust.forkScope !== null ? ` or is not one this fork's pull request may restore` : trust.protectedOnly ? ' or was saved on an unprotected branch or by a fork' : ' or was saved by a fork';
        throw new InputError(`cache ${id} is not in this project${why}`, 'cache');
      }
      return openBlob(row, options?.start);
    },

    async persistWorkspace(task, archive, options) {
      const request = options?.requestKey;
      if ((await earlierAnswer(store, task.jobId, request)) !== undefined) return;
      const id = randomUUID();
      const key = blobKey('workspaces', task.workflowId, `${id}.tar.gz`);
      const spooled = await spool(await spools(), await openBody(archive), limits.workspaceBytes, 'the workspace layer');
      try {
        await blobs.put(key, { file: spooled.file });
      } finally {
        await rm(spooled.file, { force: true });
      }
      const earlier = await store.transaction(async (tx) => {
        if (options?.lease) await lockCurrentLease(tx, options.lease);
        const earlier = await claimRequest(tx, task.jobId, request, 'stored');
        if (earlier === undefined) {
          await tx.query('INSERT INTO workspace_layers (id, workflow_id, job_id, node_index, blob_key, bytes, attempt) VALUES ($1, $2, $3, $4, $5, $6, $7)', [
            id,
            task.workflowId,
            task.jobId,
            task.nodeIndex,
            key,
            spooled.bytes,
            options?.lease?.attempt ?? null,
          ]);
        }
        return earlier;
      }).catch(async (error) => {
        await blobs.delete([key]).catch(() => undefined);
        throw error;
      });
      if (earlier !== undefined) await blobs.delete([key]);
    },

    async workspaceLayers(task) {
      const upstream = await upstreamJobIds(store, task.workflowId, task.jobId);
      if (upstream.size === 0) return [];
      // Upstream jobs in the order they finished; within a job, in the order it persisted.
      return store.query<{ id: string; jobName: string }>(
        `SELECT l.id, j.name AS "jobName" FROM workspace_layers l JOIN jobs j ON j.id = l.job_id
          WHERE l.workflow_id = $1 AND l.job_id = ANY($2::uuid[]) AND ${LATEST_ATTEMPT('l')}
          ORDER BY j.stopped_at NULLS LAST, l.created_at, l.id`,
        [task.workflowId, [...upstream]],
      );
    },

    async openWorkspaceLayer(task, id, options) {
      const [row] = await store.query<{ blob_key: string; bytes: string }>('SELECT blob_key, bytes FROM workspace_layers WHERE id = $1 AND workflow_id = $2', [id, task.workflowId]);
      if (!row) throw new InputError(`workspace layer ${id} is not in this workflow`, 'workspace');
      return openBlob(row, options?.start);
    },

    async storeTestResults(task, cases, options) {
      const request = options?.requestKey;
      if ((await earlierAnswer(store, task.jobId, request)) !== undefined) return;
      // Spooled first, so a body that fails or passes the limit midway stores nothing, and the
      // transaction is not held open while it arrives.
      const spooled = await spoolCases(await spools(), await openBody(cases), limits.testResultsBytes);
      try {
        await store.transaction(async (tx) => {
          if (options?.lease) await lockCurrentLease(tx, options.lease);
          if ((await claimRequest(tx, task.jobId, request, String(spooled.count))) !== undefined) return;
          const [job] = await tx.query<{ project_id: string; name: string }>('SELECT project_id, name FROM jobs WHERE id = $1', [task.jobId]);
          for await (const batch of batchesOf(spooled.file, 500)) {
            await tx.query(
              `INSERT INTO test_results (job_id, project_id, job_name, revision, node_index, name, classname, file, result, message, run_time, attempt)
               SELECT $1, $2, $3, $4, $5, t.name, t.classname, t.file, t.result, t.message, t.run_time, $7
                 FROM jsonb_to_recordset($6::jsonb) AS t(name text, classname text, file text, result text, message text, run_time double precision)`,
              [task.jobId, job.project_id, job.name, task.revision, task.nodeIndex, JSON.stringify(batch), options?.lease?.attempt ?? null],
            );
          }
        });
      } finally {
        await rm(spooled.file, { force: true });
      }
    },
  };

  let signingKey: Buffer | undefined;
  async function key(): Promise<Buffer> {
    if (signingKey) return signingKey;
    await store.query(`INSERT INTO output_keys (name, secret) VALUES ('artifact-urls', $1) ON CONFLICT (name) DO NOTHING`, [randomBytes(32)]);
    const [row] = await store.query<{ secret: Uint8Array }>(`SELECT secret FROM output_keys WHERE name = 'artifact-urls'`);
    signingKey = Buffer.from(row.secret);
    return signingKey;
  }

  return {
    client,
    limits,
    /** A token that lets anyone holding the URL download this one artifact, and nothing else. */
    async signArtifact(id: string): Promise<string> {
      return createHmac('sha256', await key()).update(`artifact:${id}`).digest('base64url');
    },
    async verifyArtifact(id: string, signature: string): Promise<boolean> {
      const expected = Buffer.from(await this.signArtifact(id));
      const given = Buffer.from(signature);
      return given.length === expected.length && timingSafeEqual(given, expected);
    },
    /**
     * Forgets the `Idempotency-Key`s of writes stored more than a day ago: a retry of a write comes
     * within its agent's retry budget (30 s by default, an hour at most), so none can still arrive.
     */
    async forgetOldRequests(): Promise<number> {
      const rows = await store.query(`DELETE FROM output_requests WHERE created_at <= now() - interval '1 day' RETURNING 1`);
      return rows.length;
    },
    /** Removes caches older than the expiry, rows and blobs. */
    async sweepExpiredCaches(): Promise<number> {
      const rows = [
        ...(await store.query<{ blob_key: string }>(`DELETE FROM caches WHERE created_at <= now() - make_interval(days => $1) RETURNING blob_key`, [limits.cacheTtlDays])),
        ...(await store.query<{ blob_key: string }>(`DELETE FROM protected_caches WHERE created_at <= now() - make_interval(days => $1) RETURNING blob_key`, [limits.cacheTtlDays])),
        ...(await store.query<{ blob_key: string }>(`DELETE FROM fork_caches WHERE created_at <= now() - make_interval(days => $1) RETURNING blob_key`, [limits.cacheTtlDays])),
      ];
      await blobs.delete(rows.map((r) => r.blob_key)).catch((error) => log.warn('deleting expired cache blobs failed', { error: (error as Error).message }));
      return rows.length;
    },
  };
}

export type OutputService = ReturnType<typeof createOutputService>;

/**
 * Per-test timings of a job's most recent run of each test in a project: what test splitting
 * reads to balance nodes. Keys are `file`, `classname` and `name`; `run_time` is in seconds.
 */
export async function testTimings(db: Queryable, projectId: string, jobName: string): Promise<{ file: string; classname: string; name: string; run_time: number }[]> {
  return db.query(
    `SELECT DISTINCT ON (file, classname, name) file, classname, name, run_time
       FROM test_results WHERE project_id = $1 AND job_name = $2
      ORDER BY file, classname, name, id DESC`,
    [projectId, jobName],
  );
}

/**
 * Seconds per test file for the job a task belongs to, from the test results its earlier runs
 * stored (summed over each file's tests; the class name stands in for a file when there is none).
 */
export async function fileTimingsOfTask(db: Queryable, taskId: string): Promise<{ file: string; seconds: number }[]> {
  const [job] = await db.query<{ project_id: string; name: string }>('SELECT j.project_id, j.name FROM tasks t JOIN jobs j ON j.id = t.job_id WHERE t.id = $1', [taskId]);
  if (!job) return [];
  const totals = new Map<string, number>();
  for (const t of await testTimings(db, job.project_id, job.name)) {
    const file = t.file || t.classname;
    if (file) totals.set(file, (totals.get(file) ?? 0) + Number(t.run_time || 0));
  }
  return [...totals].map(([file, seconds]) => ({ file, seconds }));
}

/** A page of a job's artifacts, in path order. */
export async function jobArtifacts(db: Queryable, jobId: string, offset: number, limit: number) {
  return db.query<{ id: string; path: string; node_index: number }>(
    `SELECT id, path, node_index FROM artifacts a WHERE job_id = $1 AND ${LATEST_ATTEMPT('a')} ORDER BY node_index, path, id OFFSET $2 LIMIT $3`,
    [jobId, offset, limit],
  );
}

/** Where an artifact's bytes are kept. */
export async function artifactFile(db: Queryable, id: string): Promise<{ path: string; blob_key: string; bytes: string } | undefined> {
  const [row] = await db.query<{ path: string; blob_key: string; bytes: string }>('SELECT path, blob_key, bytes FROM artifacts WHERE id = $1', [id]);
  return row;
}

/** A page of a job's test results, after the result `after`. */
export async function jobTestResults(db: Queryable, jobId: string, after: number, limit: number) {
  return db.query<{ id: string; name: string; classname: string; file: string; result: string; message: string; run_time: number }>(
    `SELECT id, name, classname, file, result, message, run_time FROM test_results r WHERE job_id = $1 AND id > $2 AND ${LATEST_ATTEMPT('r')} ORDER BY id LIMIT $3`,
    [jobId, after, limit],
  );
}

/** How long a test stays flaky without flaking again, as CircleCI counts it. */
const FLAKY_DAYS = 14;

/**
 * Tests that both passed and failed on the same revision in the last 14 days, most often first, in
 * CircleCI's shape: each with the latest run in which it failed (its workflow, pipeline and job),
 * how many revisions it flaked on, and the seconds its failed runs took (`time-wasted`).
 */
export async function flakyTests(db: Queryable, projectId: string) {
  const rows = await db.query<{
    name: string;
    classname: string;
    file: string;
    job_name: string;
    times_flaked: string;
    time_wasted: number;
    job_number: number | null;
    workflow_id: string;
    workflow_name: string;
    workflow_created_at: Date | string;
    pipeline_number: number;
  }>(
    `WITH flaky AS (
       SELECT name, classname, file, job_name, revision FROM test_results
        WHERE project_id = $1 AND created_at > now() - make_interval(days => ${FLAKY_DAYS})
        GROUP BY name, classname, file, job_name, revision
       HAVING bool_or(result = 'success') AND bool_or(result = 'failure')),
     failed AS (
       SELECT r.name, r.classname, r.file, r.job_name, r.job_id, r.run_time, r.created_at, r.id
         FROM test_results r JOIN flaky f USING (name, classname, file, job_name, revision)
        WHERE r.project_id = $1 AND r.result = 'failure'),
     counted AS (
       SELECT f.name, f.classname, f.file, f.job_name, count(*) AS times_flaked,
              (SELECT COALESCE(sum(x.run_time), 0) FROM failed x
                WHERE (x.name, x.classname, x.file, x.job_name) = (f.name, f.classname, f.file, f.job_name)) AS time_wasted
         FROM flaky f GROUP BY f.name, f.classname, f.file, f.job_name),
     latest AS (
       SELECT DISTINCT ON (name, classname, file, job_name) name, classname, file, job_name, job_id
         FROM failed ORDER BY name, classname, file, job_name, created_at DESC, id DESC)
     SELECT c.name, c.classname, c.file, c.job_name, c.times_flaked, c.time_wasted,
            j.number AS job_number, w.id AS workflow_id, w.name AS workflow_name, w.created_at AS workflow_created_at, p.number AS pipeline_number
       FROM counted c
       JOIN latest l USING (name, classname, file, job_name)
       JOIN jobs j ON j.id = l.job_id
       JOIN workflows w ON w.id = j.workflow_id
       JOIN pipelines p ON p.id = w.pipeline_id
      ORDER BY c.times_flaked DESC, c.classname, c.name LIMIT 1000`,
    [projectId],
  );
  return rows.map((r) => ({
    'test-name': r.name,
    classname: r.classname,
    file: r.file,
    // The program that wrote the results is not known, as for a job's tests.
    source: '',
    'job-name': r.job_name,
    'job-number': r.job_number ?? 0,
    'workflow-id': r.workflow_id,
    'workflow-name': r.workflow_name,
    'workflow-created-at': new Date(r.workflow_created_at).toISOString(),
    'pipeline-number': r.pipeline_number,
    'times-flaked': Number(r.times_flaked),
    'time-wasted': Math.round(Number(r.time_wasted)),
  }));
}
