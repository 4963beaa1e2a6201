import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join, resolve } from 'node:path';
import { nomadBodyCheck, type NomadBodyCheck } from './nomad-api-schema';
import { dockerTaskConfigErrors } from './nomad-docker-config';

/**
 * A stand-in for the Nomad HTTP API (no Nomad binary can run here), covering only what Gyre's
 * Nomad driver calls, as Nomad's published OpenAPI description (../shared/corpus/nomad/openapi.yaml)
 * defines it:
 * - POST /v1/jobs (RegisterJob, body JobRegisterRequest `{ Job }`) → JobRegisterResponse;
 * - GET /v1/job/{jobName}/allocations (GetJobAllocations; blocking with `index` + `wait`) →
 *   AllocationListStub[] and the X-Nomad-Index header;
 * - DELETE /v1/job/{jobName}?purge= (DeleteJob) → JobDeregisterResponse.
 * Every request needs X-Nomad-Token when `aclToken` is set (403 otherwise, as Nomad answers), and
 * a client certificate signed by `tls.ca` when TLS is on.
 *
 * Its one "client" runs an allocation as a Nomad client with the docker driver would. First it
 * checks the task's driver `config` against the docker driver's own spec
 * (test/support/nomad-docker-config.ts, from Nomad's source): a key the driver does not define, a
 * value of the wrong type or a missing `image` fails the allocation with a "Failed Validation"
 * event, as a Nomad client fails it. Then, with `client: 'podman'`, it runs the task's image with
 * Podman (`podman run`): its entrypoint, command and args, Env (and the NOMAD_* variables a task
 * gets), User, `network_mode`, `mount` blocks and `volumes` (host paths only where the plugin
 * allows volumes), Resources as CPU shares and a memory limit; an image the engine lacks fails the
 * allocation as a failed pull does (nothing is pulled here). With `client: 'process'` (the default)
 * it starts `gyre <Config.args>` on this host with the task's Env, as the agent image's entrypoint
 * would, without a container (mounts, user and network mode do not apply). Either way the
 * allocation goes pending → running → complete or failed, with the task's events.
 *
 * Every registered job is checked against the JobRegisterRequest schema of that description when
 * it is there (test/support/nomad-api-schema.ts): a job that does not conform is refused with 400
 * and its errors kept in `schemaErrors`. That is stricter than Nomad, which drops fields it does
 * not know without a word; here a misspelt field fails the test that sent it.
 */
export interface NomadStandInOptions {
  readonly aclToken?: string;
  readonly tls?: { readonly key: string; readonly cert: string; readonly ca: string };
  /** Allocations that run at once; the rest stay pending. @default 16 */
  readonly capacity?: number;
  /** Makes the next N allocations fail at once without running anything (a client lost). */
  failNext?: number;
  /**
   * The environment an allocation's agent starts with before the task's Env, as the agent image
   * would give it. @default process.env (the test's own)
   */
  readonly baseEnv?: Record<string, string | undefined>;
  /**
   * Checks registered jobs against Nomad's API schema. @default - the check of
   * ../shared/corpus/nomad/openapi.yaml when it is there, else none
   */
  readonly schemaCheck?: NomadBodyCheck | false;
  /** How the client runs an allocation: as a process on this host, or its container with Podman. @default 'process' */
  readonly client?: 'process' | 'podman';
  /**
   * The client's docker plugin configuration (`plugin "docker" { config { … } }`). @default - as
   * the distribution's client bootstrap writes it: volumes enabled, privileged containers not allowed
   */
  readonly dockerPlugin?: { readonly volumesEnabled?: boolean; readonly allowPrivileged?: boolean };
}

export interface StandInTaskEvent {
  Type: string;
  Time: number;
  DisplayMessage: string;
  ValidationError?: string;
  DriverError?: string;
  ExitCode?: number;
}

export interface StandInAllocation {
  ID: string;
  JobID: string;
  ClientStatus: 'pending' | 'running' | 'complete' | 'failed' | 'lost';
  DesiredStatus: 'run' | 'stop';
  CreateIndex: number;
  ModifyIndex: number;
  TaskGroup: string;
  TaskStates: Record<string, { State: string; Failed: boolean; Events: StandInTaskEvent[] }> | null;
  process?: ChildProcess;
  /** The Podman container of the allocation (client 'podman'). */
  container?: string;
  /** What the agent wrote (stdout and stderr, the last 64 KiB): why an allocation failed. */
  output?: string;
}

export interface NomadStandIn {
  readonly url: string;
  readonly jobs: Map<string, Record<string, any>>;
  /** Every job ever registered, including purged ones. */
  readonly registered: Record<string, any>[];
  readonly allocations: StandInAllocation[];
  /** Every allocation ever made, including those of purged jobs. */
  readonly allAllocations: StandInAllocation[];
  /** Every request, method and path, in order. */
  readonly requests: { method: string; path: string; token?: string }[];
  /** Whether registered jobs are checked against Nomad's API schema (see schemaCheck). */
  readonly schemaChecked: boolean;
  /** Each refused job's ID and what in it does not conform to Nomad's API schema. */
  readonly schemaErrors: { jobId: string; errors: string[] }[];
  /** Each job whose task's driver `config` the docker driver refused, and why. */
  readonly configErrors: { jobId: string; errors: string[] }[];
  options: NomadStandInOptions;
  close(): Promise<void>;
}

const ROOT = resolve(__dirname, '../..');
const JOB_TYPES = new Set(['service', 'batch', 'system', 'sysbatch']);
/** The label on every container the stand-in starts (and removes when it closes). */
export const STAND_IN_LABEL = 'gyre.nomad-stand-in';
/** Docker `config` keys with no effect here: nothing can be pulled, and logs are read from Podman. */
const NOT_APPLICABLE = new Set(['force_pull', 'image_pull_timeout', 'auth', 'auth_soft_fail', 'logging']);

/** How the docker driver starts a task's container, as `podman run` arguments; throws what Nomad's driver would refuse. */
export function podmanRunArgs(
  task: Record<string, any>,
  options: { name: string; env: Record<string, string>; volumesEnabled: boolean; allowPrivileged: boolean },
): string[] {
  const config = task.Config as Record<string, any>;
  // Removed when it ends, as Nomad's garbage collection would in time.
  const args = ['run', '--rm', '--name', options.name, '--label', `${STAND_IN_LABEL}=1`, '--pull', 'never', '--stop-timeout', '5'];
  const list = (v: unknown): any[] => (v === undefined || v === null ? [] : Array.isArray(v) ? v : [v]);
  const hostPath = (source: string) => {
    if (!source.startsWith('/')) throw new Error(`the stand-in does not emulate task-directory mounts: ${JSON.stringify(source)}`);
    if (!options.volumesEnabled) throw new Error(`volumes are not enabled; cannot mount host path: ${JSON.stringify(source)}`);
    return source;
  };
  for (const [key, value] of Object.entries(config)) {
    if (value === undefined || value === null || key === 'image' || key === 'args' || key === 'command' || NOT_APPLICABLE.has(key)) continue;
    switch (key) {
      case 'entrypoint':
        args.push('--entrypoint', JSON.stringify(list(value)));
        break;
      case 'network_mode':
        args.push('--network', value === 'default' ? 'bridge' : String(value));
        break;
      case 'mount':
      case 'mounts':
        for (const m of list(value)) {
          const type = m.type ?? 'volume';
          if (type !== 'bind') throw new Error(`the stand-in emulates bind mounts only, not ${type}`);
          args.push('--mount', `type=bind,source=${hostPath(String(m.source))},target=${m.target}${m.readonly ? ',readonly=true' : ''}`);
        }
        break;
      case 'volumes':
        for (const v of list(value)) {
          const [source, ...rest] = String(v).split(':');
          args.push('--volume', [hostPath(source), ...rest].join(':'));
        }
        break;
      case 'work_dir':
        args.push('--workdir', String(value));
        break;
      case 'hostname':
        args.push('--hostname', String(value));
        break;
      case 'labels':
        for (const map of list(value)) for (const [k, v] of Object.entries(map)) args.push('--label', `${k}=${v}`);
        break;
      case 'init':
        if (value === true) args.push('--init');
        break;
      case 'readonly_rootfs':
        if (value === true) args.push('--read-only');
        break;
      case 'privileged':
        if (value === true && !options.allowPrivileged) throw new Error('Docker privileged mode is disabled on this Nomad agent');
        if (value === true) args.push('--privileged');
        break;
      case 'cap_add':
      case 'cap_drop':
        for (const c of list(value)) args.push(`--${key.replace('_', '-')}`, String(c));
        break;
      case 'security_opt':
      case 'group_add':
        for (const o of list(value)) args.push(`--${key.replace('_', '-')}`, String(o));
        break;
      case 'extra_hosts':
        for (const h of list(value)) args.push('--add-host', String(h));
        break;
      case 'pids_limit':
        args.push('--pids-limit', String(value));
        break;
      default:
        throw new Error(`the Nomad stand-in does not emulate the docker driver's ${JSON.stringify(key)}`);
    }
  }
  if (task.User) args.push('--user', String(task.User));
  // Nomad's docker driver: CPU (MHz) as the container's CPU shares, MemoryMB as its memory limit.
  if (task.Resources?.CPU) args.push('--cpu-shares', String(Math.max(2, task.Resources.CPU)));
  if (task.Resources?.MemoryMB) args.push('--memory', `${task.Resources.MemoryMB}m`);
  // Values go in Podman's environment, not on its command line (the task token is among them).
  for (const name of Object.keys(options.env)) args.push('--env', name);
  args.push(String(config.image));
  const command = config.command ? [String(config.command)] : [];
  args.push(...command, ...list(config.args).map(String));
  return args;
}

export async function startNomadStandIn(options: NomadStandInOptions = {}): Promise<NomadStandIn> {
  const jobs = new Map<string, Record<string, any>>();
  const allocations: StandInAllocation[] = [];
  const allAllocations: StandInAllocation[] = [];
  const requests: NomadStandIn['requests'] = [];
  const registered: Record<string, any>[] = [];
  const schemaErrors: NomadStandIn['schemaErrors'] = [];
  const configErrors: NomadStandIn['configErrors'] = [];
  const schemaCheck = options.schemaCheck === false ? undefined : options.schemaCheck ?? nomadBodyCheck('JobRegisterRequest');
  let index = 1;
  const watchers = new Set<() => void>();
  const bump = () => {
    index++;
    for (const w of [...watchers]) w();
    return index;
  };

  const send = (res: ServerResponse, status: number, body: unknown) => {
    const text = typeof body === 'string' ? body : JSON.stringify(body);
    res.writeHead(status, { 'Content-Type': typeof body === 'string' ? 'text/plain' : 'application/json', 'X-Nomad-Index': String(index) });
    res.end(text);
  };

  const event = (alloc: StandInAllocation, e: Omit<StandInTaskEvent, 'Time'>, state: string, failed: boolean) => {
    const events = [...(alloc.TaskStates?.agent?.Events ?? []), { ...e, Time: Date.now() * 1e6 }];
    alloc.TaskStates = { agent: { State: state, Failed: failed, Events: events } };
  };
  const fail = (alloc: StandInAllocation, e: Omit<StandInTaskEvent, 'Time'>) => {
    alloc.ClientStatus = 'failed';
    event(alloc, e, 'dead', true);
    alloc.ModifyIndex = bump();
  };

  const startPending = () => {
    const capacity = standIn.options.capacity ?? 16;
    for (const alloc of allocations) {
      if (allocations.filter((a) => a.ClientStatus === 'running').length >= capacity) return;
      if (alloc.ClientStatus !== 'pending' || alloc.DesiredStatus !== 'run') continue;
      if ((standIn.options.failNext ?? 0) > 0) {
        standIn.options.failNext!--;
        fail(alloc, { Type: 'Driver Failure', DisplayMessage: 'the client was lost', DriverError: 'the client was lost' });
        continue;
      }
      const job = jobs.get(alloc.JobID)!;
      const task = job.TaskGroups[0].Tasks[0];
      if (task.Driver === 'docker') {
        const errors = dockerTaskConfigErrors(task.Config);
        if (errors.length > 0) {
          configErrors.push({ jobId: alloc.JobID, errors });
          const message = `failed to parse config: \n${errors.map((e) => `\t* ${e}`).join('\n')}`;
          fail(alloc, { Type: 'Failed Validation', DisplayMessage: message, ValidationError: message });
          continue;
        }
      }
      // The variables Nomad gives every task, then the task's own.
      const env: Record<string, string> = {
        NOMAD_ALLOC_ID: alloc.ID,
        NOMAD_JOB_ID: alloc.JobID,
        NOMAD_JOB_NAME: String(job.Name ?? alloc.JobID),
        NOMAD_GROUP_NAME: alloc.TaskGroup,
        NOMAD_TASK_NAME: String(task.Name),
        NOMAD_CPU_LIMIT: String(task.Resources?.CPU ?? ''),
        NOMAD_MEMORY_LIMIT: String(task.Resources?.MemoryMB ?? ''),
        ...(task.Env ?? {}),
      };
      let child: ChildProcess;
      if ((standIn.options.client ?? 'process') === 'podman') {
        const image = String(task.Config?.image ?? '');
        if (spawnSync('podman', ['image', 'exists', image]).status !== 0) {
          const message = `Failed to pull \`${image}\`: the image is not on this client, and nothing can be pulled here`;
          fail(alloc, { Type: 'Driver Failure', DisplayMessage: message, DriverError: message });
          continue;
        }
        const plugin = standIn.options.dockerPlugin ?? {};
        const name = `gyre-nomad-${alloc.ID}`;
        let args: string[];
        try {
          args = podmanRunArgs(task, { name, env, volumesEnabled: plugin.volumesEnabled ?? true, allowPrivileged: plugin.allowPrivileged ?? false });
        } catch (error) {
          const message = `failed to create container: ${(error as Error).message}`;
          fail(alloc, { Type: 'Driver Failure', DisplayMessage: message, DriverError: message });
          continue;
        }
        alloc.container = name;
        child = spawn('podman', args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
      } else {
        child = spawn(process.execPath, [join(ROOT, 'bin/gyre.js'), ...(task.Config?.args ?? [])], {
          cwd: ROOT,
          env: { ...(standIn.options.baseEnv ?? process.env), GYRE_LOG_LEVEL: 'silent', ...env },
          stdio: ['ignore', 'pipe', 'pipe'],
        });
      }
      alloc.output = '';
      const keep = (d: Buffer) => (alloc.output = (alloc.output + d.toString()).slice(-65_536));
      child.stdout!.on('data', keep);
      child.stderr!.on('data', keep);
      alloc.process = child;
      alloc.ClientStatus = 'running';
      event(alloc, { Type: 'Started', DisplayMessage: 'Task started by client' }, 'running', false);
      alloc.ModifyIndex = bump();
      child.on('exit', (code) => {
        if (process.env.GYRE_TEST_LOG === '1') console.log(`nomad stand-in: allocation of ${alloc.JobID} exited ${code}:\n${alloc.output}`);
        alloc.process = undefined;
        alloc.ClientStatus = code === 0 ? 'complete' : 'failed';
        event(alloc, { Type: 'Terminated', DisplayMessage: `Exit Code: ${code}`, ExitCode: code ?? -1 }, 'dead', code !== 0);
        alloc.ModifyIndex = bump();
        startPending();
      });
    }
  };

  const readJson = (req: IncomingMessage) =>
    new Promise<any>((resolveBody, reject) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        try {
          resolveBody(JSON.parse(Buffer.concat(chunks).toString('utf8') || 'null'));
        } catch (error) {
          reject(error);
        }
      });
    });

  /** `wait` is a duration like `5s` or `250ms`; Nomad caps it at 10 minutes. */
  const waitMs = (text: string | null) => {
    const m = /^(\d+)(ms|s|m)?$/.exec(text ?? '');
    if (!m) return 300_000;
    const n = Number(m[1]);
    return Math.min(600_000, m[2] === 'ms' ? n : m[2] === 'm' ? n * 60_000 : n * 1000);
  };

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://nomad');
    const token = req.headers['x-nomad-token'] as string | undefined;
    requests.push({ method: req.method ?? '', path: url.pathname + url.search, token });
    if (standIn.options.aclToken && token !== standIn.options.aclToken) return send(res, 403, 'Permission denied');
    // GetStatusLeader: the leader's RPC address, as a JSON string.
    if (req.method === 'GET' && url.pathname === '/v1/status/leader') return send(res, 200, JSON.stringify('127.0.0.1:4647'));
    if (req.method === 'POST' && url.pathname === '/v1/jobs') {
      const body = await readJson(req).catch(() => undefined);
      const job = body?.Job;
      if (!job || typeof job.ID !== 'string' || !job.ID) return send(res, 400, 'Job ID does not match request');
      const errors = schemaCheck?.(body) ?? [];
      if (errors.length > 0) {
        schemaErrors.push({ jobId: job.ID, errors });
        return send(res, 400, `${errors.length} error(s) occurred (not in Nomad's API schema, JobRegisterRequest):\n${errors.map((e) => `\t* ${e}`).join('\n')}`);
      }
      if (!JOB_TYPES.has(job.Type)) return send(res, 400, `1 error occurred:\n\t* Invalid job type: "${job.Type}"`);
      const task = job.TaskGroups?.[0]?.Tasks?.[0];
      if (!task?.Name || !task?.Driver) return send(res, 400, '1 error occurred:\n\t* Missing task group or task');
      if (jobs.has(job.ID)) return send(res, 400, `job ${job.ID} already exists`);
      jobs.set(job.ID, job);
      registered.push(job);
      const modify = bump();
      const allocation: StandInAllocation = { ID: randomUUID(), JobID: job.ID, ClientStatus: 'pending', DesiredStatus: 'run', CreateIndex: modify, ModifyIndex: modify, TaskGroup: job.TaskGroups[0].Name, TaskStates: null };
      allocations.push(allocation);
      allAllocations.push(allocation);
      setImmediate(startPending);
      return send(res, 200, { EvalID: randomUUID(), EvalCreateIndex: modify, JobModifyIndex: modify, Index: modify, KnownLeader: true, LastContact: 0, Warnings: '' });
    }
    const allocs = /^\/v1\/job\/([^/]+)\/allocations$/.exec(url.pathname);
    if (req.method === 'GET' && allocs) {
      const jobId = decodeURIComponent(allocs[1]);
      const since = Number(url.searchParams.get('index') ?? req.headers.index ?? 0);
      if (since > 0 && since >= index) {
        await new Promise<void>((resolveWait) => {
          const done = () => {
            clearTimeout(timer);
            watchers.delete(done);
            resolveWait();
          };
          const timer = setTimeout(done, waitMs(url.searchParams.get('wait')));
          watchers.add(done);
        });
      }
      return send(
        res,
        200,
        allocations.filter((a) => a.JobID === jobId).map(({ process: _process, output: _output, container: _container, ...stub }) => ({ ...stub, JobType: 'batch', Namespace: 'default' })),
      );
    }
    const job = /^\/v1\/job\/([^/]+)$/.exec(url.pathname);
    if (req.method === 'DELETE' && job) {
      const jobId = decodeURIComponent(job[1]);
      if (!jobs.has(jobId)) return send(res, 404, 'job not found');
      for (const a of allocations.filter((x) => x.JobID === jobId)) {
        a.DesiredStatus = 'stop';
        if (a.ClientStatus === 'pending') a.ClientStatus = 'complete';
        // Nomad's kill: SIGTERM, then SIGKILL after the kill timeout (5 s by default).
        if (a.process && a.container) {
          spawn('podman', ['stop', '--time', '5', a.container], { stdio: 'ignore' });
        } else if (a.process) {
          const p = a.process;
          p.kill('SIGTERM');
          setTimeout(() => p.exitCode === null && p.kill('SIGKILL'), 5000).unref();
        }
        a.ModifyIndex = bump();
      }
      if (url.searchParams.get('purge') === 'true') {
        jobs.delete(jobId);
        for (let i = allocations.length - 1; i >= 0; i--) if (allocations[i].JobID === jobId && !allocations[i].process) allocations.splice(i, 1);
      }
      return send(res, 200, { EvalID: randomUUID(), EvalCreateIndex: index, JobModifyIndex: index, Index: index });
    }
    return send(res, 404, `Invalid URL: ${url.pathname}`);
  };

  const listener = (req: IncomingMessage, res: ServerResponse) => {
    handle(req, res).catch((error) => send(res, 500, String(error)));
  };
  const server = options.tls
    ? createHttpsServer({ key: options.tls.key, cert: options.tls.cert, ca: options.tls.ca, requestCert: true, rejectUnauthorized: true }, listener)
    : createHttpServer(listener);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const standIn: NomadStandIn = {
    url: `${options.tls ? 'https' : 'http'}://127.0.0.1:${(server.address() as AddressInfo).port}`,
    jobs,
    registered,
    allocations,
    allAllocations,
    requests,
    schemaChecked: Boolean(schemaCheck),
    schemaErrors,
    configErrors,
    options,
    async close() {
      for (const a of allocations) {
        if (a.process && a.container) spawnSync('podman', ['rm', '--force', '--time', '0', a.container], { stdio: 'ignore' });
        a.process?.kill('SIGKILL');
      }
      for (const w of [...watchers]) w();
      server.closeAllConnections?.();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
  return standIn;
}
