import { join } from 'node:path';
import type { TaskContext } from '../dispatcher/dispatcher';
import type { Logger } from '../logger';
import { createDockerExecutor } from './docker-executor';
import type { Executor } from './executor';
import { createShellExecutor } from './shell-executor';

export interface TaskExecutorOptions {
  readonly task: TaskContext;
  /** Where the shell executor makes the task's directory. */
  readonly taskDir: string;
  readonly log: Logger;
  /** A Docker Engine API socket; jobs with `docker:` images run in containers when set. */
  readonly dockerSocket?: string;
  readonly registryMirror?: string;
}

/**
 * The executor for a task on a runner or a Nomad client: containers for `docker:` jobs when a
 * container engine is configured, the host's shell otherwise (and for `machine:` jobs).
 */
export async function createTaskExecutor(options: TaskExecutorOptions): Promise<Executor> {
  const { executor } = options.task.spec;
  if (executor.kind === 'docker' && options.dockerSocket) {
    return createDockerExecutor({
      socketPath: options.dockerSocket,
      images: executor.images,
      taskId: options.task.taskId,
      log: options.log,
      registryMirror: options.registryMirror,
    });
  }
  return createShellExecutor({ taskDir: options.taskDir });
}

export const taskDirOf = (root: string, taskId: string, attempt: string | number) => join(root, `${taskId}-${attempt}`);
