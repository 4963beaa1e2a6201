import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Testing } from 'cdktf';
import { addEnvironments } from '../../stacks/app';
import { loadEnvironments } from '../../stacks/environment';
import type { KubernetesObject } from '../distribution/kubernetes-manifests';
import { freePort } from './processes';

/**
 * A rehearsal of the cluster install on this machine: the server stack's Kubernetes objects, as the
 * Terraform provider would create them, read back and run as local processes the way the kubelet
 * would run their containers (command and arguments, environment from `env` and `envFrom`, volumes
 * as directories, named ports, probes), with what only the cloud has mapped to local stand-ins.
 */

const ROOT = resolve(__dirname, '../..');

/** The `<env>-server` stack of an example environment, synthesized as `cdktf synth` does. */
export function synthesizeServerStack(environment: string): any {
  const app = Testing.app();
  const envs = loadEnvironments(join(ROOT, 'environments')).filter((e) => e.name === environment);
  if (envs.length !== 1) throw new Error(`no example environment ${environment} in environments/`);
  addEnvironments(app, envs);
  app.synth();
  return JSON.parse(readFileSync(join(app.outdir, 'stacks', `${environment}-server`, 'cdk.tf.json'), 'utf8'));
}

/** A Deployment or Job of the stack: the pod it makes, and how many. */
export interface Workload {
  readonly kind: 'Deployment' | 'Job';
  readonly name: string;
  readonly replicas: number;
  readonly pod: { metadata: Record<string, any>; spec: Record<string, any> };
}

export function workloadsOf(objects: KubernetesObject[]): Workload[] {
  return objects
    .filter((o) => o.object.kind === 'Deployment' || o.object.kind === 'Job')
    .map((o) => ({
      kind: o.object.kind,
      name: o.object.metadata.name,
      replicas: o.object.kind === 'Job' ? 1 : Number(o.object.spec.replicas ?? 1),
      pod: o.object.spec.template,
    }));
}

/**
 * Terraform's rendering of one string of the configuration: `$${` and `%%{` are escapes for a
 * literal `${` and `%{`; every `${expression}` is asked of `value`, which must know it.
 */
export function renderTerraform(text: string, value: (expression: string) => string): string {
  let out = '';
  for (let i = 0; i < text.length; ) {
    if (text.startsWith('$${', i) || text.startsWith('%%{', i)) {
      out += text[i] + '{';
      i += 3;
    } else if (text.startsWith('${', i)) {
      let depth = 1;
      let j = i + 2;
      for (; j < text.length && depth > 0; j++) depth += text[j] === '{' ? 1 : text[j] === '}' ? -1 : 0;
      out += value(text.slice(i + 2, j - 1));
      i = j;
    } else {
      out += text[i++];
    }
  }
  return out;
}

/**
 * The image's configuration, as the kubelet starts a container from it: its ENV (the last stage of
 * the Dockerfile) and its ENTRYPOINT, read from images/runtime.Dockerfile, and its file system (the
 * repository: WORKDIR /opt/gyre holds bin/, runtime/, node_modules/ and images/ca as ca/).
 */
export function runtimeImage(dockerfile = join(ROOT, 'images/runtime.Dockerfile')) {
  const text = readFileSync(dockerfile, 'utf8').replace(/\\\n/g, ' ');
  const lastStage = text.slice(text.lastIndexOf('\nFROM '));
  const env: Record<string, string> = {};
  for (const line of lastStage.split('\n').filter((l) => l.startsWith('ENV '))) {
    for (const m of line.slice(4).matchAll(/([A-Z_][A-Z0-9_]*)=("[^"]*"|\S*)/g)) env[m[1]] = m[2].replace(/^"|"$/g, '');
  }
  const entrypoint = JSON.parse(/^ENTRYPOINT (\[.*\])$/m.exec(lastStage)![1]) as string[];
  return {
    env,
    entrypoint,
    /** Paths inside the image and where they are here. */
    paths: { '/opt/gyre/ca': join(ROOT, 'images/ca'), '/opt/gyre': ROOT } as Record<string, string>,
  };
}

/** What stands in for the cloud and the cluster on this machine. */
export interface LocalCluster {
  /** Renders one string of the configuration (Terraform's part: secrets, outputs of the infra stack). */
  readonly terraform: (text: string, where: string) => string;
  /** Every object of the stack, for Secrets and ConfigMaps. */
  readonly objects: KubernetesObject[];
  /** Secrets other Jobs write at run time (not in the stack): name → key → value. */
  readonly runtimeSecrets: Record<string, Record<string, string>>;
  /** Rewrites the container's environment (after paths and ports) to local services; `container` names it in errors. */
  readonly localize: (env: Record<string, string>, container: string) => Record<string, string>;
  /** Where each process's output lines go, besides its own buffer. @default - nowhere */
  readonly onOutput?: (process: string, line: string) => void;
}

/** A pod of a workload on this machine: its volumes as directories and its ports as local ports. */
export interface LocalPod {
  readonly name: string;
  readonly workload: Workload;
  /** Container port (number and name) → the local port standing in for it. */
  readonly ports: Map<number | string, number>;
  /** Environment of a container of this pod, rendered and localized. */
  envOf(container: Record<string, any>): Record<string, string>;
  /** A container of this pod, by name (init containers included). */
  container(name?: string): Record<string, any>;
  /** Starts a container of this pod as a local process. */
  start(container: Record<string, any>): LocalProcess;
  /** The local URL of a probe's or annotation's port and path. */
  url(port: number | string, path: string): string;
  /** Removes the pod's volumes (its processes must have ended). */
  remove(): void;
}

export interface LocalProcess {
  readonly name: string;
  readonly child: ChildProcess;
  readonly env: Record<string, string>;
  /** Resolves with the exit code (null when killed by a signal). */
  readonly exited: Promise<number | null>;
  output(): string;
  /** SIGKILLs the process group, as the kubelet kills a container, and waits for the exit. */
  kill(): Promise<void>;
}

const IMAGE = runtimeImage();

export async function createLocalPod(workload: Workload, cluster: LocalCluster, replica = 0): Promise<LocalPod> {
  const name = `${workload.name}-${replica}`;
  const spec = workload.pod.spec;
  const root = mkdtempSync(join(tmpdir(), `gyre-pod-${workload.name}-`));
  const volumes = new Map<string, string>();
  for (const volume of spec.volumes ?? []) {
    const dir = join(root, 'volumes', volume.name);
    mkdirSync(dir, { recursive: true });
    if (volume.emptyDir) {
      // An emptyDir is writable by the pod's fsGroup; here, by this user.
    } else if (volume.secret || volume.configMap) {
      const source = volume.secret ? { kind: 'Secret', name: volume.secret.secretName } : { kind: 'ConfigMap', name: volume.configMap.name };
      const data = objectData(cluster, source.kind, source.name);
      for (const [key, value] of Object.entries(data)) {
        const file = join(dir, key);
        writeFileSync(file, cluster.terraform(value, `${source.kind} ${source.name} key ${key}`));
        chmodSync(file, (volume.secret?.defaultMode ?? volume.configMap?.defaultMode ?? 0o644) | 0o400);
      }
    } else {
      throw new Error(`${name}: volume ${volume.name} is of a kind the rehearsal does not run (${Object.keys(volume).join(', ')})`);
    }
    volumes.set(volume.name, dir);
  }

  const ports = new Map<number | string, number>();
  for (const c of [...(spec.initContainers ?? []), ...spec.containers]) {
    for (const p of c.ports ?? []) {
      const local = ports.get(p.containerPort) ?? (await freePort());
      ports.set(p.containerPort, local);
      if (p.name) ports.set(p.name, local);
    }
  }
  // A port a setting names that no container declares (GYRE_PORT in a role without the API): a free one.
  const portOf = async (value: string) => {
    const n = Number(value);
    if (!ports.has(n)) ports.set(n, await freePort());
    return String(ports.get(n));
  };
  for (const c of [...(spec.initContainers ?? []), ...spec.containers]) {
    for (const e of c.env ?? []) if (/^GYRE_(OPS_)?PORT$/.test(e.name) && e.value) await portOf(e.value);
  }
  for (const key of ['GYRE_PORT', 'GYRE_OPS_PORT']) if (IMAGE.env[key]) await portOf(IMAGE.env[key]);

  const mountsOf = (c: Record<string, any>) => {
    const mounts: [string, string][] = (c.volumeMounts ?? []).map((m: any) => {
      if (m.subPath) throw new Error(`${name}/${c.name}: subPath mounts are not rehearsed (${m.mountPath})`);
      const dir = volumes.get(m.name);
      if (!dir) throw new Error(`${name}/${c.name}: mounts volume ${m.name}, which the pod does not have`);
      return [m.mountPath, dir];
    });
    // Longest first, so /opt/gyre/ca wins over /opt/gyre.
    return [...mounts, ...Object.entries(IMAGE.paths)].sort((a, b) => b[0].length - a[0].length);
  };
  const localPath = (value: string, mounts: [string, string][]) => {
    for (const [inside, here] of mounts) {
      if (value === inside || value.startsWith(`${inside}/`)) return here + value.slice(inside.length);
    }
    return value;
  };

  const pod: LocalPod = {
    name,
    workload,
    ports,
    container(containerName) {
      const all = [...(spec.initContainers ?? []), ...spec.containers];
      const found = containerName ? all.find((c) => c.name === containerName) : spec.containers[0];
      if (!found) throw new Error(`${name} has no container ${containerName}`);
      return found;
    },
    envOf(c) {
      const where = `${name}/${c.name}`;
      // As the kubelet builds it: the image's ENV, then envFrom, then env (which wins).
      const env: Record<string, string> = { ...IMAGE.env };
      for (const from of c.envFrom ?? []) {
        if (!from.secretRef && !from.configMapRef) throw new Error(`${where}: envFrom ${JSON.stringify(from)} is not rehearsed`);
        const source = from.secretRef ? { kind: 'Secret', name: from.secretRef.name } : { kind: 'ConfigMap', name: from.configMapRef.name };
        for (const [k, v] of Object.entries(objectData(cluster, source.kind, source.name))) env[k] = cluster.terraform(v, `${source.kind} ${source.name} key ${k}`);
      }
      for (const e of c.env ?? []) {
        if (e.value !== undefined) env[e.name] = cluster.terraform(e.value, `${where} env ${e.name}`);
        else if (e.valueFrom?.secretKeyRef) {
          const { name: secret, key } = e.valueFrom.secretKeyRef;
          const fromStack = findObject(cluster, 'Secret', secret);
          const value = fromStack ? objectData(cluster, 'Secret', secret)[key] : cluster.runtimeSecrets[secret]?.[key];
          if (value === undefined) throw new Error(`${where}: env ${e.name} reads Secret ${secret} key ${key}, which neither the stack nor a Job makes`);
          env[e.name] = fromStack ? cluster.terraform(value, `Secret ${secret} key ${key}`) : value;
        } else throw new Error(`${where}: env ${e.name} has a source the rehearsal does not run (${JSON.stringify(e.valueFrom)})`);
      }
      const mounts = mountsOf(c);
      for (const [k, v] of Object.entries(env)) {
        if (/^GYRE_(OPS_)?PORT$/.test(k)) env[k] = String(ports.get(Number(v)));
        else env[k] = v.replace(/(^|[=&?])(\/[^\s&?]*)/g, (_m, before: string, path: string) => before + localPath(path, mounts));
      }
      // The container's /tmp, when it mounts one.
      const tmp = mounts.find(([inside]) => inside === '/tmp');
      if (tmp) env.TMPDIR = tmp[1];
      return cluster.localize(env, where);
    },
    start(c) {
      const where = `${name}/${c.name}`;
      const argv = [...(c.command ?? IMAGE.entrypoint), ...(c.args ?? [])];
      // tini is the image's PID 1; `gyre` is bin/gyre.js.
      const [init, dashes, program, ...args] = argv;
      if (init !== 'tini' || dashes !== '--' || program !== 'gyre') throw new Error(`${where}: runs ${JSON.stringify(argv)}, not tini -- gyre …`);
      const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', ...pod.envOf(c) };
      return startProcess(where, [join(ROOT, 'bin/gyre.js'), ...args], env, cluster.onOutput);
    },
    url(port, path) {
      const local = ports.get(typeof port === 'string' && /^\d+$/.test(port) ? Number(port) : port);
      if (!local) throw new Error(`${name}: port ${port} is declared by no container`);
      return `http://127.0.0.1:${local}${path}`;
    },
    remove() {
      rmSync(root, { recursive: true, force: true });
    },
  };
  return pod;
}

function findObject(cluster: LocalCluster, kind: string, name: string): Record<string, any> | undefined {
  return cluster.objects.find((o) => o.object.kind === kind && o.object.metadata.name === name)?.object;
}

function objectData(cluster: LocalCluster, kind: string, name: string): Record<string, string> {
  const object = findObject(cluster, kind, name);
  if (!object) throw new Error(`${kind} ${name} is not in the stack`);
  return { ...(object.data ?? {}), ...(object.stringData ?? {}) };
}

function startProcess(name: string, args: string[], env: Record<string, string>, onOutput?: (process: string, line: string) => void): LocalProcess {
  const child = spawn(process.execPath, args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let output = '';
  let partial = '';
  const take = (d: Buffer) => {
    const text = d.toString();
    // The last 256 KiB: enough to say why something failed.
    output = (output + text).slice(-262_144);
    if (!onOutput) return;
    const lines = (partial + text).split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) onOutput(name, line);
  };
  child.stdout!.on('data', take);
  child.stderr!.on('data', take);
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  return {
    name,
    child,
    env,
    exited,
    output: () => output,
    async kill() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        child.kill('SIGKILL');
      }
      await exited;
    },
  };
}

/** One HTTP probe as the kubelet makes it: a GET within timeoutSeconds, 200–399 passes. */
export async function probeOnce(pod: LocalPod, probe: Record<string, any>): Promise<boolean> {
  if (!probe.httpGet) throw new Error(`${pod.name}: only httpGet probes are rehearsed (${JSON.stringify(probe)})`);
  try {
    const res = await fetch(pod.url(probe.httpGet.port, probe.httpGet.path), { signal: AbortSignal.timeout((probe.timeoutSeconds ?? 1) * 1000) });
    await res.arrayBuffer();
    return res.status >= 200 && res.status < 400;
  } catch {
    return false;
  }
}

/** How long a probe lets a container go on failing it: (initialDelaySeconds) + failureThreshold × periodSeconds. */
const probeWindowMs = (probe: Record<string, any>) => ((probe.initialDelaySeconds ?? 0) + (probe.failureThreshold ?? 3) * (probe.periodSeconds ?? 10)) * 1000;

/**
 * Waits as the kubelet does for a started container to be ready: its startup probe (the kubelet
 * restarts the container after failureThreshold × periodSeconds), then its readiness probe. A
 * failing readiness probe restarts nothing (the pod just gets no traffic), so the wait for it is
 * bounded by what would: the liveness probe's window. Both are asked every `everyMs` here rather
 * than every periodSeconds, to keep the rehearsal short. Fails at once if the process exits.
 */
export async function waitReady(pod: LocalPod, proc: LocalProcess, container: Record<string, any>, everyMs = 200): Promise<void> {
  let exited: number | null | undefined;
  void proc.exited.then((code) => (exited = code));
  for (const [kind, probe] of [['startup', container.startupProbe], ['readiness', container.readinessProbe]] as const) {
    if (!probe) continue;
    const restartsAfter = kind === 'readiness' && container.livenessProbe ? container.livenessProbe : probe;
    const deadline = Date.now() + Math.max(probeWindowMs(probe), probeWindowMs(restartsAfter));
    for (;;) {
      if (exited !== undefined) throw new Error(`${proc.name} exited (${exited}) before its ${kind} probe passed:\n${proc.output()}`);
      if (await probeOnce(pod, probe)) break;
      if (Date.now() > deadline) throw new Error(`${proc.name}: the ${kind} probe ${probe.httpGet?.path} did not pass in time:\n${proc.output()}`);
      await new Promise((r) => setTimeout(r, everyMs));
    }
  }
}

/**
 * A Service's virtual address, as kube-proxy gives it: each new connection goes to the next of
 * the endpoints that are ready at that moment (round robin); a connection to an endpoint that dies
 * breaks, as it does in the cluster.
 */
export async function startServiceProxy(endpoints: () => number[]): Promise<{ url: string; port: number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  let next = 0;
  const server = createServer((client) => {
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    const ready = endpoints();
    if (ready.length === 0) {
      client.destroy();
      return;
    }
    const upstream = connect(ready[next++ % ready.length], '127.0.0.1');
    sockets.add(upstream);
    upstream.on('close', () => sockets.delete(upstream));
    client.pipe(upstream).pipe(client);
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
