import { execFile } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { CheckoutStep, RunStep } from '../../config/plan';
import { createTarWriter } from '../../output/tar';
import type { TaskContext } from '../../agent-contract';
import type { ExecRequest } from '../executor';
import { checkoutSshEnvironment, installCheckoutKey } from './ssh-key-steps';
import { resolveUnder, workingDirectoryOf, type StepContext, type StepHandler, type StepResult } from './step-handler';

export const DEFAULT_NO_OUTPUT_TIMEOUT_MS = 10 * 60 * 1000;

/** A promise whose rejection its taker handles, or nothing needs to (it is never left unhandled). */
function later<T>(promise: Promise<T>): Promise<T> {
  promise.catch(() => undefined);
  return promise;
}

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
  const environment = (env: Readonly<Record<string, string>>) => ({ ...env, ...ctx.task.spec.environment, ...(step.environment ?? {}) });
  return execute(
    {
      script: step.command,
      shell: step.shell ?? ctx.task.spec.shell ?? ctx.shellDefault,
      env: environment(ctx.env),
      cwd: step.workingDirectory ? resolveUnder(step.workingDirectory, workingDirectory) : workingDirectory,
      noOutputTimeoutMs: step.noOutputTimeoutMs ?? DEFAULT_NO_OUTPUT_TIMEOUT_MS,
      ...(ctx.recorded ? { gate: ctx.recorded } : {}),
      ...(ctx.recorded && ctx.envLater ? { environmentLater: later(ctx.envLater.then(environment)) } : {}),
    },
    ctx,
  );
};

export const checkoutStep: StepHandler<CheckoutStep> = async (step, ctx) => {
  const workingDirectory = workingDirectoryOf(ctx.task);
  const target = step.path ? resolveUnder(step.path, workingDirectory) : workingDirectory;
  // A repository given as a path on this host is out of the build's reach when it is isolated
  // (another uid, a sandbox, a container): the agent bundles it and copies the bundle in.
  const bundled = isLocalRepository(ctx.task.repoUrl) && !ctx.executor.seesHostPaths;
  if (bundled) {
    try {
      await copyBundleIn(ctx);
    } catch (error) {
      ctx.write(`Cannot copy ${ctx.task.repoUrl} into the job: ${(error as Error).message}\n`);
      return { status: 'failed', exitCode: null };
    }
  }
  // A repository read over SSH is read with the project's checkout key, when it has one.
  const ssh = bundled ? undefined : checkoutSshEnvironment(ctx.task);
  if (ssh) {
    try {
      await installCheckoutKey(ctx, ssh.files);
    } catch (error) {
      ctx.write(`Cannot put the checkout key into the job: ${(error as Error).message}\n`);
      return { status: 'failed', exitCode: null };
    }
  }
  return execute(
    {
      script: checkoutScript(ctx.task, bundled),
      shell: '/bin/sh -e',
      env: { ...ctx.env, GYRE_CHECKOUT_DIR: target, GIT_TERMINAL_PROMPT: '0', ...(bundled ? {} : gitAuthEnvironment(ctx.task)), ...(ssh?.env ?? {}) },
      cwd: '~',
      noOutputTimeoutMs: DEFAULT_NO_OUTPUT_TIMEOUT_MS,
    },
    ctx,
  );
};

/**
 * How the checkout's git sends the task's checkout token (a GitHub App installation's): an HTTP
 * header for the repository's host, through git's configuration in the environment
 * (GIT_CONFIG_COUNT, git 2.31 and later) of the checkout alone. It is on no command line (`ps` shows
 * those to everyone), in no file of the checkout (`.git/config` keeps the plain URL), and in no
 * other step's environment; GitHub takes it as the password of `x-access-token`.
 */
export function gitAuthEnvironment(task: TaskContext): Record<string, string> {
  const token = task.secrets?.gitToken;
  if (!token || !/^https?:\/\//.test(task.repoUrl)) return {};
  const origin = new URL(task.repoUrl).origin;
  return {
    GIT_CONFIG_COUNT: '1',
    GIT_CONFIG_KEY_0: `http.${origin}/.extraheader`,
    GIT_CONFIG_VALUE_0: `Authorization: Basic ${Buffer.from(`x-access-token:${token}`).toString('base64')}`,
  };
}

/** Where a bundled repository lands, relative to $HOME; the checkout removes it. */
const BUNDLE = '.gyre-checkout.bundle';

/** A repository named by a path on this host (not a URL, not `host:path`). */
export function isLocalRepository(url: string): boolean {
  return url.startsWith('/') || url.startsWith('./') || url.startsWith('../') || url.startsWith('file://');
}

/** Bundles every ref of the repository (as the agent, which may read it) and unpacks the bundle into $HOME as the build. */
async function copyBundleIn(ctx: StepContext): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'gyre-checkout-'));
  try {
    const file = join(dir, 'repo.bundle');
    const repo = ctx.task.repoUrl.replace(/^file:\/\//, '');
    await promisify(execFile)('git', ['-c', `safe.directory=${repo}`, '-C', repo, 'bundle', 'create', '--quiet', file, '--all'], {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', GIT_TERMINAL_PROMPT: '0', LC_ALL: 'C' },
      maxBuffer: 1024 * 1024,
    });
    const { size, mtimeMs } = await stat(file);
    const writer = createTarWriter();
    const extracting = ctx.executor.extract('~', writer.tar);
    extracting.catch((error: Error) => writer.fail(error));
    const writing = writer
      .add({ name: BUNDLE, type: 'file', size, mode: 0o600, mtime: mtimeMs / 1000 }, createReadStream(file))
      .then(() => writer.end())
      .catch((error: Error) => writer.fail(error));
    await Promise.all([extracting, writing]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function checkoutScript(task: TaskContext, bundled: boolean): string {
  const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  const dir = '"$GYRE_CHECKOUT_DIR"';
  const bundle = `"$HOME/${BUNDLE}"`;
  const lines = [
    `case ${dir} in "~"*) GYRE_CHECKOUT_DIR="$HOME\${GYRE_CHECKOUT_DIR#\\~}";; esac`,
    `echo "Cloning ${task.repoUrl.replace(/"/g, '')} into $GYRE_CHECKOUT_DIR"`,
    `[ -d ${dir} ] || mkdir -p ${dir}`,
  ];
  if (bundled) {
    lines.push(
      `if [ -e ${dir}/.git ]; then cd ${dir} && git fetch --quiet --force ${bundle} '+refs/heads/*:refs/remotes/origin/*' '+refs/tags/*:refs/tags/*'; else`,
      `  git clone --quiet --no-checkout -- ${bundle} ${dir} && cd ${dir} && git remote set-url origin ${q(task.repoUrl)}; fi`,
      `rm -f ${bundle}`,
    );
  } else {
    lines.push(
      `if [ -e ${dir}/.git ]; then cd ${dir} && git fetch --quiet --force origin; else`,
      `  git clone --quiet --no-checkout -- ${q(task.repoUrl)} ${dir} && cd ${dir}; fi`,
    );
  }
  // A fork's pull request is on no branch of the repository: its ref is fetched too.
  if (task.checkoutRef && /^refs\/[A-Za-z0-9._\/-]{1,200}$/.test(task.checkoutRef) && !task.checkoutRef.includes('..')) {
    lines.push(`git fetch --quiet --force origin ${q(`+${task.checkoutRef}:refs/remotes/origin/${task.checkoutRef.slice('refs/'.length)}`)}`);
  }
  lines.push(
    task.branch ? `git checkout --quiet --force -B ${q(task.branch)} ${q(task.revision)}` : `git checkout --quiet --force ${q(task.revision)}`,
    `git --no-pager log --no-color -1 --format='HEAD is now at %h %s'`,
    '',
  );
  return lines.join('\n');
}

function formatDuration(ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  return `${Math.round(ms / 1000)}s`;
}
