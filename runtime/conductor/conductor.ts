import { randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import type { Audit } from '../audit/audit-log';
import { AuthenticationError, ConflictError, InputError, NotFoundError } from '../domain/errors';
import type { JobStatus, WorkflowStatus } from '../domain/model';
import { isTerminalJobStatus } from '../domain/model';
import { CompilerUnavailableError } from '../config/compiler-pool';
import type { CompileResult, ConfigProblem, JobPlan, Plan, Requirement, RequiredStatus, TriggerContext } from '../config/plan';
import type { Dispatcher } from '../dispatcher/dispatcher';
import type { Forge } from '../forge/forge';
import type { Contexts, ResolveInput } from '../secrets/contexts';
import type { Logger } from '../logger';
import type { Queryable, Store } from '../store/store';
import { eventValues, expressionValuesOf } from '../triggers/pipeline-event';
import type { StartingPipeline } from '../triggers/triggers';
import { cancelRedundantWorkflows } from './auto-cancel';
import { AUTO_CANCEL_APPLIES } from './sql/auto-cancel';
import { CHANNELS } from '../dispatcher/dispatcher';
import { checkRerunRequest, jobsToRerun, type RerunRequest } from './reruns';
import { copyWorkspaceLayers, insertCopiedJob, insertRerunJob, insertRerunWorkflow, jobsOfWorkflow, lockWorkflowToRerun } from './sql/reruns';
import { cancelWaitingJob, lockJobToCancel, recordCanceledBy } from './sql/cancels';

export const CONFIG_PATH = '.circleci/config.yml';

/**
 * The compiler as the conductor sees it: config text and trigger in, plan or problems out. The
 * composition root passes one backed by the compiler pool (runtime/config/compiler-pool.ts), so a
 * hostile config compiles off this thread and a crossed budget comes back as problems. It may
 * reject with CompilerUnavailableError (shutting down, busy): that says nothing about the config.
 */
export type CompileFn = (source: string, trigger: TriggerContext) => Promise<CompileResult>;

export interface Conductor {
  /**
   * Compiles a pending pipeline's config and creates its workflows. Idempotent. `starting`: the
   * pipeline as its trigger in this process just created it (Triggers.onCreated), not read back.
   */
  startPipeline(pipelineId: string, starting?: StartingPipeline): Promise<void>;
  /** Moves a workflow's DAG forward: unblocks, queues or skips jobs, and settles the workflow. Idempotent. */
  advanceWorkflow(workflowId: string): Promise<void>;
  /** Advances the workflow a finished job belongs to. */
  jobFinished(jobId: string): Promise<void>;
  /** Cancels a workflow; `audit` is recorded in the transaction that cancels it. */
  cancelWorkflow(workflowId: string, actorId?: string, audit?: Audit): Promise<void>;
  /** Approves an on-hold approval job; `audit` is recorded in the transaction that approves it. */
  approveJob(workflowId: string, jobId: string, actorId?: string, audit?: Audit): Promise<void>;
  /**
   * Reruns a finished workflow as a new workflow of the same pipeline, linked to it (`rerun_of`)
   * and started by `actorId`: the jobs `jobsToRerun` picks run again, the others are copied with
   * their results. Returns the new workflow's id; `audit` is recorded in the transaction.
   */
  rerunWorkflow(workflowId: string, request: RerunRequest, actorId?: string, audit?: Audit): Promise<string>;
  /**
   * Cancels one job: a waiting or queued one never runs, a running one's agent is told to stop
   * its steps; the jobs that require it then become not_run. `audit` is recorded in the transaction.
   */
  cancelJob(jobId: string, actorId?: string, audit?: Audit): Promise<void>;
  /**
   * Continues a setup pipeline with the configuration its setup job generated. The key
   * authenticates; a pipeline continues at most once, before its key expires.
   */
  continuePipeline(request: { key: string; configuration: string; parameters: Record<string, string | number | boolean> }): Promise<void>;
  /** Re-examines pending pipelines and unfinished workflows (recovery after restarts, lost notifications). */
  sweep(): Promise<void>;
}

/** A workflow that started (`ended` false, status `running`) or ended (its final status). */
export interface WorkflowTransition {
  readonly workflowId: string;
  readonly status: WorkflowStatus;
  readonly ended: boolean;
}

/**
 * Told of every workflow that starts (a new pipeline's, a continuation's, a rerun) and ends, in the
 * transaction that makes it so: what it writes (outbox deliveries: commit statuses) commits or
 * rolls back with the change. It must not call out of the process.
 */
export type WorkflowListener = (tx: Queryable, transition: WorkflowTransition) => Promise<void>;

/**
 * Told, in the transaction that advances a workflow, that some of its jobs may have ended since it
 * was last advanced (every job's end advances its workflow, and the sweep advances any workflow a
 * lost notification left behind): it finds which, and writes what their ends cause (outbound
 * webhooks' `job-completed`) idempotently. Called before the workflow's own end is told. It must
 * not call out of the process.
 */
export type JobsListener = (tx: Queryable, advanced: { readonly workflowId: string }) => Promise<void>;

export interface ConductorDeps {
  readonly store: Store;
  readonly forge: Forge;
  readonly compile: CompileFn;
  readonly dispatcher: Dispatcher;
  readonly log: Logger;
  /** How long a setup pipeline's continuation key stays valid. @default 6 hours */
  readonly continuationTtlMs?: number;
  /** Decides whether a job may have the contexts it names (runtime/secrets); without it, every job may. */
  readonly contexts?: Pick<Contexts, 'authorize'>;
  /** Told when workflows start and end (GitHub commit statuses, runtime/github/statuses.ts). */
  readonly onWorkflow?: WorkflowListener;
  /** Told when a workflow is advanced, for the jobs that ended (runtime/notifications). */
  readonly onJobsEnded?: JobsListener;
}

/** What advancing a workflow reads of it. */
interface WorkflowState {
  status: WorkflowStatus;
  canceled: boolean;
}

interface JobRow {
  id: string;
  name: string;
  type: JobPlan['type'];
  status: JobStatus;
  requires: readonly Requirement[];
  spec: JobPlan['spec'] | null;
  project_id: string;
  contexts: readonly string[];
}

/** A finished job's status in the vocabulary `requires` uses. */
function requirementStatusOf(status: JobStatus): Exclude<RequiredStatus, 'terminal'> {
  switch (status) {
    case 'success':
      return 'success';
    case 'canceled':
      return 'canceled';
    case 'not_run':
      return 'not_run';
    case 'unauthorized':
      return 'unauthorized';
    default:
      return 'failed';
  }
}

const FAILED_JOB_STATUSES: readonly JobStatus[] = ['failed', 'infrastructure_fail', 'timedout', 'terminated-unknown'];
const TERMINAL_WORKFLOW_STATUSES: readonly WorkflowStatus[] = ['success', 'failed', 'error', 'canceled', 'not_run', 'unauthorized'];

export function createConductor({ store, forge, compile, dispatcher, log, continuationTtlMs = 6 * 3600_000, contexts, onWorkflow, onJobsEnded }: ConductorDeps): Conductor {
  /** Ends a pending pipeline as errored; with the config it read, when it got that far. */
  async function markErrored(pipelineId: string, errors: { type: string; message: string }[], source?: string): Promise<void> {
    await store.query(
      `UPDATE pipelines SET state = 'errored', errors = $2, config_source = COALESCE($3, config_source), updated_at = now() WHERE id = $1 AND state = 'pending'`,
      [pipelineId, JSON.stringify(errors), source ?? null],
    );
  }

  /**
   * Numbers a job and queues it; a job naming contexts its pipeline may not use ends `unauthorized`
   * instead, with the reason in its messages, and never reaches an agent (as CircleCI does).
   */
  async function queueJob(tx: Queryable, job: JobRow): Promise<'queued' | 'unauthorized'> {
    // The project's next job number is taken and given in the statement that ends the job here:
    // refused its contexts, or queued (enqueueJob `numbered`).
    if (contexts && job.contexts.length > 0) {
      const verdict = await contexts.authorize(await contextInput(tx, job), tx);
      if (!verdict.ok) {
        await tx.query(
          `WITH seq AS (UPDATE projects SET job_seq = job_seq + 1 WHERE id = $3 RETURNING job_seq)
           UPDATE jobs SET number = seq.job_seq, status = 'unauthorized', started_at = now(), stopped_at = now(), messages = $2 FROM seq WHERE jobs.id = $1`,
          [job.id, JSON.stringify([{ type: 'error', message: verdict.reason, reason: 'unauthorized' }]), job.project_id],
        );
        return 'unauthorized';
      }
    }
    await dispatcher.enqueueJob(tx, { id: job.id, spec: job.spec!, numbered: true });
    return 'queued';
  }

  /**
   * What the contexts' restrictions are decided on: the project, its organisation, the pipeline's
   * ref, whether it is a fork's, and the actor: whoever started the workflow (a rerun's is who
   * asked for it, so a rerun never borrows the original actor's access), else the pipeline's.
   */
  async function contextInput(tx: Queryable, job: JobRow): Promise<ResolveInput> {
    const [row] = await tx.query<{ org_id: string; branch: string | null; tag: string | null; actor_id: string | null; number: number; from_fork: boolean; trigger_type: string; event: unknown }>(
      `SELECT o.id AS org_id, p.branch, p.tag, COALESCE(w.started_by, p.actor_id) AS actor_id, p.number, p.from_fork, p.trigger_type, p.event
         FROM jobs j JOIN workflows w ON w.id = j.workflow_id JOIN pipelines p ON p.id = w.pipeline_id
         JOIN projects pr ON pr.id = j.project_id JOIN organizations o ON o.name = pr.org
        WHERE j.id = $1`,
      [job.id],
    );
    return {
      orgId: row?.org_id ?? '',
      projectId: job.project_id,
      contextNames: job.contexts,
      pipeline: { branch: row?.branch ?? undefined, tag: row?.tag ?? undefined, fork: row?.from_fork === true, values: row ? expressionValuesOf(row) : {} },
      actor: { userId: row?.actor_id ?? undefined },
    };
  }

  /**
   * Decides blocked jobs until nothing changes: a job whose requirements are all met is queued (or
   * put on hold, for approvals); one with a requirement that can no longer be met becomes not_run.
   */
  async function advanceInTx(tx: Queryable, workflowId: string): Promise<void> {
    const [workflow] = await tx.query<WorkflowState>(
      `SELECT status, cancel_requested AS canceled FROM workflows WHERE id = $1 FOR UPDATE`,
      [workflowId],
    );
    await advanceLockedInTx(tx, workflowId, workflow);
  }

  /** advanceInTx for a workflow the caller has locked (`workflow` its row; undefined for none). */
  async function advanceLockedInTx(tx: Queryable, workflowId: string, workflow: WorkflowState | undefined): Promise<void> {
    if (!workflow || TERMINAL_WORKFLOW_STATUSES.includes(workflow.status)) return;
    // A statement after the lock: it sees every job that ended before the lock was granted.
    const jobs = await tx.query<JobRow>(
      'SELECT id, name, type, status, requires, spec, project_id, contexts FROM jobs WHERE workflow_id = $1 ORDER BY position',
      [workflowId],
    );
    // Called when a job ended (or may have): the listener looks for ended jobs whatever this pass decides.
    await decideJobs(tx, workflowId, workflow, jobs, true);
  }

  /**
   * The loop of advanceInTx over a workflow's jobs as given (locked, or inserted by this
   * transaction), then its status. `jobsEnded`: whether jobs may have ended before this pass; the
   * jobs listener runs then, or when this pass ended one.
   */
  async function decideJobs(tx: Queryable, workflowId: string, workflow: WorkflowState, jobs: JobRow[], jobsEnded: boolean): Promise<void> {
    let endedHere = false;
    const byName = new Map(jobs.map((j) => [j.name, j]));
    for (let changed = true; changed; ) {
      changed = false;
      for (const job of jobs) {
        if (job.status !== 'blocked') continue;
        let verdict: 'ready' | 'never' | 'wait' = 'ready';
        for (const requirement of job.requires) {
          const upstream = byName.get(requirement.job);
          if (!upstream) continue; // filtered out at compile time: not a dependency
          if (!isTerminalJobStatus(upstream.status)) {
            verdict = 'wait';
            continue;
          }
          const allowed = requirement.statuses.includes('terminal') || requirement.statuses.includes(requirementStatusOf(upstream.status));
          if (!allowed) {
            verdict = 'never';
            break;
          }
        }
        if (verdict === 'wait') continue;
        changed = true;
        if (verdict === 'never' || workflow.canceled) {
          job.status = verdict === 'never' ? 'not_run' : 'canceled';
          endedHere = true;
          await tx.query('UPDATE jobs SET status = $2, stopped_at = now() WHERE id = $1', [job.id, job.status]);
        } else if (job.type === 'approval') {
          job.status = 'on_hold';
          await tx.query(`UPDATE jobs SET status = 'on_hold' WHERE id = $1`, [job.id]);
        } else if (job.type === 'no-op') {
          job.status = 'success';
          endedHere = true;
          await tx.query(`UPDATE jobs SET status = 'success', started_at = now(), stopped_at = now() WHERE id = $1`, [job.id]);
        } else {
          job.status = await queueJob(tx, job);
          if (job.status === 'unauthorized') endedHere = true;
        }
      }
    }
    if (jobsEnded || endedHere) await onJobsEnded?.(tx, { workflowId });
    const status = workflowStatusOf(jobs.map((j) => j.status), workflow.canceled);
    if (status !== workflow.status) {
      const terminal = TERMINAL_WORKFLOW_STATUSES.includes(status);
      await tx.query(`UPDATE workflows SET status = $2, stopped_at = CASE WHEN $3 THEN now() ELSE NULL END WHERE id = $1`, [
        workflowId,
        status,
        terminal,
      ]);
      if (terminal) await onWorkflow?.(tx, { workflowId, status, ended: true });
    }
  }

  async function advanceWorkflow(workflowId: string): Promise<void> {
    await store.transaction((tx) => advanceInTx(tx, workflowId));
  }

  /**
   * Cancels a workflow in the caller's transaction: its waiting jobs end canceled, its queued and
   * running ones are canceled through the dispatcher (a running step is stopped through its lease).
   * What `cancelWorkflow` and auto-cancel (./auto-cancel.ts) do.
   */
  async function cancelInTx(tx: Queryable, workflowId: string, actorId?: string, audit?: Audit): Promise<void> {
    const [workflow] = await tx.query<{ status: WorkflowStatus }>('SELECT status FROM workflows WHERE id = $1 FOR UPDATE', [workflowId]);
    if (!workflow) throw new NotFoundError('workflow', workflowId);
    // Recorded first: a cancel refused below rolls its record back with it.
    await audit?.record(tx, { target: { type: 'workflow', id: workflowId } });
    if (TERMINAL_WORKFLOW_STATUSES.includes(workflow.status)) {
      throw new ConflictError(`workflow ${workflowId} has already finished (${workflow.status})`);
    }
    await tx.query('UPDATE workflows SET cancel_requested = true, canceled_by = $2 WHERE id = $1', [workflowId, actorId ?? null]);
    await tx.query(
      `UPDATE jobs SET status = 'canceled', stopped_at = now() WHERE workflow_id = $1 AND status IN ('blocked', 'on_hold')`,
      [workflowId],
    );
    const active = await tx.query<{ id: string }>(`SELECT id FROM jobs WHERE workflow_id = $1 AND status IN ('queued', 'running')`, [workflowId]);
    for (const job of active) await dispatcher.cancelJob(tx, job.id);
    await advanceInTx(tx, workflowId);
  }

  /**
   * Inserts a plan's workflows and jobs after the pipeline's existing ones and starts them, in the
   * caller's transaction. A setup plan's jobs receive the pipeline's continuation key.
   */
  async function insertWorkflows(tx: Queryable, pipelineId: string, projectId: string, plan: Plan, continuationKey?: string): Promise<void> {
    const inserted: { workflowId: string; jobs: JobRow[] }[] = [];
    for (const workflow of plan.workflows) {
      const workflowId = randomUUID();
      const jobs: JobRow[] = workflow.jobs.map((job) => ({
        id: randomUUID(),
        name: job.name,
        type: job.type,
        status: 'blocked',
        requires: job.requires,
        spec: job.spec && continuationKey ? { ...job.spec, environment: { ...job.spec.environment, CIRCLE_CONTINUATION_KEY: continuationKey } } : (job.spec ?? null),
        project_id: projectId,
        contexts: job.contexts,
      }));
      // The workflow, after the pipeline's workflows so far (a continuation's follow the
      // setup's), and its jobs in one statement.
      await tx.query(
        `WITH w AS (
           INSERT INTO workflows (id, pipeline_id, name, status, position)
           SELECT $1, $2, $3, 'running', COALESCE(max(position) + 1, 0)::int FROM workflows WHERE pipeline_id = $2
           RETURNING id)
         INSERT INTO jobs (id, workflow_id, project_id, name, type, status, position, requires, contexts, spec)
         SELECT j.id, w.id, $4::uuid, j.name, j.type, 'blocked', (j.position - 1)::int, j.requires::jsonb, j.contexts::jsonb, j.spec::jsonb
           FROM w CROSS JOIN unnest($5::uuid[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[])
                WITH ORDINALITY AS j(id, name, type, requires, contexts, spec, position)`,
        [
          workflowId,
          pipelineId,
          workflow.name,
          projectId,
          jobs.map((j) => j.id),
          jobs.map((j) => j.name),
          jobs.map((j) => j.type),
          jobs.map((j) => JSON.stringify(j.requires)),
          jobs.map((j) => JSON.stringify(j.contexts)),
          jobs.map((j) => (j.spec ? JSON.stringify(j.spec) : null)),
        ],
      );
      await onWorkflow?.(tx, { workflowId, status: 'running', ended: false });
      inserted.push({ workflowId, jobs });
    }
    // Decided from what was just written (this transaction's rows, which no one else sees yet):
    // no read of them back, and no ended job to look for.
    for (const { workflowId, jobs } of inserted) await decideJobs(tx, workflowId, { status: 'running', canceled: false }, jobs, false);
  }

  /** The config as read and as compiled, written with the pipeline's move to `created`. */
  interface Configs {
    readonly source: string;
    readonly compiled: string;
  }

  async function createWorkflows(pipelineId: string, projectId: string, plan: Plan, configs: Configs): Promise<void> {
    await store.transaction(async (tx) => {
      // The move to `created` takes the pipeline's row: a second conductor that read it pending
      // waits here, then finds it created and does nothing.
      const continuationKey = plan.setup ? randomBytes(32).toString('base64url') : undefined;
      // It also says whether auto-cancel can apply (AUTO_CANCEL_APPLIES, lockRedundantWorkflows'
      // condition), so that the look for older workflows, a statement on every pipeline's way, is
      // made only then.
      const moved = await tx.query<{ id: string; may_cancel_older: boolean }>(
        `UPDATE pipelines p SET state = 'created', config_source = $2, config_compiled = $3, updated_at = now(),
                continuation_key = COALESCE($4::text, continuation_key),
                continuation_expires_at = CASE WHEN $4::text IS NULL THEN continuation_expires_at ELSE now() + $5::interval END
          WHERE id = $1 AND state = 'pending'
          RETURNING id, EXISTS (SELECT 1 FROM projects pr WHERE pr.id = p.project_id AND ${AUTO_CANCEL_APPLIES}) AS may_cancel_older`,
        [pipelineId, configs.source, configs.compiled, continuationKey ?? null, `${continuationTtlMs} milliseconds`],
      );
      if (moved.length === 0) return; // someone else got here first
      // Before the new workflows queue jobs (which locks the project's row): older workflows are
      // locked first, as a job finishing in one takes its workflow and then the project.
      if (moved[0].may_cancel_older) await cancelRedundantWorkflows(tx, pipelineId, cancelInTx);
      await insertWorkflows(tx, pipelineId, projectId, plan, continuationKey);
    });
  }

  const conductor: Conductor = {
    async startPipeline(pipelineId, starting) {
      // Handed over by the trigger in this process: just committed, pending, and what the read
      // would give (StartingPipeline). Otherwise read, whoever created it.
      const pipeline: PendingPipeline | undefined = starting ? { ...starting, state: 'pending' } : await readPendingPipeline(store, pipelineId);
      if (!pipeline) throw new NotFoundError('pipeline', pipelineId);
      if (pipeline.state !== 'pending') return;
      const source = await forge.readFile(pipeline.repo_url, pipeline.revision, CONFIG_PATH);
      if (source === undefined) {
        await markErrored(pipelineId, [{ type: 'config', message: `${CONFIG_PATH} was not found at revision ${pipeline.revision}` }]);
        return;
      }
      // The config is written with the pipeline's next state (one statement, not one per stage):
      // the source with a compile error, both source and compiled form with its workflows.
      let result: CompileResult;
      try {
        result = await compile(source, triggerContextOf(pipeline, pipeline.parameters));
      } catch (error) {
        if (error instanceof CompilerUnavailableError) {
          // Not the config's doing: the pipeline stays pending and the sweep starts it again.
          log.warn('config compiler unavailable; the pipeline stays pending', { pipelineId, reason: error.message });
          return;
        }
        log.error('config compiler crashed', { pipelineId, error: (error as Error).message });
        result = { ok: false, problems: [{ message: `the config compiler failed: ${(error as Error).message}` }] };
      }
      if (!result.ok) {
        await markErrored(
          pipelineId,
          result.problems.map((p) => ({ type: 'config', message: formatProblem(p) })),
          source,
        );
        return;
      }
      if (result.plan.workflows.length === 0) {
        await store.query(`UPDATE pipelines SET state = 'created', config_source = $2, config_compiled = $3, updated_at = now() WHERE id = $1 AND state = 'pending'`, [
          pipelineId,
          source,
          result.compiledYaml,
        ]);
        return;
      }
      await createWorkflows(pipelineId, pipeline.project_id, result.plan, { source, compiled: result.compiledYaml });
    },

    advanceWorkflow,

    async jobFinished(jobId) {
      // The job's workflow found and locked in one statement (a job never changes workflow).
      await store.transaction(async (tx) => {
        const [workflow] = await tx.query<WorkflowState & { id: string }>(
          `SELECT id, status, cancel_requested AS canceled FROM workflows WHERE id = (SELECT workflow_id FROM jobs WHERE id = $1) FOR UPDATE`,
          [jobId],
        );
        if (workflow) await advanceLockedInTx(tx, workflow.id, workflow);
      });
    },

    async cancelWorkflow(workflowId, actorId, audit) {
      await store.transaction((tx) => cancelInTx(tx, workflowId, actorId, audit));
    },

    async approveJob(workflowId, jobId, actorId, audit) {
      await store.transaction(async (tx) => {
        const [job] = await tx.query<{ status: JobStatus; type: string; name: string }>(
          'SELECT status, type, name FROM jobs WHERE id = $1 AND workflow_id = $2 FOR UPDATE',
          [jobId, workflowId],
        );
        if (!job || job.type !== 'approval') throw new NotFoundError('approval request', jobId);
        // Recorded first: an approval refused below rolls its record back with it.
        await audit?.record(tx, { target: { type: 'job', id: jobId }, detail: { workflow: workflowId, job: job.name } });
        if (job.status !== 'on_hold') throw new ConflictError(`approval job ${jobId} is ${job.status}, not on_hold`);
        await tx.query(`UPDATE jobs SET status = 'success', approved_by = $2, stopped_at = now() WHERE id = $1`, [jobId, actorId ?? null]);
        await advanceInTx(tx, workflowId);
      });
    },

    async rerunWorkflow(workflowId, request, actorId, audit) {
      const rerunId = randomUUID();
      await store.transaction(async (tx) => {
        const workflow = await lockWorkflowToRerun(tx, workflowId);
        if (!workflow) throw new NotFoundError('workflow', workflowId);
        // Recorded first: a rerun refused below rolls its record back with it.
        await audit?.record(tx, {
          target: { type: 'workflow', id: workflowId },
          detail: { rerun: rerunId, from_failed: request.fromFailed === true, ...(request.jobs?.length ? { jobs: request.jobs.slice(0, 100), sparse_tree: request.sparseTree === true } : {}) },
        });
        checkRerunRequest(request);
        if (!TERMINAL_WORKFLOW_STATUSES.includes(workflow.status)) {
          throw new ConflictError(`workflow ${workflowId} is ${workflow.status}: a workflow is rerun once it has finished (cancel it to stop it first)`);
        }
        const jobs = await jobsOfWorkflow(tx, workflowId);
        const rerun = jobsToRerun(workflowId, jobs, request);
        await insertRerunWorkflow(tx, { id: rerunId, of: workflowId, startedBy: actorId ?? null });
        await onWorkflow?.(tx, { workflowId: rerunId, status: 'running', ended: false });
        for (const job of jobs) {
          if (rerun.has(job.id)) await insertRerunJob(tx, rerunId, randomUUID(), job.id);
          else await insertCopiedJob(tx, rerunId, randomUUID(), job.id);
        }
        await copyWorkspaceLayers(tx, workflowId, rerunId);
        await advanceInTx(tx, rerunId);
      });
      return rerunId;
    },

    async cancelJob(jobId, actorId, audit) {
      await store.transaction(async (tx) => {
        const job = await lockJobToCancel(tx, jobId);
        if (!job) throw new NotFoundError('job', jobId);
        // Recorded first: a cancel refused below rolls its record back with it.
        await audit?.record(tx, { target: { type: 'job', id: jobId }, detail: { workflow: job.workflow_id, job: job.name, ...(job.number ? { number: job.number } : {}) } });
        if (isTerminalJobStatus(job.status)) {
          throw new ConflictError(`job ${job.number ?? jobId} (${job.name}) has already finished: it is ${job.status}`);
        }
        if (job.status === 'blocked' || job.status === 'on_hold') {
          await cancelWaitingJob(tx, jobId, actorId ?? null);
        } else {
          await recordCanceledBy(tx, jobId, actorId ?? null);
          // Queued tasks end here; running ones are told through their lease (heartbeat and the
          // agents' cancellation long-poll), and the job settles when their agents report.
          await dispatcher.cancelJob(tx, jobId);
        }
        await advanceInTx(tx, job.workflow_id);
        // Delivered at commit: followers of the job's output see it end without waiting for a poll.
        if (job.status !== 'running') await tx.query('SELECT pg_notify($1, $2)', [CHANNELS.jobFinished, jobId]);
      });
    },

    async continuePipeline({ key, configuration, parameters }) {
      const [pipeline] = await store.query<{
        id: string;
        project_id: string;
        number: number;
        branch: string | null;
        tag: string | null;
        revision: string;
        continuation_key: string;
        expired: boolean;
        continued_at: Date | null;
        repo_url: string;
        default_branch: string;
        trigger_type: string;
        slug: string;
        schedule_id: string | null;
        schedule_name: string | null;
        scheduled_workflow_cron: string | null;
        event: unknown;
      }>(
        `SELECT p.id, p.project_id, p.number, p.branch, p.tag, p.revision, p.base_revision, p.continuation_key, p.continued_at, p.trigger_type, p.event,
                (p.continuation_expires_at <= now()) AS expired, pr.repo_url, pr.default_branch, pr.slug,
                s.id AS schedule_id, s.name AS schedule_name, sw.cron AS scheduled_workflow_cron
           FROM pipelines p JOIN projects pr ON pr.id = p.project_id
           LEFT JOIN schedule_ticks t ON t.pipeline_id = p.id
           LEFT JOIN schedules s ON s.id = t.schedule_id
           LEFT JOIN scheduled_workflows sw ON sw.id = t.scheduled_workflow_id
          WHERE p.continuation_key = $1`,
        [key],
      );
      // The lookup is by exact key; the constant-time compare keeps timing from telling how close a guess was.
      if (!pipeline || !sameSecret(pipeline.continuation_key, key)) throw new AuthenticationError('The continuation key is not valid.');
      if (pipeline.continued_at) throw new ConflictError(`pipeline ${pipeline.number} has already been continued; a pipeline continues once`);
      if (pipeline.expired) throw new ConflictError(`the continuation key of pipeline ${pipeline.number} has expired`);
      const result = await compile(configuration, triggerContextOf(pipeline, parameters));
      if (!result.ok) throw new InputError(`the configuration is not valid: ${result.problems.map(formatProblem).join('; ')}`, 'configuration');
      if (result.plan.setup) throw new InputError('a continuation configuration cannot itself be a setup configuration (setup: true)', 'configuration');
      await store.transaction(async (tx) => {
        const claimed = await tx.query(
          `UPDATE pipelines SET continued_at = now(), setup_config_source = config_source, setup_config_compiled = config_compiled,
                  config_source = $2, config_compiled = $3, parameters = parameters || $4::jsonb, updated_at = now()
            WHERE id = $1 AND continued_at IS NULL AND continuation_expires_at > now() RETURNING id`,
          [pipeline.id, configuration, result.compiledYaml, JSON.stringify(parameters)],
        );
        if (claimed.length === 0) throw new ConflictError(`pipeline ${pipeline.number} has already been continued; a pipeline continues once`);
        await insertWorkflows(tx, pipeline.id, pipeline.project_id, result.plan);
      });
    },

    async sweep() {
      const pending = await store.query<{ id: string }>(
        `SELECT id FROM pipelines WHERE state = 'pending' AND created_at < now() - interval '2 seconds' ORDER BY created_at LIMIT 20`,
      );
      for (const p of pending) await conductor.startPipeline(p.id).catch((error) => log.error('pipeline start failed', { pipelineId: p.id, error }));
      const open = await store.query<{ id: string }>(
        `SELECT id FROM workflows WHERE status IN ('running', 'on_hold', 'failing') ORDER BY created_at LIMIT 200`,
      );
      for (const w of open) await advanceWorkflow(w.id).catch((error) => log.error('workflow advance failed', { workflowId: w.id, error }));
    },
  };
  return conductor;
}

/** A workflow's status from its jobs' statuses. */
export function workflowStatusOf(statuses: readonly JobStatus[], canceled: boolean): WorkflowStatus {
  const done = statuses.every(isTerminalJobStatus);
  const anyFailed = statuses.some((s) => FAILED_JOB_STATUSES.includes(s));
  if (!done) {
    if (canceled) return 'running';
    if (anyFailed) return 'failing';
    const active = statuses.some((s) => s === 'queued' || s === 'running');
    return !active && statuses.includes('on_hold') ? 'on_hold' : 'running';
  }
  if (canceled || statuses.includes('canceled')) return canceled ? 'canceled' : anyFailed ? 'failed' : 'canceled';
  if (anyFailed) return 'failed';
  if (statuses.includes('unauthorized')) return 'unauthorized';
  if (statuses.length > 0 && statuses.every((s) => s === 'not_run')) return 'not_run';
  return 'success';
}

export interface PipelineFacts {
  id: string;
  number: number;
  branch: string | null;
  tag: string | null;
  revision: string;
  repo_url: string;
  default_branch: string;
  trigger_type: string;
  slug: string;
  schedule_id?: string | null;
  schedule_name?: string | null;
  scheduled_workflow_cron?: string | null;
  /** What a pull request's pipeline is compared with (`pipeline.git.base_revision`; set by the GitHub webhook). */
  base_revision?: string | null;
  /** What started it (`pipeline.event.*`; null before events were stored). */
  event?: unknown;
}

/** A pipeline as starting it reads it, with its project, and the schedule whose tick started it (runtime/schedules), if any. */
export type PendingPipeline = PipelineFacts & { state: string; parameters: Record<string, string | number | boolean>; project_id: string };

/** The pipeline `pipelineId` as Conductor.startPipeline reads it (what a trigger's StartingPipeline stands for). */
export async function readPendingPipeline(store: Queryable, pipelineId: string): Promise<PendingPipeline | undefined> {
  const [row] = await store.query<PendingPipeline>(
    `SELECT p.id, p.state, p.number, p.branch, p.tag, p.revision, p.base_revision, p.parameters, p.project_id, p.trigger_type, p.event,
            pr.repo_url, pr.default_branch, pr.slug, s.id AS schedule_id, s.name AS schedule_name, sw.cron AS scheduled_workflow_cron
       FROM pipelines p JOIN projects pr ON pr.id = p.project_id
       -- The schedule or scheduled workflow whose tick started it (runtime/schedules), if any.
       LEFT JOIN schedule_ticks t ON t.pipeline_id = p.id
       LEFT JOIN schedules s ON s.id = t.schedule_id
       LEFT JOIN scheduled_workflows sw ON sw.id = t.scheduled_workflow_id
      WHERE p.id = $1`,
    [pipelineId],
  );
  return row;
}

/** What the compiler knows of the trigger: the ref, the parameters and the `pipeline.*` values. */
function triggerContextOf(p: PipelineFacts, parameters: Record<string, string | number | boolean>): TriggerContext {
  return {
    branch: p.branch ?? undefined,
    tag: p.tag ?? undefined,
    parameters,
    pipeline: {
      id: p.id,
      number: p.number,
      revision: p.revision,
      ...(p.base_revision ? { baseRevision: p.base_revision } : {}),
      branch: p.branch ?? undefined,
      tag: p.tag ?? undefined,
      projectGitUrl: p.repo_url,
      projectType: 'github',
      projectSlug: p.slug,
      defaultBranch: p.default_branch,
      triggerSource: p.trigger_type,
      ...(p.schedule_id ? { scheduleId: p.schedule_id, scheduleName: p.schedule_name ?? '' } : {}),
      ...(p.scheduled_workflow_cron ? { scheduledWorkflowCron: p.scheduled_workflow_cron } : {}),
      event: eventValues(p.event, p.trigger_type),
    },
  };
}

/** `jobs.build.steps[0] (line 4:7): message`, as the API and UI show config problems. */
function formatProblem(p: ConfigProblem): string {
  const where = `${p.path ?? ''}${p.line ? ` (line ${p.line}${p.column ? `:${p.column}` : ''})` : ''}`;
  return where ? `${where.trim()}: ${p.message}` : p.message;
}

function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}
