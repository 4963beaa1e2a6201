import type { Audit } from '../audit/audit-log';
import type { BlobStore } from '../blob/blob-store';
import type { WorkflowStatus } from '../domain/model';
import type { Logger } from '../logger';
import type { Queryable, Store } from '../store/store';

export interface RetentionOptions {
  readonly store: Store;
  readonly blobs: BlobStore;
  readonly log: Logger;
  /** GYRE_RETENTION_DAYS: a project without its own setting keeps pipelines this many days (0: for ever). */
  readonly defaultDays: number;
  /** Pipelines deleted in one transaction. @default 20 */
  readonly batch?: number;
}

export interface SweepResult {
  /** Pipelines deleted, with their workflows, jobs, logs, artifacts, workspaces and test results. */
  readonly pipelines: number;
  /** Objects deleted from the blob store. */
  readonly blobs: number;
}

/** Workflow statuses of a pipeline still at work: its pipeline is never swept. */
const ACTIVE: readonly WorkflowStatus[] = ['running', 'on_hold', 'failing'];

/**
 * Deletes pipelines older than their project's retention (projects.retention_days, else
 * `defaultDays`; 0 keeps them) with everything they own, from the database and the blob store
 * together, in an order that never leaves a row pointing at a missing object:
 *
 * 1. in one transaction, the expired pipelines' blob keys (logs, the chunks held for steps whose
 *    output was never moved, artifacts, workspace layers) go into retention_blobs and the
 *    pipelines are deleted (their workflows, jobs, tasks, steps, log
 *    chunks, artifacts, workspace layers, test results and request keys go with them: ON DELETE
 *    CASCADE);
 * 2. then the objects are deleted, and their keys taken off retention_blobs.
 *
 * A crash after 1 leaves keys in retention_blobs that the next sweep deletes first; a crash in 1
 * changes nothing. Pipelines are claimed with SKIP LOCKED, so two output replicas sweeping at once
 * never wait on or double-delete each other. Caches are not swept here: they expire on their own.
 */
export function createRetention(options: RetentionOptions) {
  const { store, blobs, log } = options;
  const batch = options.batch ?? 20;

  /** Deletes the objects queued in retention_blobs, oldest first, a page at a time. */
  async function deleteQueuedBlobs(): Promise<number> {
    let deleted = 0;
    for (;;) {
      const rows = await store.query<{ blob_key: string }>('SELECT blob_key FROM retention_blobs ORDER BY queued_at, blob_key LIMIT 500');
      if (rows.length === 0) return deleted;
      const keys = rows.map((r) => r.blob_key);
      await blobs.delete(keys);
      await store.query('DELETE FROM retention_blobs WHERE blob_key = ANY($1::text[])', [keys]);
      deleted += keys.length;
    }
  }

  /** One batch of expired pipelines: rows deleted and their blobs queued, in one transaction. */
  async function deleteExpiredBatch(): Promise<number> {
    return store.transaction(async (tx) => {
      const expired = (await expiredPipelines(tx, options.defaultDays, batch)).map((r) => r.id);
      if (expired.length === 0) return 0;
      await tx.query(
        `INSERT INTO retention_blobs (blob_key)
           SELECT a.blob_key FROM artifacts a JOIN jobs j ON j.id = a.job_id JOIN workflows w ON w.id = j.workflow_id WHERE w.pipeline_id = ANY($1::uuid[])
           UNION
           SELECT l.blob_key FROM workspace_layers l JOIN workflows w ON w.id = l.workflow_id WHERE w.pipeline_id = ANY($1::uuid[])
           UNION
           SELECT s.blob_key FROM step_logs s JOIN tasks t ON t.id = s.task_id JOIN jobs j ON j.id = t.job_id JOIN workflows w ON w.id = j.workflow_id WHERE w.pipeline_id = ANY($1::uuid[])
           UNION
           SELECT c.blob_key FROM log_chunks c JOIN tasks t ON t.id = c.task_id JOIN jobs j ON j.id = t.job_id JOIN workflows w ON w.id = j.workflow_id
            WHERE w.pipeline_id = ANY($1::uuid[]) AND c.blob_key IS NOT NULL
         ON CONFLICT (blob_key) DO NOTHING`,
        [expired],
      );
      await tx.query('DELETE FROM pipelines WHERE id = ANY($1::uuid[])', [expired]);
      return expired.length;
    });
  }

  return {
    /**
     * Deletes what has expired, until nothing has or `budgetMs` has passed (the rest waits for the
     * next sweep). Objects left queued by an earlier, interrupted sweep go first.
     */
    async sweep(budgetMs = 5 * 60_000): Promise<SweepResult> {
      const started = Date.now();
      let blobCount = await deleteQueuedBlobs();
      let pipelines = 0;
      while (Date.now() - started < budgetMs) {
        const n = await deleteExpiredBatch();
        if (n === 0) break;
        pipelines += n;
        blobCount += await deleteQueuedBlobs();
      }
      if (pipelines > 0 || blobCount > 0) log.info('retention: deleted expired pipelines', { pipelines, blobs: blobCount });
      return { pipelines, blobs: blobCount };
    },
  };
}

export type Retention = ReturnType<typeof createRetention>;

/**
 * Pipelines past their project's retention with no workflow still at work, oldest first, locked
 * for this transaction (others sweeping at once skip them).
 */
export async function expiredPipelines(db: Queryable, defaultDays: number, limit: number): Promise<{ id: string }[]> {
  return db.query<{ id: string }>(
    `SELECT p.id FROM pipelines p JOIN projects pr ON pr.id = p.project_id
      WHERE COALESCE(pr.retention_days, $1::int) > 0
        AND p.created_at < now() - make_interval(days => COALESCE(pr.retention_days, $1::int))
        AND NOT EXISTS (SELECT 1 FROM workflows w WHERE w.pipeline_id = p.id AND w.status = ANY($3::text[]))
        AND NOT EXISTS (
          SELECT 1 FROM tasks t JOIN jobs j ON j.id = t.job_id JOIN workflows w ON w.id = j.workflow_id
           WHERE w.pipeline_id = p.id AND t.status IN ('queued', 'running'))
      ORDER BY p.created_at
      LIMIT $2
      FOR UPDATE OF p SKIP LOCKED`,
    [defaultDays, limit, ACTIVE],
  );
}

/** A project's own retention (null: the server's default). */
export async function setProjectRetention(db: Queryable, projectId: string, days: number | null): Promise<void> {
  await db.query('UPDATE projects SET retention_days = $2 WHERE id = $1', [projectId, days]);
}

/** Sets a project's retention and records it (`audit`) in one transaction. */
export async function changeProjectRetention(store: Store, project: { id: string; slug: string }, days: number | null, audit?: Audit): Promise<void> {
  await store.transaction(async (tx) => {
    await setProjectRetention(tx, project.id, days);
    await audit?.record(tx, { target: { type: 'project', id: project.slug }, detail: { days } });
  });
}

export async function projectRetention(db: Queryable, projectId: string): Promise<number | null> {
  const [row] = await db.query<{ retention_days: number | null }>('SELECT retention_days FROM projects WHERE id = $1', [projectId]);
  return row?.retention_days ?? null;
}
