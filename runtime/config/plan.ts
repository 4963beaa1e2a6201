/**
 * The plan: what the config compiler hands the conductor. It is the config compiled for one trigger
 * (branch or tag, pipeline parameters): orbs, commands, executors, parameters, matrix, `when` steps
 * and filters are all resolved, so the conductor and the agents never interpret config language.
 *
 * This file is the contract between `runtime/config/` (which produces plans) and the conductor,
 * dispatcher and agents (which consume them). Everything here is plain JSON-serialisable data: the
 * job spec is stored with the job and sent to agents as is.
 */

/** What the compiler needs to know about the trigger to evaluate `when`, filters and `<< pipeline.* >>`. */
export interface TriggerContext {
  /** The branch pushed, when the trigger is a branch push. */
  readonly branch?: string;
  /** The tag pushed, when the trigger is a tag. A tag trigger has no branch. */
  readonly tag?: string;
  /** Pipeline parameters supplied with the trigger (validated against `parameters:`). */
  readonly parameters?: Readonly<Record<string, string | number | boolean>>;
  /** Pipeline values (`<< pipeline.number >>`, `<< pipeline.git.revision >>`, ...). */
  readonly pipeline?: PipelineValues;
}

export interface PipelineValues {
  readonly id?: string;
  readonly number?: number;
  readonly projectGitUrl?: string;
  readonly projectType?: string;
  /** `<< pipeline.project.slug >>`, e.g. `gh/acme/app`. */
  readonly projectSlug?: string;
  readonly revision?: string;
  readonly baseRevision?: string;
  readonly branch?: string;
  readonly tag?: string;
  readonly defaultBranch?: string;
  readonly triggerSource?: string;
  /** `<< pipeline.schedule.name >>` and `.id`: the schedule (API v2) that started the pipeline. */
  readonly scheduleName?: string;
  readonly scheduleId?: string;
  /**
   * The cron of the scheduled workflow (`triggers: - schedule: {cron}`) whose tick started the
   * pipeline: of the workflows with `triggers`, only those with this cron run.
   */
  readonly scheduledWorkflowCron?: string;
  /**
   * The `pipeline.event.*` values by full name (`pipeline.event.name`: `push`, `pull_request`,
   * `api`, `schedule`; runtime/triggers/pipeline-event.ts). Any other `pipeline.event.*` is ''.
   */
  readonly event?: Readonly<Record<string, string | number | boolean>>;
}

/** The result of compiling a config for one trigger. */
export interface Plan {
  /** True when this is a setup config (`setup: true`): its workflow may continue the pipeline once. */
  readonly setup: boolean;
  readonly workflows: readonly WorkflowPlan[];
}

export interface WorkflowPlan {
  readonly name: string;
  readonly jobs: readonly JobPlan[];
}

/** Statuses a `requires` entry may wait for. `terminal` means any of the others. */
export type RequiredStatus = 'success' | 'failed' | 'canceled' | 'not_run' | 'unauthorized' | 'terminal';

export interface Requirement {
  /** The workflow-local name of the required job (after matrix/alias expansion). */
  readonly job: string;
  /** The statuses of that job that satisfy this requirement; `['success']` unless the config says. */
  readonly statuses: readonly RequiredStatus[];
}

export interface JobPlan {
  /** Workflow-local name, unique within the workflow (e.g. `test-14.17.6-docker`, `build-2`). */
  readonly name: string;
  readonly type: 'build' | 'approval' | 'no-op';
  readonly requires: readonly Requirement[];
  /** Context names whose secrets this job receives. */
  readonly contexts: readonly string[];
  /** Present for `build` jobs; approval and no-op jobs have none. */
  readonly spec?: JobSpec;
  /** `serial-group`, when set: jobs of the same group across pipelines run one at a time. */
  readonly serialGroup?: string;
}

/** Everything an agent needs to run a build job. */
export interface JobSpec {
  readonly executor: ExecutorSpec;
  readonly steps: readonly Step[];
  /** Job-level environment (executor's merged with the job's, the job winning). */
  readonly environment: Readonly<Record<string, string>>;
  /** Defaults to `~/project`. `~` is expanded by the agent. */
  readonly workingDirectory: string;
  /** Number of tasks the job becomes. Defaults to 1. */
  readonly parallelism: number;
  readonly resourceClass?: string;
  /** Job-level default shell for `run` steps. */
  readonly shell?: string;
}

export type ExecutorSpec =
  | { readonly kind: 'docker'; readonly images: readonly DockerImage[] }
  | { readonly kind: 'machine'; readonly image?: string; readonly dockerLayerCaching?: boolean }
  | { readonly kind: 'macos'; readonly xcode: string }
  | { readonly kind: 'shell' };

export interface DockerImage {
  readonly image: string;
  readonly name?: string;
  readonly entrypoint?: readonly string[];
  readonly command?: readonly string[];
  readonly user?: string;
  readonly environment?: Readonly<Record<string, string>>;
  readonly auth?: { readonly username: string; readonly password: string };
  readonly awsAuth?: Readonly<Record<string, string>>;
}

/** When a step runs, relative to the outcome of the steps before it. */
export type StepWhen = 'on_success' | 'on_fail' | 'always';

export type Step =
  | RunStep
  | CheckoutStep
  | SetupRemoteDockerStep
  | AddSshKeysStep
  | SaveCacheStep
  | RestoreCacheStep
  | StoreArtifactsStep
  | StoreTestResultsStep
  | PersistToWorkspaceStep
  | AttachWorkspaceStep;

export interface RunStep {
  readonly type: 'run';
  readonly name: string;
  readonly command: string;
  readonly shell?: string;
  readonly environment?: Readonly<Record<string, string>>;
  readonly background?: boolean;
  readonly workingDirectory?: string;
  /** Milliseconds without output before the step is stopped. Defaults to 10 minutes. */
  readonly noOutputTimeoutMs?: number;
  readonly when: StepWhen;
}

export interface CheckoutStep {
  readonly type: 'checkout';
  readonly name: string;
  readonly path?: string;
}

export interface SetupRemoteDockerStep {
  readonly type: 'setup_remote_docker';
  readonly name: string;
  readonly version?: string;
  readonly dockerLayerCaching?: boolean;
}

export interface AddSshKeysStep {
  readonly type: 'add_ssh_keys';
  readonly name: string;
  readonly fingerprints?: readonly string[];
}

export interface SaveCacheStep {
  readonly type: 'save_cache';
  readonly name: string;
  /** The key template, as written (`v1-{{ checksum "package-lock.json" }}`); the agent renders it. */
  readonly key: string;
  readonly paths: readonly string[];
  readonly when: StepWhen;
}

export interface RestoreCacheStep {
  readonly type: 'restore_cache';
  readonly name: string;
  /** Key templates tried in order; each matches as a prefix. */
  readonly keys: readonly string[];
}

export interface StoreArtifactsStep {
  readonly type: 'store_artifacts';
  readonly name: string;
  readonly path: string;
  readonly destination?: string;
}

export interface StoreTestResultsStep {
  readonly type: 'store_test_results';
  readonly name: string;
  readonly path: string;
}

export interface PersistToWorkspaceStep {
  readonly type: 'persist_to_workspace';
  readonly name: string;
  readonly root: string;
  readonly paths: readonly string[];
}

export interface AttachWorkspaceStep {
  readonly type: 'attach_workspace';
  readonly name: string;
  readonly at: string;
}

/** One problem found in a config. All problems are reported together. */
export interface ConfigProblem {
  readonly message: string;
  /** YAML path, e.g. `jobs.build.steps[2].run.command`. */
  readonly path?: string;
  /** 1-based position in the source, when known. */
  readonly line?: number;
  readonly column?: number;
}

export type CompileResult =
  | { readonly ok: true; readonly plan: Plan; readonly compiledYaml: string }
  | { readonly ok: false; readonly problems: readonly ConfigProblem[] };
