import type { Step } from '../../config/plan';
import { checkoutStep, runStep } from './command-steps';
import { addSshKeysStep } from './ssh-key-steps';
import { setupRemoteDockerStep } from './remote-docker-step';
import type { StepHandler, StepHandlers } from './step-handler';

/** A step type this agent cannot run yet fails the job with a message, rather than being skipped. */
const unsupported: StepHandler<Step> = async (step, ctx) => {
  ctx.write(`The step type '${step.type}' is not supported by this agent yet; the job fails rather than skip it silently.\n`);
  return { status: 'failed', exitCode: null };
};

/** The handlers an agent runs steps with; `overrides` replaces some (the output role adds its own). */
export function createStepHandlers(overrides: Partial<StepHandlers> = {}): StepHandlers {
  return {
    run: runStep,
    checkout: checkoutStep,
    setup_remote_docker: setupRemoteDockerStep,
    add_ssh_keys: addSshKeysStep,
    save_cache: unsupported,
    restore_cache: unsupported,
    store_artifacts: unsupported,
    store_test_results: unsupported,
    persist_to_workspace: unsupported,
    attach_workspace: unsupported,
    ...overrides,
  };
}
