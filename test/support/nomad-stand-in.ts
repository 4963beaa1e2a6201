import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join, resolve } from 'node:path';
import { nomadBodyCheck, type NomadBodyCheck } from './nomad-api-schema';

/**
 * A stand-in for the Nomad HTTP API (no Nomad binary can run here), covering only what Gyre's
 * Nomad driver calls, as Nomad's published OpenAPI description (../shared/corpus/nomad/openapi.yaml)
 * defines it:
 * - POST /v1/jobs (RegisterJob, body JobRegisterRequest `{ Job }`) → JobRegisterResponse;
 * - GET /v1/job/{jobName}/allocations (GetJobAllocations; blocking with `index` + `wait`) →
 *   AllocationListStub[] and the X-Nomad-Index header;
 * - DELETE /v1/job/{jobName}?purge= (DeleteJob) → JobDeregisterResponse.
 * Every request needs X-Nomad-Token when `aclToken` is set (403 otherwise, as Nomad answers), and
 * a client certificate signed by `tls.ca` when TLS is on. Its one "client" runs an allocation by
 * starting `gyre <Config.args>` with the task's Env, the way the agent image's entrypoint would.
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
}

export interface StandInAllocation {
  ID: string;
  JobID: string;
  ClientStatus: 'pending' | 'running' | 'complete' | 'failed' | 'lost';
  DesiredStatus: 'run' | 'stop';
  CreateIndex: number;
  ModifyIndex: number;
  TaskGroup: string;
  TaskStates: Record<string, { State: string; Failed: boolean }> | null;
  process?: ChildProcess;
  /** What the agent wrote (stdout and stderr, the last 64 KiB): why an allocation failed. */
  output?: string;
}

export interface NomadStandIn {
  readonly url: string;
  readonly jobs: Map<string, Record<string, any>>;
  /** Every job ever registered, including purged ones. */
  readonly registered: Record<string, any>[];
  readonly allocations: StandInAllocation[];
  /** Every request, method and path, in order. */
  readonly requests: { method: string; path: string; token?: string }[];
  /** Whether registered jobs are checked against Nomad's API schema (see schemaCheck). */
  readonly schemaChecked: boolean;
  /** Each refused job's ID and what in it does not conform to Nomad's API schema. */
  readonly schemaErrors: { jobId: string; errors: string[] }[];
  options: NomadStandInOptions;
  close(): Promise<void>;
}

const ROOT = resolve(__dirname, '../..');
const JOB_TYPES = new Set(['service', 'batch', 'system', 'sysbatch']);

export async function startNomadStandIn(options: NomadStandInOptions = {}): Promise<NomadStandIn> {
  const jobs = new Map<string, Record<string, any>>();
  const allocations: StandInAllocation[] = [];
  const requests: NomadStandIn['requests'] = [];
  const registered: Record<string, any>[] = [];
  const schemaErrors: NomadStandIn['schemaErrors'] = [];
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

  const startPending = () => {
    const capacity = standIn.options.capacity ?? 16;
    for (const alloc of allocations) {
      if (allocations.filter((a) => a.ClientStatus === 'running').length >= capacity) return;
      if (alloc.ClientStatus !== 'pending' || alloc.DesiredStatus !== 'run') continue;
      if ((standIn.options.failNext ?? 0) > 0) {
        standIn.options.failNext!--;
        alloc.ClientStatus = 'failed';
        alloc.TaskStates = { agent: { State: 'dead', Failed: true } };
        alloc.ModifyIndex = bump();
        continue;
      }
      const task = jobs.get(alloc.JobID)!.TaskGroups[0].Tasks[0];
      const child = spawn(process.execPath, [join(ROOT, 'bin/gyre.js'), ...(task.Config?.args ?? [])], {
        cwd: ROOT,
        env: { ...(standIn.options.baseEnv ?? process.env), GYRE_LOG_LEVEL: 'silent', ...(task.Env ?? {}) },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      alloc.output = '';
      const keep = (d: Buffer) => (alloc.output = (alloc.output + d.toString()).slice(-65_536));
      child.stdout!.on('data', keep);
      child.stderr!.on('data', keep);
      alloc.process = child;
      alloc.ClientStatus = 'running';
      alloc.TaskStates = { agent: { State: 'running', Failed: false } };
      alloc.ModifyIndex = bump();
      child.on('exit', (code) => {
        if (process.env.GYRE_TEST_LOG === '1') console.log(`nomad stand-in: allocation of ${alloc.JobID} exited ${code}:\n${alloc.output}`);
        alloc.process = undefined;
        alloc.ClientStatus = code === 0 ? 'complete' : 'failed';
        alloc.TaskStates = { agent: { State: 'dead', Failed: code !== 0 } };
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
      allocations.push({ ID: randomUUID(), JobID: job.ID, ClientStatus: 'pending', DesiredStatus: 'run', CreateIndex: modify, ModifyIndex: modify, TaskGroup: job.TaskGroups[0].Name, TaskStates: null });
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
        allocations.filter((a) => a.JobID === jobId).map(({ process: _process, output: _output, ...stub }) => ({ ...stub, JobType: 'batch', Namespace: 'default' })),
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
        if (a.process) {
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
    requests,
    schemaChecked: Boolean(schemaCheck),
    schemaErrors,
    options,
    async close() {
      for (const a of allocations) a.process?.kill('SIGKILL');
      for (const w of [...watchers]) w();
      server.closeAllConnections?.();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
  return standIn;
}
