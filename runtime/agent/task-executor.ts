import { request } from 'node:http';
import { existsSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigurationError } from '../domain/errors';
import type { TaskContext } from '../agent-contract';
import type { Logger } from '../logger';
import { createDockerExecutor } from './docker-executor';
import type { Executor } from './executor';
import { DEFAULT_BUILD_UIDS, detectIsolation, parseUidRange, type Isolation, type UidRange } from './sandbox/isolation';
import { createShellExecutor } from './shell-executor';
import { createPodmanRemoteDocker } from './remote-docker/podman-provider';
import type { RemoteDockerProvider } from './remote-docker/provider';
import { withRemoteDocker } from './remote-docker/session';

/**
 * Which executor runs a task's steps (GYRE_EXECUTOR, `--executor`):
 * - `auto`: `docker` jobs in their images when a Docker Engine API socket is configured or found
 *   (/var/run/docker.sock); everything else in a shell sandbox (a build uid of its own as root,
 *   bubblewrap otherwise), or, where neither is possible, without isolation, said at start and in
 *   every job's first lines (GYRE_REQUIRE_ISOLATION=true refuses instead).
 * - `sandbox`: every job in a shell sandbox, never a container; refuses to start without one.
 * - `docker`: `docker` jobs in containers (a socket is required); other jobs as `auto` runs them.
 * - `shell`: every job in a shell as Gyre's own user, without isolation (builds you trust).
 */
export const EXECUTOR_CHOICES = ['auto', 'sandbox', 'docker', 'shell'] as const;
export type ExecutorChoice = (typeof EXECUTOR_CHOICES)[number];

export interface ExecutorSettings {
  readonly choice: ExecutorChoice;
  /** GYRE_BUILD_UIDS: uids for builds when Gyre runs as root. @default DEFAULT_BUILD_UIDS (900000-900255) */
  readonly buildUids?: UidRange;
  /** GYRE_REQUIRE_ISOLATION: refuse to start rather than run builds without isolation. @default false */
  readonly requireIsolation?: boolean;
  /** GYRE_DOCKER_SOCKET: the Docker Engine API socket for `docker` jobs. @default - /var/run/docker.sock when it answers (auto) */
  readonly dockerSocket?: string;
  /** GYRE_REGISTRY_MIRROR: a registry mirror (host[:port]) for Docker Hub pulls. */
  readonly registryMirror?: string;
  /**
   * GYRE_REMOTE_DOCKER: who provides `setup_remote_docker` engines: `off` (the step fails saying
   * how to enable it) or `podman` (a Podman service of the job's own on this host). @default off
   */
  readonly remoteDocker?: RemoteDockerChoice;
  /** GYRE_REMOTE_DOCKER_DIR: where the Podman provider keeps engines and layer caches. @default <os tmpdir>/gyre-remote-docker */
  readonly remoteDockerDir?: string;
  /** GYRE_REMOTE_DOCKER_IMAGES: images of this host's Podman every remote engine starts with (comma-separated). @default none */
  readonly remoteDockerImages?: readonly string[];
}

export const REMOTE_DOCKER_CHOICES = ['off', 'podman'] as const;
export type RemoteDockerChoice = (typeof REMOTE_DOCKER_CHOICES)[number];

/** The names a command uses for the executor settings in its messages (env names, or CLI flags). */
export interface ExecutorSettingNames {
  readonly executor: string;
  readonly uids: string;
  readonly require: string;
  readonly socket: string;
}

export const ENV_NAMES: ExecutorSettingNames = { executor: 'GYRE_EXECUTOR', uids: 'GYRE_BUILD_UIDS', require: 'GYRE_REQUIRE_ISOLATION', socket: 'GYRE_DOCKER_SOCKET' };

/** Reads the executor settings from the environment (or flags given as an env-like record); errors name the setting. */
export function readExecutorSettings(env: Readonly<Record<string, string | undefined>>, names: ExecutorSettingNames = ENV_NAMES): ExecutorSettings {
  const choice = (env[names.executor] || 'auto') as ExecutorChoice;
  if (!EXECUTOR_CHOICES.includes(choice)) throw new ConfigurationError(names.executor, `'${choice}' is not an executor (allowed: ${EXECUTOR_CHOICES.join(', ')})`);
  const buildUids = env[names.uids] ? parseUidRange(env[names.uids]!, names.uids) : DEFAULT_BUILD_UIDS;
  const raw = env[names.require];
  let requireIsolation = false;
  if (raw !== undefined && raw !== '') {
    if (/^(true|1|yes|on)$/i.test(raw)) requireIsolation = true;
    else if (!/^(false|0|no|off)$/i.test(raw)) throw new ConfigurationError(names.require, `'${raw}' is not a boolean (allowed: true or false)`);
  }
  const dockerSocket = env[names.socket] || undefined;
  const remoteDocker = (env.GYRE_REMOTE_DOCKER || 'off') as RemoteDockerChoice;
  if (!REMOTE_DOCKER_CHOICES.includes(remoteDocker)) throw new ConfigurationError('GYRE_REMOTE_DOCKER', `'${remoteDocker}' is not a remote Docker provider (allowed: ${REMOTE_DOCKER_CHOICES.join(', ')})`);
  return { choice, buildUids, requireIsolation, dockerSocket, registryMirror: env.GYRE_REGISTRY_MIRROR || undefined, remoteDocker, remoteDockerDir: env.GYRE_REMOTE_DOCKER_DIR || undefined, remoteDockerImages: (env.GYRE_REMOTE_DOCKER_IMAGES ?? '').split(',').map((i) => i.trim()).filter(Boolean) };
}

/** What a process runs tasks with, found once at its start. */
export interface Execution {
  readonly isolation: Isolation;
  /** The Engine socket `docker` jobs run through; undefined: they run in the shell sandbox. */
  readonly dockerSocket?: string;
  readonly registryMirror?: string;
  /** Where `setup_remote_docker` gets engines; undefined: the step fails saying how to enable it. */
  readonly remoteDocker?: RemoteDockerProvider;
  /** One line for the start-up log. */
  readonly summary: string;
}

/** Whether a Docker Engine API answers on this socket. */
export function engineAnswers(socketPath: string, timeoutMs = 2000): Promise<boolean> {
  if (!existsSync(socketPath)) return Promise.resolve(false);
  return new Promise((resolve) => {
    const req = request({ socketPath, path: '/_ping', method: 'GET', timeout: timeoutMs }, (res) => {
      res.resume();
      resolve((res.statusCode ?? 0) < 400);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
    req.end();
  });
}

/** Finds the isolation and the container engine the settings ask for; a setting that cannot be met is a ConfigurationError. */
export async function prepareExecution(settings: ExecutorSettings, names: ExecutorSettingNames = ENV_NAMES): Promise<Execution> {
  const { choice } = settings;
  let dockerSocket: string | undefined;
  if (choice === 'docker') {
    dockerSocket = settings.dockerSocket ?? '/var/run/docker.sock';
    if (!(await engineAnswers(dockerSocket))) throw new ConfigurationError(settings.dockerSocket ? names.socket : names.executor, `'docker' needs a Docker Engine API, and none answers on ${dockerSocket}`);
  } else if (choice === 'auto') {
    const candidate = settings.dockerSocket ?? '/var/run/docker.sock';
    if (await engineAnswers(candidate)) dockerSocket = candidate;
    else if (settings.dockerSocket) throw new ConfigurationError(names.socket, `no Docker Engine API answers on ${settings.dockerSocket}`);
  }
  const isolation = detectIsolation({
    mode: choice === 'shell' ? 'shell' : choice === 'sandbox' ? 'sandbox' : 'auto',
    buildUids: settings.buildUids,
    requireIsolation: settings.requireIsolation,
    names: { executor: names.executor, uids: names.uids, require: names.require },
  });
  let remoteDocker: RemoteDockerProvider | undefined;
  if (settings.remoteDocker === 'podman') {
    const version = spawnSync('podman', ['--version'], { encoding: 'utf8', timeout: 10_000 });
    if (version.status !== 0) throw new ConfigurationError('GYRE_REMOTE_DOCKER', `'podman' needs Podman on this host, and \`podman --version\` failed: ${(version.error?.message ?? version.stderr ?? '').trim()}`);
    const podman = createPodmanRemoteDocker({ stateDir: settings.remoteDockerDir ?? join(tmpdir(), 'gyre-remote-docker'), preloadImages: settings.remoteDockerImages });
    // What an agent that died on this host left (a service still running, its storage) goes first.
    await podman.sweep();
    remoteDocker = podman;
  }
  const summary =
    (dockerSocket ? `docker jobs run in containers through ${dockerSocket}; other jobs: ${isolation.summary}` : isolation.summary) +
    (remoteDocker ? `; setup_remote_docker: ${remoteDocker.description}` : '');
  return { isolation, dockerSocket, registryMirror: settings.registryMirror, remoteDocker, summary };
}

/**
 * Starts, in the background, what the first `slots` tasks at once would otherwise start on their
 * way to their first command (Isolation.warm: the step launcher, the file helper, a keeper and a
 * build uid for each slot), so that the first pipelines after a start, and the first burst, are
 * not slower than the rest. Where a container engine runs jobs, a shell job is the exception:
 * nothing is started for it ahead. Not awaited: a runner serves while it warms; what could not
 * be made is made by the tasks as before, and said in the log.
 */
export function warmExecution(execution: Execution, slots: number, log: Logger): void {
  if (execution.dockerSocket) return;
  execution.isolation.warm(slots).catch((error: unknown) => log.warn('could not start the build identities ahead of the first tasks; each task starts its own', { error: (error as Error)?.message ?? String(error) }));
}

export interface TaskExecutorOptions {
  /** The task as claimed: its secrets are still being read when the executor is made. */
  readonly task: TaskContext;
  /**
   * The task with its secrets, once the agent has them (rejects when it may not have them): only
   * the Docker executor waits for it, to expand image credentials. @default the task as given
   */
  readonly withSecrets?: () => Promise<TaskContext>;
  /** Where the shell executor makes the task's directory. */
  readonly taskDir: string;
  readonly log: Logger;
  readonly execution: Execution;
  /** Who runs the task (this process): the Docker executor labels its containers with it. */
  readonly owner?: string;
}

/** The executor for one task: a container for a `docker` job where an engine is used, the shell sandbox otherwise. */
export async function createTaskExecutor(options: TaskExecutorOptions): Promise<Executor> {
  const { execution } = options;
  const made = await createExecutorOf(options);
  // setup_remote_docker's engine lives with the executor: torn down by its cleanup.
  if (!execution.remoteDocker) return made;
  return withRemoteDocker(made, {
    provider: execution.remoteDocker,
    task: options.task,
    log: options.log,
    // A shell job's /tmp is shared with the host's other jobs: its certificate stays in its home.
    ...(made.hostAddress ? {} : { certDir: `${made.home}/.docker-certs` }),
  });
}

async function createExecutorOf(options: TaskExecutorOptions): Promise<Executor> {
  const { executor } = options.task.spec;
  const { execution } = options;
  if (executor.kind === 'docker' && execution.dockerSocket) {
    return createDockerExecutor({
      socketPath: execution.dockerSocket,
      images: executor.images,
      taskId: options.task.taskId,
      log: options.log,
      registryMirror: execution.registryMirror,
      resources: options.task.resources,
      owner: options.owner,
      // What `$NAME` in the images' auth and aws_auth is expanded from, just before the pull.
      secrets: (options.withSecrets ? await options.withSecrets() : options.task).secrets?.env,
    });
  }
  // The agent waits for its directories itself (Executor.ready), its first step started meanwhile.
  return createShellExecutor({ taskDir: options.taskDir, isolation: execution.isolation, early: true });
}

export const taskDirOf = (root: string, taskId: string, attempt: string | number) => join(root, `${taskId}-${attempt}`);
