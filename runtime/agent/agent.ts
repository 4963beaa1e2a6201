import { performance } from 'node:perf_hooks';
import { StaleLeaseError } from '../domain/errors';
import { leaseMarginMs } from '../domain/leases';
import type { StepStatus } from '../domain/model';
import type { Step } from '../config/plan';
import type { HeartbeatResult, TaskContext, TaskOutcome, TaskSshKeys } from '../agent-contract';
import type { Logger } from '../logger';
import { LEASE_LOST, type Executor } from './executor';
import { isRefusal } from './retries';
import { compressChunk, MAX_RAW_CHUNK_BYTES, type CompressedChunk } from '../output/log-chunk';
import { createSecretMasker, maskText, type OutputMasker } from '../output/masking';
import { createStepHandlers } from './steps';
import { runStep as builtInRunStep } from './steps/command-steps';
import { sshKeySecretValues } from './steps/ssh-key-steps';
import { workingDirectoryOf, type StepContext, type StepHandler, type StepHandlers, type StepResult } from './steps/step-handler';
import { HALT_MARKER, jobFiles, type TestTiming } from './job-tools/job-dir';

/**
 * What an agent reports to, bound to one lease. In-process it calls the dispatcher; a remote agent
 * sends the same calls over HTTP. Each call may throw StaleLeaseError: the agent has lost the task.
 */
export interface TaskReporter {
  /** Renews the lease; `signal` abandons a renewal that takes too long (the agent tries again). */
  heartbeat(signal?: AbortSignal): Promise<HeartbeatResult>;
  stepStarted(step: { index: number; name: string; type: string }): Promise<void>;
  /** One chunk of a step's output, compressed by the agent; chunks are numbered from 0 and sent in order. */
  output(step: number, seq: number, chunk: CompressedChunk): Promise<void>;
  stepFinished(step: { index: number; status: StepStatus; exitCode?: number | null }): Promise<void>;
  complete(outcome: TaskOutcome): Promise<void>;
  /**
   * The task's secrets, opened for this lease (runtime/secrets/task-secrets.ts): its variables, or
   * why it may not have them. Optional: without it the task runs with none.
   */
  secrets?(): Promise<{ readonly env: Readonly<Record<string, string>>; readonly gitToken?: string; readonly sshKeys?: TaskSshKeys } | { readonly refused: string }>;
  /**
   * Resolves as soon as someone asks this task to stop, rather than at the next heartbeat.
   * Optional: without it a cancel arrives with a heartbeat. Rejects once `signal` aborts.
   */
  cancelRequested?(signal: AbortSignal): Promise<void>;
  /**
   * The test results of the last successful run of this job in its project, for the in-job
   * `circleci tests split --split-by=timings`. Optional: without it the job gets no timings.
   */
  testTimings?(): Promise<readonly TestTiming[]>;
}

export interface AgentOptions {
  readonly task: TaskContext;
  readonly reporter: TaskReporter;
  /**
   * Where the steps run, or how to make it (a container to pull and start, a sandbox): made when
   * the task starts, while its secrets are read, given the task as claimed and `withSecrets`, the
   * task with the secrets this agent received for it, for a factory that needs them (registry
   * credentials may name them; it rejects when the task may not have them). A failure to make it
   * fails the job with the reason in the first step's output, as an image that cannot be pulled does.
   */
  readonly executor: Executor | ((task: TaskContext, withSecrets: () => Promise<TaskContext>) => Promise<Executor>);
  readonly log: Logger;
  /** How often to renew the lease. */
  readonly heartbeatMs: number;
  /**
   * How long the lease lasts from a renewal. With it the agent keeps its own deadline: when it has
   * not renewed the lease for this long minus `leaseMarginMs`, on the monotonic clock, it kills
   * its steps and sends nothing more, before the server could give the task to anyone else.
   * @default - no deadline of its own (it stops only when a write is refused)
   */
  readonly leaseTtlMs?: number;
  /**
   * `performance.now()` when the request that granted or last renewed the lease was sent (a
   * claim that did not wait for work, or the task fetch of `gyre agent`): the agent's deadline
   * counts from there. @default now, and the lease is renewed at once to count from that renewal
   */
  readonly leaseRenewedAt?: number;
  /**
   * Aborted from outside. With reason `'shutdown'` the agent stops its steps and reports nothing
   * (the lease then expires and the task is retried); any other reason is a cancel.
   */
  readonly signal?: AbortSignal;
  /** Base URL used for CIRCLE_BUILD_URL. */
  readonly webUrl?: string;
  /** How each step type runs. @default createStepHandlers() */
  readonly handlers?: StepHandlers;
  /**
   * Every chunk of output, each step's name and each error message passes through this before it
   * is sent. @default a masker of the task's secrets (`secretValuesOf`), or none when it has none
   */
  readonly masker?: OutputMasker;
}

/**
 * Output is sent in chunks of this many bytes, or every FLUSH_MS, whichever comes first. Each chunk
 * is one fenced write, so the size sets ingestion speed: 1 MiB doubled it against 256 KiB, and
 * almost 4 MiB took a sixth to a quarter off a loud step's time over HTTP against 2 MiB (a request,
 * a check and a statement less per 2 MiB; docs/speed.md).
 *
 * A server takes a chunk's body, compressed, of at most MAX_RAW_CHUNK_BYTES (4 MiB in every release
 * whose agents compress, so an agent may send to a server of an earlier release), and output that
 * does not compress (random bytes, a binary printed to the log) grows a little as gzip: about 5 KB
 * on 4 MiB, measured. So a chunk leaves 64 KiB of room below it
 * (test/output/incompressible-output.test.ts). While chunks wait to be sent, FLUSH_MS cuts nothing:
 * the part filled so far is cut when none is left (see createOutputStream).
 */
const MAX_CHUNK = MAX_RAW_CHUNK_BYTES - 64 * 1024;
const FLUSH_MS = 50;
/** How often a step's masker is asked for what it held back while the step prints nothing. */
const QUIET_FLUSH_MS = 200;
/**
 * Output a step may have written and the agent not yet sent: past it, the command waits (its
 * output is not read) until the sends leave room for a full chunk. It bounds an agent's memory when
 * a command prints faster than the output role stores (almost 16 MiB, in at most five reused chunk
 * buffers). The writer resumes with chunks still queued, so it has more than one send's time to
 * fill the next before nothing is left to send (and a part is cut); resumed at half, it had one
 * send's time, which a loaded machine's writer did not fill (with 4 MiB chunks, 8 MiB unsent was a
 * seventh slower over HTTP than 16).
 */
const MAX_UNSENT = 4 * MAX_CHUNK;

/**
 * How often an agent renews a lease of this length: three times per lease, so two lost heartbeats
 * in a row are survived. Cancels do not wait for heartbeats (see `TaskReporter.cancelRequested`).
 */
export function heartbeatEvery(leaseTtlMs: number | undefined): number {
  if (!leaseTtlMs || !Number.isFinite(leaseTtlMs)) return 500;
  return Math.max(100, Math.min(10_000, Math.floor(leaseTtlMs / 3)));
}

/** The outcome of running a task: what it reported, or that it lost its lease (or was abandoned at shutdown) and reported nothing. */
export type AgentResult = { readonly outcome: TaskOutcome } | { readonly lostLease: true };

export { LEASE_LOST } from './executor';

/**
 * Runs one claimed task: every step in order with CircleCI's `when` rules, output streamed in
 * numbered chunks, the lease renewed by heartbeat. It always ends by completing the task unless the
 * lease was lost, in which case someone else owns the task now and nothing more may be written.
 */
export async function runTask(options: AgentOptions): Promise<AgentResult> {
  const { reporter, log } = options;
  // The lease is kept from the moment the agent has the task: reading its secrets and making its
  // executor can take longer than a heartbeat, and the agent's deadline counts from the claim.
  const abort = new AbortController();
  let lostLease = false;
  let canceled = false;
  let abandoned = false;
  const onOuterAbort = () => {
    if (options.signal?.reason === 'shutdown') abandoned = true;
    else canceled = true;
    abort.abort();
  };
  if (options.signal?.aborted) onOuterAbort();
  options.signal?.addEventListener('abort', onOuterAbort, { once: true });

  const stopForLostLease = (why: string, fields: Record<string, unknown> = {}) => {
    if (!lostLease) log.warn(`${why}; killing the steps and reporting nothing more`, { taskId: options.task.taskId, ...fields });
    lostLease = true;
    clearInterval(beat);
    clearInterval(deadline);
    abort.abort(LEASE_LOST);
  };
  const loseLease = (error: unknown) => {
    if (error instanceof StaleLeaseError) {
      stopForLostLease('lease lost');
      return true;
    }
    return false;
  };
  /** Once the lease is lost nothing more is sent: a call made after that fails here, not on the wire. */
  const fenced = <T>(send: () => Promise<T>): Promise<T> => (lostLease ? Promise.reject(new StaleLeaseError(options.task.taskId, 'lost by the agent')) : send());

  // The agent's own deadline, on the monotonic clock, counted from when the last renewal that
  // succeeded was sent (never later than when the server granted it): TTL minus a margin.
  const ttl = options.leaseTtlMs;
  const margin = ttl ? leaseMarginMs(ttl) : 0;
  let renewedAt = options.leaseRenewedAt ?? performance.now();
  const deadline = ttl
    ? setInterval(() => {
        const since = performance.now() - renewedAt;
        if (since >= ttl - margin) stopForLostLease('lease not renewed in time', { sinceRenewalMs: Math.round(since), leaseTtlMs: ttl });
      }, Math.max(10, Math.min(250, margin / 2)))
    : undefined;

  const renew = () => {
    if (lostLease) return;
    const sent = performance.now();
    // A renewal that has not answered by the time the lease would be useless is abandoned.
    const timeout = ttl ? AbortSignal.timeout(Math.max(50, ttl - margin)) : undefined;
    reporter.heartbeat(timeout).then(
      (result) => {
        renewedAt = Math.max(renewedAt, sent);
        if (result.cancelRequested && !canceled) {
          canceled = true;
          abort.abort();
        }
      },
      (error) => {
        if (!loseLease(error)) log.warn('heartbeat failed; will retry', { taskId: options.task.taskId, error: (error as Error).message });
      },
    );
  };
  const beat = setInterval(renew, options.heartbeatMs);
  // Renewed at once when the start of the lease is not known to the agent: its own deadline then
  // counts from a renewal it sent, not from when it happened to get the task.
  if (ttl && options.leaseRenewedAt === undefined) renew();
  const watching = new AbortController();
  reporter.cancelRequested?.(watching.signal).then(
    () => {
      if (!watching.signal.aborted && !canceled) {
        canceled = true;
        abort.abort();
      }
    },
    () => undefined,
  );

  // The task's secrets are asked for under the lease, by the agent that holds it (never sent with
  // the task): a refusal (a context the job may no longer use) fails the job with the reason. Asked
  // first: they are the longest chain of reads on the way to the first command, and the embedded
  // database answers in the order it is asked.
  const secretsRead = readSecrets(options.task, reporter);
  // The test timings of earlier runs (for the job directory) are read beside the secrets: each is
  // a round trip under the lease on the way to the first command.
  const timingsRead = reporter.testTimings?.().then(
    (timings) => ({ timings }),
    (error: unknown) => ({ error }),
  );
  const withSecrets = async (): Promise<TaskContext> => {
    const read = await secretsRead;
    if ('lostLease' in read) throw new StaleLeaseError(options.task.taskId, 'lost by the agent');
    if (read.refused) throw new Error(`Unauthorized: ${read.refused}`);
    return read.task;
  };
  const handlers = options.handlers ?? createStepHandlers();
  /** The first step's command, started before the secrets are in (startEarly); taken by its runStep. */
  let early: EarlyStart | undefined;
  let ended = false;
  /**
   * Starts the first step's command as soon as the executor is made, before the task's secrets
   * and its job directory are in: its process and its shell's start-up beside them, held at its
   * gate until its environment and its start's record are (docs/speed.md). Only a `run` step that
   * runs first, with the built-in `run` handler (which takes an environment to come: the server's
   * runner gives its own handlers for the file steps only), on an executor that holds steps and
   * says no notice.
   */
  const startEarly = (executor: Executor, hasBash: boolean) => {
    const first = options.task.spec.steps[0];
    if (ended || abort.signal.aborted || handlers.run !== builtInRunStep || !executor.holdsSteps || executor.notice) return;
    if (first?.type !== 'run' || first.when === 'on_fail') return;
    early = startHeld(first, handlers, { task: options.task, executor, shellDefault: defaultShell(hasBash), signal: abort.signal });
  };
  // Meanwhile the executor is made and the job directory written, which need no secret (a
  // factory that does waits for them itself): on the way to the first command.
  const prepared = prepareExecutor(options, withSecrets, timingsRead, startEarly);
  /** Stops keeping the lease and watching for a cancel: the task has ended here. */
  const letGo = () => {
    ended = true;
    early?.drop();
    early = undefined;
    clearInterval(beat);
    clearInterval(deadline);
    watching.abort();
    options.signal?.removeEventListener('abort', onOuterAbort);
  };
  const answer = await secretsRead.catch(async (error: unknown) => {
    letGo();
    await dispose(prepared);
    throw error;
  });
  if ('lostLease' in answer) {
    letGo();
    await dispose(prepared);
    return { lostLease: true };
  }
  const secretsRefused = answer.refused;
  const task = answer.task;
  const masker = options.masker ?? createSecretMasker(secretValuesOf(task));
  /** A name or message as it may be sent or logged: the task's secrets masked. */
  const hide = (text: string) => maskText(masker, text);
  let executor: Executor | undefined;
  try {
    const ready = await prepared;
    executor = ready.executor;
    try {
      if (secretsRefused) throw new Error(`Unauthorized: ${secretsRefused}`);
      if ('failed' in ready) throw ready.failed;
    } catch (error) {
      return await environmentFailed(error as Error);
    }
    if ('hasBashFailed' in ready) throw ready.hasBashFailed;
    const shellDefault = defaultShell(ready.hasBash);
    // The task's secrets first: the built-in variables, then the config's `environment:` (merged
    // in by the run step), win over them, as in CircleCI.
    const made = ready.executor;
    const env = { ...secretEnvironment(task, log), ...circleEnvironment(task, made.home, options.webUrl) };
    const jobDir = jobDirOf(ready.jobDir);
    if (jobDir) {
      env.GYRE_JOB_DIR = jobDir;
      env.PATH = `${jobDir}/bin:${env.PATH}`;
    }
    let failed = false;
    let timedOut = false;
    const stepCtx = { ...options, task, executor: made, env, shellDefault, signal: abort.signal, notice: made.notice };
    for (const [index, step] of task.spec.steps.entries()) {
      if (lostLease || abandoned) break;
      const when = 'when' in step ? step.when : 'on_success';
      const runs = canceled ? false : when === 'always' || (when === 'on_fail' ? failed : !failed);
      if (!runs) {
        if (index === 0) early = (early?.drop(), undefined);
        continue;
      }
      const result = await runStep(index, step, stepCtx);
      if (result === 'lost') break;
      // `circleci-agent step halt` in this step: no later step runs (`when: always` ones neither),
      // and the job ends as its steps so far decide, success unless one failed (as CircleCI does).
      if (jobDir && step.type === 'run' && result !== 'canceled' && (await halted(made))) {
        if (result === 'timedout') timedOut = true;
        if (result === 'failed' || result === 'timedout') failed = true;
        break;
      }
      if (result === 'canceled') canceled = true;
      else if (result === 'timedout') {
        failed = true;
        timedOut = true;
      } else if (result === 'failed') failed = true;
    }
    if (lostLease || abandoned) return { lostLease: true };
    const outcome: TaskOutcome = canceled ? 'canceled' : timedOut ? 'timedout' : failed ? 'failed' : 'success';
    try {
      await fenced(() => reporter.complete(outcome));
    } catch (error) {
      if (loseLease(error)) return { lostLease: true };
      throw error;
    }
    return { outcome };
  } finally {
    letGo();
    await executor?.cleanup().catch((error) => log.warn('cleanup failed', { taskId: task.taskId, error: hide((error as Error).message) }));
  }

  /**
   * Where the commands see Gyre's directory in the job, once its writing (prepareExecutor) is
   * known: what went wrong on the way is logged here, with the task's secrets masked. Without it
   * the job still runs, and `circleci` is then missing from the job, as on an executor with none.
   */
  function jobDirOf(written: JobDirWritten): string | undefined {
    if (written.timingsFailed !== undefined && !loseLease(written.timingsFailed)) {
      log.warn('the test timings of earlier runs could not be fetched; tests split by timings falls back to names', { taskId: task.taskId, error: hide((written.timingsFailed as Error).message) });
    }
    if (written.failed !== undefined) log.warn('the in-job circleci command could not be installed', { taskId: task.taskId, error: hide((written.failed as Error).message) });
    return written.path;
  }

  /** Whether a step asked for the job to end (`circleci-agent step halt`). */
  async function halted(executor: Executor): Promise<boolean> {
    try {
      return (await executor.jobDir?.has(HALT_MARKER)) === true;
    } catch (error) {
      log.warn('could not look for the step halt marker', { taskId: task.taskId, error: hide((error as Error).message) });
      return false;
    }
  }

  /** No place to run the steps: the first step fails with the reason, and so does the job. */
  async function environmentFailed(error: Error): Promise<AgentResult> {
    log.warn('the job environment could not be made', { taskId: task.taskId, error: hide(error.message) });
    const first = task.spec.steps[0];
    try {
      if (first) {
        await fenced(() => reporter.stepStarted({ index: 0, name: hide(first.name), type: first.type }));
        const text = new TextEncoder().encode(`The job's environment could not be made: ${error.message}\n`);
        const mask = masker.stream();
        await fenced(async () => reporter.output(0, 0, await compressChunk(Buffer.from([...mask.push(text), ...mask.end()]))));
        await fenced(() => reporter.stepFinished({ index: 0, status: 'failed', exitCode: null }));
      }
      if (abandoned) return { lostLease: true };
      await fenced(() => reporter.complete(canceled ? 'canceled' : 'failed'));
      return { outcome: canceled ? 'canceled' : 'failed' };
    } catch (failure) {
      if (loseLease(failure)) return { lostLease: true };
      throw failure;
    }
  }

  async function runStep(
    index: number,
    step: Step,
    ctx: AgentOptions & { executor: Executor; env: Record<string, string>; shellDefault: string; signal: AbortSignal; notice?: string },
  ): Promise<'success' | 'failed' | 'timedout' | 'canceled' | 'lost'> {
    // A `run` step's command is started while its start is being recorded, held before its first
    // line until the record is in (ExecRequest.gate): the process start and the shell's own start-up
    // beside the commit, not after it (docs/speed.md). Nothing of the command runs unless the start
    // is recorded under the lease. Other steps, other executors, and a first step that prints the
    // runner's notice first, start once it is recorded.
    const recording = fenced(() => reporter.stepStarted({ index, name: hide(step.name), type: step.type }));
    const held = step.type === 'run' && ctx.executor.holdsSteps === true && !ctx.notice;
    const recorded = async (): Promise<'lost' | undefined> => {
      try {
        await recording;
        return undefined;
      } catch (error) {
        if (loseLease(error)) return 'lost';
        throw error;
      }
    };
    if (held) recording.catch(() => undefined);
    else if ((await recorded()) === 'lost') return 'lost';
    const out = createOutputStream((seq, data) => fenced(() => reporter.output(index, seq, data)), loseLease);
    const mask = masker.stream();
    // A step gone quiet gets what the masker held back (all but what may still begin a secret).
    const quiet = mask.flush
      ? setInterval(() => {
          const released = mask.flush!();
          if (released.length > 0) out.write(released);
        }, QUIET_FLUSH_MS)
      : undefined;
    if (ctx.notice) {
      // Said first in the job's output (e.g. that it runs without isolation), once.
      mask.pushEach(new TextEncoder().encode(`${ctx.notice}\n`), out.write);
      ctx.notice = undefined;
    }
    const handler = handlers[step.type] as StepHandler<Step>;
    const write = (chunk: Uint8Array | string) => mask.pushEach(typeof chunk === 'string' ? new TextEncoder().encode(chunk) : chunk, out.write);
    // The first step's command, started early (startEarly), is let go: its environment and the record.
    const started = index === 0 ? early : undefined;
    if (started) early = undefined;
    let result: StepResult;
    try {
      result = started
        ? await started.go(ctx.env, recording, write)
        : await handler(step, {
            task,
            executor: ctx.executor,
            env: ctx.env,
            shellDefault: ctx.shellDefault,
            signal: ctx.signal,
            ...(held ? { recorded: recording } : {}),
            write,
          });
    } catch (error) {
      // A handler that throws is a failed step with the reason in its log, never a lost task.
      mask.pushEach(new TextEncoder().encode(`\n${(error as Error).message}\n`), out.write);
      result = { status: 'failed', exitCode: null };
    }
    // Held: the start's record settled before the command ran anything (or it was stopped unrun).
    const unrecorded = held && (await recorded()) === 'lost';
    const { status, exitCode } = result;
    clearInterval(quiet);
    out.write(mask.end());
    await out.close();
    if (lostLease || abandoned || unrecorded) return 'lost';
    try {
      await fenced(() => reporter.stepFinished({ index, status, exitCode }));
    } catch (error) {
      if (loseLease(error)) return 'lost';
      throw error;
    }
    return status;
  }
}

/** The default shell of a job where the executor has bash, or has not. */
function defaultShell(hasBash: boolean): string {
  return hasBash ? '/bin/bash -eo pipefail' : '/bin/sh -eo pipefail';
}

/** A step's command started before the task's secrets were in, held at its gate (startHeld). */
interface EarlyStart {
  /** Lets it go: its environment (the task's, before the job's and the step's are merged in), its start's record as its gate, and where its output goes from now. Settles as its handler's result. */
  go(env: Readonly<Record<string, string>>, recorded: Promise<void>, write: (chunk: Uint8Array | string) => void | Promise<void>): Promise<StepResult>;
  /** Ends it having run nothing of the command (the task ended, or the step does not run). */
  drop(): void;
}

/**
 * Calls the `run` handler for `step` now, with its environment and its start's record to come
 * (StepContext.envLater and `recorded`): the executor starts its process held at its gate. Output
 * written before `go` (a shell that could not start says so) is kept for the step's log.
 */
function startHeld(step: Extract<Step, { type: 'run' }>, handlers: StepHandlers, ctx: Pick<StepContext, 'task' | 'executor' | 'shellDefault' | 'signal'>): EarlyStart {
  let giveEnv!: (env: Readonly<Record<string, string>>) => void;
  let refuseEnv!: (reason: Error) => void;
  let giveRecord!: (recorded: Promise<void>) => void;
  let refuseRecord!: (reason: Error) => void;
  const envLater = new Promise<Readonly<Record<string, string>>>((resolve, reject) => ((giveEnv = resolve), (refuseEnv = reject)));
  const recorded = new Promise<void>((resolve, reject) => ((giveRecord = resolve), (refuseRecord = reject)));
  envLater.catch(() => undefined);
  recorded.catch(() => undefined);
  let sink: ((chunk: Uint8Array | string) => void | Promise<void>) | undefined;
  const kept: (Uint8Array | string)[] = [];
  const result = handlers.run(step, { ...ctx, env: {}, envLater, recorded, write: (chunk) => (sink ? sink(chunk) : void kept.push(chunk)) });
  result.catch(() => undefined);
  return {
    go(env, record, write) {
      sink = write;
      for (const chunk of kept.splice(0)) void write(chunk);
      giveEnv(env);
      giveRecord(record);
      return result;
    },
    drop() {
      const reason = new Error('the step did not run');
      refuseEnv(reason);
      refuseRecord(reason);
    },
  };
}

/** What an environment variable's name may be: a name a shell can expand. */
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

type SecretsRead = { readonly task: TaskContext; readonly refused?: string } | { readonly lostLease: true };

/** The task with its secrets from `reporter`, or why it may not have them, or that the lease is lost. */
async function readSecrets(task: TaskContext, reporter: TaskReporter): Promise<SecretsRead> {
  if (task.secrets || !reporter.secrets) return { task };
  let answer: Awaited<ReturnType<NonNullable<TaskReporter['secrets']>>>;
  try {
    answer = await reporter.secrets();
  } catch (error) {
    if (error instanceof StaleLeaseError) return { lostLease: true };
    throw error;
  }
  if ('refused' in answer) return { task, refused: answer.refused };
  return { task: { ...task, secrets: { env: answer.env, ...(answer.gitToken ? { gitToken: answer.gitToken } : {}), ...(answer.sshKeys ? { sshKeys: answer.sshKeys } : {}) } } };
}

/** Gyre's directory in the job: where it is, or what stopped it (logged by the agent, masked). */
interface JobDirWritten {
  readonly path?: string;
  readonly timingsFailed?: unknown;
  readonly failed?: unknown;
}

/** The executor made, whether it has bash, and the job directory written; or why it could not be made. */
type Prepared =
  | { readonly executor: Executor; readonly hasBash: boolean; readonly jobDir: JobDirWritten }
  | { readonly executor: Executor; readonly hasBashFailed: unknown }
  | { readonly executor?: Executor; readonly failed: unknown };

/**
 * Makes the task's executor, asks whether it has bash and writes Gyre's directory into the job
 * (the in-job CLI and the timings of the job's last successful run). Never rejects: what failed
 * is in the answer, for the agent to report once it knows the secrets to mask.
 */
async function prepareExecutor(
  options: AgentOptions,
  withSecrets: () => Promise<TaskContext>,
  timingsRead: Promise<{ timings: readonly TestTiming[] } | { error: unknown }> | undefined,
  onMade: (executor: Executor, hasBash: boolean) => void,
): Promise<Prepared> {
  let executor: Executor;
  try {
    executor = typeof options.executor === 'function' ? await options.executor(options.task, withSecrets) : options.executor;
  } catch (failed) {
    return { failed };
  }
  let hasBash: boolean;
  try {
    hasBash = await executor.hasBash();
  } catch (hasBashFailed) {
    return { executor, hasBashFailed };
  }
  // The first step's command is started while the executor finishes making what it makes (held
  // at its gate until that is done too: Executor.ready).
  onMade(executor, hasBash);
  try {
    await executor.ready;
  } catch (failed) {
    return { executor, failed };
  }
  // Not made here, the first step makes it: nothing is lost. Not waited for before the job
  // directory is sent: an executor that makes both through one process gets them together.
  const working = executor.makeWorkingDirectory?.(workingDirectoryOf(options.task)).catch(() => undefined);
  try {
    if (!executor.jobDir) return { executor, hasBash, jobDir: {} };
    const read = await timingsRead;
    const timingsFailed = read && 'error' in read ? read.error : undefined;
    const timings = read && 'timings' in read ? (read.timings ?? []) : [];
    try {
      await executor.jobDir.install(jobFiles(timings));
      return { executor, hasBash, jobDir: { path: executor.jobDir.path, timingsFailed } };
    } catch (failed) {
      return { executor, hasBash, jobDir: { timingsFailed, failed } };
    }
  } finally {
    await working;
  }
}

/** Cleans up the executor of a task that ends before it runs anything (its lease lost). */
async function dispose(prepared: Promise<Prepared>): Promise<void> {
  const { executor } = await prepared;
  await executor?.cleanup().catch(() => undefined);
}

/**
 * The values the agent masks for a task: each of `task.secrets.env`, its checkout token, its SSH private keys (whole and line by line), and the value of each
 * variable named in `task.secrets.names` wherever it is set (the job's `environment:`, a docker
 * image's, a run step's, or the agent's own environment `agentEnv`). Too short ones are left to
 * the masker to skip.
 */
export function secretValuesOf(task: TaskContext, agentEnv: Readonly<Record<string, string | undefined>> = process.env): string[] {
  const values = Object.values(task.secrets?.env ?? {});
  if (task.secrets?.gitToken) values.push(task.secrets.gitToken);
  values.push(...sshKeySecretValues(task.secrets?.sshKeys));
  const names = task.secrets?.names ?? [];
  if (names.length === 0) return values;
  const environments: Readonly<Record<string, string | undefined>>[] = [task.spec.environment, agentEnv];
  if (task.spec.executor.kind === 'docker') for (const image of task.spec.executor.images) if (image.environment) environments.push(image.environment);
  for (const step of task.spec.steps) if (step.type === 'run' && step.environment) environments.push(step.environment);
  for (const name of names) {
    for (const environment of environments) {
      const value = Object.prototype.hasOwnProperty.call(environment, name) ? environment[name] : undefined;
      if (typeof value === 'string') values.push(value);
    }
  }
  return values;
}

/**
 * The task's secret variables that can be set in a step's environment. A name that is not a
 * shell name (`A=B`, empty, with a space) or a value with a NUL byte could not be set, or would
 * set something else (a container's `NAME=value` list): it is left out and the agent's log names
 * it, never its value.
 */
function secretEnvironment(task: TaskContext, log: Logger): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [name, value] of Object.entries(task.secrets?.env ?? {})) {
    if (ENV_NAME.test(name) && typeof value === 'string' && !value.includes('\0')) env[name] = value;
    else log.warn('a secret was not set in the job environment: its name must be letters, digits and _ (not starting with a digit), its value without NUL bytes', { taskId: task.taskId, name: JSON.stringify(name).slice(0, 200) });
  }
  return env;
}

/** The CircleCI built-in environment variables of a task. */
export function circleEnvironment(task: TaskContext, home: string, webUrl?: string): Record<string, string> {
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin',
    HOME: home,
    LANG: process.env.LANG ?? 'C.UTF-8',
    CI: 'true',
    CIRCLECI: 'true',
    CIRCLE_SHA1: task.revision,
    CIRCLE_BUILD_NUM: String(task.jobNumber),
    CIRCLE_JOB: task.jobName,
    CIRCLE_WORKFLOW_ID: task.workflowId,
    CIRCLE_WORKFLOW_JOB_ID: task.jobId,
    CIRCLE_PIPELINE_ID: task.pipelineId,
    CIRCLE_PROJECT_USERNAME: task.projectOrg,
    CIRCLE_PROJECT_REPONAME: task.projectName,
    CIRCLE_REPOSITORY_URL: task.repoUrl,
    CIRCLE_WORKING_DIRECTORY: task.spec.workingDirectory || '~/project',
    CIRCLE_NODE_INDEX: String(task.nodeIndex),
    CIRCLE_NODE_TOTAL: String(task.parallelism),
    CIRCLE_USERNAME: task.projectOrg,
  };
  if (task.branch) env.CIRCLE_BRANCH = task.branch;
  if (task.tag) env.CIRCLE_TAG = task.tag;
  const pr = task.pullRequest;
  if (pr) {
    env.CIRCLE_PULL_REQUEST = pr.url;
    env.CIRCLE_PULL_REQUESTS = pr.url;
    // As CircleCI: these three only for a fork's pull request.
    if (pr.fork) {
      env.CIRCLE_PR_NUMBER = String(pr.number);
      if (pr.headRepo) env.CIRCLE_PR_REPONAME = pr.headRepo;
      if (pr.author) env.CIRCLE_PR_USERNAME = pr.author;
    }
  }
  if (webUrl) env.CIRCLE_BUILD_URL = `${webUrl.replace(/\/+$/, '')}/#/job/${task.projectSlug}/${task.jobNumber}`;
  return env;
}

/**
 * Cuts a step's output into numbered chunks of MAX_CHUNK bytes (or what came within FLUSH_MS),
 * compresses each as soon as it is cut, while the chunk before it is being sent, and sends them one
 * at a time, in order. A failed send is retried with the same sequence number (appends are
 * idempotent), so nothing is lost or doubled by a transient error.
 *
 * FLUSH_MS is for a reader following the step: output waits no longer than that before it is cut
 * and sent. When chunks are already waiting their turn, a part cut then would wait behind them
 * anyway, and a loud step's output came as many small chunks (57 sends per 100 MB where 48 full
 * chunks hold it, measured over HTTP): each one a request, a check and a transaction. So a cut the
 * timer asks for waits until no chunk is queued: the part then goes at once, as soon as it would
 * have been sent had it been cut earlier, and the writer (stopped while the sends caught up) has
 * filled it meanwhile, often to a full chunk.
 */
function createOutputStream(send: (seq: number, chunk: CompressedChunk) => Promise<void>, isLost: (error: unknown) => boolean) {
  /** The chunk being filled: output is copied into it once, and it is handed on whole when full. */
  let buffer: Buffer | undefined;
  /**
   * Full-size buffers whose chunk is compressed, to fill again: as many as the unsent output can
   * fill, so a loud step fills the same few. A buffer let go stays counted against the heap's
   * limit until a full collection, and a fresh 2 MiB one a chunk made V8 run one every few chunks.
   */
  const spare: Buffer[] = [];
  let filled = 0;
  let seq = 0;
  let timer: NodeJS.Timeout | undefined;
  /** Chunks cut whose send has not ended (sent, or given up on). */
  let queued = 0;
  /** FLUSH_MS passed while chunks were queued: the part filled is cut once none is (if not full before). */
  let due = false;
  /** Compressions run one chunk after another (each on up to four threads), ahead of the sends. */
  let compressing: Promise<unknown> = Promise.resolve();
  let chain: Promise<void> = Promise.resolve();
  let gaveUp = false;
  /** Bytes written and not yet sent (or given up on), and the writers waiting for them to go down. */
  let unsent = 0;
  let waiting: (() => void)[] = [];
  const sent = (bytes: number) => {
    unsent -= bytes;
    if (unsent > MAX_UNSENT - MAX_CHUNK && !gaveUp) return;
    const resume = waiting;
    waiting = [];
    for (const r of resume) r();
  };

  const sendWithRetry = async (n: number, chunk: CompressedChunk) => {
    let sending = chunk;
    for (let attempt = 0; !gaveUp; attempt++) {
      try {
        await send(n, sending);
        return;
      } catch (error) {
        // A chunk the server refuses (it would refuse it again) is not retried: a line saying so
        // goes under its number instead, so the log shows where output is missing and why, and
        // the step's later output is still stored. A refused line ends the sends.
        if (isRefusal(error) && sending === chunk) {
          sending = await compressChunk(Buffer.from(`\n[gyre] ${chunk.rawBytes} bytes of this step's output were refused by the server and are not stored: ${error.message}\n`));
          attempt = -1;
          continue;
        }
        if (isLost(error) || isRefusal(error) || attempt >= 20) {
          gaveUp = true;
          return;
        }
        await new Promise((r) => setTimeout(r, Math.min(2000, 50 * 2 ** attempt)));
      }
    }
  };
  const flush = () => {
    clearTimeout(timer);
    timer = undefined;
    due = false;
    if (!buffer || filled === 0) return;
    // A full chunk is handed on as it is (and its buffer reused once compressed); a part is copied
    // out and the buffer filled again.
    const whole = filled === buffer.length;
    const data = whole ? buffer : Buffer.from(buffer.subarray(0, filled));
    if (whole) buffer = undefined;
    filled = 0;
    const n = seq++;
    const compressed = compressing.then(() => compressChunk(data));
    compressing = compressed.then(
      () => whole && spare.length < MAX_UNSENT / MAX_CHUNK && spare.push(data),
      () => undefined,
    );
    const bytes = data.length;
    queued++;
    chain = chain.then(async () => {
      try {
        await sendWithRetry(n, await compressed);
      } catch {
        // zlib refused the bytes (out of memory): nothing after a missing chunk may be sent.
        gaveUp = true;
      } finally {
        queued--;
        sent(bytes);
        // Nothing is being sent now: the part goes at once (its readers waited for the sends anyway).
        if (due && queued === 0) flush();
      }
    });
  };
  const flushDue = () => {
    timer = undefined;
    if (queued > 0) due = true;
    else flush();
  };
  return {
    /**
     * Copies `chunk` in (the caller may reuse its buffer). Returns a promise when the step has
     * written MAX_UNSENT bytes more than were sent: it settles once the sends have caught up.
     */
    write(chunk: Uint8Array): Promise<void> | undefined {
      unsent += chunk.byteLength;
      for (let at = 0; at < chunk.byteLength; ) {
        buffer ??= spare.pop() ?? Buffer.allocUnsafe(MAX_CHUNK);
        const n = Math.min(buffer.length - filled, chunk.byteLength - at);
        buffer.set(chunk.subarray(at, at + n), filled);
        filled += n;
        at += n;
        if (filled === buffer.length) flush();
      }
      if (filled > 0 && !due) timer ??= setTimeout(flushDue, FLUSH_MS);
      if (unsent <= MAX_UNSENT || gaveUp) return undefined;
      return new Promise<void>((resolve) => waiting.push(resolve));
    },
    async close() {
      flush();
      await chain;
    },
  };
}
