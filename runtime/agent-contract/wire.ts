import { Type, type Static } from '@sinclair/typebox';
import type { StepStatus } from '../domain/model';
import { TASK_OUTCOMES, type TaskContext, type TaskOutcome } from './task-context';

/**
 * The bodies of the agent API, as JSON Schemas (TypeBox) with their types. The server's routes
 * check requests against the request schemas; the agent checks each answer against its answer
 * schema before it reads a field (runtime/agent/agent-api-client.ts). Answers may carry fields
 * beyond these (a newer server): they are ignored, not refused.
 */

/**
 * One of these strings; a value outside them is refused, naming them. For request bodies (checked
 * by the server's validator); answers use unions of literals, which the agent's checker knows.
 */
const OneOf = <T extends string>(values: readonly T[]) => Type.Unsafe<T>({ type: 'string', enum: [...values] });

/** A time as JSON carries it (a Date serialized: ISO 8601, as `Date.prototype.toJSON` writes it). */
const Timestamp = Type.String({ pattern: '^\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}(\\.\\d+)?(Z|[+-]\\d{2}:\\d{2})$' });

export const STEP_END_STATUSES: readonly StepStatus[] = ['success', 'failed', 'canceled', 'skipped', 'timedout'];

// ---- Requests ----------------------------------------------------------------------------------

export const ClaimBody = Type.Object({ runner_id: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })), wait_ms: Type.Optional(Type.Integer({ minimum: 0, maximum: 3_600_000 })) });
export type ClaimBody = Static<typeof ClaimBody>;

export const CancellationQuery = Type.Object({ wait_ms: Type.Optional(Type.Integer({ minimum: 0, maximum: 3_600_000 })) });

export const StepStartedBody = Type.Object({ name: Type.Optional(Type.String({ maxLength: 4096 })), type: Type.Optional(Type.String({ maxLength: 100 })) });
export type StepStartedBody = Static<typeof StepStartedBody>;

export const StepFinishedBody = Type.Object({
  status: OneOf(STEP_END_STATUSES),
  exit_code: Type.Optional(Type.Union([Type.Integer({ minimum: -(2 ** 31), maximum: 2 ** 31 - 1 }), Type.Null()])),
});
export type StepFinishedBody = Static<typeof StepFinishedBody>;

export const CompleteBody = Type.Object({ outcome: OneOf<TaskOutcome>(TASK_OUTCOMES) });
export type CompleteBody = Static<typeof CompleteBody>;

/** Most cache keys a `cache/find` may try. */
export const MAX_CACHE_KEYS = 100;
const CacheKey = Type.String({ minLength: 1, maxLength: 900 });
export const CacheKeyQuery = Type.Object({ key: Type.String({ minLength: 1, maxLength: 900, description: 'the cache key' }) });
export const CacheFindBody = Type.Object({ keys: Type.Array(CacheKey, { minItems: 1, maxItems: MAX_CACHE_KEYS }) });
export type CacheFindBody = Static<typeof CacheFindBody>;
export const ArtifactQuery = Type.Object({ path: Type.String({ minLength: 1, maxLength: 4096 }) });

/** The header that says how many bytes a gzip output chunk holds. */
export const OUTPUT_BYTES_HEADER = 'X-Gyre-Output-Bytes';
/** The header that names one logical write, the same on each retry of it. */
export const IDEMPOTENCY_KEY_HEADER = 'Idempotency-Key';

// ---- Answers -----------------------------------------------------------------------------------

/**
 * The task context as it travels. The job's spec is the compiler's plan: the agent checks the parts
 * it cannot start without (the executor's kind, the steps) and trusts the rest as it trusts the compiler.
 */
export const TaskContextSchema = Type.Unsafe<TaskContext>(
  Type.Object({
    taskId: Type.String({ minLength: 1 }),
    nodeIndex: Type.Integer({ minimum: 0 }),
    parallelism: Type.Integer({ minimum: 1 }),
    jobId: Type.String(),
    jobName: Type.String(),
    jobNumber: Type.Integer(),
    spec: Type.Object({ executor: Type.Object({ kind: Type.String() }), steps: Type.Array(Type.Object({})) }),
    workflowId: Type.String(),
    workflowName: Type.String(),
    pipelineId: Type.String(),
    pipelineNumber: Type.Integer(),
    projectSlug: Type.String(),
    projectOrg: Type.String(),
    projectName: Type.String(),
    repoUrl: Type.String(),
    branch: Type.Optional(Type.String()),
    tag: Type.Optional(Type.String()),
    revision: Type.String(),
    resources: Type.Optional(Type.Object({ cpu: Type.Number(), memoryMb: Type.Number() })),
    checkoutRef: Type.Optional(Type.String()),
    pullRequest: Type.Optional(Type.Object({ number: Type.Integer(), url: Type.String(), fork: Type.Boolean() })),
  }),
);

/** `POST claim`: a task and the token for every call about it (204 when no task came). */
export const ClaimAnswer = Type.Object({ token: Type.String({ minLength: 1 }), lease_expires_at: Timestamp, lease_ttl_ms: Type.Optional(Type.Number()), task: TaskContextSchema });
export type ClaimAnswer = Static<typeof ClaimAnswer>;

/** `GET task/:id`. `lease_ttl_ms` paces heartbeats (servers before it sent none). */
export const TaskAnswer = Type.Object({ task: TaskContextSchema, lease_expires_at: Timestamp, lease_ttl_ms: Type.Optional(Type.Number()), cancel_requested: Type.Boolean() });
export type TaskAnswer = Static<typeof TaskAnswer>;

/**
 * `GET task/:id/secrets`: why the task may not have its secrets, or them. `ssh_keys` (TaskSshKeys)
 * is read key by key by the agent (runtime/agent/steps/ssh-key-steps.ts `parseTaskSshKeys`),
 * which leaves out a key not of its shape or with a host name it would not write to a config.
 */
export const SecretsRefusedAnswer = Type.Object({ refused: Type.String() });
export const SecretsGivenAnswer = Type.Object({ env: Type.Record(Type.String(), Type.String()), git_token: Type.Optional(Type.String()), ssh_keys: Type.Optional(Type.Object({})) });
export type SecretsAnswer = Static<typeof SecretsRefusedAnswer> | Static<typeof SecretsGivenAnswer>;

/** `POST task/:id/heartbeat`. */
export const HeartbeatAnswer = Type.Object({ lease_expires_at: Timestamp, cancel_requested: Type.Boolean() });
export type HeartbeatAnswer = Static<typeof HeartbeatAnswer>;

/** `GET task/:id/cancellation`: true as soon as a cancel is asked for, false when the wait ran out. */
export const CancellationAnswer = Type.Object({ cancel_requested: Type.Boolean() });
export type CancellationAnswer = Static<typeof CancellationAnswer>;

/** What a write answers when it has nothing to tell (step reports, output chunks, uploads). */
export const OkAnswer = Type.Object({ ok: Type.Literal(true) });
export type OkAnswer = Static<typeof OkAnswer>;

/** `GET task/:id/test-timings`. */
export const TestTimingsAnswer = Type.Object({ items: Type.Array(Type.Object({ file: Type.String(), seconds: Type.Number() })) });
export type TestTimingsAnswer = Static<typeof TestTimingsAnswer>;

/**
 * `GET task/:id/previous-test-results`: the tests of the job's last successful run. Items are
 * checked one by one by their reader, which leaves out any not of this shape.
 */
export const PreviousTestResult = Type.Object({ file: Type.String(), classname: Type.String(), name: Type.String(), run_time: Type.Number() });
export type PreviousTestResult = Static<typeof PreviousTestResult>;
export const PreviousTestResultsAnswer = Type.Object({ job_number: Type.Optional(Type.Union([Type.Integer(), Type.Null()])), items: Type.Array(Type.Unknown()) });
export type PreviousTestResultsAnswer = Static<typeof PreviousTestResultsAnswer>;

/** `GET task/:id/cache?key=`. */
export const CacheExistsAnswer = Type.Object({ exists: Type.Boolean() });
export type CacheExistsAnswer = Static<typeof CacheExistsAnswer>;

/** `PUT task/:id/cache?key=`. */
export const SaveCacheAnswer = Type.Object({ result: Type.Union([Type.Literal('saved'), Type.Literal('exists')]) });
export type SaveCacheAnswer = Static<typeof SaveCacheAnswer>;

/** `POST task/:id/cache/find`: the cache found, or null and (from servers that say why) the one held back. */
export const CacheFindAnswer = Type.Object({
  cache: Type.Union([Type.Object({ id: Type.String(), key: Type.String(), bytes: Type.Number() }), Type.Null()]),
  withheld: Type.Optional(Type.Object({ key: Type.String(), reason: Type.String() })),
});
export type CacheFindAnswer = Static<typeof CacheFindAnswer>;

/** `GET task/:id/workspace/layers`: the layers the task's workflow persisted before it. */
export const WorkspaceLayersAnswer = Type.Object({ items: Type.Array(Type.Object({ id: Type.String(), job_name: Type.String() })) });
export type WorkspaceLayersAnswer = Static<typeof WorkspaceLayersAnswer>;

/** `POST task/:id/test-results` (JSON, from agents before NDJSON). */
export const StoredTestResultsAnswer = Type.Object({ stored: Type.Integer() });
