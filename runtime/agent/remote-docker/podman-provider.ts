import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, open, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { resourceSizeOf } from '../../domain/resource-sizes';
import type { Logger } from '../../logger';
import { ownerAlive, processOwner } from '../sandbox/owner';
import { makeEngineCertificates } from './certificates';
import { ensureHostRules, makeEngineFence, removeEngineFence, type EngineFence } from './engine-fence';
import type { RemoteDockerEngine, RemoteDockerProvider, RemoteDockerRequest } from './provider';
import { startTlsProxy } from './tls-proxy';

/**
 * The local Podman provider: each job's engine is a `podman system service` of its own on this
 * host, with its own storage (`--root`, `--runroot`, `--tmpdir`, `--network-config-dir` under
 * `stateDir`), listening on a unix socket only Gyre uses; the job reaches it through a TLS proxy
 * (mutual TLS, a CA per engine) on the address the job sees this host at. The service runs in a
 * fence of its own (engine-fence.ts): a network namespace, so its containers reach no other
 * engine's nor the host engine's, and cgroups bounding it and all its containers by the job's
 * resource class. Needs Podman, root, iptables and cgroup v1 (as the Docker executor's rootful
 * Podman does).
 *
 * Layout under `stateDir`:
 * - `engines/<id>/`: one engine: `owner` (the agent process), `task`, `pid` (the service's), its
 *   storage `root/` (or, with layer caching, the path of the project's cache in `root-path`) and
 *   `networks/`; its run-time state and socket are in `<runDir>/<id>/` (with layer caching
 *   `<runDir>/<cache name>/`, in `run-path`: Podman's database in the cache insists on the same
 *   paths). Both removed when the job ends.
 * - `layers/<project hash>-<n>/`: a project's kept image storage (`docker_layer_caching: true`);
 *   `<n>.lock` holds the owner using it, so two jobs of a project never share one at once (the
 *   second gets the next `n`, cold, as on CircleCI).
 * An agent that dies leaves both; the next provider made on this host (any agent's start) stops
 * what a dead owner left and removes it (`sweep`).
 */
export interface PodmanRemoteDockerOptions {
  /** Where engines keep their storage (GYRE_REMOTE_DOCKER_DIR). */
  readonly stateDir: string;
  /** Where a teardown that could not finish is reported. @default - nowhere */
  readonly log?: Logger;
  /** @default podman */
  readonly podmanPath?: string;
  /** Where engines keep their run-time state and sockets (a short path). @default /run/gyre-rd as root, <tmpdir>/gyre-rd otherwise */
  readonly runDir?: string;
  /** How long a new engine may take to answer. @default 30000 */
  readonly startTimeoutMs?: number;
  /**
   * Images of this host's Podman storage every new engine starts with (GYRE_REMOTE_DOCKER_IMAGES):
   * base images the operator allows, for sites where jobs cannot pull. @default none
   */
  readonly preloadImages?: readonly string[];
  /** Layer caches kept per project (concurrent jobs of a project beyond it run cold). @default 4 */
  readonly cachesPerProject?: number;
  /** Processes (threads included) an engine and all its containers may hold at once. @default 4096 */
  readonly pidsLimit?: number;
  /** Addresses of the engines' links to the host, a /30 each (engine-fence.ts). @default 198.18.0.0/16 */
  readonly uplinkRange?: string;
}

export function createPodmanRemoteDocker(options: PodmanRemoteDockerOptions): RemoteDockerProvider & { sweep(): Promise<number> } {
  const podman = options.podmanPath ?? 'podman';
  const enginesDir = join(options.stateDir, 'engines');
  const layersDir = join(options.stateDir, 'layers');
  const runBase = options.runDir ?? (process.getuid?.() === 0 ? '/run/gyre-rd' : join(tmpdir(), 'gyre-rd'));
  const owner = processOwner();
  const description = 'a Podman engine of its own on this host';
  const warn = (message: string, fields: Record<string, unknown>) => options.log?.warn(message, fields);
  /** The host's firewall rules for the engines' links, made at the first engine. */
  let hostRules: Promise<void> | undefined;

  /**
   * Podman's global flags for one engine's storage. Its run-time state is in `runDir`, a short
   * path (Podman refuses a runroot over 50 characters; a socket path has its own limit).
   */
  const globals = (dir: string, runDir: string, root: string) => ['--cgroup-manager', 'cgroupfs', '--root', root, '--runroot', join(runDir, 'run'), '--tmpdir', join(runDir, 'tmp'), '--network-config-dir', join(dir, 'networks'), '--events-backend', 'file'];
  /** The engine's run directory: under /run as root (tmpfs, gone at reboot), the temporary directory otherwise. */
  const runDirOf = (id: string) => join(runBase, id);

  const run = (args: string[], timeoutMs = 60_000, file = podman) =>
    new Promise<{ code: number | null; output: string }>((resolve) => {
      const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'], timeout: timeoutMs });
      let output = '';
      child.stdout.on('data', (d) => (output += d));
      child.stderr.on('data', (d) => (output += d));
      child.on('error', (error) => resolve({ code: null, output: error.message }));
      child.on('close', (code) => resolve({ code, output }));
    });

  /** A project's layer cache that no running job holds, locked for this one; undefined when all are in use. */
  async function takeLayerCache(projectSlug: string): Promise<{ root: string; lock: string } | undefined> {
    await mkdir(layersDir, { recursive: true, mode: 0o700 });
    const key = createHash('sha256').update(projectSlug).digest('hex').slice(0, 16);
    for (let n = 0; n < (options.cachesPerProject ?? 4); n++) {
      const root = join(layersDir, `${key}-${n}`);
      const lock = `${root}.lock`;
      for (let tries = 0; tries < 2; tries++) {
        try {
          const handle = await open(lock, 'wx', 0o600);
          await handle.writeFile(owner);
          await handle.close();
          return { root, lock };
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
          const holder = await readFile(lock, 'utf8').catch(() => '');
          if (ownerAlive(holder)) break;
          // Its owner died: whatever engine it ran is swept; the cache is free again.
          await rm(lock, { force: true });
        }
      }
    }
    return undefined;
  }

  /** Copies the operator's allowed images from this host's storage into the engine's. */
  async function preload(dir: string, runDir: string, root: string): Promise<void> {
    const images = options.preloadImages ?? [];
    if (images.length === 0) return;
    const archive = join(runDir, 'preload.tar');
    const saved = await run(['save', '-q', '--multi-image-archive', '-o', archive, ...images]);
    if (saved.code !== 0) throw new Error(`the images GYRE_REMOTE_DOCKER_IMAGES names could not be saved from this host: ${saved.output.trim().slice(0, 500)}`);
    const loaded = await run([...globals(dir, runDir, root), 'load', '-q', '-i', archive]);
    await rm(archive, { force: true });
    if (loaded.code !== 0) throw new Error(`the images GYRE_REMOTE_DOCKER_IMAGES names could not be loaded into the engine: ${loaded.output.trim().slice(0, 500)}`);
  }

  /** Stops an engine's service and every container it started, and removes its storage (not a kept layer cache's images). */
  async function destroy(dir: string): Promise<void> {
    const pid = Number(await readFile(join(dir, 'pid'), 'utf8').catch(() => ''));
    const cached = await readFile(join(dir, 'root-path'), 'utf8').catch(() => '');
    const root = cached || join(dir, 'root');
    const runDir = (await readFile(join(dir, 'run-path'), 'utf8').catch(() => '')) || runDirOf(basename(dir));
    const flags = globals(dir, runDir, root);
    // Containers outlive the service (conmon keeps them): they are removed through the storage,
    // inside the engine's namespaces while it runs (their mounts and networks are there only).
    const removeContainers = async (inEngine: boolean) => {
      const wrap = (args: string[]) => (inEngine ? run(['-t', String(pid), '-m', '-n', podman, ...args], 60_000, 'nsenter') : run(args));
      await wrap([...flags, 'rm', '--all', '--force', '--time', '0']);
      await wrap([...flags, 'pod', 'rm', '--all', '--force']);
    };
    const alive = pid > 0 && isEngineProcess(pid, dir);
    if (alive) {
      await removeContainers(true);
      await stopProcess(pid);
    }
    // Whatever is left in its cgroups is killed; its network namespace and cgroups go.
    await removeEngineFence(basename(dir)).catch((error) => warn('a remote engine\'s namespace or cgroups could not be removed', { dir, error: (error as Error).message }));
    if (!alive) await removeContainers(false);
    if (cached) {
      await run([...flags, 'volume', 'rm', '--all', '--force']);
      await rm(`${cached}.lock`, { force: true });
    } else {
      // Unmounts and removes the engine's whole storage.
      const reset = await run([...flags, 'system', 'reset', '--force']);
      if (reset.code !== 0) warn('podman system reset of a remote engine failed', { dir, output: reset.output.slice(0, 500) });
    }
    for (const d of [runDir, dir]) await rm(d, { recursive: true, force: true }).catch((error) => warn('a remote engine directory could not be removed', { dir: d, error: (error as Error).message }));
  }

  return {
    description,

    async provision(req: RemoteDockerRequest): Promise<RemoteDockerEngine> {
      await mkdir(enginesDir, { recursive: true, mode: 0o700 });
      const id = randomBytes(6).toString('hex');
      const dir = join(enginesDir, id);
      let runDir = runDirOf(id);
      await mkdir(dir, { mode: 0o700 });
      await writeFile(join(dir, 'task'), req.taskId);
      await writeFile(join(dir, 'owner'), owner);
      let child: ChildProcess | undefined;
      let proxy: Awaited<ReturnType<typeof startTlsProxy>> | undefined;
      let cacheNote = 'no layer cache (docker_layer_caching is off)';
      let fence: EngineFence | undefined;
      try {
        hostRules ??= ensureHostRules(options.uplinkRange).catch((error) => {
          hostRules = undefined;
          throw new Error(`the host's firewall rules for remote engines could not be made (needs root and iptables): ${(error as Error).message}`);
        });
        await hostRules;
        const size = req.resources ?? resourceSizeOf('medium');
        fence = await makeEngineFence(id, { uplinkRange: options.uplinkRange, limits: { cpu: size.cpu, memoryMb: size.memoryMb, pids: options.pidsLimit ?? 4096 } });
        let root = join(dir, 'root');
        if (req.dockerLayerCaching) {
          const cache = await takeLayerCache(req.projectSlug);
          if (cache) {
            root = cache.root;
            // Podman's database in the cache records its run-time paths: each job of the cache uses the same ones.
            runDir = join(runBase, basename(cache.root));
            await writeFile(join(dir, 'run-path'), runDir);
            await rm(runDir, { recursive: true, force: true });
            await writeFile(join(dir, 'root-path'), cache.root);
            cacheNote = existsSync(join(cache.root, 'libpod')) ? 'the project\'s layer cache from an earlier job' : 'a new layer cache for the project (empty this time)';
          } else cacheNote = 'no layer cache: every cache of this project is in use by another job';
        }
        await mkdir(runDir, { recursive: true, mode: 0o700 });
        const socketPath = join(runDir, 'engine.sock');
        const fenced = fence.command([podman, ...globals(dir, runDir, root), 'system', 'service', '--time=0', `unix://${socketPath}`]);
        // In the engine's own directory: conmon writes an \`oom\` marker into its working directory when
        // a container is killed for memory, which must not land in Gyre's (read-only in the image).
        child = spawn(fenced.file, fenced.args, { env: fenced.env, cwd: dir, stdio: ['ignore', 'ignore', 'pipe'], detached: true });
        let stderr = '';
        child.stderr?.on('data', (d) => (stderr = (stderr + d).slice(-2000)));
        // The engine never keeps this process alive; the teardown stops it.
        (child.stderr as unknown as { unref?: () => void } | null)?.unref?.();
        const exited = new Promise<never>((_, reject) => child!.once('exit', (code, signal) => reject(new Error(`podman system service ended (${code ?? signal}): ${stderr.trim()}`))));
        const spawned = new Promise<never>((_, reject) => child!.once('error', (error) => reject(new Error(`podman could not be started (${error.message}); GYRE_REMOTE_DOCKER=podman needs Podman on this host`))));
        exited.catch(() => undefined);
        spawned.catch(() => undefined);
        if (child.pid) await writeFile(join(dir, 'pid'), String(child.pid));
        child.unref();
        await Promise.race([waitForSocket(socketPath, options.startTimeoutMs ?? 30_000, req.signal), exited, spawned]);
        await preload(dir, runDir, root);
        const certs = await makeEngineCertificates(req.reachableAt);
        proxy = await startTlsProxy({ host: req.reachableAt, ca: certs.ca, cert: certs.serverCert, key: certs.serverKey, socketPath });
        const host = `tcp://${req.reachableAt.includes(':') ? `[${req.reachableAt}]` : req.reachableAt}:${proxy.port}`;
        let torn: Promise<void> | undefined;
        const engineProxy = proxy;
        return {
          host,
          clientTls: certs.client,
          summary: `${description} at ${host} (${cacheNote}; ${fence.summary})`,
          teardown() {
            torn ??= (async () => {
              await engineProxy.close();
              await destroy(dir);
            })();
            return torn;
          },
        };
      } catch (error) {
        await proxy?.close();
        if (child?.pid) await writeFile(join(dir, 'pid'), String(child.pid)).catch(() => undefined);
        await destroy(dir);
        throw error;
      }
    },

    /** Stops and removes the engines of agents that are gone. Returns how many. */
    async sweep(): Promise<number> {
      let swept = 0;
      for (const name of await readdir(enginesDir).catch(() => [] as string[])) {
        const dir = join(enginesDir, name);
        const holder = await readFile(join(dir, 'owner'), 'utf8').catch(() => '');
        if (ownerAlive(holder)) continue;
        await destroy(dir);
        swept++;
      }
      if (swept > 0) warn('removed remote Docker engines left by an agent that died', { engines: swept });
      return swept;
    },
  };
}

/** Whether `pid` is the service of the engine in `dir` (a reused pid is left alone). */
function isEngineProcess(pid: number, dir: string): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(dir);
  } catch {
    return false;
  }
}

/** SIGTERM, then SIGKILL after 5 s; resolves once the process is gone. */
async function stopProcess(pid: number): Promise<void> {
  const alive = () => {
    try {
      process.kill(pid, 0);
      return existsSync(`/proc/${pid}`) && !readFileSync(`/proc/${pid}/stat`, 'utf8').includes(') Z ');
    } catch {
      return false;
    }
  };
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return;
  }
  for (let waited = 0; alive(); waited += 50) {
    if (waited === 5000) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        return;
      }
    }
    if (waited > 10_000) return;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Waits until the Engine API answers `_ping` on the socket. */
async function waitForSocket(socketPath: string, timeoutMs: number, signal?: AbortSignal): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (signal?.aborted) throw new Error('canceled while the remote engine was starting');
    if (existsSync(socketPath) && (await ping(socketPath))) return;
    if (Date.now() > deadline) throw new Error(`the remote engine did not answer within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function ping(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request({ socketPath, path: '/_ping', timeout: 2000 }, (res) => {
      res.resume();
      resolve((res.statusCode ?? 0) < 400);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
    req.end();
  });
}
