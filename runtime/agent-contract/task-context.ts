import type { JobSpec } from '../config/plan';
import type { PipelinePullRequest, TaskStatus } from '../domain/model';
import type { ResourceSize } from '../domain/resource-sizes';

/** The proof that an agent holds a task: every write it makes carries this (inside its task token). */
export interface Lease {
  readonly taskId: string;
  readonly leaseId: string;
  readonly attempt: number;
}

/** Everything about the task an agent needs to run it. */
export interface TaskContext {
  readonly taskId: string;
  readonly nodeIndex: number;
  readonly parallelism: number;
  readonly jobId: string;
  readonly jobName: string;
  readonly jobNumber: number;
  readonly spec: JobSpec;
  readonly workflowId: string;
  readonly workflowName: string;
  readonly pipelineId: string;
  readonly pipelineNumber: number;
  readonly projectSlug: string;
  readonly projectOrg: string;
  readonly projectName: string;
  readonly repoUrl: string;
  readonly branch?: string;
  readonly tag?: string;
  readonly revision: string;
  /** The CPU and memory of the task's resource class: a container's limits. */
  readonly resources?: ResourceSize;
  /**
   * The job's secrets, in plaintext for the agent holding the lease only (never stored with the
   * task). `env`: its contexts' and project's environment variables; the agent sets them in every
   * step's environment, where the built-in `CIRCLE_*` variables, `PATH` and `HOME`, and the
   * config's `environment:` win over them, as in CircleCI. `names`: variables set elsewhere (the
   * config's `environment:`, or the agent's own environment) whose values are secret too. The
   * agent masks every value of both (4 characters or more) in output and step names.
   */
  readonly secrets?: {
    readonly env: Readonly<Record<string, string>>;
    readonly names?: readonly string[];
    /** The token the checkout step reads the repository with (a GitHub App installation's), when it needs one; masked like the rest. */
    readonly gitToken?: string;
    /** The project's SSH keys this job uses (runtime/secrets/ssh-keys.ts); private halves masked like the rest. */
    readonly sshKeys?: TaskSshKeys;
  };
  /**
   * A ref the checkout fetches besides branches and tags, because the revision is on none of
   * them: `refs/pull/<n>/head` for a fork's pull request.
   */
  readonly checkoutRef?: string;
  /** The pull request the pipeline builds: CIRCLE_PULL_REQUEST, CIRCLE_PR_* (runtime/agent/agent.ts). */
  readonly pullRequest?: PipelinePullRequest;
}

/**
 * The SSH keys a task gets, when its pipeline may have them (not a fork's, unless its project
 * passes secrets to forks): the checkout key when the job checks out a repository over SSH, and
 * the additional keys its `add_ssh_keys` steps select (all of them when a step names none).
 */
export interface TaskSshKeys {
  readonly checkout?: TaskSshKey;
  readonly additional: readonly TaskSshKey[];
  /** Why the task gets no keys though it uses some (a fork's pipeline): `add_ssh_keys` says it and adds none. */
  readonly withheld?: string;
}

export interface TaskSshKey {
  /** As `ssh-keygen -l -E md5` prints it, without `MD5:` (c9:0b:…). */
  readonly fingerprint: string;
  /** As `ssh-keygen -l` prints it (SHA256:…). */
  readonly fingerprintSha256: string;
  /** The host the key is for (an additional key's; '' for every host). */
  readonly hostname: string;
  /** PEM text, ending in a newline. */
  readonly privateKey: string;
  readonly publicKey: string;
}

/** What a heartbeat tells the agent, as the agent uses it. */
export interface HeartbeatResult {
  readonly leaseExpiresAt: Date;
  /** The task was canceled: the agent should stop its steps and finish as canceled. */
  readonly cancelRequested: boolean;
}

/** The agent's verdict on its task. */
export type TaskOutcome = Extract<TaskStatus, 'success' | 'failed' | 'canceled' | 'timedout'>;

export const TASK_OUTCOMES: readonly TaskOutcome[] = ['success', 'failed', 'canceled', 'timedout'];

/**
 * A task token is `gyre-task.<task id>.<lease id>.<attempt>.<signature>`: the lease, signed by the
 * server (runtime/scheduler/task-token.ts mints and verifies it). The agent reads the public parts
 * (which task, which attempt) without being able to check the signature.
 */
export const TASK_TOKEN_PREFIX = 'gyre-task';

/** The signed part of a task token. */
export function taskTokenBody(lease: Lease): string {
  return `${lease.taskId}.${lease.leaseId}.${lease.attempt}`;
}

/** The task id and attempt a task token names, unverified (for naming directories and URLs). */
export function taskTokenParts(token: string): { taskId: string; attempt: string } {
  const parts = token.split('.');
  return { taskId: parts[1], attempt: parts[3] };
}
