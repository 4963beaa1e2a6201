import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { GyreError } from '../domain/errors';
import { ApiError, createApiClient, type ApiClient } from './client';
import { readSse } from './sse';

/** Output of a CLI command: results to stdout, progress and errors to stderr. */
export interface CliIo {
  stdout(text: string): void;
  stderr(text: string): void;
  readonly env: Readonly<Record<string, string | undefined>>;
  /**
   * Set when this is the `gyre` program's own process (bin/gyre.js), which took the secrets out of
   * its environment before anything else ran (`environmentBlanked`: the start block too); the
   * command may then change the process (its title). Unset for a command run inside another program.
   */
  readonly ownProcess?: { readonly environmentBlanked: boolean };
}

export class UsageError extends Error {}

const USAGE = `Usage: gyre <command> [options]

Commands:
  server [--roles=<r,…>]                   run Gyre (every role by default, one process); settings from the environment
  migrate [--wait [--timeout S]]           apply pending database migrations; --wait changes nothing and waits until they are applied
  project add <org>/<repo> [--repo <path|url>]
                                           register a project backed by a git repository (without
                                           --repo: the repository the GitHub App is installed on)
  trigger <slug> [--branch B | --tag T] [--param k=v ...] [--wait]
                                           start a pipeline; --wait follows it to the end
  pipelines <slug>                         list a project's recent pipelines
  logs <job-number> --project <slug> [--node N] [--follow]
                                           print a job's step output; --follow streams it live
  config validate|process|plan <file> ...  check, expand or plan a config file (see docs/config.md)
  orb pull|import|list ...                 fetch orbs into a bundle (connected machine), manage the orb registry (see docs/config.md)
  doctor [--runner-class C] [--nomad-class C] [--ops-url U ...]
                                           check a live install: API, TLS, token, roles, Nomad, a canary pipeline
  agent --url U --token T                  run the one task a task token names (what Nomad starts)
  runner --url U --token T [--slots N] [--drain]
                                           run tasks of a resource class (see docs/execution.md)
  resource-class add|list|token ...        manage resource classes and runner tokens
  limit project|org <key> <N|none>         set a concurrency limit
  user add|list|role|disable|enable ...    users and their roles (instance, gh/<org>, gh/<org>/<repo>)
  token create|list|revoke ...             personal and project API tokens (shown once)
  audit [--since T] [--format jsonl]       the audit log (admins)
  context list|create|delete <org> [name]  an organization's contexts (admins create and delete)
  context env list|set|unset <org> <context> [NAME]
                                           a context's variables; set reads the value from standard input
  env list|set|unset <slug> [NAME]         a project's environment variables; set reads the value from standard input
  ssh-key add|list|remove <slug> ...       a project's additional SSH keys (add_ssh_keys); add reads the private key from --file or standard input
  ssh-key checkout list|create|delete <slug> ...
                                           a project's checkout keys; create prints the public key to add to the repository
  secrets rotate-key [--no-rewrap]         add a new current key to the local key file and re-wrap every secret under it
  secrets rewrap [--batch-size N]          re-wrap secrets still under an older key (after a KMS or Vault rotation)
  tests glob|split ...                     select and split test files inside a job

Environment: GYRE_URL (default http://localhost:8080), GYRE_TOKEN (your API token).
`;

const defaultIo: CliIo = {
  stdout: (t) => process.stdout.write(t),
  stderr: (t) => process.stderr.write(t),
  env: process.env,
};

/** Entry point of the `gyre` command. */
export async function main(argv: string[], io: CliIo = defaultIo): Promise<void> {
  const code = await run(argv, io);
  if (code !== undefined) process.exitCode = code;
}

/** Runs one CLI command and returns its exit code (undefined: a server that keeps running). */
export async function run(argv: string[], io: CliIo): Promise<number | undefined> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'server': {
        const { runServer } = require('./server-command') as typeof import('./server-command');
        await runServer(rest, io);
        return undefined;
      }
      case 'migrate':
        return await (require('./migrate-command') as typeof import('./migrate-command')).migrateCommand(rest, io);
      case 'project':
        return await projectCommand(rest, io);
      case 'trigger':
        return await triggerCommand(rest, io);
      case 'pipelines':
        return await pipelinesCommand(rest, io);
      case 'logs':
        return await logsCommand(rest, io);
      case 'config': {
        const { runConfigCommand } = require('../config/cli') as typeof import('../config/cli');
        return await runConfigCommand(rest, io);
      }
      case 'orb':
        return await (require('./orb-command') as typeof import('./orb-command')).orbCommand(rest, io, clientFrom(io));
      case 'doctor':
        return await (require('./doctor-command') as typeof import('./doctor-command')).doctorCommand(rest, io);
      case 'agent':
        return await (require('./agent-command') as typeof import('./agent-command')).agentCommand(rest, io);
      case 'runner':
        return await (require('./agent-command') as typeof import('./agent-command')).runnerCommand(rest, io);
      case 'resource-class':
        return await (require('./execution-commands') as typeof import('./execution-commands')).resourceClassCommand(rest, io, clientFrom(io));
      case 'limit':
        return await (require('./execution-commands') as typeof import('./execution-commands')).limitCommand(rest, io, clientFrom(io));
      case 'user':
        return await (require('./identity-commands') as typeof import('./identity-commands')).userCommand(rest, io, clientFrom(io));
      case 'token':
        return await (require('./identity-commands') as typeof import('./identity-commands')).tokenCommand(rest, io, clientFrom(io));
      case 'audit':
        return await (require('./identity-commands') as typeof import('./identity-commands')).auditCommand(rest, io, clientFrom(io));
      case 'tests':
        return await (require('./tests-command') as typeof import('./tests-command')).testsCommand(rest, io);
      case 'context':
        return await (require('./secrets-commands') as typeof import('./secrets-commands')).contextCommand(rest, io, clientFrom(io));
      case 'secrets':
        return await (require('./secrets-key-command') as typeof import('./secrets-key-command')).secretsCommand(rest, io);
      case 'env':
        return await (require('./secrets-commands') as typeof import('./secrets-commands')).envCommand(rest, io, clientFrom(io));
      case 'ssh-key':
        return await (require('./ssh-key-commands') as typeof import('./ssh-key-commands')).sshKeyCommand(rest, io, clientFrom(io));
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        io.stdout(USAGE);
        return command === undefined ? 2 : 0;
      default:
        throw new UsageError(`unknown command '${command}'`);
    }
  } catch (error) {
    if (error instanceof UsageError) {
      io.stderr(`gyre: ${error.message}\n\n${USAGE}`);
      return 2;
    }
    if (error instanceof ApiError || error instanceof GyreError) {
      io.stderr(`gyre: ${error.message}\n`);
      return 1;
    }
    if (error instanceof TypeError && /parseArgs|option|argument/i.test(String((error as { code?: string }).code ?? error.message))) {
      io.stderr(`gyre: ${error.message}\n\n${USAGE}`);
      return 2;
    }
    throw error;
  }
}

export function clientFrom(io: CliIo): ApiClient {
  return createApiClient({ url: io.env.GYRE_URL || 'http://localhost:8080', token: io.env.GYRE_TOKEN });
}

function parse(args: string[], options: NonNullable<ParseArgsConfig['options']>) {
  try {
    return parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

const slugPath = (slug: string) => {
  const parts = slug.split('/');
  const full = parts.length === 2 ? ['gh', ...parts] : parts;
  if (full.length !== 3 || full.some((p) => !p)) throw new UsageError(`'${slug}' is not a project slug (gh/<org>/<repo>)`);
  return full.map(encodeURIComponent).join('/');
};

async function projectCommand(args: string[], io: CliIo): Promise<number> {
  const { positionals, values } = parse(args, { repo: { type: 'string' } });
  const [sub, name] = positionals;
  if (sub !== 'add') throw new UsageError(sub ? `unknown project command '${sub}' (allowed: add)` : 'project needs a subcommand: add');
  if (!name || !/^[^/]+\/[^/]+$/.test(name)) throw new UsageError('project add needs <org>/<repo>');
  const repo = values.repo as string | undefined;
  // A local path is sent absolute: the server resolves paths from its own working directory.
  // Without --repo, the server finds <org>/<repo> through its GitHub App's installations.
  const repoUrl = repo === undefined ? undefined : existsSync(repo) ? resolve(repo) : repo;
  const [org, repoName] = name.split('/');
  const project = await clientFrom(io).request<{ slug: string }>('POST', '/api/v2/projects', { org, name: repoName, ...(repoUrl ? { repo_url: repoUrl } : {}) });
  io.stdout(`${project.slug}\n`);
  return 0;
}

interface PipelineJson {
  id: string;
  number: number;
  state: string;
  created_at: string;
  errors: { message: string }[];
  vcs: { branch?: string; tag?: string; revision: string };
}
interface WorkflowJson {
  id: string;
  name: string;
  status: string;
}

async function triggerCommand(args: string[], io: CliIo): Promise<number> {
  const { positionals, values } = parse(args, {
    branch: { type: 'string' },
    tag: { type: 'string' },
    param: { type: 'string', multiple: true },
    wait: { type: 'boolean' },
  });
  const [slug] = positionals;
  if (!slug) throw new UsageError('trigger needs a project slug');
  const parameters: Record<string, string | number | boolean> = {};
  for (const pair of (values.param as string[] | undefined) ?? []) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new UsageError(`--param '${pair}' must look like name=value`);
    const raw = pair.slice(eq + 1);
    parameters[pair.slice(0, eq)] = raw === 'true' ? true : raw === 'false' ? false : /^-?\d+$/.test(raw) ? Number(raw) : raw;
  }
  const client = clientFrom(io);
  const created = await client.request<{ id: string; number: number }>('POST', `/api/v2/project/${slugPath(slug)}/pipeline`, {
    branch: values.branch,
    tag: values.tag,
    parameters,
  });
  io.stdout(`pipeline ${created.number} ${created.id}\n`);
  io.stderr(`watch it at ${client.baseUrl}/#/pipeline/${created.id}\n`);
  if (!values.wait) return 0;
  return waitForPipeline(client, created.id, io);
}

const TERMINAL_WORKFLOW = new Set(['success', 'failed', 'error', 'canceled', 'not_run', 'unauthorized']);

/** Polls a pipeline until its workflows end, printing each status change to stderr. */
async function waitForPipeline(client: ApiClient, id: string, io: CliIo): Promise<number> {
  const seen = new Map<string, string>();
  for (;;) {
    const pipeline = await client.request<PipelineJson>('GET', `/api/v2/pipeline/${id}`);
    if (pipeline.state === 'errored') {
      io.stderr(`pipeline ${pipeline.number} errored:\n${pipeline.errors.map((e) => `  ${e.message}`).join('\n')}\n`);
      return 1;
    }
    if (pipeline.state === 'created') {
      const workflows = (await client.request<{ items: WorkflowJson[] }>('GET', `/api/v2/pipeline/${id}/workflow`)).items;
      for (const w of workflows) {
        const jobs = (await client.request<{ items: { name: string; status: string; job_number?: number }[] }>('GET', `/api/v2/workflow/${w.id}/job`)).items;
        for (const j of jobs) {
          const key = `${w.id}/${j.name}`;
          if (seen.get(key) !== j.status) {
            seen.set(key, j.status);
            io.stderr(`  ${w.name} › ${j.name}${j.job_number ? ` #${j.job_number}` : ''}: ${j.status}\n`);
          }
        }
      }
      if (workflows.every((w) => TERMINAL_WORKFLOW.has(w.status))) {
        for (const w of workflows) io.stdout(`${w.name}: ${w.status}\n`);
        return workflows.every((w) => w.status === 'success') ? 0 : 1;
      }
    }
    await new Promise((r) => setTimeout(r, 500));
  }
}

async function pipelinesCommand(args: string[], io: CliIo): Promise<number> {
  const { positionals } = parse(args, {});
  const [slug] = positionals;
  if (!slug) throw new UsageError('pipelines needs a project slug');
  const client = clientFrom(io);
  const page = await client.request<{ items: PipelineJson[] }>('GET', `/api/v2/project/${slugPath(slug)}/pipeline`);
  if (page.items.length === 0) {
    io.stderr(`no pipelines yet for ${slug}\n`);
    return 0;
  }
  const rows = [['NUMBER', 'STATE', 'REF', 'REVISION', 'CREATED', 'WORKFLOWS']];
  for (const p of page.items) {
    const workflows = p.state === 'created' ? (await client.request<{ items: WorkflowJson[] }>('GET', `/api/v2/pipeline/${p.id}/workflow`)).items : [];
    rows.push([
      String(p.number),
      p.state,
      p.vcs.tag ? `tag:${p.vcs.tag}` : (p.vcs.branch ?? ''),
      p.vcs.revision.slice(0, 7),
      p.created_at,
      p.state === 'errored' ? p.errors.map((e) => e.message).join('; ').slice(0, 80) : workflows.map((w) => `${w.name}=${w.status}`).join(' '),
    ]);
  }
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  for (const r of rows) io.stdout(r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join('  ') + '\n');
  return 0;
}

interface StepJson {
  index: number;
  name: string;
  status: string;
  exit_code: number | null;
}

async function logsCommand(args: string[], io: CliIo): Promise<number> {
  const { positionals, values } = parse(args, { project: { type: 'string' }, follow: { type: 'boolean', short: 'f' }, node: { type: 'string' } });
  const [number] = positionals;
  if (!number || !/^\d+$/.test(number)) throw new UsageError('logs needs a job number');
  const slug = values.project as string | undefined;
  if (!slug) throw new UsageError('logs needs --project <slug>');
  const node = (values.node as string | undefined) ?? '0';
  if (!/^\d+$/.test(node)) throw new UsageError(`--node '${node}' must be a whole number`);
  const client = clientFrom(io);
  const base = `/api/v2/project/${slugPath(slug)}/job/${number}`;
  const job = await client.request<{ status: string; name: string }>('GET', base);
  if (values.follow) return followLogs(client, `${base}/output/stream?node_index=${node}`, io);
  const steps = (await client.request<{ items: StepJson[] }>('GET', `${base}/steps?node_index=${node}`)).items;
  for (const step of steps) {
    io.stderr(`==> ${step.name} (${step.status}${step.exit_code !== null ? `, exit ${step.exit_code}` : ''})\n`);
    const res = await client.stream(`${base}/output?node_index=${node}&step=${step.index}`);
    io.stdout(await res.text());
  }
  io.stderr(`job ${number} (${job.name}): ${job.status}\n`);
  return job.status === 'success' || job.status === 'running' || job.status === 'queued' ? 0 : 1;
}

/** Follows the SSE stream, printing output as it arrives and step boundaries to stderr. */
async function followLogs(client: ApiClient, path: string, io: CliIo): Promise<number> {
  const res = await client.stream(path);
  if (!res.body) throw new ApiError(0, 'the server sent no stream');
  let status = 'unknown';
  for await (const { event, data } of readSse(res.body as unknown as AsyncIterable<Uint8Array>)) {
    const payload = JSON.parse(data);
    if (event === 'output') io.stdout(payload.text);
    else if (event === 'step') {
      io.stderr(payload.status === 'running' ? `==> ${payload.name}\n` : `<== ${payload.name}: ${payload.status}${payload.exit_code !== null ? ` (exit ${payload.exit_code})` : ''}\n`);
    } else if (event === 'attempt') io.stderr(`==> the task was retried (attempt ${payload.attempt}); output starts again\n`);
    else if (event === 'end') status = payload.status;
  }
  io.stderr(`job finished: ${status}\n`);
  return status === 'success' ? 0 : 1;
}
