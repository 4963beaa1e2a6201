import type { Step } from '../../config/plan';
import type { TaskContext } from '../../agent-contract';
import type { Executor } from '../executor';

/** What a step handler gets to run one step. */
export interface StepContext {
  readonly task: TaskContext;
  readonly executor: Executor;
  /** The CircleCI built-in environment of the task (job and step environment not merged in). */
  readonly env: Readonly<Record<string, string>>;
  /** `/bin/bash -eo pipefail`, or `/bin/sh -eo pipefail` where there is no bash. */
  readonly shellDefault: string;
  /** Aborted when the task is canceled or abandoned. */
  readonly signal: AbortSignal;
  /**
   * The step's start being recorded, when the agent lets the handler start its command before that
   * is done: the handler gives it to the executor as ExecRequest.gate (a `run` step on an executor
   * that `holdsSteps`). Otherwise the start is recorded before the handler is called.
   */
  readonly recorded?: Promise<void>;
  /**
   * `env`, when the agent lets the handler start the task's first command before the task's
   * secrets are in (`env` is then empty): the handler gives it, with the job's and the step's
   * environment merged in, to the executor as ExecRequest.environmentLater. Only with `recorded`.
   */
  readonly envLater?: Promise<Readonly<Record<string, string>>>;
  /**
   * Appends to this step's log. A promise means the agent holds as much unsent output as it may: a
   * producer that can wait (a command's output pipe) waits for it before writing more.
   */
  write(chunk: Uint8Array | string): void | Promise<void>;
}

export interface StepResult {
  readonly status: 'success' | 'failed' | 'canceled' | 'timedout';
  readonly exitCode: number | null;
}

export type StepHandler<S extends Step = Step> = (step: S, ctx: StepContext) => Promise<StepResult>;

/** One handler per step type. */
export type StepHandlers = { readonly [T in Step['type']]: StepHandler<Extract<Step, { type: T }>> };

/** The job's working directory as the config gave it (`~/project` by default). */
export function workingDirectoryOf(task: TaskContext): string {
  return task.spec.workingDirectory || '~/project';
}

/** A relative path is relative to the job's working directory, as in CircleCI. */
export function resolveUnder(path: string, workingDirectory: string): string {
  if (path.startsWith('/') || path.startsWith('~')) return path;
  return `${workingDirectory.replace(/\/+$/, '')}/${path}`;
}
