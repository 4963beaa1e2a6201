import { mkdtempSync, readFileSync, rmdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { heartbeatEvery, runTask } from '../agent/agent';
import { useAgentHeapGrowth } from '../agent/agent-heap';
import { containerOwner, removeOrphanedContainers } from '../agent/docker-executor';
import { hideArguments } from '../agent/sandbox/process-title';
import { ConfigurationError } from '../domain/errors';
import { createAgentClient } from '../agent/http-reporter';
import type { RetryPolicy } from '../agent/retries';
import { createStepHandlers } from '../agent/steps';
import { createOutputStepHandlers } from '../agent/steps/output-steps';
import { createTaskExecutor, prepareExecution, readExecutorSettings, type ExecutorSettings } from '../agent/task-executor';
import { createLogger, type LogLevel } from '../logger';
import { startRunner } from '../scheduler/runner';
import type { CliIo } from './main';
import { UsageError } from './main';

function parse(args: string[], options: NonNullable<ParseArgsConfig['options']>) {
  try {
    return parseArgs({ args, options, allowPositionals: false, strict: true });
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

const logLevel = (io: CliIo): LogLevel => (io.env.GYRE_LOG_LEVEL as LogLevel) || 'info';

/** The options both agent commands take for retrying file steps' transient failures. */
const RETRY_OPTIONS = {
  'retry-attempts': { type: 'string' },
  'retry-seconds': { type: 'string' },
} as const;

/** The options both agent commands take for their token and for how steps run. */
const EXECUTION_OPTIONS = {
  token: { type: 'string' },
  'token-file': { type: 'string' },
  executor: { type: 'string' },
  'build-uids': { type: 'string' },
  'require-isolation': { type: 'boolean' },
  'docker-socket': { type: 'string' },
  'registry-mirror': { type: 'string' },
} as const;

/**
 * The token, from `--token-file` (a file holding it), the environment (`envName`), or `--token`
 * (visible to anyone who lists processes while the command starts: warned). Tokens in the
 * environment were taken out of it by bin/gyre.js before anything ran, so no step and no reader
 * of /proc/<pid>/environ finds them; `--token` is blanked from what `ps` shows.
 */
function tokenOf(values: Record<string, unknown>, io: CliIo, envName: string, command: string): string {
  let token: string | undefined;
  const file = values['token-file'] as string | undefined;
  if (file) {
    try {
      token = readFileSync(file, 'utf8').trim();
    } catch (error) {
      throw new UsageError(`--token-file ${file} cannot be read: ${(error as Error).message}`);
    }
    if (!token) throw new UsageError(`--token-file ${file} is empty`);
  } else if (values.token !== undefined) {
    token = values.token as string;
    io.stderr(`${command}: warning: --token is visible to every user of this host in the process list while gyre starts; use --token-file or ${envName}\n`);
  } else {
    token = io.env[envName] || undefined;
  }
  if (io.ownProcess) hideArguments(`gyre ${command}`);
  if (!token) throw new UsageError(`${command} needs --token-file, ${envName} or --token`);
  return token;
}

/** Executor settings from the flags, falling back to the environment; errors name the flag. */
function executorSettingsOf(values: Record<string, unknown>, io: CliIo): ExecutorSettings {
  const flags: Record<string, string | undefined> = {
    '--executor': (values.executor as string | undefined) ?? io.env.GYRE_EXECUTOR,
    '--build-uids': (values['build-uids'] as string | undefined) ?? io.env.GYRE_BUILD_UIDS,
    '--require-isolation': values['require-isolation'] === true ? 'true' : io.env.GYRE_REQUIRE_ISOLATION,
    '--docker-socket': (values['docker-socket'] as string | undefined) ?? io.env.GYRE_DOCKER_SOCKET,
    GYRE_REGISTRY_MIRROR: (values['registry-mirror'] as string | undefined) ?? io.env.GYRE_REGISTRY_MIRROR,
    GYRE_REMOTE_DOCKER: io.env.GYRE_REMOTE_DOCKER,
    GYRE_REMOTE_DOCKER_DIR: io.env.GYRE_REMOTE_DOCKER_DIR,
    GYRE_REMOTE_DOCKER_IMAGES: io.env.GYRE_REMOTE_DOCKER_IMAGES,
  };
  try {
    return readExecutorSettings(flags, { executor: '--executor', uids: '--build-uids', require: '--require-isolation', socket: '--docker-socket' });
  } catch (error) {
    if (error instanceof ConfigurationError) throw new UsageError(error.message);
    throw error;
  }
}

/**
 * How file steps retry transient failures (a dropped connection, a 502/503/504), from
 * `--retry-attempts` / GYRE_AGENT_RETRY_ATTEMPTS (tries in all, 1 to 20; 1 turns retries off) and
 * `--retry-seconds` / GYRE_AGENT_RETRY_SECONDS (no new try starts later than this, 0 to 3600).
 */
export function retryPolicyOf(values: Record<string, unknown>, env: Readonly<Record<string, string | undefined>>): Partial<RetryPolicy> {
  const policy: { attempts?: number; budgetMs?: number } = {};
  const attempts = (values['retry-attempts'] as string | undefined) ?? env.GYRE_AGENT_RETRY_ATTEMPTS;
  if (attempts !== undefined) {
    const n = Number(attempts);
    if (!/^\d+$/.test(attempts.trim()) || n < 1 || n > 20) throw new UsageError(`--retry-attempts (or GYRE_AGENT_RETRY_ATTEMPTS) '${attempts}' must be a whole number from 1 to 20 (1: no retries)`);
    policy.attempts = n;
  }
  const seconds = (values['retry-seconds'] as string | undefined) ?? env.GYRE_AGENT_RETRY_SECONDS;
  if (seconds !== undefined) {
    const n = Number(seconds);
    if (seconds.trim() === '' || !Number.isFinite(n) || n < 0 || n > 3600) throw new UsageError(`--retry-seconds (or GYRE_AGENT_RETRY_SECONDS) '${seconds}' must be a number of seconds from 0 to 3600`);
    policy.budgetMs = Math.round(n * 1000);
  }
  return policy;
}

/**
 * `gyre agent --url <gyre> --token <task token>`: runs the one task the token names and exits.
 * This is what a Nomad allocation starts (GYRE_URL and GYRE_TASK_TOKEN in its environment).
 * Exit 0 when the task's outcome was reported (whatever it was), 1 when the lease was lost.
 */
export async function agentCommand(args: string[], io: CliIo): Promise<number> {
  const { values } = parse(args, {
    url: { type: 'string' },
    'work-dir': { type: 'string' },
    ...EXECUTION_OPTIONS,
    ...RETRY_OPTIONS,
  });
  const url = (values.url as string | undefined) ?? io.env.GYRE_URL;
  const token = tokenOf(values, io, 'GYRE_TASK_TOKEN', 'agent');
  if (io.ownProcess) useAgentHeapGrowth();
  if (!url) throw new UsageError('agent needs --url (or GYRE_URL)');
  const settings = executorSettingsOf(values, io);
  const log = createLogger({ level: logLevel(io) });
  const execution = await prepareExecution(settings, { executor: '--executor', uids: '--build-uids', require: '--require-isolation', socket: '--docker-socket' }).catch((error) => {
    throw error instanceof ConfigurationError ? new UsageError(error.message) : error;
  });
  log.info(`agent: ${execution.summary}`);
  if (execution.dockerSocket) await removeOrphanedContainers(execution.dockerSocket, log).catch(() => 0);
  const client = createAgentClient({ url, token, retry: retryPolicyOf(values, io.env) });
  // The task fetch renews the lease: the agent's own deadline counts from when it was sent.
  const fetchedAt = performance.now();
  const { task, leaseTtlMs } = await client.fetchTask();
  const workDir = workDirOf(values['work-dir'], 'gyre-agent-');
  await execution.isolation.prepareWorkRoot(workDir, '--work-dir');
  const controller = new AbortController();
  // Nomad stops an allocation with SIGTERM (stop on cancel): treat it as a cancel of the task.
  process.once('SIGTERM', () => controller.abort('canceled'));
  const handlers = createStepHandlers(createOutputStepHandlers(client.output()));
  const result = await runTask({
    task,
    reporter: client.reporter(),
    // Given the task with its secrets (image credentials may name them).
    executor: (claimed, withSecrets) => createTaskExecutor({ task: claimed, withSecrets, taskDir: join(workDir, task.taskId), log, execution, owner: containerOwner() }),
    handlers,
    log: log.child({ taskId: task.taskId }),
    heartbeatMs: heartbeatEvery(leaseTtlMs),
    leaseTtlMs,
    leaseRenewedAt: fetchedAt,
    signal: controller.signal,
    webUrl: url,
  });
  await execution.isolation.close();
  if ('outcome' in result) {
    io.stderr(`task ${task.taskId}: ${result.outcome}\n`);
    return 0;
  }
  io.stderr(`task ${task.taskId}: lease lost; nothing more reported\n`);
  return 1;
}

/**
 * `--work-dir`, or a new directory in the temporary directory that goes with the process once empty:
 * each task's box removes its own directory once nothing of the build runs. One a task left (its
 * process killed) stays: it is never removed here, with what the build may have put in it and may
 * still be changing (a `--work-dir` is reaped by the next start instead).
 */
function workDirOf(given: unknown, prefix: string): string {
  if (typeof given === 'string' && given !== '') return resolve(given);
  const made = mkdtempSync(join(tmpdir(), prefix));
  process.once('exit', () => {
    try {
      rmdirSync(made);
    } catch {
      /* not empty, or gone */
    }
  });
  return made;
}

/**
 * `gyre runner --url <gyre> --token <resource-class token> [--slots N] [--drain]`: long-polls for
 * tasks of the token's resource class and runs them. SIGTERM or SIGINT stops claiming and exits
 * after the tasks in hand finish; `--drain` also exits as soon as the queue has nothing for it.
 */
export async function runnerCommand(args: string[], io: CliIo): Promise<number> {
  const { values } = parse(args, {
    url: { type: 'string' },
    slots: { type: 'string' },
    drain: { type: 'boolean' },
    'work-dir': { type: 'string' },
    'poll-ms': { type: 'string' },
    ...EXECUTION_OPTIONS,
    ...RETRY_OPTIONS,
  });
  const url = (values.url as string | undefined) ?? io.env.GYRE_URL;
  const token = tokenOf(values, io, 'GYRE_RUNNER_TOKEN', 'runner');
  if (io.ownProcess) useAgentHeapGrowth();
  if (!url) throw new UsageError('runner needs --url (or GYRE_URL)');
  const executor = executorSettingsOf(values, io);
  const slots = values.slots === undefined ? 1 : Number(values.slots);
  if (!Number.isInteger(slots) || slots < 1 || slots > 256) throw new UsageError(`--slots (${String(values.slots)}) must be a whole number from 1 to 256`);
  const retry = retryPolicyOf(values, io.env);
  const workRoot = workDirOf(values['work-dir'], 'gyre-runner-');
  const log = createLogger({ level: logLevel(io) });
  const runner = startRunner({
    url,
    token,
    log,
    workRoot,
    slots,
    drain: values.drain === true,
    pollMs: values['poll-ms'] === undefined ? undefined : Number(values['poll-ms']),
    executor,
    retry,
  });
  io.stderr(`runner ${runner.id} polling ${url}\n`);
  const stop = () => {
    io.stderr(`runner ${runner.id}: finishing the task in hand, then exiting\n`);
    runner.stop();
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  try {
    await runner.done;
  } catch (error) {
    if (error instanceof ConfigurationError) throw new UsageError(error.message);
    throw error;
  }
  process.off('SIGTERM', stop);
  process.off('SIGINT', stop);
  io.stderr(`runner ${runner.id} stopped after ${runner.completed()} task(s)\n`);
  return 0;
}
