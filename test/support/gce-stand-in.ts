import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { bootMachine, type BootedMachine } from './machine-boot';

/**
 * A stand-in for the Compute Engine REST API v1 (no Google Cloud here), covering only what Gyre's
 * GCE machine provider calls, as the API reference describes them:
 * - POST /compute/v1/projects/{project}/zones/{zone}/instances[?sourceInstanceTemplate=] (instances.insert) → Operation;
 * - GET  …/instances[?filter=labels.K = "V"] (instances.list) → InstanceList;
 * - GET  …/instances/{name} (instances.get) → Instance; DELETE (instances.delete) → Operation;
 * a missing instance is a 404 `{ error: { code, message, errors: [{ reason: 'notFound' }] } }`.
 * Instance templates are given up front (name → source image); an unknown one is a 404 as GCE
 * answers. Only the client's endpoint points here. With `boot`, an inserted instance runs its
 * `startup-script` metadata under `sh` on this host (test/support/machine-boot.ts).
 */
export interface GceStandInOptions {
  readonly project: string;
  readonly zone: string;
  /** Instance template name → source image. */
  readonly instanceTemplates: Record<string, string>;
  boot?: boolean;
}

export interface GceInstance {
  readonly name: string;
  readonly sourceImage: string;
  readonly sourceInstanceTemplate: string;
  readonly body: Record<string, any>;
  readonly labels: Record<string, string>;
  status: 'PROVISIONING' | 'RUNNING' | 'TERMINATED';
  deleted: boolean;
  machine?: BootedMachine;
}

export interface GceStandIn {
  readonly url: string;
  readonly instances: GceInstance[];
  /** `METHOD path` of every call. */
  readonly calls: string[];
  readonly options: GceStandInOptions;
  /** Authorization headers seen (none are expected from a plain-http endpoint). */
  readonly authorizations: string[];
  close(): Promise<void>;
}

export async function startGceStandIn(options: GceStandInOptions): Promise<GceStandIn> {
  const instances: GceInstance[] = [];
  const calls: string[] = [];
  const authorizations: string[] = [];
  const base = `/compute/v1/projects/${options.project}/zones/${options.zone}/instances`;
  let url = '';
  const send = (res: ServerResponse, status: number, body: unknown) => {
    res.writeHead(status, { 'content-type': 'application/json; charset=UTF-8' });
    res.end(JSON.stringify(body));
  };
  const notFound = (res: ServerResponse, what: string) => send(res, 404, { error: { code: 404, message: `The resource '${what}' was not found`, errors: [{ message: `The resource '${what}' was not found`, domain: 'global', reason: 'notFound' }] } });
  const operation = (type: string, target: string) => ({
    kind: 'compute#operation',
    id: String(BigInt('0x' + randomBytes(7).toString('hex'))),
    name: `operation-${Date.now()}-${randomBytes(4).toString('hex')}`,
    zone: `${url}/compute/v1/projects/${options.project}/zones/${options.zone}`,
    operationType: type,
    targetLink: `${url}${base}/${target}`,
    status: 'DONE',
    progress: 100,
    selfLink: `${url}/compute/v1/projects/${options.project}/zones/${options.zone}/operations/op`,
  });
  const view = (i: GceInstance) => ({ kind: 'compute#instance', name: i.name, status: i.status, labels: i.labels, selfLink: `${url}${base}/${i.name}` });

  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const u = new URL(req.url ?? '/', 'http://x');
      calls.push(`${req.method} ${u.pathname}`);
      if (req.headers.authorization) authorizations.push(String(req.headers.authorization));
      const live = () => instances.filter((i) => !i.deleted);
      if (u.pathname === base && req.method === 'POST') {
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}');
        const templateRef = u.searchParams.get('sourceInstanceTemplate') ?? '';
        const template = templateRef.split('/').pop() ?? '';
        const image = options.instanceTemplates[template];
        if (!image) return notFound(res, `projects/${options.project}/global/instanceTemplates/${template}`);
        if (!/^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$/.test(body.name ?? '')) return send(res, 400, { error: { code: 400, message: `Invalid value for field 'resource.name': '${body.name}'.`, errors: [{ reason: 'invalid' }] } });
        if (live().some((i) => i.name === body.name)) return send(res, 409, { error: { code: 409, message: `The resource '${body.name}' already exists`, errors: [{ reason: 'alreadyExists' }] } });
        for (const [k, v] of Object.entries(body.labels ?? {})) {
          if (!/^[a-z][a-z0-9_-]{0,62}$/.test(k) || !/^[a-z0-9_-]{0,63}$/.test(String(v))) return send(res, 400, { error: { code: 400, message: `Invalid value for field 'resource.labels': '${k}'.`, errors: [{ reason: 'invalid' }] } });
        }
        const instance: GceInstance = { name: body.name, sourceImage: image, sourceInstanceTemplate: templateRef, body, labels: body.labels ?? {}, status: 'PROVISIONING', deleted: false };
        instances.push(instance);
        if (options.boot) {
          instance.status = 'RUNNING';
          const script = (body.metadata?.items ?? []).find((m: { key: string }) => m.key === 'startup-script')?.value ?? '';
          instance.machine = bootMachine(script);
          // A powered-off GCE instance stops (TERMINATED) and stays until deleted.
          instance.machine.process.on('exit', () => instance.machine?.poweredOff() && (instance.status = 'TERMINATED'));
        }
        return send(res, 200, operation('insert', body.name));
      }
      if (u.pathname === base && req.method === 'GET') {
        const filter = u.searchParams.get('filter');
        let found = live();
        if (filter) {
          const m = /^labels\.([a-z0-9_-]+)\s*=\s*"([^"]*)"$/.exec(filter.trim());
          if (!m) return send(res, 400, { error: { code: 400, message: `Invalid value for field 'filter': '${filter}'.`, errors: [{ reason: 'invalid' }] } });
          found = found.filter((i) => i.labels[m[1]] === m[2]);
        }
        return send(res, 200, { kind: 'compute#instanceList', id: base, items: found.map(view), selfLink: `${url}${base}` });
      }
      const one = u.pathname.startsWith(base + '/') ? decodeURIComponent(u.pathname.slice(base.length + 1)) : undefined;
      if (one) {
        const i = live().find((x) => x.name === one);
        if (!i) return notFound(res, `projects/${options.project}/zones/${options.zone}/instances/${one}`);
        if (req.method === 'GET') return send(res, 200, view(i));
        if (req.method === 'DELETE') {
          i.deleted = true;
          i.machine?.kill();
          return send(res, 200, operation('delete', one));
        }
      }
      send(res, 404, { error: { code: 404, message: `no route ${req.method} ${u.pathname}`, errors: [{ reason: 'notFound' }] } });
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    instances,
    calls,
    options,
    authorizations,
    async close() {
      for (const i of instances) i.machine?.kill();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
