import { createHmac, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { rm, stat } from 'node:fs/promises';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { blobKey, type BlobStore } from '../blob/blob-store';
import { InputError } from '../domain/errors';
import type { Logger } from '../logger';
import type { Queryable, Store } from '../store/store';
import type { OutputClient } from './output-client';
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
}

export const DEFAULT_OUTPUT_LIMITS: OutputLimits = {
  artifactBytes: 5 * 1024 ** 3,
  cacheBytes: 5 * 1024 ** 3,
  workspaceBytes: 5 * 1024 ** 3,
  cacheTtlDays: 15,
};

/** A stream copied to a temporary file, refusing more than `maxBytes`. */
async function spool(content: AsyncIterable<Uint8Array>, maxBytes: number, what: string): Promise<{ file: string; bytes: number }> {
  const file = join(tmpdir(), `gyre-upload-${randomUUID()}`);
  const out = createWriteStream(file);
  let bytes = 0;
  try {
    for await (const chunk of content) {
      bytes += chunk.byteLength;
      if (bytes > maxBytes) throw new InputError(`${what} is larger than the limit of ${maxBytes} bytes`, 'size');
      if (!out.write(chunk)) await once(out, 'drain');
    }
    out.end();
    await once(out, 'close');
    return { file, bytes: (await stat(file)).size };
  } catch (error) {
    out.destroy();
    await rm(file, { force: true });
    throw error;
  }
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
}

/**
 * The output role's files: the in-process `OutputClient` the built-in runner's steps use, and
 * the read side the API serves.
 */
export function createOutputService({ store, blobs, log, limits: given = {} }: OutputServiceOptions) {
  const limits = { ...DEFAULT_OUTPUT_LIMITS, ...given };

  const client: OutputClient = {
    async uploadArtifact(task, path, content) {
      const name = safeRelativeName(path);
      if (!name) throw new InputError('an artifact needs a path', 'path');
      const id = randomUUID();
      const key = blobKey('artifacts', task.jobId, id);
      const spooled = await spool(content, limits.artifactBytes, `the artifact '${name}'`);
      try {
        await blobs.put(key, { file: spooled.file });
      } finally {
        await rm(spooled.file, { force: true });
      }
      await store.query('INSERT INTO artifacts (id, job_id, node_index, path, blob_key, bytes) VALUES ($1, $2, $3, $4, $5, $6)', [id, task.jobId, task.nodeIndex, name, key, spooled.bytes]);
    },

    async cacheExists(task, key) {
      const rows = await store.query(
        `SELECT 1 FROM caches c JOIN jobs j ON j.project_id = c.project_id
          WHERE j.id = $1 AND c.key = $2 AND c.created_at > now() - make_interval(days => $3)`,
        [task.jobId, key, limits.cacheTtlDays],
      );
      return rows.length > 0;
    },

    async saveCache(task, key, archive) {
      if (key.length === 0 || key.length > 900 || key.includes('\0')) throw new InputError('a cache key must be 1 to 900 characters with no NUL', 'key');
      const id = randomUUID();
      const [{ project_id: projectId }] = await store.query<{ project_id: string }>('SELECT project_id FROM jobs WHERE id = $1', [task.jobId]);
      const bKey = blobKey('caches', projectId, `${id}.tar.gz`);
      const spooled = await spool(archive, limits.cacheBytes, `the cache '${key}'`);
      try {
        await blobs.put(bKey, { file: spooled.file });
      } finally {
        await rm(spooled.file, { force: true });
      }
      // An expired cache of the same key gives way; a live one wins (caches are immutable).
      const { saved, replaced } = await store.transaction(async (tx) => {
        const replaced = await tx.query<{ blob_key: string }>(
          `DELETE FROM caches WHERE project_id = $1 AND key = $2 AND created_at <= now() - make_interval(days => $3) RETURNING blob_key`,
          [projectId, key, limits.cacheTtlDays],
        );
        const saved = await tx.query(
          `INSERT INTO caches (id, project_id, key, blob_key, bytes) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (project_id, key) DO NOTHING RETURNING id`,
          [id, projectId, key, bKey, spooled.bytes],
        );
        return { saved, replaced };
      });
      // The expired cache's archive goes with its row; nothing else refers to it.
      if (replaced.length > 0) {
        await blobs.delete(replaced.map((r) => r.blob_key)).catch((error) => log.warn('deleting a replaced cache blob failed', { error: (error as Error).message }));
      }
      if (saved.length === 0) {
        await blobs.delete([bKey]);
        return 'exists';
      }
      return 'saved';
    },

    async findCache(task, keys) {
      for (const key of keys) {
        const [row] = await store.query<{ id: string; key: string; bytes: string }>(
          `SELECT c.id, c.key, c.bytes FROM caches c JOIN jobs j ON j.project_id = c.project_id
            WHERE j.id = $1 AND c.key LIKE $2 AND c.created_at > now() - make_interval(days => $3)
            ORDER BY c.created_at DESC LIMIT 1`,
          [task.jobId, likePrefix(key), limits.cacheTtlDays],
        );
        if (row) return { id: row.id, key: row.key, bytes: Number(row.bytes) };
      }
      return undefined;
    },

    async openCache(task, id) {
      const [row] = await store.query<{ blob_key: string }>(
        'SELECT c.blob_key FROM caches c JOIN jobs j ON j.project_id = c.project_id WHERE j.id = $1 AND c.id = $2',
        [task.jobId, id],
      );
      if (!row) throw new InputError(`cache ${id} is not in this project`, 'cache');
      return blobs.get(row.blob_key);
    },

    async persistWorkspace(task, archive) {
      const id = randomUUID();
      const key = blobKey('workspaces', task.workflowId, `${id}.tar.gz`);
      const spooled = await spool(archive, limits.workspaceBytes, 'the workspace layer');
      try {
        await blobs.put(key, { file: spooled.file });
      } finally {
        await rm(spooled.file, { force: true });
      }
      await store.query('INSERT INTO workspace_layers (id, workflow_id, job_id, node_index, blob_key, bytes) VALUES ($1, $2, $3, $4, $5, $6)', [id, task.workflowId, task.jobId, task.nodeIndex, key, spooled.bytes]);
    },

    async workspaceLayers(task) {
      const upstream = await upstreamJobIds(store, task.workflowId, task.jobId);
      if (upstream.size === 0) return [];
      // Upstream jobs in the order they finished; within a job, in the order it persisted.
      return store.query<{ id: string; jobName: string }>(
        `SELECT l.id, j.name AS "jobName" FROM workspace_layers l JOIN jobs j ON j.id = l.job_id
          WHERE l.workflow_id = $1 AND l.job_id = ANY($2::uuid[])
          ORDER BY j.stopped_at NULLS LAST, l.created_at, l.id`,
        [task.workflowId, [...upstream]],
      );
    },

    async openWorkspaceLayer(task, id) {
      const [row] = await store.query<{ blob_key: string }>('SELECT blob_key FROM workspace_layers WHERE id = $1 AND workflow_id = $2', [id, task.workflowId]);
      if (!row) throw new InputError(`workspace layer ${id} is not in this workflow`, 'workspace');
      return blobs.get(row.blob_key);
    },

    async storeTestResults(task, cases) {
      const [job] = await store.query<{ project_id: string; name: string }>('SELECT project_id, name FROM jobs WHERE id = $1', [task.jobId]);
      for (let i = 0; i < cases.length; i += 500) {
        const batch = cases.slice(i, i + 500);
        await store.query(
          `INSERT INTO test_results (job_id, project_id, job_name, revision, node_index, name, classname, file, result, message, run_time)
           SELECT $1, $2, $3, $4, $5, t.name, t.classname, t.file, t.result, t.message, t.run_time
             FROM jsonb_to_recordset($6::jsonb) AS t(name text, classname text, file text, result text, message text, run_time double precision)`,
          [task.jobId, job.project_id, job.name, task.revision, task.nodeIndex, JSON.stringify(batch)],
        );
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
    /** Removes caches older than the expiry, rows and blobs. */
    async sweepExpiredCaches(): Promise<number> {
      const rows = await store.query<{ blob_key: string }>(`DELETE FROM caches WHERE created_at <= now() - make_interval(days => $1) RETURNING blob_key`, [limits.cacheTtlDays]);
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
