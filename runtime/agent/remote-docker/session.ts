import { randomInt } from 'node:crypto';
import type { SetupRemoteDockerStep } from '../../config/plan';
import type { TaskContext } from '../../agent-contract';
import type { Logger } from '../../logger';
import type { Executor } from '../executor';
import { jobFilesTar } from '../job-tools/job-dir';
import type { RemoteDockerEngine, RemoteDockerProvider } from './provider';

/** `setup_remote_docker` for one task: made by `withRemoteDocker`, used by the step's handler. */
export interface RemoteDockerSession {
  /**
   * Makes the task's engine, writes the job's client certificate into the job and sets
   * DOCKER_HOST, DOCKER_TLS_VERIFY and DOCKER_CERT_PATH for every later step. Rejects with a
   * message for the step's output when the engine cannot be made.
   */
  setup(step: SetupRemoteDockerStep, write: (text: string) => unknown, signal: AbortSignal): Promise<void>;
}

export interface RemoteDockerOptions {
  readonly provider: RemoteDockerProvider;
  readonly task: TaskContext;
  readonly log: Logger;
  /**
   * Where the job's client certificate goes, as the commands see it. @default `/tmp/docker-certs<random>`,
   * as CircleCI's remote Docker sets DOCKER_CERT_PATH
   */
  readonly certDir?: string;
}

/**
 * The task's executor with `setup_remote_docker` attached: once the step has run, every command
 * started gets the engine's DOCKER_* variables (a step's own `environment:` may still override
 * them), and `cleanup` tears the engine down before the executor's own cleanup, whichever way the
 * job ended (the agent always calls it: success, failure, cancel, lost lease).
 */
export function withRemoteDocker(executor: Executor, options: RemoteDockerOptions): Executor {
  let engine: RemoteDockerEngine | undefined;
  let provisioning: Promise<RemoteDockerEngine> | undefined;
  let env: Record<string, string> = {};
  const session: RemoteDockerSession = {
    async setup(step, write, signal) {
      if (engine) {
        write(`The remote Docker engine of this job is already set up (${engine.host}).\n`);
        return;
      }
      if (step.version !== undefined) {
        write(`Note: version: ${step.version} is ignored (as on CircleCI server): the engine is ${options.provider.description}, with the Docker API version it speaks.\n`);
      }
      const reachableAt = executor.hostAddress ? await executor.hostAddress() : '127.0.0.1';
      provisioning = options.provider.provision({
        taskId: options.task.taskId,
        projectSlug: options.task.projectSlug,
        dockerLayerCaching: step.dockerLayerCaching === true,
        resources: options.task.resources,
        reachableAt,
        signal,
      });
      engine = await provisioning;
      const certDir = options.certDir ?? `/tmp/docker-certs${randomInt(100_000_000, 999_999_999)}`;
      const files = Object.entries(engine.clientTls).map(([path, content]) => ({ path, mode: 0o644, content: Buffer.from(content) }));
      await executor.extract(certDir, jobFilesTar(files));
      env = { DOCKER_HOST: engine.host, DOCKER_TLS_VERIFY: '1', DOCKER_CERT_PATH: certDir };
      write(`Remote Docker engine: ${engine.summary}.\n`);
      write(`DOCKER_HOST=${engine.host} DOCKER_TLS_VERIFY=1 DOCKER_CERT_PATH=${certDir} are set for the following steps.\n`);
    },
  };
  const teardown = async () => {
    // A provision still under way (a cancel during the step) is waited for, then torn down.
    const made = engine ?? (await provisioning?.catch(() => undefined));
    engine = undefined;
    provisioning = undefined;
    env = {};
    await made?.teardown().catch((error) => options.log.warn('the remote Docker engine could not be torn down', { taskId: options.task.taskId, error: (error as Error).message }));
  };
  return {
    home: executor.home,
    seesHostPaths: executor.seesHostPaths,
    notice: executor.notice,
    jobDir: executor.jobDir,
    remoteDocker: session,
    hasBash: () => executor.hasBash(),
    makeWorkingDirectory: executor.makeWorkingDirectory?.bind(executor),
    hostAddress: executor.hostAddress?.bind(executor),
    // What the executor does with a step's gate and its readiness is its own: passed on as they are.
    holdsSteps: executor.holdsSteps,
    ready: executor.ready,
    start: (request, onOutput, signal) => executor.start({ ...request, env: { ...env, ...request.env } }, onOutput, signal),
    archive: (root, patterns) => executor.archive(root, patterns),
    extract: (dest, tar, limits) => executor.extract(dest, tar, limits),
    async cleanup() {
      try {
        await teardown();
      } finally {
        await executor.cleanup();
      }
    },
  };
}
