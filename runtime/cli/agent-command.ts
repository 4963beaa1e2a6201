import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { heartbeatEvery, runTask } from '../agent/agent';
import { createAgentClient } from '../agent/http-reporter';
import type { RetryPolicy } from '../agent/task-api';
import { createStepHandlers } from '../agent/steps';
import { createOutputStepHandlers } from '../agent/steps/output-steps';
import { createTaskExecutor } from '../agent/task-executor';
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
    token: { type: 'string' },
    'work-dir': { type: 'string' },
    'docker-socket': { type: 'string' },
    'registry-mirror': { type: 'string' },
    ...RETRY_OPTIONS,
  });
  const url = (values.url as string | undefined) ?? io.env.GYRE_URL;
  const token = (values.token as string | undefined) ?? io.env.GYRE_TASK_TOKEN;
  if (!url) throw new UsageError('agent needs --url (or GYRE_URL)');
  if (!token) throw new UsageError('agent needs --token (or GYRE_TASK_TOKEN)');
  const log = createLogger({ level: logLevel(io) });
  const client = createAgentClient({ url, token, retry: retryPolicyOf(values, io.env) });
  const { task, leaseTtlMs } = await client.fetchTask();
  const workDir = values['work-dir'] ? resolve(values['work-dir'] as string) : mkdtempSync(join(tmpdir(), 'gyre-agent-'));
  const executor = await createTaskExecutor({
    task,
    taskDir: join(workDir, task.taskId),
    log,
    dockerSocket: (values['docker-socket'] as string | undefined) ?? io.env.GYRE_DOCKER_SOCKET,
    registryMirror: (values['registry-mirror'] as string | undefined) ?? io.env.GYRE_REGISTRY_MIRROR,
  });
  const controller = new AbortController();
  // Nomad stops an allocation with SIGTERM (stop on cancel): treat it as a cancel of the task.
  process.once('SIGTERM', () => controller.abort('canceled'));
  const handlers = createStepHandlers(createOutputStepHandlers(client.output()));
  const result = await runTask({ task, reporter: client.reporter(), executor, handlers, log: log.child({ taskId: task.taskId }), heartbeatMs: heartbeatEvery(leaseTtlMs), signal: controller.signal, webUrl: url });
  if ('outcome' in result) {
    io.stderr(`task ${task.taskId}: ${result.outcome}\n`);
    return 0;
  }
  io.stderr(`task ${task.taskId}: lease lost; nothing more reported\n`);
  return 1;
}

/**
 * `gyre runner --url <gyre> --token <resource-class token> [--slots N] [--drain]`: long-polls for
 * tasks of the token's resource class and runs them. SIGTERM or SIGINT stops claiming and exits
 * after the tasks in hand finish; `--drain` also exits as soon as the queue has nothing for it.
 */
export async function runnerCommand(args: string[], io: CliIo): Promise<number> {
  const { values } = parse(args, {
    url: { type: 'string' },
    token: { type: 'string' },
    slots: { type: 'string' },
    drain: { type: 'boolean' },
    'work-dir': { type: 'string' },
    'poll-ms': { type: 'string' },
    'docker-socket': { type: 'string' },
    'registry-mirror': { type: 'string' },
    ...RETRY_OPTIONS,
  });
  const url = (values.url as string | undefined) ?? io.env.GYRE_URL;
  const token = (values.token as string | undefined) ?? io.env.GYRE_RUNNER_TOKEN;
  if (!url) throw new UsageError('runner needs --url (or GYRE_URL)');
  if (!token) throw new UsageError('runner needs --token (or GYRE_RUNNER_TOKEN)');
  const slots = values.slots === undefined ? 1 : Number(values.slots);
  if (!Number.isInteger(slots) || slots < 1 || slots > 256) throw new UsageError(`--slots (${String(values.slots)}) must be a whole number from 1 to 256`);
  const retry = retryPolicyOf(values, io.env);
  const workRoot = values['work-dir'] ? resolve(values['work-dir'] as string) : mkdtempSync(join(tmpdir(), 'gyre-runner-'));
  const log = createLogger({ level: logLevel(io) });
  const runner = startRunner({
    url,
    token,
    log,
    workRoot,
    slots,
    drain: values.drain === true,
    pollMs: values['poll-ms'] === undefined ? undefined : Number(values['poll-ms']),
    dockerSocket: (values['docker-socket'] as string | undefined) ?? io.env.GYRE_DOCKER_SOCKET,
    registryMirror: (values['registry-mirror'] as string | undefined) ?? io.env.GYRE_REGISTRY_MIRROR,
    retry,
  });
  io.stderr(`runner ${runner.id} polling ${url}\n`);
  const stop = () => {
    io.stderr(`runner ${runner.id}: finishing the task in hand, then exiting\n`);
    runner.stop();
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  await runner.done;
  process.off('SIGTERM', stop);
  process.off('SIGINT', stop);
  io.stderr(`runner ${runner.id} stopped after ${runner.completed()} task(s)\n`);
  return 0;
}
