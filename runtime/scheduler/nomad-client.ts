import { readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';

/** How the scheduler reaches Nomad: NOMAD_ADDR, NOMAD_TOKEN (ACL), NOMAD_CACERT / NOMAD_CLIENT_CERT / NOMAD_CLIENT_KEY (mTLS). */
export interface NomadConnection {
  readonly address: string;
  readonly token?: string;
  readonly caCertFile?: string;
  readonly clientCertFile?: string;
  readonly clientKeyFile?: string;
  readonly namespace?: string;
  readonly region?: string;
}

export class NomadError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** The slice of an allocation the driver reads (AllocationListStub in Nomad's API). */
export interface NomadAllocation {
  readonly ID: string;
  readonly JobID: string;
  /** pending, running, complete, failed, lost, unknown */
  readonly ClientStatus: string;
  readonly DesiredStatus: string;
  readonly ModifyIndex: number;
  readonly TaskStates?: Record<string, NomadTaskState> | null;
}

/** A task's state in an allocation, with the events that say why it failed (TaskState, TaskEvent). */
export interface NomadTaskState {
  readonly State: string;
  readonly Failed: boolean;
  readonly Events?: readonly { readonly Type: string; readonly DisplayMessage?: string; readonly ValidationError?: string; readonly DriverError?: string }[] | null;
}

/** The few Nomad HTTP API calls the driver uses. */
export interface NomadClient {
  registerJob(job: Record<string, unknown>): Promise<{ EvalID?: string; JobModifyIndex?: number }>;
  /** A blocking query: answers when the allocations change past `index`, or after `waitSeconds`. */
  jobAllocations(jobId: string, index: number, waitSeconds: number): Promise<{ index: number; allocations: NomadAllocation[] }>;
  /** Stops a job (its allocations are killed); `purge` also removes it. */
  deregisterJob(jobId: string, purge: boolean): Promise<void>;
  /** The address of the cluster's leader; fails when Nomad has none or cannot be reached (the readiness check). */
  leader(): Promise<string>;
}

export function createNomadClient(connection: NomadConnection): NomadClient {
  const base = new URL(connection.address);
  const tls = base.protocol === 'https:';
  const agent = tls
    ? new HttpsAgent({
        keepAlive: true,
        ca: connection.caCertFile ? readFileSync(connection.caCertFile) : undefined,
        cert: connection.clientCertFile ? readFileSync(connection.clientCertFile) : undefined,
        key: connection.clientKeyFile ? readFileSync(connection.clientKeyFile) : undefined,
      })
    : undefined;
  const scope = () => {
    const q = new URLSearchParams();
    if (connection.namespace) q.set('namespace', connection.namespace);
    if (connection.region) q.set('region', connection.region);
    return q;
  };
  const call = (method: string, path: string, query: URLSearchParams, body?: unknown, headers: Record<string, string> = {}) =>
    new Promise<{ status: number; index: number; body: any }>((resolve, reject) => {
      const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
      const qs = query.toString();
      const options = {
        method,
        hostname: base.hostname,
        port: base.port || (tls ? 443 : 80),
        path: `/v1${path}${qs ? `?${qs}` : ''}`,
        agent,
        headers: {
          ...(connection.token ? { 'X-Nomad-Token': connection.token } : {}),
          ...(payload ? { 'Content-Type': 'application/json', 'Content-Length': payload.length } : {}),
          ...headers,
        },
      };
      const req = (tls ? httpsRequest : httpRequest)(options, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          const status = res.statusCode ?? 0;
          if (status >= 400) return reject(new NomadError(status, `Nomad ${method} ${path} → ${status}: ${text.trim()}`));
          let parsed: any;
          try {
            parsed = text ? JSON.parse(text) : undefined;
          } catch {
            parsed = text;
          }
          resolve({ status, index: Number(res.headers['x-nomad-index'] ?? 0), body: parsed });
        });
        res.on('error', reject);
      });
      req.on('error', reject);
      req.end(payload);
    });
  return {
    async registerJob(job) {
      return (await call('POST', '/jobs', scope(), { Job: job })).body;
    },
    async jobAllocations(jobId, index, waitSeconds) {
      const q = scope();
      if (index > 0) {
        q.set('index', String(index));
        q.set('wait', `${waitSeconds}s`);
      }
      // The published description lists `index` as a header; servers read the query parameter. Send both.
      const r = await call('GET', `/job/${encodeURIComponent(jobId)}/allocations`, q, undefined, index > 0 ? { index: String(index) } : {});
      return { index: r.index, allocations: r.body ?? [] };
    },
    async leader() {
      const r = await call('GET', '/status/leader', scope());
      if (typeof r.body !== 'string' || !r.body) throw new NomadError(r.status, 'Nomad has no leader');
      return r.body;
    },
    async deregisterJob(jobId, purge) {
      const q = scope();
      if (purge) q.set('purge', 'true');
      await call('DELETE', `/job/${encodeURIComponent(jobId)}`, q);
    },
  };
}
