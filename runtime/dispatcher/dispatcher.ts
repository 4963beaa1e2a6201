import { randomUUID } from 'node:crypto';
import { StaleLeaseError } from '../domain/errors';
import type { PipelinePullRequest, StepStatus } from '../domain/model';
import type { JobSpec } from '../config/plan';
import type { Queryable, Store } from '../store/store';
import type { Logger } from '../logger';
import { checkedChunk, isCompressed, type CompressedChunk } from '../output/log-chunk';
import type { Fenced, LogSink } from '../output/logs';
import type { Histogram } from '../metrics/metrics';
import { createClaimBatcher } from './claim-batcher';
import { resourceSizeOf } from '../domain/resource-sizes';
import { leaseGraceMs, type LeaseHolder } from '../domain/leases';
import type { HeartbeatResult, TaskContext, TaskOutcome } from '../agent-contract/task-context';
import { LEASE_IS_CURRENT, leaseState, lockAttemptOf, lockAttemptsHeldBy, lockCurrentLease, lockLapsedAttempts, queryUnderLease, renewLease, writeUnderLease, type EndingAttempt, type Lease } from './sql/leases';
import { TASK_FACTS, type TaskFacts } from '../secrets/task-facts';
import { MACHINE_CLAIM, machineImageOf, NO_MACHINE_TASKS } from '../machines/machine-tasks';
import { isPlatformClass, PLATFORM_CLASS_PATTERN, platformResourceClass, timedOutMessage, UNSERVED_REASON, waitingMessage } from '../scheduler/unserved-classes';

export type { Lease } from './sql/leases';

/** Channels the dispatcher announces on, so other roles (and other processes) can react. */
export const CHANNELS = {
  /**
   * Payload: `<n> <id>`, n tasks became claimable (`queuedAnnouncement`): a job's n parallel
   * tasks with its id, one retried task with its own. Each job's announcement is its own, so
   * PostgreSQL does not fold a transaction's jobs into one (it folds equal payloads).
   */
  taskQueued: 'gyre_task_queued',
  /** Payload: job id. A job reached a terminal status. */
  jobFinished: 'gyre_job_finished',
  /** Payload: task id. Someone asked for this task to stop. */
  taskCancel: 'gyre_task_cancel',
  /** Payload: JSON `{ taskId, attempt, step }`. New output or a step changed. */
  taskOutput: 'gyre_task_output',
} as const;

/** How many tasks a `taskQueued` announcement says became claimable (1 for one it cannot read). */
export function queuedAnnouncement(payload: string): number {
  const n = Number(/^(\d{1,6}) /.exec(payload)?.[1]);
  return Number.isInteger(n) && n > 0 ? n : 1;
}

/**
 * Ends a job (`$1`, its row locked by the caller) once none of its tasks is queued or running,
 * with the status its tasks decide: an infrastructure failure, else a failure, else a timeout,
 * else a cancel, else success. A job already ended is left alone. Announces on `$2` (unless null) at commit.
 */
const SETTLE_JOB = `
  WITH s AS (
    SELECT coalesce(bool_or(status IN ('queued', 'running')), true) AS open, array_agg(status) AS statuses FROM tasks WHERE job_id = $1
  ), settled AS (
    UPDATE jobs j SET stopped_at = now(), status = CASE
        WHEN 'infrastructure_fail' = ANY (s.statuses) THEN 'infrastructure_fail'
        WHEN 'failed' = ANY (s.statuses) THEN 'failed'
        WHEN 'timedout' = ANY (s.statuses) THEN 'timedout'
        WHEN 'canceled' = ANY (s.statuses) THEN 'canceled'
        ELSE 'success' END
      FROM s WHERE j.id = $1 AND NOT s.open AND j.status IN ('queued', 'running')
    RETURNING j.id
  )
  SELECT id, CASE WHEN $2::text IS NOT NULL THEN pg_notify($2, id::text) END FROM settled`;

export interface DispatcherConfig {
  /** How long a lease lasts without a heartbeat. */
  readonly leaseTtlMs: number;
  /** How long after a lease expired its attempt is ended. @default leaseGraceMs(leaseTtlMs) */
  readonly leaseGraceMs?: number;
  /** Claims of one task before an expired lease makes it a final infrastructure failure. */
  readonly maxAttempts: number;
  /**
   * How long a task of a class no driver serves (macOS, Windows, Arm: ../scheduler/unserved-classes.ts)
   * waits for a runner to be registered before it fails. @default 600000 (GYRE_UNSERVED_CLASS_TIMEOUT_MS)
   */
  readonly unservedClassTimeoutMs?: number;
}

/** What an agent receives when it claims a task. */
export interface ClaimedTask {
  readonly lease: Lease;
  readonly leaseExpiresAt: Date;
  readonly task: TaskContext;
  /**
   * What the task's secrets are decided by (TASK_FACTS), read by the claim: for the built-in
   * runner's own secrets request only (TaskSecrets.forLease). Never sent to an agent.
   */
  readonly facts: TaskFacts;
}

// The task context, heartbeat answer and outcome are the agent contract's: the agent reads them too.
export type { HeartbeatResult, TaskContext, TaskOutcome, TaskSshKey, TaskSshKeys } from '../agent-contract/task-context';

export interface Dispatcher {
  /**
   * Creates the tasks of a build job inside the caller's transaction and marks the job queued;
   * with `numbered`, also gives the job its project's next job number, in the same statement.
   */
  enqueueJob(tx: Queryable, job: { id: string; spec: JobSpec; numbered?: boolean }): Promise<void>;
  /**
   * Claims the oldest queued task of one of these resource classes (`*`: any), or returns
   * undefined. `holder` is recorded on the lease (a server's start ends only its own built-in
   * runner's leases). @default holder 'runner'
   */
  claim(agentId: string, resourceClasses: readonly string[], holder?: LeaseHolder): Promise<ClaimedTask | undefined>;
  heartbeat(lease: Lease): Promise<HeartbeatResult>;
  /**
   * Whether someone asked the lease's task to stop; StaleLeaseError when the lease is not current.
   * The check behind the agents' cancellation long-poll (read only: it does not renew the lease).
   */
  cancelRequested(lease: Lease): Promise<boolean>;
  stepStarted(lease: Lease, step: { index: number; name: string; type: string }): Promise<void>;
  /**
   * Appends one chunk of a step's output, as bytes or as gzip members (how agents send it). The
   * same (step, seq) twice is stored once.
   */
  appendOutput(lease: Lease, step: number, seq: number, data: Uint8Array | CompressedChunk): Promise<void>;
  stepFinished(lease: Lease, step: { index: number; status: StepStatus; exitCode?: number | null }): Promise<void>;
  /** Ends the attempt with the agent's verdict and releases the lease. */
  completeTask(lease: Lease, outcome: TaskOutcome): Promise<void>;
  /** Asks every unfinished task of a job to stop; queued ones are canceled at once. */
  cancelJob(tx: Queryable, jobId: string): Promise<string[]>;
  /**
   * Ends every attempt whose lease expired more than the grace ago (or, with `heldBy`, every
   * running attempt that holder held, expired or not): the task is queued again while attempts
   * remain, otherwise it is an infrastructure failure. Returns the ids of the tasks it touched.
   */
  reapExpiredLeases(options?: { heldBy?: LeaseHolder }): Promise<string[]>;
  /**
   * Ends an attempt whose agent is known to be gone (e.g. its Nomad allocation failed) as if its
   * lease had expired: queued again while attempts remain. A lease no longer current is left alone.
   */
  releaseLease(lease: Lease, reason: string): Promise<void>;
  /**
   * Fails the tasks of classes no driver serves (no resource class of that name was registered)
   * that have waited longer than `unservedClassTimeoutMs`, their jobs with a message naming the
   * runner to register. Returns the ids of the jobs that failed.
   */
  failUnservedTasks(): Promise<string[]>;
}

export interface DispatcherDeps {
  readonly store: Store;
  readonly config: DispatcherConfig;
  readonly log: Logger;
  /** Observes each claimed task's wait in the queue, in seconds. */
  readonly queueWait?: Histogram<'resource_class'>;
  /** Where output goes (the output role); without it chunks stay in `log_chunks`. */
  readonly output?: LogSink;
}

/** Times a claim request is tried again after losing the race for a concurrency limit's last place. */
const MAX_LIMIT_RACES = 3;

const DEFAULT_RESOURCE_CLASS = 'medium';
/** GYRE_UNSERVED_CLASS_TIMEOUT_MS's default: 10 minutes. */
export const DEFAULT_UNSERVED_CLASS_TIMEOUT_MS = 600_000;

export function resourceClassOf(spec: JobSpec): string {
  return spec.resourceClass ?? platformResourceClass(spec) ?? DEFAULT_RESOURCE_CLASS;
}

export function createDispatcher({ store, config, log, queueWait, output }: DispatcherDeps): Dispatcher {
  const ttl = `${Math.max(1, Math.round(config.leaseTtlMs))} milliseconds`;

  const graceMs = config.leaseGraceMs ?? leaseGraceMs(config.leaseTtlMs);
  const unservedTimeoutMs = config.unservedClassTimeoutMs ?? DEFAULT_UNSERVED_CLASS_TIMEOUT_MS;

  /**
   * Fencing: the write happens only inside a transaction that first locks the task row and finds
   * this very lease current (`sql/leases.ts`). Anything else is a stale lease.
   */
  async function underLease<T>(lease: Lease, fn: (tx: Queryable) => Promise<T>): Promise<T> {
    return store.transaction(async (tx) => {
      await lockCurrentLease(tx, lease);
      return fn(tx);
    });
  }

  /**
   * After a task reached a terminal status: if every task of its job is terminal, settle the job's
   * status. Runs in the caller's transaction; returns the job id when the job finished now.
   */
  async function settleJob(tx: Queryable, taskId: string): Promise<string | undefined> {
    const [job] = await tx.query<{ id: string }>(`SELECT j.id FROM jobs j JOIN tasks t ON t.job_id = j.id WHERE t.id = $1 FOR UPDATE OF j`, [taskId]);
    return job ? settleLockedJob(tx, job.id, false) : undefined;
  }

  /**
   * settleJob for a job whose row the caller's transaction has locked: a statement of its own, so
   * it sees every sibling that finished before the lock was granted (one that finishes later waits
   * for the lock, then sees this task's end). With `announce`, the job's end is announced at commit
   * (otherwise the caller announces it).
   */
  async function settleLockedJob(tx: Queryable, jobId: string, announce: boolean): Promise<string | undefined> {
    const [settled] = await tx.query<{ id: string }>(SETTLE_JOB, [jobId, announce ? CHANNELS.jobFinished : null]);
    return settled?.id;
  }

  async function announceFinished(jobId: string | undefined): Promise<void> {
    if (jobId) await store.notify(CHANNELS.jobFinished, jobId);
  }

  /**
   * One claim statement for a batch of requests: up to one task per request (`*` serves every
   * class no other driver owns; a class the admin gave to runners or Nomad is never taken by the
   * built-in slots), each task leased to its request's agent, their jobs marked running, the
   * tasks' context for the agents, and whether a concurrency limit applies. Candidates over a
   * limit are skipped; since two claims can both see room for one more, a claim under a limit is
   * re-counted under an advisory lock afterwards and put back if it went over. `slot` is the
   * 1-based position of the request a row was leased to.
   */
  async function claimBatch(leaseIds: readonly string[], agentIds: readonly string[], holders: readonly string[], resourceClasses: readonly string[]) {
    return store.query<ContextRow & { slot: number; attempt: number; lease_expires_at: Date; waited: number; project_slug: string | null; task_org: string | null; limited: boolean; facts: TaskFacts }>(
      `WITH picked AS (
         SELECT t.id FROM tasks t
          WHERE t.status = 'queued' AND NOT t.cancel_requested
            -- A machine job's task goes to the machine driver ('${MACHINE_CLAIM}') where one runs
            -- (its process's built-in runner then claims with '${NO_MACHINE_TASKS}'), else to the classes' drivers.
            AND ((t.machine_image IS NOT NULL AND '${MACHINE_CLAIM}' = ANY($4::text[]))
                 OR ((t.machine_image IS NULL OR NOT '${NO_MACHINE_TASKS}' = ANY($4::text[])) AND (t.resource_class = ANY($4::text[])
                 OR ('*' = ANY($4::text[]) AND NOT EXISTS (
                       SELECT 1 FROM resource_classes rc WHERE rc.name = t.resource_class AND rc.driver <> 'builtin')
                     -- macOS, Windows and Arm classes only where an admin registered the class.
                     AND (t.resource_class !~ '${PLATFORM_CLASS_PATTERN}'
                          OR EXISTS (SELECT 1 FROM resource_classes rc WHERE rc.name = t.resource_class))))))
            -- A runner class serves only its namespace's organisation, whoever asks for it (a
            -- platform class such as macos.m1.medium.gen1 has none: its runners serve every one).
            AND NOT EXISTS (
                  SELECT 1 FROM resource_classes rc
                   WHERE rc.name = t.resource_class AND rc.driver = 'runner' AND rc.name LIKE '%/%'
                     AND split_part(rc.name, '/', 1) IS DISTINCT FROM t.org)
            AND NOT EXISTS (
                  SELECT 1 FROM concurrency_limits l
                   WHERE ((l.scope = 'project' AND l.key = t.project_slug) OR (l.scope = 'org' AND l.key = t.org))
                     AND l.max_running <= (SELECT count(*) FROM tasks r WHERE r.status = 'running'
                           AND ((l.scope = 'project' AND r.project_slug = l.key) OR (l.scope = 'org' AND r.org = l.key))))
          ORDER BY t.fair_rank, t.queued_at, t.id
          LIMIT $5
          FOR UPDATE SKIP LOCKED),
       slots AS (
         SELECT p.id, s.lease_id, s.agent_id, s.holder, s.slot
           FROM (SELECT id, row_number() OVER () AS slot FROM picked) p
           JOIN unnest($1::uuid[], $3::text[], $6::text[]) WITH ORDINALITY AS s(lease_id, agent_id, holder, slot) USING (slot)),
       claimed AS (
         UPDATE tasks t SET status = 'running', attempt = t.attempt + 1, lease_id = s.lease_id,
                lease_expires_at = now() + $2::interval, agent_id = s.agent_id, lease_holder = s.holder, started_at = now()
           FROM slots s WHERE t.id = s.id
         RETURNING t.id, s.slot, t.node_index, t.job_id, t.resource_class, t.attempt, t.lease_expires_at, t.project_slug, t.org,
                   EXTRACT(EPOCH FROM (now() - t.queued_at))::float8 AS waited),
       started AS (
         UPDATE jobs SET status = 'running', started_at = COALESCE(started_at, now()),
                -- The reason it waited (a class no runner served yet) is no longer true.
                messages = COALESCE((SELECT jsonb_agg(m) FROM jsonb_array_elements(messages) m WHERE m->>'reason' IS DISTINCT FROM '${UNSERVED_REASON}'), '[]'::jsonb)
          WHERE id IN (SELECT job_id FROM claimed) AND status = 'queued')
       SELECT c.id AS task_id, c.slot::int AS slot, c.node_index, c.resource_class, c.attempt, c.lease_expires_at, c.waited, c.project_slug, c.org AS task_org,
              ${CONTEXT_COLUMNS},
              EXISTS (SELECT 1 FROM concurrency_limits l
                       WHERE (l.scope = 'project' AND l.key = c.project_slug) OR (l.scope = 'org' AND l.key = c.org)) AS limited,
              ${TASK_FACTS} AS facts
         FROM claimed c ${contextJoins('c')}`,
      [leaseIds, ttl, agentIds, resourceClasses, leaseIds.length, holders],
    );
  }

  /** Serves a batch of claim requests with one statement; see `claim-batcher.ts`. */
  const batcher = createClaimBatcher<ClaimedTask>({
    async claimFor(resourceClasses, requests, retry) {
      const leaseIds = requests.map(() => randomUUID());
      const rows = await claimBatch(leaseIds, requests.map((r) => r.agentId), requests.map((r) => r.holder), resourceClasses);
      const served = new Set<number>();
      for (const row of rows) {
        const slot = Number(row.slot) - 1;
        const request = requests[slot];
        served.add(slot);
        if (row.limited && !(await withinLimits(row.task_id, leaseIds[slot], row.project_slug, row.task_org))) {
          // Lost a race for the last place under a limit: the task went back; try again (a few times).
          if (request.races < MAX_LIMIT_RACES) retry(request);
          else request.resolve(undefined);
          continue;
        }
        queueWait?.observe({ resource_class: resourceClasses.join(',') }, Math.max(0, row.waited));
        request.resolve({
          lease: { taskId: row.task_id, leaseId: leaseIds[slot], attempt: row.attempt },
          leaseExpiresAt: new Date(row.lease_expires_at),
          task: contextOf(row),
          facts: row.facts,
        });
      }
      // The queue held fewer claimable tasks than there were requests.
      requests.forEach((request, slot) => served.has(slot) || request.resolve(undefined));
    },
  });

  /** Re-counts a just-claimed task's limits one claim at a time; one over the limit is put back in the queue. */
  async function withinLimits(taskId: string, leaseId: string, projectSlug: string | null, org: string | null): Promise<boolean> {
    return store.transaction(async (tx) => {
      const limits = await tx.query<{ scope: string; key: string; max_running: number }>(
        `SELECT scope, key, max_running FROM concurrency_limits WHERE (scope = 'project' AND key = $1) OR (scope = 'org' AND key = $2)
          ORDER BY scope, key`,
        [projectSlug, org],
      );
      for (const limit of limits) {
        await tx.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`gyre-limit:${limit.scope}:${limit.key}`]);
        const [{ n }] = await tx.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM tasks WHERE status = 'running' AND (CASE $1 WHEN 'project' THEN project_slug ELSE org END) = $2`,
          [limit.scope, limit.key],
        );
        if (n > limit.max_running) {
          // No agent has this lease yet, so the task can go back as if never claimed.
          await tx.query(
            `UPDATE tasks SET status = 'queued', attempt = attempt - 1, lease_id = NULL, lease_expires_at = NULL, agent_id = NULL, lease_holder = NULL, started_at = NULL
              WHERE id = $1 AND lease_id = $2`,
            [taskId, leaseId],
          );
          return false;
        }
      }
      return true;
    });
  }

  return {
    async enqueueJob(tx, job) {
      const parallelism = Math.max(1, job.spec.parallelism || 1);
      const resourceClass = resourceClassOf(job.spec);
      // Fair queueing: a task's rank is how many tasks of its project already wait. Claims take
      // the lowest rank first, so a project that queues a hundred tasks does not starve one that
      // queues a single task after it: projects take turns.
      // One statement for the job's number (when asked: its project's next, which locks the
      // project's row as the conductor's numbering did), its owner and rank, its tasks (one per
      // parallel node), its move to queued and the NOTIFY that wakes claimers (delivered at commit,
      // so no claimer sees a task early), which says how many tasks there are: a built-in runner
      // wakes that many idle slots. A machine job whose class an admin gave to runners or Nomad
      // runs there, not on a machine of its own.
      await tx.query(
        `WITH owner AS (
           SELECT pr.id, pr.slug, pr.org, (SELECT count(*)::int FROM tasks t WHERE t.status = 'queued' AND t.project_slug = pr.slug) AS ahead
             FROM jobs j JOIN projects pr ON pr.id = j.project_id WHERE j.id = $2::uuid),
         seq AS (UPDATE projects SET job_seq = job_seq + 1 WHERE $8::boolean AND id = (SELECT id FROM owner) RETURNING job_seq),
         made AS (
           INSERT INTO tasks (id, job_id, node_index, status, resource_class, max_attempts, project_slug, org, fair_rank, machine_image)
           SELECT n.id, $2::uuid, (n.node - 1)::int, 'queued', $3::text, $4::int, o.slug, o.org, COALESCE(o.ahead, 0) + (n.node - 1)::int,
                  CASE WHEN EXISTS (SELECT 1 FROM resource_classes WHERE name = $3::text AND driver <> 'builtin') THEN NULL ELSE $5::text END
             FROM unnest($1::uuid[]) WITH ORDINALITY AS n(id, node) LEFT JOIN owner o ON true
           RETURNING 1),
         queued AS (UPDATE jobs SET status = 'queued', queued_at = now(), number = COALESCE((SELECT job_seq FROM seq), number) WHERE id = $2::uuid RETURNING 1)
         SELECT pg_notify($6::text, $7::text)`,
        [
          Array.from({ length: parallelism }, () => randomUUID()),
          job.id,
          resourceClass,
          config.maxAttempts,
          machineImageOf(job.spec),
          CHANNELS.taskQueued,
          `${parallelism} ${job.id}`,
          job.numbered === true,
        ],
      );
      if (isPlatformClass(resourceClass)) {
        // No driver serves it until an admin registers the class: the job says so while it waits.
        await tx.query(
          `UPDATE jobs SET messages = messages || jsonb_build_array(jsonb_build_object('type', 'warning', 'reason', $2::text, 'message', $3::text))
            WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM resource_classes WHERE name = $4)`,
          [job.id, UNSERVED_REASON, waitingMessage(resourceClass, unservedTimeoutMs), resourceClass],
        );
      }
    },

    claim(agentId, resourceClasses, holder = 'runner') {
      return batcher.claim(agentId, resourceClasses, holder);
    },

    heartbeat(lease) {
      // One statement: renews the lease only if it is current.
      return renewLease(store, lease, ttl);
    },

    async cancelRequested(lease) {
      const state = await leaseState(store, lease);
      if (!state.current) throw new StaleLeaseError(lease.taskId, lease.leaseId);
      return state.cancelRequested;
    },

    async stepStarted(lease, step) {
      // On the path to every step's command: the fenced write and its announcement are one statement.
      await writeUnderLease(
        store,
        lease,
        `INSERT INTO steps (task_id, attempt, index, name, type, status, started_at)
         SELECT lease.id, $3, $4, $5, $6, 'running', now() FROM lease
         ON CONFLICT (task_id, attempt, index) DO NOTHING`,
        [step.index, step.name, step.type, CHANNELS.taskOutput, JSON.stringify({ taskId: lease.taskId, attempt: lease.attempt, step: step.index })],
        'SELECT pg_notify($7, $8) FROM lease',
      );
    },

    async appendOutput(lease, step, seq, data) {
      // The announcement goes in the write's transaction: delivered when the chunk is visible,
      // without a commit of its own (on PostgreSQL, one WAL flush per chunk instead of two).
      const announced = async <T>(tx: Queryable, write: (tx: Queryable) => Promise<T>): Promise<T> => {
        const result = await write(tx);
        await tx.query('SELECT pg_notify($1, $2)', [CHANNELS.taskOutput, JSON.stringify({ taskId: lease.taskId, attempt: lease.attempt, step })]);
        return result;
      };
      if (output) {
        // The output role compresses (or checks) the chunk first and takes the lease for the write only.
        const announcement = [CHANNELS.taskOutput, JSON.stringify({ taskId: lease.taskId, attempt: lease.attempt, step })];
        const fenced: Fenced = {
          transaction: (write) => underLease(lease, (tx) => announced(tx, write)),
          statement: (ctes, values, select, changed) => {
            const n = 3 + values.length;
            return queryUnderLease(
              store,
              lease,
              `${ctes}, announced AS (SELECT pg_notify($${n + 1}, $${n + 2}) FROM ${changed})`,
              [...values, ...announcement],
              `SELECT r.*, (SELECT count(*) FROM announced) AS announced FROM (${select}) r`,
            );
          },
        };
        await output.appendChunk(fenced, lease.taskId, lease.attempt, step, seq, data);
      } else {
        const raw = isCompressed(data) ? await checkedChunk(data) : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
        await underLease(lease, (tx) =>
          announced(tx, (t) =>
            t.query(
              `INSERT INTO log_chunks (task_id, attempt, step_index, seq, data) VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT DO NOTHING`,
              [lease.taskId, lease.attempt, step, seq, raw],
            ),
          ),
        );
      }
    },

    async stepFinished(lease, step) {
      // Announced with the write, as a step's start is: followers read what is there then, the
      // chunks or (once moved below) the archive, which a reader takes in either order.
      // The same statement reads the step's stored chunks (the agent sends its step's end after
      // its last chunk is stored), which the move of its output then need not ask for again.
      const [ended] = await queryUnderLease<{ seqs: number[]; bytes: number[] }>(
        store,
        lease,
        `written AS (UPDATE steps s SET status = $5, exit_code = $6, stopped_at = now()
           FROM lease WHERE s.task_id = lease.id AND s.attempt = $3 AND s.index = $4)`,
        [step.index, step.status, step.exitCode ?? null, CHANNELS.taskOutput, JSON.stringify({ taskId: lease.taskId, attempt: lease.attempt, step: step.index })],
        `SELECT pg_notify($7, $8), coalesce(stored.seqs, '{}')::int[] AS seqs, coalesce(stored.bytes, '{}')::int[] AS bytes
           FROM lease, LATERAL (SELECT array_agg(c.seq ORDER BY c.seq) AS seqs, array_agg(coalesce(c.raw_bytes, length(c.data)) ORDER BY c.seq) AS bytes
                                  FROM log_chunks c WHERE c.task_id = lease.id AND c.attempt = $3 AND c.step_index = $4) stored`,
      );
      await output?.stepFinished(lease.taskId, lease.attempt, step.index, { seqs: ended.seqs.map(Number), bytes: ended.bytes.map(Number) });
    },

    async completeTask(lease, outcome) {
      // Two statements in one transaction: the attempt ended under its lease, with the job's row
      // locked (task, then job, as every path locks them) and the output followers told; then the
      // job settled from a snapshot taken once the lock was held. Both announcements go at commit.
      await store.transaction(async (tx) => {
        const [ended] = await tx.query<{ job_id: string }>(
          `WITH lease AS (SELECT t.id FROM tasks t WHERE ${LEASE_IS_CURRENT} FOR UPDATE),
                ended AS (
                  UPDATE tasks t SET status = $4, stopped_at = now(), lease_id = NULL, lease_expires_at = NULL, lease_holder = NULL
                    FROM lease WHERE t.id = lease.id RETURNING t.job_id),
                job AS (SELECT j.id FROM jobs j JOIN ended ON j.id = ended.job_id FOR UPDATE OF j)
           SELECT job.id AS job_id, pg_notify($5, $6) FROM job`,
          [lease.taskId, lease.leaseId, lease.attempt, outcome, CHANNELS.taskOutput, JSON.stringify({ taskId: lease.taskId, attempt: lease.attempt, step: -1 })],
        );
        if (!ended) throw new StaleLeaseError(lease.taskId, lease.leaseId);
        await settleLockedJob(tx, ended.job_id, true);
      });
    },

    async cancelJob(tx, jobId) {
      const queued = await tx.query<{ id: string }>(
        `UPDATE tasks SET status = 'canceled', cancel_requested = true, stopped_at = now()
          WHERE job_id = $1 AND status = 'queued' RETURNING id`,
        [jobId],
      );
      const running = await tx.query<{ id: string }>(
        `UPDATE tasks SET cancel_requested = true WHERE job_id = $1 AND status = 'running' RETURNING id`,
        [jobId],
      );
      if (queued.length > 0 && running.length === 0) {
        // Nothing is running to report back: settle the job here.
        await settleJob(tx, queued[0].id);
      }
      for (const task of running) await tx.query('SELECT pg_notify($1, $2)', [CHANNELS.taskCancel, task.id]);
      return running.map((t) => t.id);
    },

    async releaseLease(lease, reason) {
      const ended = await endAttempts((tx) => lockAttemptOf(tx, lease));
      if (ended.length > 0) log.warn('attempt ended: its agent is gone', { taskId: lease.taskId, attempt: lease.attempt, reason });
    },

    async failUnservedTasks() {
      const failed = await store.transaction(async (tx) => {
        const tasks = await tx.query<{ id: string; job_id: string; resource_class: string }>(
          `UPDATE tasks t SET status = 'failed', stopped_at = now()
            WHERE t.id IN (
                  SELECT q.id FROM tasks q
                   WHERE q.status = 'queued' AND q.resource_class ~ '${PLATFORM_CLASS_PATTERN}'
                     AND q.queued_at <= now() - make_interval(secs => $1::float8 / 1000)
                     AND NOT EXISTS (SELECT 1 FROM resource_classes rc WHERE rc.name = q.resource_class)
                   ORDER BY q.queued_at LIMIT 500 FOR UPDATE SKIP LOCKED)
           RETURNING t.id, t.job_id, t.resource_class`,
          [unservedTimeoutMs],
        );
        const jobs: string[] = [];
        for (const task of tasks) {
          await tx.query(`UPDATE jobs SET messages = jsonb_build_array(jsonb_build_object('type', 'error', 'reason', $2::text, 'message', $3::text)) WHERE id = $1`, [
            task.job_id,
            UNSERVED_REASON,
            timedOutMessage(task.resource_class, unservedTimeoutMs),
          ]);
          const finished = await settleJob(tx, task.id);
          if (finished) jobs.push(finished);
        }
        return jobs;
      });
      for (const jobId of failed) await announceFinished(jobId);
      if (failed.length > 0) log.warn('jobs failed: no runner was registered for their resource class', { jobs: failed.length });
      return failed;
    },

    reapExpiredLeases(options = {}) {
      // `heldBy` ends a holder's running attempts regardless of expiry: used at start-up of the
      // embedded store for the built-in runner's, whose process (and steps) died before.
      const { heldBy } = options;
      return endAttempts((tx) => (heldBy ? lockAttemptsHeldBy(tx, heldBy) : lockLapsedAttempts(tx, graceMs)));
    },
  };

  /**
   * Ends the attempts `pick` locks, as expired leases end: queued again while attempts remain
   * (canceled if a cancel was asked), else an infrastructure failure. Returns their task ids.
   */
  async function endAttempts(pick: (tx: Queryable) => Promise<EndingAttempt[]>): Promise<string[]> {
    const touched = await store.transaction(async (tx) => {
      const expired = await pick(tx);
      const finishedJobs: string[] = [];
      for (const task of expired) {
        await tx.query(
          `UPDATE steps SET status = 'canceled', stopped_at = now()
            WHERE task_id = $1 AND attempt = $2 AND status = 'running'`,
          [task.id, task.attempt],
        );
        if (task.cancel_requested) {
          await tx.query(
            `UPDATE tasks SET status = 'canceled', lease_id = NULL, lease_expires_at = NULL, lease_holder = NULL, stopped_at = now() WHERE id = $1`,
            [task.id],
          );
        } else if (task.attempt < task.max_attempts) {
          await tx.query(
            `UPDATE tasks SET status = 'queued', lease_id = NULL, lease_expires_at = NULL, agent_id = NULL, lease_holder = NULL,
                    failure_reason = $2, queued_at = now() WHERE id = $1`,
            [task.id, `attempt ${task.attempt}: the agent stopped renewing its lease`],
          );
          await tx.query('SELECT pg_notify($1, $2)', [CHANNELS.taskQueued, `1 ${task.id}`]);
          log.warn('lease expired; task queued again', { taskId: task.id, attempt: task.attempt });
          continue;
        } else {
          await tx.query(
            `UPDATE tasks SET status = 'infrastructure_fail', lease_id = NULL, lease_expires_at = NULL, lease_holder = NULL,
                    stopped_at = now(), failure_reason = $2 WHERE id = $1`,
            [task.id, `the agent stopped renewing its lease on attempt ${task.attempt} of ${task.max_attempts}`],
          );
          log.warn('lease expired on the last attempt; infrastructure failure', { taskId: task.id });
        }
        const jobId = await settleJob(tx, task.id);
        if (jobId) finishedJobs.push(jobId);
      }
      return { ids: expired.map((t) => t.id), finishedJobs };
    });
    for (const jobId of touched.finishedJobs) await announceFinished(jobId);
    return touched.ids;
  }
}

type ContextRow = {
  task_id: string;
  resource_class: string;
  rc_cpu: string | number | null;
  rc_memory_mb: number | null;
  node_index: number;
  job_id: string;
  job_name: string;
  job_number: number;
  spec: JobSpec;
  workflow_id: string;
  workflow_name: string;
  pipeline_id: string;
  pipeline_number: number;
  slug: string;
  org: string;
  project_name: string;
  repo_url: string;
  branch: string | null;
  tag: string | null;
  revision: string;
  checkout_ref: string | null;
  pull_request: PipelinePullRequest | null;
};

/** The task-context columns, for a query that joins `contextJoins(…)` onto a task row (with its resource_class). */
const CONTEXT_COLUMNS = `rcl.cpu AS rc_cpu, rcl.memory_mb AS rc_memory_mb, j.id AS job_id, j.name AS job_name, j.number AS job_number, j.spec,
            w.id AS workflow_id, w.name AS workflow_name, p.id AS pipeline_id, p.number AS pipeline_number,
            pr.slug, pr.org, pr.name AS project_name, pr.repo_url, p.branch, p.tag, p.revision, p.checkout_ref, p.pull_request`;
const contextJoins = (t: string) => `JOIN jobs j ON j.id = ${t}.job_id LEFT JOIN resource_classes rcl ON rcl.name = ${t}.resource_class JOIN workflows w ON w.id = j.workflow_id
       JOIN pipelines p ON p.id = w.pipeline_id JOIN projects pr ON pr.id = p.project_id`;

export async function loadTaskContext(store: Queryable, taskId: string): Promise<TaskContext> {
  const [row] = await store.query<ContextRow>(
    `SELECT t.id AS task_id, t.node_index, t.resource_class, ${CONTEXT_COLUMNS} FROM tasks t ${contextJoins('t')} WHERE t.id = $1`,
    [taskId],
  );
  return contextOf(row);
}

function contextOf(row: ContextRow): TaskContext {
  return {
    taskId: row.task_id,
    nodeIndex: row.node_index,
    parallelism: Math.max(1, row.spec.parallelism || 1),
    jobId: row.job_id,
    jobName: row.job_name,
    jobNumber: row.job_number,
    spec: row.spec,
    workflowId: row.workflow_id,
    workflowName: row.workflow_name,
    pipelineId: row.pipeline_id,
    pipelineNumber: row.pipeline_number,
    projectSlug: row.slug,
    projectOrg: row.org,
    projectName: row.project_name,
    repoUrl: row.repo_url,
    branch: row.branch ?? undefined,
    tag: row.tag ?? undefined,
    revision: row.revision,
    ...(row.checkout_ref ? { checkoutRef: row.checkout_ref } : {}),
    ...(row.pull_request ? { pullRequest: row.pull_request } : {}),
    resources: resourceSizeOf(row.resource_class, { cpu: row.rc_cpu, memoryMb: row.rc_memory_mb }),
  };
}
