import type { SetupRemoteDockerStep } from '../../config/plan';
import type { StepHandler } from './step-handler';

/**
 * `setup_remote_docker`: a Docker engine of the job's own (runtime/agent/remote-docker/), when the
 * agent was started with a provider (GYRE_REMOTE_DOCKER=podman); otherwise the step fails saying
 * how to enable it, rather than the job's `docker` commands failing later for no clear reason.
 */
export const setupRemoteDockerStep: StepHandler<SetupRemoteDockerStep> = async (step, ctx) => {
  const session = ctx.executor.remoteDocker;
  if (!session) {
    ctx.write(
      'setup_remote_docker needs a remote Docker engine, and this agent provides none. Start the runner (or the server, for its built-in runner) with GYRE_REMOTE_DOCKER=podman on a host with Podman; see docs/execution.md.\n',
    );
    return { status: 'failed', exitCode: null };
  }
  try {
    await session.setup(step, (text) => ctx.write(text), ctx.signal);
    return { status: 'success', exitCode: 0 };
  } catch (error) {
    if (ctx.signal.aborted) return { status: 'canceled', exitCode: null };
    ctx.write(`The remote Docker engine could not be made: ${(error as Error).message}\n`);
    return { status: 'failed', exitCode: null };
  }
};
