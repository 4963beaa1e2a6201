import type { CheckoutStep, RunStep } from '../../config/plan';
import type { TaskContext } from '../../dispatcher/dispatcher';
import type { ExecRequest } from '../executor';
import { resolveUnder, workingDirectoryOf, type StepContext, type StepHandler, type StepResult } from './step-handler';

export const DEFAULT_NO_OUTPUT_TIMEOUT_MS = 10 * 60 * 1000;

/** Runs a command through the executor and turns its end into a step result. */
export async function execute(request: ExecRequest, ctx: StepContext): Promise<StepResult> {
  const execution = ctx.executor.start(request, (chunk) => ctx.write(chunk), ctx.signal);
  const result = await execution.done;
  if (result.canceled) return { status: 'canceled', exitCode: result.exitCode };
  if (result.timedOut) {
    ctx.write(`\nToo long with no output (exceeded ${formatDuration(request.noOutputTimeoutMs ?? 0)}): the step was stopped.\n`);
    return { status: 'timedout', exitCode: result.exitCode };
  }
  return { status: result.exitCode === 0 ? 'success' : 'failed', exitCode: result.exitCode };
}

export const runStep: StepHandler<RunStep> = (step, ctx) => {
  const workingDirectory = workingDirectoryOf(ctx.task);
  return execute(
    {
      script: step.command,
      shell: step.shell ?? ctx.task.spec.shell ?? ctx.shellDefault,
      env: { ...ctx.env, ...ctx.task.spec.environment, ...(step.environment ?? {}) },
      cwd: step.workingDirectory ? resolveUnder(step.workingDirectory, workingDirectory) : workingDirectory,
      noOutputTimeoutMs: step.noOutputTimeoutMs ?? DEFAULT_NO_OUTPUT_TIMEOUT_MS,
    },
    ctx,
  );
};

export const checkoutStep: StepHandler<CheckoutStep> = (step, ctx) => {
  const workingDirectory = workingDirectoryOf(ctx.task);
  const target = step.path ? resolveUnder(step.path, workingDirectory) : workingDirectory;
  return execute(
    {
      script: checkoutScript(ctx.task),
      shell: '/bin/sh -e',
      env: { ...ctx.env, GYRE_CHECKOUT_DIR: target },
      cwd: '~',
      noOutputTimeoutMs: DEFAULT_NO_OUTPUT_TIMEOUT_MS,
    },
    ctx,
  );
};

function checkoutScript(task: TaskContext): string {
  const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  const dir = '"$GYRE_CHECKOUT_DIR"';
  return [
    `case ${dir} in "~"*) GYRE_CHECKOUT_DIR="$HOME\${GYRE_CHECKOUT_DIR#\\~}";; esac`,
    `echo "Cloning ${task.repoUrl.replace(/"/g, '')} into $GYRE_CHECKOUT_DIR"`,
    `mkdir -p ${dir}`,
    `if [ -e ${dir}/.git ]; then cd ${dir} && git fetch --quiet --force origin; else`,
    `  git clone --quiet --no-checkout -- ${q(task.repoUrl)} ${dir} && cd ${dir}; fi`,
    task.branch ? `git checkout --quiet --force -B ${q(task.branch)} ${q(task.revision)}` : `git checkout --quiet --force ${q(task.revision)}`,
    `git --no-pager log --no-color -1 --format='HEAD is now at %h %s'`,
    '',
  ].join('\n');
}

function formatDuration(ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  return `${Math.round(ms / 1000)}s`;
}
